"""The Prometheus endpoint (--metrics): the exposition format, checked by a
strict parser (promtext.py); the names of the contract; counters that move
with queries and never go back; the answer-time histogram; an upstream that
stalls shown down within seconds; scrapes during a load, nothing lost; and
the HTTP side: only GET /metrics, bounded, timed, --allow."""

import os
import shutil
import socket
import subprocess
import threading
import time

import dns.message
import dns.rcode
import pytest

from dotproxy_proc import REPO_ROOT
from netutil import free_port, make_query
from promtext import check_histograms, http_get, parse_exposition, samples_of

CONTENT_TYPE = "text/plain; version=0.0.4"
AUTH = "dns.example.test"
BOUNDS = [0.00025 * 2 ** i for i in range(16)]  # 0.25 ms .. 8.192 s
# Every label name dotproxy uses: none may carry a client address or a query name.
LABELS = {"frontend", "result", "reason", "rcode", "upstream", "transport", "outcome", "kind",
          "le", "version"}


def scrape(port):
    """GET /metrics, checked strictly: {family: Family}."""
    status, headers, body = http_get(port)
    assert status == 200
    assert headers["content-type"] == CONTENT_TYPE
    assert headers["connection"] == "close"
    families = parse_exposition(body.decode("utf-8"))
    check_histograms(families)
    for name, f in families.items():
        assert name.startswith("dotproxy_"), name
        if f.type == "counter":
            assert name.endswith("_total"), name
        for _, labels, _ in f.samples:
            assert {k for k, _ in labels} <= LABELS, (name, labels)
    return families


def start(dotproxy, upstreams, extra=(), **kw):
    port = free_port(udp=False)
    p = dotproxy(upstreams, ["--metrics", f"127.0.0.1:{port}", *extra], **kw)
    return p, port


def spec(up):
    return f"{up.host}@{up.port}#{AUTH}"


def assert_monotonic(before, after):
    """Every counter sample (histograms included) of `before` is <= in `after`."""
    a = samples_of(after)
    for fname, f in before.items():
        if f.type not in ("counter", "histogram"):
            continue
        for name, labels, value in f.samples:
            if (name, labels) in a:
                assert a[(name, labels)] >= value, (name, dict(labels), value, a[(name, labels)])


# -- the format and the contract -------------------------------------------------------

def test_exposition_is_strict_and_has_the_contract_names(fake_upstream, dotproxy):
    up = fake_upstream()
    p, port = start(dotproxy, [up])
    assert p.udp("one.example.").rcode() == dns.rcode.NOERROR
    assert p.tcp("two.example.").rcode() == dns.rcode.NOERROR
    assert p.udp("one.example.").rcode() == dns.rcode.NOERROR  # cache
    assert p.udp("nx1.example.").rcode() == dns.rcode.NXDOMAIN
    assert p.udp("localhost.").rcode() == dns.rcode.NOERROR
    m = scrape(port)

    q = m["dotproxy_queries_total"]
    assert q.type == "counter"
    assert {ls["frontend"] for ls in q.label_sets()} == {"udp", "tcp", "dot", "doh"}
    assert q.value(frontend="udp") == 4 and q.value(frontend="tcp") == 1
    assert q.value(frontend="dot") == 0 and q.value(frontend="doh") == 0
    assert m["dotproxy_cache_hits_total"].type == "counter"
    assert m["dotproxy_cache_hits_total"].value() == 1

    label = {"upstream": spec(up), "transport": "dot"}
    assert m["dotproxy_upstream_up"].type == "gauge"
    assert m["dotproxy_upstream_up"].label_sets() == [label]
    assert m["dotproxy_upstream_up"].value(**label) == 1
    h = m["dotproxy_upstream_request_duration_seconds"]
    assert h.type == "histogram"
    les = [float(ls["le"]) for ls in h.label_sets("_bucket")]
    assert les[:-1] == pytest.approx(BOUNDS) and les[-1] == float("inf")
    assert {frozenset(ls.items()) for ls in h.label_sets("_count")} == {frozenset(label.items())}
    assert h.value("_count", **label) == 3  # one.example, two.example, nx1.example
    assert 0 < h.value("_sum", **label) < 3 * 4

    # The rest the issue lists.
    r = m["dotproxy_results_total"]
    assert r.value(result="answered") == 3 and r.value(result="cache") == 1
    assert r.value(result="local") == 1
    assert {ls["result"] for ls in r.label_sets()} >= {"answered", "cache", "stale", "local",
                                                      "blocked", "refused", "servfail"}
    assert {ls["reason"] for ls in m["dotproxy_servfail_total"].label_sets()} >= {
        "timeout", "no_upstream", "overload", "shutdown"}
    a = m["dotproxy_answers_total"]
    assert a.value(rcode="NOERROR") == 4 and a.value(rcode="NXDOMAIN") == 1
    assert m["dotproxy_cache_entries"].type == "gauge"
    assert m["dotproxy_cache_entries"].value() == 3
    assert m["dotproxy_cache_bytes"].value() > 0
    assert m["dotproxy_cache_misses_total"].value() == 3
    assert m["dotproxy_queries_in_flight"].value() == 0
    req = m["dotproxy_upstream_requests_total"]
    assert req.value(outcome="answered", **label) == 3
    assert {ls["outcome"] for ls in req.label_sets()} == {"answered", "lost", "cancelled",
                                                         "failed", "closed"}
    opened = m["dotproxy_upstream_connections_opened_total"]
    assert opened.value(reason="demand", **label) >= 1
    assert {ls["reason"] for ls in opened.label_sets()} == {"demand", "busy", "probe"}
    hs = m["dotproxy_upstream_tls_handshakes_total"]
    assert hs.value(kind="full", **label) + hs.value(kind="resumed", **label) >= 1
    assert m["dotproxy_upstream_connections"].value(**label) >= 1
    assert m["dotproxy_upstream_failures"].value(**label) == 0
    assert 0 < m["dotproxy_upstream_srtt_seconds"].value(**label) < 4
    assert m["dotproxy_dnstap_dropped_total"].value() == 0
    assert m["dotproxy_build_info"].value(version=m["dotproxy_build_info"]
                                          .label_sets()[0]["version"]) == 1
    # Every counter of the stats line is in there (cache_hits twice: it is
    # also results{cache}); nothing is named after a query or a client.
    body = http_get(port)[2].decode()
    assert "one.example" not in body and "nx1" not in body


