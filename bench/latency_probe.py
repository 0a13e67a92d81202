#!/usr/bin/python3
"""Per-query latency at a fixed query rate, with percentiles: over UDP, or
over one long-lived DoT or DoH connection.

dnsperf reports only the average latency; this probe reports the whole
distribution. It sends DNS queries (no EDNS, RD set, as dnsperf sends by
default) on a fixed schedule, t0 + i/rate, spread over a few UDP sockets,
and matches each answer to its query by socket, ID and question.

--transport dot / doh: the same schedule on one TLS connection, opened (and
verified against --ca-file for --tls-name) before the clock starts and used
for every query; DoT pipelines length-prefixed queries (sequential IDs),
DoH sends one HTTP/2 GET per query (RFC 8484: ID 0, ?dns=base64url) on
streams of that one connection. TLS runs over memory BIOs so that the
bytes come off the socket with recvmsg() and its kernel timestamp: an
answer's time is the arrival of the TCP segment that completed it.

Timing: the send time is read just before sendto(); the receive time is the
kernel's arrival timestamp (SO_TIMESTAMPNS), so the time this script takes to
notice an answer is not part of the latency. Both are CLOCK_REALTIME, the
only clock SO_TIMESTAMPNS offers; a clock step during a run of a few
seconds would show up as an absurd maximum, nothing more.

The schedule is open-loop: a slow answer does not delay the next query (no
coordinated omission). If the script itself falls behind, it sends what is
due at once and reports how late it got ("max_send_lag_ms"), so a run that
did not hold its rate says so.

Output: one JSON object on stdout. Usable alone:
    bench/latency_probe.py --port 5300 --rate 2000 --seconds 5 --names build/bench/queries.txt
    bench/latency_probe.py --transport dot --ca-file build/bench/pki/ca.pem \
        --tls-name serve.example.test --port 8530 --names build/bench/queries.txt
"""

import argparse
import base64
import ctypes
import json
import random
import select
import selectors
import socket
import ssl
import struct
import sys
import time

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
PR_SET_TIMERSLACK = 29

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}


