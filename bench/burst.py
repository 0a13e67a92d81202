#!/usr/bin/python3
"""A burst of UDP DNS queries, then the fraction answered.

Sends COUNT plain DNS queries (A, RD set, no EDNS; default 20,000) to
HOST:PORT, spread evenly over WINDOW milliseconds (default 40 ms: 500k
queries/s), from a few UDP sockets; every query has its own ID, and the
names are the benchmark's zone, n0 ... n19999.bench.example. (wrapping
around beyond 20,000). Then it collects answers until SILENCE seconds pass
without one (default 2 s), every query is answered, or MAX_WAIT seconds
have passed since the first query (default 10 s); an answer counts when its
ID, its socket and its question match a query.

Sending fast enough takes care. Every datagram is built beforehand; the
sockets are connect()ed and non-blocking; the send loop spins on the clock
and sends, per socket, everything that is due in one sendmmsg(2) call
(through ctypes: Python's socket module has no sendmmsg). With
`--method sendto` it makes one send() call per query instead (what a
script without ctypes could do). Nothing is read until the last query is
out; the client sockets get 64 MiB receive buffers (SO_RCVBUFFORCE when
root) so that no answer is dropped on our side, and the report says if one
was (`client_drops`).

It also reports what explains the figure: the receive buffer size of the
server's UDP socket(s) on PORT (`ss -ulmn`, skmem `rb`), the datagrams the
kernel dropped at them during the burst (skmem `d`), and the loopback
backlog's drops (/proc/net/softnet_stat), which should stay 0.

Output: one JSON object on stdout (a one-line summary on stderr). Usable
alone, against anything listening on loopback:
    bench/burst.py --port 5300
    bench/burst.py --port 5300 --count 20000 --window-ms 40 --method sendto
or from Python: burst.run("127.0.0.1", port) returns the same dict.
"""

import argparse
import ctypes
import errno
import json
import random
import re
import selectors
import socket
import struct
import subprocess
import sys
import time

import latency_probe
from latency_probe import encode_name, kernel_rx_ns

ZONE = "bench.example."
ZONE_NAMES = 20000
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
CLIENT_RCVBUF = 64 << 20
MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


# ----------------------------------------------------------------------------
# sendmmsg(2) through ctypes

class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_Iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


def _libc_sendmmsg():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        f = libc.sendmmsg
    except (OSError, AttributeError):
        return None
    f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    f.restype = ctypes.c_int
    return f


class _Batch:
    """One socket's datagrams as an mmsghdr array (connected socket: no
    address), so that any run of them goes out in one sendmmsg call."""

    def __init__(self, packets):
        n = len(packets)
        self.bufs = [ctypes.create_string_buffer(p, len(p)) for p in packets]
        self.iovs = (_Iovec * max(1, n))()
        self.msgs = (_Mmsghdr * max(1, n))()
        for i, b in enumerate(self.bufs):
            self.iovs[i].iov_base = ctypes.addressof(b)
            self.iovs[i].iov_len = len(packets[i])
            self.msgs[i].msg_hdr.msg_iov = ctypes.pointer(self.iovs[i])
            self.msgs[i].msg_hdr.msg_iovlen = 1
        self.base = ctypes.addressof(self.msgs)
        self.size = ctypes.sizeof(_Mmsghdr)


# ----------------------------------------------------------------------------
# What the kernel says about the server's socket

