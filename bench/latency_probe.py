#!/usr/bin/python3
"""Per-query latency over UDP at a fixed query rate, with percentiles.

dnsperf reports only the average latency; this probe reports the whole
distribution. It sends plain DNS queries (no EDNS, RD set, as dnsperf sends
by default) on a fixed schedule, t0 + i/rate, spread over a few UDP sockets,
and matches each answer to its query by socket, ID and question.

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
"""

import argparse
import ctypes
import json
import random
import selectors
import socket
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
    # Answers that arrived later than `timeout` after their query are lost
    # to the client in practice: count them so.
    limit_ns = int(timeout * 1e9)
    late = sum(1 for v in latencies_ns if v > limit_ns)
    latencies_ns = sorted(v for v in latencies_ns if v <= limit_ns)
    for s in socks:
        sel.unregister(s)
        s.close()

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
    a = ap.parse_args()
    if a.rate <= 0 or a.seconds <= 0 or a.sockets < 1:
        ap.error("rate, seconds and sockets must be positive")
    questions = load_questions(a.names)
    result = run(a.server, a.port, a.rate, a.seconds, questions, a.sockets, a.timeout)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