def kernel_rx_ns(ancdata):
    """The kernel's receive time of a datagram (SO_TIMESTAMPNS), from the
    ancillary data of recvmsg(); now, when the kernel gave none."""
    for level, ctype, cdata in ancdata:
        if level == socket.SOL_SOCKET and ctype == SCM_TIMESTAMPNS and len(cdata) >= 16:
            sec, nsec = struct.unpack("qq", cdata[:16])
            return sec * 1_000_000_000 + nsec
    return time.time_ns()


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad label in {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def load_questions(path, limit=None):
    """Read a dnsperf-style data file ("name TYPE" per line) into question sections."""
    questions = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts or parts[0].startswith(";"):
                continue
            qtype = QTYPES[parts[1].upper()] if len(parts) > 1 else 1
            questions.append(encode_name(parts[0]) + struct.pack("!HH", qtype, 1))
            if limit and len(questions) >= limit:
                break
    if not questions:
        raise SystemExit(f"{path}: no queries")
    return questions


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list (p in 0..100)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def precise_sleeps():
    """Let time.sleep() wake on time: the default timer slack (50 us) is a
    tenth of the interval at 2,000 qps."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(1), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: sleeps are a little late, the schedule still holds


def run(host, port, rate, seconds, questions, nsockets=4, timeout=2.0):
    precise_sleeps()
    socks = []
    sel = selectors.DefaultSelector()
    for i in range(nsockets):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.setblocking(False)
        s.connect((host, port))
        socks.append(s)
        sel.register(s, selectors.EVENT_READ, i)

    # pending[sock][id] = (send_ns, question); IDs are sequential per socket,
    # starting at a random point, so an ID is reused only after 65536 queries
    # on that socket (32 s at 2000 qps over 4 sockets, far beyond the timeout).
    pending = [dict() for _ in socks]
    next_id = [random.randrange(65536) for _ in socks]
    latencies_ns = []
    rcodes = {}
    unmatched = 0
    sent = 0
    max_lag_ns = 0
    interval_ns = int(1e9 / rate)
    total = int(rate * seconds)
    cmsg_space = socket.CMSG_SPACE(16)

    def drain(sock_index):
        nonlocal unmatched
        s = socks[sock_index]
        while True:
            try:
                data, anc, _flags, _addr = s.recvmsg(4096, cmsg_space)
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                continue  # ICMP port unreachable from an earlier send
            rx_ns = kernel_rx_ns(anc)
            if len(data) < 12:
                unmatched += 1
                continue
            qid = struct.unpack("!H", data[:2])[0]
            entry = pending[sock_index].get(qid)
            # The question must match too (RFC 5452), not just the ID.
            if entry is None or data[12:12 + len(entry[1])].lower() != entry[1].lower():
                unmatched += 1
                continue
            del pending[sock_index][qid]
            latencies_ns.append(rx_ns - entry[0])
            rc = RCODES.get(data[3] & 0x0F, str(data[3] & 0x0F))
            rcodes[rc] = rcodes.get(rc, 0) + 1

    start_ns = time.time_ns() + 1_000_000
    qi = 0
    while sent < total:
        due_ns = start_ns + sent * interval_ns
        now = time.time_ns()
        if now < due_ns:
            # Collect what arrived (its kernel timestamp is its arrival),
            # then sleep to the due time.  Not select(): epoll's timeout is
            # whole milliseconds, which turned 2,000 evenly spaced queries a
            # second into pairs sent back to back every millisecond.
            for i in range(nsockets):
                drain(i)
            now = time.time_ns()
            if now < due_ns:
                time.sleep((due_ns - now) / 1e9)
            continue
        # Send everything that is due (normally exactly one query).
        while sent < total and start_ns + sent * interval_ns <= now:
            si = sent % nsockets
            qid = next_id[si]
            next_id[si] = (qid + 1) & 0xFFFF
            q = questions[qi]
            qi = (qi + 1) % len(questions)
            msg = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q
            lag = now - (start_ns + sent * interval_ns)
            max_lag_ns = max(max_lag_ns, lag)
            t = time.time_ns()
            try:
                socks[si].send(msg)
            except OSError:
                pass  # counted as lost
            pending[si][qid] = (t, q)
            sent += 1
            now = time.time_ns()
    send_end_ns = time.time_ns()

    # Collect the stragglers, up to the timeout.
    deadline = time.monotonic() + timeout
    while any(pending) and time.monotonic() < deadline:
        for key, _ev in sel.select(max(0.0, deadline - time.monotonic())):
            drain(key.data)
    for s in socks:
        sel.unregister(s)
        s.close()
    return summarize(latencies_ns, rcodes, sent, unmatched, rate, start_ns, send_end_ns,
                     max_lag_ns, timeout)


def summarize(latencies_ns, rcodes, sent, unmatched, rate, start_ns, send_end_ns, max_lag_ns,
              timeout):
    """The probe's JSON result from the raw latencies of one run."""
    # Answers that arrived later than `timeout` after their query are lost
    # to the client in practice: count them so.
    limit_ns = int(timeout * 1e9)
    late = sum(1 for v in latencies_ns if v > limit_ns)
    latencies_ns = sorted(v for v in latencies_ns if v <= limit_ns)
    answered = len(latencies_ns)
    ms = [v / 1e6 for v in latencies_ns]
    duration = (send_end_ns - start_ns) / 1e9
    return {
        "sent": sent,
        "answered": answered,
        "lost": sent - answered,
        "late": late,
        "unmatched": unmatched,
        "rcodes": rcodes,
        "servfail": rcodes.get("SERVFAIL", 0),
        "rate_target": rate,
        "rate_achieved": round(sent / duration, 1) if duration > 0 else None,
        "max_send_lag_ms": round(max_lag_ns / 1e6, 3),
        "avg_ms": round(sum(ms) / answered, 4) if answered else None,
        "min_ms": round(ms[0], 4) if ms else None,
        "p50_ms": round(percentile(ms, 50), 4) if ms else None,
        "p90_ms": round(percentile(ms, 90), 4) if ms else None,
        "p99_ms": round(percentile(ms, 99), 4) if ms else None,
        "p999_ms": round(percentile(ms, 99.9), 4) if ms else None,
        "max_ms": round(ms[-1], 4) if ms else None,
    }


# ----------------------------------------------------------------------------
# DoT and DoH: one TLS connection over memory BIOs, read with kernel timestamps

class StreamClosed(Exception):
    """The server closed the connection (or it broke) during the run."""


class TlsStream:
    """One TCP connection with TLS over memory BIOs.

    Ciphertext is read with recvmsg() so that each read carries the kernel's
    arrival timestamp (SO_TIMESTAMPNS works on TCP too: the time of the last
    segment the read took); plaintext comes out of read_plain() with it.
    """

    def __init__(self, host, port, ca_file, server_name, alpn=None, timeout=5.0):
        ctx = ssl.create_default_context(cafile=ca_file) if ca_file else \
            ssl._create_unverified_context()  # noqa: S323 (a benchmark; verification is optional)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, server_hostname=server_name)
        self.cmsg_space = socket.CMSG_SPACE(16)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                if time.monotonic() > deadline:
                    raise TimeoutError("TLS handshake")
                self.pull()
        self.flush()
        self.sock.setblocking(False)
        self.version, self.alpn = self.tls.version(), self.tls.selected_alpn_protocol()

    def flush(self):
        """Send whatever TLS has produced."""
        data = self.out.read()
        while data:
            try:
                n = self.sock.send(data)
            except BlockingIOError:
                select.select([], [self.sock], [], 1.0)
                continue
            except OSError as e:
                raise StreamClosed(str(e)) from e
            data = data[n:]

    def pull(self):
        """One read of ciphertext into TLS; its kernel timestamp, or None if
        nothing was there (non-blocking)."""
        try:
            data, anc, _flags, _addr = self.sock.recvmsg(65536, self.cmsg_space)
        except (BlockingIOError, socket.timeout):
            return None
        except OSError as e:
            raise StreamClosed(str(e)) from e
        if not data:
            raise StreamClosed("closed by the server")
        self.inc.write(data)
        return kernel_rx_ns(anc)

    def read_plain(self):
        """Everything readable now: (plaintext, kernel time of its last
        segment), or (b"", None)."""
        rx_ns = self.pull()
        if rx_ns is None:
            return b"", None
        chunks = []
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError as e:
                raise StreamClosed("close_notify from the server") from e
            if not chunk:   # EOF (wrap_bio suppresses ragged EOFs: b"")
                raise StreamClosed("closed by the server")
            chunks.append(chunk)
        self.flush()  # TLS 1.3 key updates or alerts, if any
        return b"".join(chunks), rx_ns

    def write(self, data):
        self.tls.write(data)
        self.flush()

    def close(self):
        try:
            self.sock.setblocking(True)
            self.tls.unwrap()
        except (ssl.SSLError, OSError):
            pass
        try:
            self.flush()
        except StreamClosed:
            pass
        self.sock.close()


class DotSession:
    """Pipelined DoT queries on one connection: IDs sequential from a random start."""

    def __init__(self, stream):
        self.stream, self.buf = stream, b""
        self.next_id = random.randrange(65536)
        self.pending = {}   # id -> (send_ns, question)

    def send(self, question):
        qid = self.next_id
        self.next_id = (qid + 1) & 0xFFFF
        msg = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question
        t = time.time_ns()
        self.stream.write(struct.pack("!H", len(msg)) + msg)
        self.pending[qid] = (t, question)

    def receive(self):
        """[(latency_ns or None when unmatched, rcode)] of the answers that
        came; None when nothing was there to read."""
        data, rx_ns = self.stream.read_plain()
        if rx_ns is None:
            return None
        self.buf += data
        out = []
        while len(self.buf) >= 2 and len(self.buf) >= 2 + struct.unpack("!H", self.buf[:2])[0]:
            n = struct.unpack("!H", self.buf[:2])[0]
            msg, self.buf = self.buf[2:2 + n], self.buf[2 + n:]
            if len(msg) < 12:
                out.append((None, None))
                continue
            entry = self.pending.get(struct.unpack("!H", msg[:2])[0])
            if entry is None or msg[12:12 + len(entry[1])].lower() != entry[1].lower():
                out.append((None, None))
                continue
            del self.pending[struct.unpack("!H", msg[:2])[0]]
            out.append((rx_ns - entry[0], msg[3] & 0x0F))
        return out


def h2_frame(ftype, flags, stream_id, payload=b""):
    """An HTTP/2 frame: 24-bit length, type, flags, stream (RFC 9113 4.1)."""
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) \
        + stream_id.to_bytes(4, "big") + payload


