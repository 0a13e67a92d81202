"""A strict parser of the Prometheus text exposition format (version 0.0.4),
for testing what dotproxy serves at GET /metrics and prints for
`dotproxyctl stats`.

Strict means: stricter than Prometheus where dotproxy promises more. Every
line is a HELP, the TYPE right after it, or a sample of that family; no other
comments, no empty lines, no timestamps; each family has exactly one HELP and
one TYPE, before its samples; names and label names are valid, label values
use only the three escapes the format has; no sample (name and labels) is
given twice; counter values are >= 0; a histogram's samples are its
_bucket (with le), _sum and _count, and check_histograms() checks the buckets.

    families = parse_exposition(text)       # {name: Family}
    check_histograms(families)
    samples = parse_lines(text)             # dotproxyctl stats: {(name, labels): value}
    status, headers, body = http_get(port)  # one HTTP/1.1 exchange, read to EOF
"""

import math
import re
import socket

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
FLOAT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class ParseError(AssertionError):
    pass


class Family:
    def __init__(self, name, help_text):
        self.name = name
        self.help = help_text
        self.type = None
        self.samples = []  # (sample name, frozenset of (label, value), value)

    def series(self, suffix="", **labels):
        """Values of the samples named name+suffix whose labels include `labels`."""
        want = set(labels.items())
        return [v for n, ls, v in self.samples
                if n == self.name + suffix and want <= set(ls)]

    def value(self, suffix="", **labels):
        """The one value of name+suffix with exactly these labels (KeyError if none)."""
        want = frozenset(labels.items())
        for n, ls, v in self.samples:
            if n == self.name + suffix and ls == want:
                return v
        raise KeyError(f"{self.name}{suffix}{dict(labels)}")

    def label_sets(self, suffix=""):
        return [dict(ls) for n, ls, _ in self.samples if n == self.name + suffix]


def _unescape(text, quote, where):
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text):
                raise ParseError(f"{where}: a lone backslash at the end")
            nxt = text[i + 1]
            if nxt == "\\":
                out.append("\\")
            elif nxt == "n":
                out.append("\n")
            elif nxt == '"' and quote:
                out.append('"')
            else:
                raise ParseError(f"{where}: unknown escape \\{nxt}")
            i += 2
            continue
        if c == '"' and quote:
            raise ParseError(f"{where}: an unescaped quote")
        out.append(c)
        i += 1
    return "".join(out)


