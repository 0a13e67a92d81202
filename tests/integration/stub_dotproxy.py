#!/usr/bin/python3
"""A stand-in for the dotproxy binary, used only by test_fixtures.py.

The fixtures that run dotproxy (start, readiness wait, stats via SIGUSR1,
stop, crash detection) must themselves be tested before the daemon exists
and independently of its bugs. This script speaks just enough of the
command-line contract: it listens on UDP and TCP, forwards each query
over DoT to the first --upstream with dnspython, prints a `stats:` line on
SIGUSR1 and exits 0 on SIGTERM. It is not a model of the real daemon.

Test-only switches: --stub-crash-on QNAME makes it die from SIGSEGV when
it receives that name; --stub-ignore-term makes it ignore SIGTERM.
"""

import argparse
import os
import select
import signal
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dns.flags  # noqa: E402
import dns.message  # noqa: E402
import dns.rcode  # noqa: E402

import netutil  # noqa: E402


class ArgParser(argparse.ArgumentParser):
    def error(self, message):
        # The contract: exit status 2 and a single line on stderr.
        sys.stderr.write(f"dotproxy: {message}\n")
        sys.exit(2)


def parse_upstream(spec):
    addr, _, auth = spec.partition("#")
    host, _, port = addr.partition("@")
    return host, int(port or 853), auth or None


def main():
    p = ArgParser(add_help=False)
    p.add_argument("--listen", action="append", required=True)
    p.add_argument("--upstream", action="append", default=[])
    p.add_argument("--ca-file")
    p.add_argument("-v", action="count", default=0)
    p.add_argument("--log-queries", action="store_true")
    p.add_argument("--timeout", type=int, default=2000)
    p.add_argument("--stub-crash-on")
    p.add_argument("--stub-ignore-term", action="store_true")
    a = p.parse_args()

    stats = {"queries": 0, "answered": 0, "servfail": 0}
    lock = threading.Lock()

    def on_usr1(signum, frame):
        with lock:
            line = " ".join(f"{k}={v}" for k, v in stats.items())
        sys.stderr.write(f"stats: {line}\n")
        sys.stderr.flush()

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGTERM, signal.SIG_IGN if a.stub_ignore_term else
                  (lambda s, f: sys.exit(0)))

    def resolve(wire):
        q = dns.message.from_wire(wire)
        name = q.question[0].name.to_text()
        if a.stub_crash_on and name == a.stub_crash_on:
            os.kill(os.getpid(), signal.SIGSEGV)
        with lock:
            stats["queries"] += 1
        if a.log_queries:
            sys.stderr.write(f"query {name} {q.question[0].rdtype!r}\n")
        try:
            host, port, auth = parse_upstream(a.upstream[0])
            r = netutil.dot_query(port, None, host=host, ca_file=a.ca_file,
                                  server_hostname=auth or host, query=q,
                                  timeout=a.timeout / 1000)
            with lock:
                stats["answered"] += 1
            return r.to_wire(max_size=65535, want_shuffle=False)
        except Exception as e:
            sys.stderr.write(f"upstream failed: {e!r}\n")
            with lock:
                stats["servfail"] += 1
            r = dns.message.make_response(q)
            r.set_rcode(dns.rcode.SERVFAIL)
            return r.to_wire()

    def udp_reply(wire):
        # Truncate like a DNS server must: to the client's EDNS size, else 512.
        ans = resolve(wire)
        q = dns.message.from_wire(wire)
        limit = max(512, q.payload) if q.edns >= 0 else 512
        if len(ans) <= limit:
            return ans
        r = dns.message.from_wire(ans)
        r.answer, r.authority, r.additional = [], [], []
        r.flags |= dns.flags.TC
        return r.to_wire()

    def serve_tcp(conn):
        with conn:
            while True:
                hdr = conn.recv(2, socket.MSG_WAITALL)
                if len(hdr) < 2:
                    return
                wire = conn.recv(int.from_bytes(hdr, "big"), socket.MSG_WAITALL)
                ans = resolve(wire)
                conn.sendall(len(ans).to_bytes(2, "big") + ans)

    socks = []
    for spec in a.listen:
        host, port = spec[1:].split("]:") if spec.startswith("[") else spec.rsplit(":", 1)
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            u = socket.socket(fam, socket.SOCK_DGRAM)
            u.bind((host, int(port)))
            t = socket.socket(fam, socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            t.bind((host, int(port)))
            t.listen(64)
        except OSError as e:
            sys.stderr.write(f"dotproxy: cannot listen on {spec}: {e}\n")
            return 1
        socks += [u, t]
    if a.v:
        sys.stderr.write(f"stub dotproxy listening on {' '.join(a.listen)}\n")

    while True:
        try:
            ready, _, _ = select.select(socks, [], [], 0.5)
        except InterruptedError:
            continue
        for s in ready:
            if s.type == socket.SOCK_DGRAM:
                wire, peer = s.recvfrom(65535)
                s.sendto(udp_reply(wire), peer)
            else:
                conn, _ = s.accept()
                threading.Thread(target=serve_tcp, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