def hpack_int(first, nbits, value):
    """An HPACK integer with an N-bit prefix under the bits @first (RFC 7541 5.1)."""
    top = (1 << nbits) - 1
    if value < top:
        return bytes([first | value])
    out, value = [first | top], value - top
    while value >= 128:
        out.append(0x80 | (value & 127))
        value >>= 7
    return bytes(out + [value])


def hpack_literal(name_index, value):
    """"Literal header field without indexing, indexed name", not Huffman-coded."""
    raw = value.encode()
    return hpack_int(0x00, 4, name_index) + hpack_int(0x00, 7, len(raw)) + raw


H2_DATA, H2_HEADERS, H2_RST_STREAM, H2_SETTINGS, H2_PING, H2_GOAWAY = 0, 1, 3, 4, 6, 7
H2_END_STREAM, H2_ACK, H2_END_HEADERS, H2_PADDED = 0x1, 0x1, 0x4, 0x8
H2_MAX_WINDOW = 2**31 - 1


class DohSession:
    """DoH (RFC 8484) GETs on one HTTP/2 connection, one stream per query.

    A minimal HTTP/2 client of our own: python3-h2 spent ~0.5 ms of CPU per
    request, the whole budget at 2,000 queries/s, and the probe fell behind
    its schedule. Requests are one HEADERS frame each (static-table HPACK,
    no Huffman, nothing indexed); answers are read from the DATA frames of
    each stream up to END_STREAM, the server's header blocks are skipped
    (the DNS answer tells success). Flow control is opened to the maximum
    at the start (SETTINGS_INITIAL_WINDOW_SIZE and a connection
    WINDOW_UPDATE), enough for any run here. SETTINGS and PINGs are
    acknowledged.

    The server limits the streams open at once (SETTINGS_MAX_CONCURRENT_
    STREAMS, often 100). A query due while that many are open waits in
    `backlog` for a stream to close, and its latency counts from the time it
    was due, not from when it could go (the schedule stays open-loop);
    `waited` counts them.
    """

    def __init__(self, stream, authority, path):
        self.stream, self.path = stream, path
        self.head = b"\x82\x87" + hpack_literal(1, authority)   # GET, https, :authority
        self.accept = hpack_literal(19, "application/dns-message")
        self.next_sid = 1
        self.max_streams = None          # unlimited until the server's SETTINGS
        self.pending = {}                # stream id -> (send_ns, question)
        self.bodies = {}
        self.buf = b""
        self.backlog = []                # (due_ns, question) waiting for a free stream
        self.waited = 0
        settings = struct.pack("!HI", 0x2, 0) + struct.pack("!HI", 0x4, H2_MAX_WINDOW)
        self.stream.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                          + h2_frame(H2_SETTINGS, 0, 0, settings)
                          + h2_frame(8, 0, 0, struct.pack("!I", H2_MAX_WINDOW - 65535)))

    def stream_free(self):
        return self.max_streams is None or len(self.pending) < self.max_streams

    def send(self, question, due_ns=None):
        if self.backlog or not self.stream_free():
            self.backlog.append((due_ns or time.time_ns(), question))
            self.waited += 1
            return
        self._send(question)

    def _send(self, question, due_ns=None):
        msg = struct.pack("!HHHHHH", 0, 0x0100, 1, 0, 0, 0) + question
        dns = base64.urlsafe_b64encode(msg).rstrip(b"=").decode()
        sid = self.next_sid
        self.next_sid += 2
        block = self.head + hpack_literal(4, f"{self.path}?dns={dns}") + self.accept
        data = h2_frame(H2_HEADERS, H2_END_STREAM | H2_END_HEADERS, sid, block)
        t = due_ns or time.time_ns()
        self.stream.write(data)
        self.pending[sid] = (t, question)

    def receive(self):
        """As DotSession.receive()."""
        data, rx_ns = self.stream.read_plain()
        if rx_ns is None:
            return None
        self.buf += data
        out, reply = [], b""
        buf, off = self.buf, 0
        while len(buf) - off >= 9:
            length = int.from_bytes(buf[off:off + 3], "big")
            if len(buf) - off < 9 + length:
                break
            ftype, flags = buf[off + 3], buf[off + 4]
            sid = int.from_bytes(buf[off + 5:off + 9], "big") & 0x7FFFFFFF
            payload = buf[off + 9:off + 9 + length]
            off += 9 + length
            if ftype == H2_DATA:
                if flags & H2_PADDED and payload:
                    payload = payload[1:len(payload) - payload[0]]
                self.bodies[sid] = self.bodies.get(sid, b"") + payload
            elif ftype == H2_SETTINGS and not flags & H2_ACK:
                for i in range(0, len(payload) - 5, 6):
                    ident, value = struct.unpack("!HI", payload[i:i + 6])
                    if ident == 0x3:
                        self.max_streams = value
                reply += h2_frame(H2_SETTINGS, H2_ACK, 0)
            elif ftype == H2_PING and not flags & H2_ACK:
                reply += h2_frame(H2_PING, H2_ACK, 0, payload)
            elif ftype == H2_GOAWAY:
                raise StreamClosed("GOAWAY from the server")
            elif ftype == H2_RST_STREAM:
                self.pending.pop(sid, None)   # lost
                self.bodies.pop(sid, None)
            if ftype in (H2_DATA, H2_HEADERS) and flags & H2_END_STREAM and sid:
                body = self.bodies.pop(sid, b"")
                entry = self.pending.pop(sid, None)
                if entry is None or len(body) < 12 or \
                        body[12:12 + len(entry[1])].lower() != entry[1].lower():
                    out.append((None, None))
                    continue
                out.append((rx_ns - entry[0], body[3] & 0x0F))
        self.buf = buf[off:]
        if reply:
            self.stream.write(reply)
        while self.backlog and self.stream_free():
            due_ns, question = self.backlog.pop(0)
            self._send(question, due_ns)
        return out