def udp_listeners(port):
    """skmem of the UDP socket(s) bound to local port @port (`ss -ulmn`):
    a list of dicts with r (bytes queued), rb (receive buffer), d (drops)."""
    try:
        r = subprocess.run(["ss", "-uamnH", f"sport = :{port}"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return []
    out = []
    for m in re.finditer(r"skmem:\(([^)]*)\)", r.stdout.decode()):
        fields = dict(re.findall(r"([a-z_]+)(\d+)", m.group(1)))
        out.append({k: int(fields[k]) for k in ("r", "rb", "d") if k in fields})
    return out


def bytes_per_query():
    """What one small query costs of a UDP receive buffer on loopback (the
    skb's truesize, not the 38 bytes of DNS): queue 8 to a socket of our own
    and read its queue (ss skmem r). ~832 on Linux 6.x x86-64."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as r, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        r.bind(("127.0.0.1", 0))
        q = struct.pack("!HHHHHH", 0, 0x0100, 1, 0, 0, 0) \
            + encode_name(f"n19999.{ZONE}") + struct.pack("!HH", 1, 1)
        for _ in range(8):
            s.sendto(q, r.getsockname())
        mem = udp_listeners(r.getsockname()[1])
    return mem[0]["r"] // 8 if mem and mem[0].get("r") else None


def sysctl(name):
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def softnet_drops():
    """Packets dropped because a CPU's input backlog was full (all CPUs)."""
    try:
        with open("/proc/net/softnet_stat") as f:
            return sum(int(line.split()[1], 16) for line in f if line.strip())
    except (OSError, ValueError, IndexError):
        return None


def _own_drops(ports):
    """Drops at our own client sockets (/proc/net/udp, last column)."""
    total = 0
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                p = line.split()
                if int(p[1].split(":")[1], 16) in ports:
                    total += int(p[-1])
    except (OSError, ValueError, IndexError):
        return None
    return total


# ----------------------------------------------------------------------------
# The burst

def build(count, nsockets):
    """(packets per socket, expected[qid] = (socket, question)).

    Query i goes out on socket i % nsockets, with ID (start + i) mod 65536
    (every ID once) and name n(i mod 20000).bench.example."""
    if not 0 < count <= 65536:
        raise ValueError("count must be 1..65536 (one ID per query)")
    start = random.randrange(65536)
    per_socket = [[] for _ in range(nsockets)]
    expected = {}
    for i in range(count):
        qid = (start + i) & 0xFFFF
        question = encode_name(f"n{i % ZONE_NAMES}.{ZONE}") + struct.pack("!HH", 1, 1)
        per_socket[i % nsockets].append(struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
                                        + question)
        expected[qid] = (i % nsockets, question)
    return per_socket, expected


def run(host, port, count=20000, window_ms=40.0, nsockets=4, silence=2.0, max_wait=10.0,
        method="auto"):
    """Send the burst, collect the answers; returns a dict (see main)."""
    sendmmsg = _libc_sendmmsg() if method in ("auto", "sendmmsg") else None
    if method == "sendmmsg" and sendmmsg is None:
        raise RuntimeError("sendmmsg not available")
    method = "sendmmsg" if sendmmsg else "sendto"
    per_socket, expected = build(count, nsockets)

    socks, sel = [], selectors.DefaultSelector()
    for i in range(nsockets):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, CLIENT_RCVBUF)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
        s.setsockopt(socket.SOL_SOCKET, latency_probe.SO_TIMESTAMPNS, 1)
        s.setblocking(False)
        s.connect((host, port))
        socks.append(s)
        sel.register(s, selectors.EVENT_READ, i)
    client_rcvbuf = socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    own_ports = {s.getsockname()[1] for s in socks}
    batches = [_Batch(p) for p in per_socket] if method == "sendmmsg" else None
    fds = [s.fileno() for s in socks]

    listeners0 = udp_listeners(port)
    softnet0 = softnet_drops()
    window_ns = int(window_ms * 1e6)
    sent = [0] * nsockets               # next index to send, per socket
    totals = [len(p) for p in per_socket]
    send_errors = 0
    calls = 0
    # Wall clock, to compare with the kernel's receive timestamps below.
    t0 = time.time_ns()
    give_up = t0 + int(max_wait * 1e9)
    while True:
        now = time.time_ns()
        # Queries due by now (all of them once the window is over).
        due = count if now - t0 >= window_ns else (count * (now - t0)) // window_ns + 1
        progress = False
        for si in range(nsockets):
            # Query i is on socket i % n: socket si has ceil((due - si) / n) due.
            want = min(totals[si], max(0, (due - si + nsockets - 1) // nsockets))
            k = sent[si]
            if k >= want:
                continue
            if batches is not None:
                b = batches[si]
                calls += 1
                r = sendmmsg(fds[si], b.base + k * b.size, want - k, MSG_DONTWAIT)
                if r > 0:
                    sent[si] = k + r
                    progress = True
                elif ctypes.get_errno() not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                    send_errors += 1
                    sent[si] = k + 1          # skip it: counted as unanswered
            else:
                s, pkts = socks[si], per_socket[si]
                while k < want:
                    calls += 1
                    try:
                        s.send(pkts[k])
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        send_errors += 1
                    k += 1
                progress = progress or k > sent[si]
                sent[si] = k
        if sum(sent) >= count:
            break
        if not progress and now > give_up:
            break
    t_sent = time.time_ns()
    total_sent = sum(sent)

    # Collect.
    cmsg_space = socket.CMSG_SPACE(16)
    rcodes = {}
    answered = unmatched = dupes = 0
    seen = set()
    first_ns = last_ns = None
    in_window = 0                       # answers that arrived while we were still sending
    last_rx = time.monotonic()
    deadline = time.monotonic() + max(0.0, (give_up - time.time_ns()) / 1e9)
    while answered < total_sent:
        now = time.monotonic()
        if now >= deadline or now - last_rx >= silence:
            break
        events = sel.select(min(deadline - now, silence - (now - last_rx)))
        for key, _ in events:
            s, si = key.fileobj, key.data
            while True:
                try:
                    data, anc, _flags, _addr = s.recvmsg(4096, cmsg_space)
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionRefusedError:
                    continue
                last_rx = time.monotonic()
                rx_ns = kernel_rx_ns(anc)
                if len(data) < 12:
                    unmatched += 1
                    continue
                qid = struct.unpack("!H", data[:2])[0]
                exp = expected.get(qid)
                if exp is None or exp[0] != si or \
                        data[12:12 + len(exp[1])].lower() != exp[1].lower():
                    unmatched += 1
                    continue
                if qid in seen:
                    dupes += 1
                    continue
                seen.add(qid)
                answered += 1
                rc = RCODES.get(data[3] & 0x0F, str(data[3] & 0x0F))
                rcodes[rc] = rcodes.get(rc, 0) + 1
                first_ns = rx_ns if first_ns is None else min(first_ns, rx_ns)
                last_ns = rx_ns if last_ns is None else max(last_ns, rx_ns)
                if rx_ns <= t_sent:
                    in_window += 1
    listeners1 = udp_listeners(port)
    softnet1 = softnet_drops()
    own = _own_drops(own_ports)
    for s in socks:
        sel.unregister(s)
        s.close()

    send_s = (t_sent - t0) / 1e9
    drops = None
    if listeners0 and len(listeners0) == len(listeners1):
        drops = sum(b.get("d", 0) - a.get("d", 0) for a, b in zip(listeners0, listeners1))
    return {
        "count": count,
        "sent": total_sent,
        "send_errors": send_errors,
        "method": method,
        "send_calls": calls,
        "sockets": nsockets,
        "window_ms": window_ms,
        "send_ms": round(send_s * 1000, 2),
        "send_rate_qps": round(total_sent / send_s) if send_s > 0 else None,
        "answered": answered,
        "answered_pct": round(100.0 * answered / count, 2),
        "rcodes": rcodes,
        "noerror": rcodes.get("NOERROR", 0),
        "servfail": rcodes.get("SERVFAIL", 0),
        "unmatched": unmatched,
        "duplicates": dupes,
        "answered_while_sending": in_window,
        "first_answer_ms": round((first_ns - t0) / 1e6, 2) if first_ns else None,
        "last_answer_ms": round((last_ns - t0) / 1e6, 2) if last_ns else None,
        "collect_s": round((time.time_ns() - t_sent) / 1e9, 2),
        "listener_rcvbuf": [x.get("rb") for x in listeners1 or listeners0] or None,
        "listener_drops": drops,
        "softnet_drops": softnet1 - softnet0 if softnet0 is not None and softnet1 is not None
        else None,
        "client_rcvbuf": client_rcvbuf,
        "client_drops": own,
    }


def summary(r):
    rb = r["listener_rcvbuf"]
    rb = "?" if not rb else "/".join(str(x) for x in rb)
    return (f"answered {r['answered']}/{r['count']} ({r['answered_pct']:.1f}%): "
            f"NOERROR {r['noerror']}, SERVFAIL {r['servfail']}"
            + "".join(f", {k} {v}" for k, v in r["rcodes"].items()
                      if k not in ("NOERROR", "SERVFAIL"))
            + f"; sent in {r['send_ms']} ms ({r['send_rate_qps'] or 0:,} q/s, {r['method']}, "
            f"{r['send_calls']} calls); last answer at {r['last_answer_ms']} ms; "
            f"listener rb {rb}, drops {r['listener_drops']}; softnet drops {r['softnet_drops']}; "
            f"client drops {r['client_drops']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=20000, help="queries in the burst (≤ 65536)")
    ap.add_argument("--window-ms", type=float, default=40.0,
                    help="spread the queries evenly over this many ms (0: as fast as possible)")
    ap.add_argument("--sockets", type=int, default=4, help="UDP sockets (source ports)")
    ap.add_argument("--silence", type=float, default=2.0,
                    help="stop collecting after this many seconds without an answer")
    ap.add_argument("--max-wait", type=float, default=10.0,
                    help="stop collecting this many seconds after the first query")
    ap.add_argument("--method", choices=["auto", "sendmmsg", "sendto"], default="auto")
    a = ap.parse_args()
    if not 0 < a.count <= 65536 or a.sockets < 1 or a.window_ms < 0:
        ap.error("--count must be 1..65536, --sockets ≥ 1, --window-ms ≥ 0")
    r = run(a.server, a.port, a.count, a.window_ms, a.sockets, a.silence, a.max_wait, a.method)
    r["bytes_per_query"] = bytes_per_query()
    r["rmem_default"] = sysctl("net.core.rmem_default")
    json.dump(r, sys.stdout)
    sys.stdout.write("\n")
    sys.stderr.write(summary(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