def test_counters_move_with_queries_and_never_go_back(fake_upstream, dotproxy):
    up = fake_upstream()
    p, port = start(dotproxy, [up])
    before = scrape(port)
    for i in range(5):
        assert p.udp(f"m{i}.example.").rcode() == dns.rcode.NOERROR
    for i in range(3):
        assert p.tcp(f"m{i}.example.").rcode() == dns.rcode.NOERROR  # cached
    assert p.udp("nxm.example.").rcode() == dns.rcode.NXDOMAIN
    after = scrape(port)
    assert_monotonic(before, after)

    def delta(family, suffix="", **labels):
        return after[family].value(suffix, **labels) - before[family].value(suffix, **labels)

    label = {"upstream": spec(up), "transport": "dot"}
    assert delta("dotproxy_queries_total", frontend="udp") == 6
    assert delta("dotproxy_queries_total", frontend="tcp") == 3
    assert delta("dotproxy_cache_hits_total") == 3
    assert delta("dotproxy_results_total", result="answered") == 6
    assert delta("dotproxy_answers_total", rcode="NOERROR") == 8
    assert delta("dotproxy_answers_total", rcode="NXDOMAIN") == 1
    assert delta("dotproxy_upstream_requests_total", outcome="answered", **label) == 6
    assert delta("dotproxy_upstream_request_duration_seconds", "_count", **label) == 6
    assert delta("dotproxy_upstream_answers_total") == 6
    assert after["dotproxy_cache_entries"].value() == before["dotproxy_cache_entries"].value() + 6
    # Answers from a near upstream fall in the first buckets: below a second.
    assert delta("dotproxy_upstream_request_duration_seconds", "_bucket", le="1.024",
                 **label) == 6


def test_upstreams_on_one_address_differ_by_port(fake_upstream, dotproxy):
    a, b = fake_upstream(), fake_upstream()
    p, port = start(dotproxy, [a, b], ["--policy", "round-robin"])
    for i in range(4):
        p.udp(f"rr{i}.example.")
    up = scrape(port)["dotproxy_upstream_up"]
    assert sorted(ls["upstream"] for ls in up.label_sets()) == sorted([spec(a), spec(b)])
    assert a.port != b.port


@pytest.mark.time_limit(40)
def test_an_upstream_that_stalls_is_shown_down_within_seconds(fake_upstream, dotproxy):
    bad, good = fake_upstream(), fake_upstream()
    p, port = start(dotproxy, [bad, good], ["--policy", "failover"])
    assert p.udp("first.example.").rcode() == dns.rcode.NOERROR
    m = scrape(port)
    assert m["dotproxy_upstream_up"].value(upstream=spec(bad), transport="dot") == 1
    bad.set(stall=True)
    stalled = time.monotonic()
    shown_down = None
    i = 0
    while time.monotonic() - stalled < 15:
        # Queries keep flowing (each is hedged to the good upstream and answered).
        assert p.udp(f"s{i}.example.").rcode() == dns.rcode.NOERROR
        i += 1
        m = scrape(port)
        if m["dotproxy_upstream_up"].value(upstream=spec(bad), transport="dot") == 0:
            shown_down = time.monotonic() - stalled
            break
        time.sleep(0.05)
    assert shown_down is not None, "the stalled upstream never showed down"
    assert shown_down < 5, shown_down
    assert m["dotproxy_upstream_up"].value(upstream=spec(good), transport="dot") == 1
    lost = m["dotproxy_upstream_requests_total"].value(upstream=spec(bad), transport="dot",
                                                       outcome="lost")
    assert lost >= 1