def run_stream(host, port, rate, seconds, questions, transport, ca_file=None,
               server_name=None, path="/dns-query", timeout=2.0):
    """The fixed-rate schedule over one DoT or DoH connection (see the top
    of this file); the same JSON fields as run(), plus the TLS version."""
    precise_sleeps()
    stream = TlsStream(host, port, ca_file, server_name,
                       alpn=["h2"] if transport == "doh" else None)
    sess = DotSession(stream) if transport == "dot" else \
        DohSession(stream, server_name or host, path)
    latencies_ns, rcodes = [], {}
    unmatched = sent = max_lag_ns = 0
    interval_ns = int(1e9 / rate)
    total = int(rate * seconds)
    closed = None

    def collect():
        nonlocal unmatched
        while True:
            got = sess.receive()
            if got is None:
                return
            for lat, rc in got:
                if lat is None:
                    unmatched += 1
                    continue
                latencies_ns.append(lat)
                name = RCODES.get(rc, str(rc))
                rcodes[name] = rcodes.get(name, 0) + 1

    start_ns = time.time_ns() + 1_000_000
    qi = 0
    try:
        while sent < total:
            due_ns = start_ns + sent * interval_ns
            now = time.time_ns()
            if now < due_ns:
                collect()
                now = time.time_ns()
                if now < due_ns:
                    time.sleep((due_ns - now) / 1e9)
                continue
            while sent < total and start_ns + sent * interval_ns <= now:
                due = start_ns + sent * interval_ns
                max_lag_ns = max(max_lag_ns, now - due)
                if transport == "doh":
                    sess.send(questions[qi], due)
                else:
                    sess.send(questions[qi])
                qi = (qi + 1) % len(questions)
                sent += 1
                now = time.time_ns()
        send_end_ns = time.time_ns()
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(stream.sock, selectors.EVENT_READ)
        while (sess.pending or getattr(sess, "backlog", None)) and time.monotonic() < deadline:
            if sel.select(max(0.0, deadline - time.monotonic())):
                collect()
        sel.close()
    except StreamClosed as e:
        send_end_ns = time.time_ns()
        closed = str(e)
    stream.close()
    r = summarize(latencies_ns, rcodes, sent, unmatched, rate, start_ns, send_end_ns,
                  max_lag_ns, timeout)
    r["transport"], r["tls_version"], r["alpn"] = transport, stream.version, stream.alpn
    if transport == "doh":
        # Queries that waited for a free HTTP/2 stream, and the server's limit.
        r["stream_waits"] = sess.waited
        r["max_streams"] = sess.max_streams
    if closed:
        r["closed"] = closed
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, default=2000.0, help="queries per second")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--names", required=True, help="dnsperf-style data file")
    ap.add_argument("--sockets", type=int, default=4, help="UDP sockets (source ports)")
    ap.add_argument("--timeout", type=float, default=2.0,
                    help="an answer later than this counts as lost")
    ap.add_argument("--transport", choices=["udp", "dot", "doh"], default="udp",
                    help="udp (default), or one long-lived DoT or DoH connection")
    ap.add_argument("--ca-file", help="DoT/DoH: verify the server against this CA "
                    "(default: no verification)")
    ap.add_argument("--tls-name", help="DoT/DoH: SNI and the name to verify "
                    "(default: none; DoH :authority is then --server)")
    ap.add_argument("--path", default="/dns-query", help="DoH: the URI path")
    a = ap.parse_args()
    if a.rate <= 0 or a.seconds <= 0 or a.sockets < 1:
        ap.error("rate, seconds and sockets must be positive")
    questions = load_questions(a.names)
    if a.transport == "udp":
        result = run(a.server, a.port, a.rate, a.seconds, questions, a.sockets, a.timeout)
    else:
        result = run_stream(a.server, a.port, a.rate, a.seconds, questions, a.transport,
                            a.ca_file, a.tls_name, a.path, a.timeout)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