def parse_value(text, where):
    if text in ("NaN", "+Inf", "-Inf"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not FLOAT.match(text):
        raise ParseError(f"{where}: bad value {text!r}")
    return float(text)


def parse_sample(line, where, sep=" "):
    """'name{a="b",c="d"} 1' -> (name, frozenset(labels), value). With sep="=", the
    `dotproxyctl stats` form 'name{...}=1'."""
    m = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
    if not m:
        raise ParseError(f"{where}: no metric name in {line!r}")
    name, rest = m.group(0), line[m.end():]
    labels = {}
    if rest.startswith("{"):
        i = 1
        while True:
            if rest[i:i + 1] == "}":
                i += 1
                break
            lm = re.match(r"[a-zA-Z_][a-zA-Z0-9_]*", rest[i:])
            if not lm:
                raise ParseError(f"{where}: bad label name in {line!r}")
            lname = lm.group(0)
            if lname.startswith("__"):
                raise ParseError(f"{where}: reserved label name {lname}")
            i += lm.end()
            if rest[i:i + 2] != '="':
                raise ParseError(f"{where}: expected =\" after {lname} in {line!r}")
            i += 2
            j = i
            while j < len(rest) and rest[j] != '"':
                j += 2 if rest[j] == "\\" else 1
            if j >= len(rest):
                raise ParseError(f"{where}: unterminated label value in {line!r}")
            if lname in labels:
                raise ParseError(f"{where}: label {lname} twice")
            labels[lname] = _unescape(rest[i:j], True, where)
            i = j + 1
            if rest[i:i + 1] == ",":
                i += 1
                if rest[i:i + 1] == "}":  # a trailing comma is allowed
                    i += 1
                    break
            elif rest[i:i + 1] != "}":
                raise ParseError(f"{where}: expected , or }} in {line!r}")
        rest = rest[i:]
    if not rest.startswith(sep):
        raise ParseError(f"{where}: expected {sep!r} before the value in {line!r}")
    value_text = rest[len(sep):]
    if " " in value_text:
        raise ParseError(f"{where}: a timestamp or trailing text in {line!r}")
    return name, frozenset(labels.items()), parse_value(value_text, where)


def parse_exposition(text):
    """Parse and check `text`; return {family name: Family} in order."""
    if not text.endswith("\n"):
        raise ParseError("the text does not end with a line feed")
    families, current, seen = {}, None, set()
    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {n}"
        if line == "":
            raise ParseError(f"{where}: empty line")
        if line.startswith("# HELP "):
            name, sp, help_text = line[7:].partition(" ")
            if not sp or not METRIC_NAME.match(name):
                raise ParseError(f"{where}: bad HELP line {line!r}")
            if name in families:
                raise ParseError(f"{where}: a second HELP for {name}")
            if current is not None and current.type is None:
                raise ParseError(f"{where}: {current.name} has no TYPE")
            current = families[name] = Family(name, _unescape(help_text, False, where))
            continue
        if line.startswith("# TYPE "):
            name, _, typ = line[7:].partition(" ")
            if current is None or current.name != name or current.type is not None:
                raise ParseError(f"{where}: TYPE {name} is not right after its HELP")
            if typ not in TYPES:
                raise ParseError(f"{where}: unknown type {typ!r}")
            current.type = typ
            continue
        if line.startswith("#"):
            raise ParseError(f"{where}: a comment that is not HELP or TYPE: {line!r}")
        if current is None or current.type is None:
            raise ParseError(f"{where}: a sample before any HELP and TYPE: {line!r}")
        name, labels, value = parse_sample(line, where)
        allowed = {current.name}
        if current.type == "histogram":
            allowed = {current.name + s for s in ("_bucket", "_sum", "_count")}
        elif current.type == "summary":
            allowed = {current.name, current.name + "_sum", current.name + "_count"}
        if name not in allowed:
            raise ParseError(f"{where}: sample {name} in family {current.name}")
        has_le = any(k == "le" for k, _ in labels)
        if current.type == "histogram" and has_le != (name == current.name + "_bucket"):
            raise ParseError(f"{where}: le on a sample that is not a bucket, or a bucket "
                             f"without le")
        if current.type == "counter" and not (value >= 0 or math.isnan(value)):
            raise ParseError(f"{where}: negative counter {value}")
        if (name, labels) in seen:
            raise ParseError(f"{where}: sample {name}{dict(labels)} given twice")
        seen.add((name, labels))
        current.samples.append((name, labels, value))
    if current is not None and current.type is None:
        raise ParseError(f"{current.name} has no TYPE")
    return families


def check_histograms(families):
    """Each histogram's series: buckets in increasing le, ending with +Inf, counts
    cumulative (never decreasing), +Inf == _count, a _sum; returns how many series."""
    checked = 0
    for f in families.values():
        if f.type != "histogram":
            continue
        groups = {}
        for name, labels, value in f.samples:
            base = frozenset((k, v) for k, v in labels if k != "le")
            g = groups.setdefault(base, {"buckets": [], "sum": None, "count": None})
            if name.endswith("_bucket"):
                le = dict(labels)["le"]
                g["buckets"].append((parse_value(le, f"{f.name} le"), value))
            elif name.endswith("_sum"):
                g["sum"] = value
            else:
                g["count"] = value
        for base, g in groups.items():
            b = g["buckets"]
            where = f"{f.name}{dict(base)}"
            if not b or b[-1][0] != math.inf:
                raise ParseError(f"{where}: the last bucket is not le=\"+Inf\"")
            if any(b[i][0] >= b[i + 1][0] for i in range(len(b) - 1)):
                raise ParseError(f"{where}: le does not increase")
            if any(b[i][1] > b[i + 1][1] for i in range(len(b) - 1)):
                raise ParseError(f"{where}: buckets are not cumulative: {b}")
            if g["count"] is None or g["count"] != b[-1][1]:
                raise ParseError(f"{where}: _count {g['count']} != +Inf bucket {b[-1][1]}")
            if g["sum"] is None:
                raise ParseError(f"{where}: no _sum")
            checked += 1
    return checked


def samples_of(families):
    """{(sample name, frozenset(labels)): value} over every family."""
    return {(n, ls): v for f in families.values() for n, ls, v in f.samples}


def parse_lines(text):
    """The `dotproxyctl stats` text: NAME{LABELS}=VALUE lines ->
    {(name, frozenset(labels)): value}; every line must parse, none twice."""
    out = {}
    if text and not text.endswith("\n"):
        raise ParseError("the text does not end with a line feed")
    for n, line in enumerate(text.splitlines(), 1):
        name, labels, value = parse_sample(line, f"line {n}", sep="=")
        if (name, labels) in out:
            raise ParseError(f"line {n}: {line!r} given twice")
        out[(name, labels)] = value
    return out


def http_get(port, request=None, *, timeout=5.0, host="127.0.0.1"):
    """Send `request` (default: GET /metrics), read to EOF; (status, headers, body)."""
    if request is None:
        request = b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n"
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no end of the response head in {data[:200]!r}"
    lines = head.decode("ascii").split("\r\n")
    version, status, _ = lines[0].split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(": ")
        headers[k.lower()] = v
    assert int(headers["content-length"]) == len(body)
    return int(status), headers, body