@pytest.mark.time_limit(180)
def test_200_scrapes_during_5000_queries_lose_nothing(fake_upstream, dotproxy):
    """8 client threads send 5,000 UDP queries (500 names, ten times each) while
    another thread scrapes 200 times; the two are kept interleaved (scrape n
    waits for 25n queries, queries wait for the scrapes to keep up), so every
    scrape sees a daemon under load.  Each scrape must parse strictly and no
    counter may go back; every query must be answered, and the counters must
    add up to what was sent and what the upstream saw."""
    total, n_scrapes, batch = 5000, 200, 25
    up = fake_upstream()
    p, port = start(dotproxy, [up])
    before = scrape(port)
    names = [f"load{i}.example." for i in range(500)]
    cond = threading.Condition()
    state = {"sent": 0, "scrapes": 0, "answered": 0, "bad": [], "scrape_errors": []}

    def next_query():
        with cond:
            while state["sent"] < total and state["sent"] >= (state["scrapes"] + 2) * batch:
                if not cond.wait(10):
                    state["bad"].append("the scraper fell behind")
                    return None
            if state["sent"] >= total:
                return None
            state["sent"] += 1
            cond.notify_all()
            return state["sent"] - 1

    def scraper():
        prev = before
        for n in range(n_scrapes):
            with cond:
                while state["sent"] < n * batch:
                    if not cond.wait(10):
                        state["scrape_errors"].append("the clients fell behind")
                        return
            try:
                cur = scrape(port)
                assert_monotonic(prev, cur)
                prev = cur
            except (AssertionError, OSError) as e:
                state["scrape_errors"].append(repr(e))
            with cond:
                state["scrapes"] += 1
                cond.notify_all()

    def client():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(3)
        try:
            while (i := next_query()) is not None:
                q = make_query(names[i % len(names)], "A")
                sock.sendto(q.to_wire(), ("127.0.0.1", p.port))
                while True:
                    r = dns.message.from_wire(sock.recvfrom(65535)[0])
                    if r.id == q.id:
                        break
                with cond:
                    if r.rcode() == dns.rcode.NOERROR and r.answer:
                        state["answered"] += 1
                    else:
                        state["bad"].append(r.rcode())
        except OSError as e:
            with cond:
                state["bad"].append(repr(e))
        finally:
            sock.close()

    threads = [threading.Thread(target=scraper)] + [threading.Thread(target=client)
                                                    for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
        assert not t.is_alive()
    assert state["scrape_errors"] == [], state["scrape_errors"][:3]
    assert state["scrapes"] == n_scrapes
    assert state["bad"] == [], state["bad"][:5]
    assert state["answered"] == total

    after = scrape(port)
    assert_monotonic(before, after)

    def delta(family, suffix="", **labels):
        return after[family].value(suffix, **labels) - before[family].value(suffix, **labels)

    label = {"upstream": spec(up), "transport": "dot"}
    assert delta("dotproxy_queries_total", frontend="udp") == 5000
    assert sum(after["dotproxy_answers_total"].series()) - \
        sum(before["dotproxy_answers_total"].series()) == 5000
    assert delta("dotproxy_answers_total", rcode="NOERROR") == 5000
    answered = delta("dotproxy_results_total", result="answered")
    cached = delta("dotproxy_results_total", result="cache")
    assert answered + cached == 5000
    assert sum(after["dotproxy_results_total"].series()) - \
        sum(before["dotproxy_results_total"].series()) == 5000
    assert delta("dotproxy_cache_hits_total") == cached
    # Every query the upstream saw was one answer taken, one histogram sample.
    seen = len(up.queries)
    assert delta("dotproxy_upstream_requests_total", outcome="answered", **label) == seen
    assert delta("dotproxy_upstream_request_duration_seconds", "_count", **label) == seen
    assert delta("dotproxy_upstream_answers_total") == seen
    # Each name went upstream at least once; the others waited on it or hit the cache.
    assert 500 <= seen and answered - seen == delta("dotproxy_queries_collapsed_total")
    assert after["dotproxy_queries_in_flight"].value() == 0
    assert after["dotproxy_cache_entries"].value() == 500


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian: prometheus) not installed")
def test_promtool_accepts_the_exposition(fake_upstream, dotproxy):
    """Prometheus's own checker, where it is installed: the format, and its lint
    of names (units, _total, reserved suffixes)."""
    up = fake_upstream()
    p, port = start(dotproxy, [up])
    for i in range(3):
        p.udp(f"pt{i}.example.")
    body = http_get(port)[2]
    r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                       timeout=30)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    assert r.stdout.strip() == b"" and r.stderr.strip() == b"", (r.stdout + r.stderr).decode()


def test_every_metric_is_documented(fake_upstream, dotproxy):
    """README.md and doc/dotproxy.8 name every family GET /metrics serves, every
    label value of the process-wide families, and every counter of the stats:
    line (the one table gives both names)."""
    up = fake_upstream()
    p, port = start(dotproxy, [up])
    p.udp("doc.example.")
    families = scrape(port)
    with open(os.path.join(REPO_ROOT, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(REPO_ROOT, "doc", "dotproxy.8")) as f:
        man = f.read().replace("\\:", "").replace("\\-", "-").replace("\\e", "\\")
    missing = []
    for name, f in families.items():
        for where, text in (("README.md", readme), ("dotproxy.8", man)):
            if name not in text:
                missing.append(f"{name} in {where}")
        for labels in f.label_sets():
            for k, v in labels.items():
                if k in ("upstream", "transport", "le", "version"):
                    continue
                if f'{k}="{v}"' not in readme and f"`{v}`" not in readme:
                    missing.append(f'{name}{{{k}="{v}"}} in README.md')
    for counter in p.stats():
        if f"`{counter}`" not in readme:
            missing.append(f"stats counter {counter} in README.md")
        if counter not in man:
            missing.append(f"stats counter {counter} in dotproxy.8")
    assert missing == []


# -- the HTTP side ------------------------------------------------------------------------

def test_only_get_metrics_is_served(fake_upstream, dotproxy):
    p, port = start(dotproxy, [fake_upstream()])
    assert http_get(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 404
    assert http_get(port, b"GET /metrics/x HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 404
    status, headers, _ = http_get(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n"
                                        b"Content-Length: 3\r\n\r\nabc")
    assert status == 405 and headers["allow"] == "GET"
    assert http_get(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 405
    assert http_get(port, b"GET /metrics HTTP/1.1\r\n\r\n")[0] == 400  # no Host
    assert http_get(port, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\n")[0] == 400
    assert http_get(port, b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n")[0] == 505
    big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 20000 + b"\r\n\r\n"
    assert http_get(port, big)[0] == 413
    # HTTP/1.0, bare LF, a query string: served.
    status, headers, body = http_get(port, b"GET /metrics?x=1 HTTP/1.0\n\n")
    assert status == 200 and headers["content-type"] == CONTENT_TYPE
    parse_exposition(body.decode())
    assert p.udp("still.example.").rcode() == dns.rcode.NOERROR


def test_half_a_request_times_out_and_stalls_nothing(fake_upstream, dotproxy):
    p, port = start(dotproxy, [fake_upstream()])
    slow = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    for s in slow:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHo")
    # Meanwhile DNS and other scrapes are served at once.
    t0 = time.monotonic()
    assert p.udp("during.example.").rcode() == dns.rcode.NOERROR
    scrape(port)
    assert time.monotonic() - t0 < 1
    for s in slow:
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 408 "), data[:60]
        s.close()
    assert 1.5 < time.monotonic() - t0 < 5


def test_connections_beyond_the_cap_are_closed(fake_upstream, dotproxy):
    p, port = start(dotproxy, [fake_upstream()])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(8)]
    time.sleep(0.2)
    extra = socket.create_connection(("127.0.0.1", port), timeout=5)
    extra.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        data = extra.recv(100)
    except ConnectionResetError:  # closed with the request unread
        data = b""
    assert data == b""  # closed without an answer
    extra.close()
    assert p.udp("capped.example.").rcode() == dns.rcode.NOERROR
    for s in idle:
        s.close()
    time.sleep(0.2)
    scrape(port)  # room again


def test_allow_applies(fake_upstream, dotproxy):
    p, port = start(dotproxy, [fake_upstream()], ["--allow", "192.0.2.0/24"])
    status, _, body = http_get(port)
    assert status == 403 and b"--allow" in body


def test_metrics_address_in_use_fails_start_up(fake_upstream, dotproxy):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        p = dotproxy([fake_upstream()], ["--metrics", f"127.0.0.1:{port}"], wait=False)
        p.proc.wait(5)
        assert p.proc.returncode == 1
        assert f"cannot serve metrics on 127.0.0.1:{port}" in p.log()
    finally:
        taken.close()
