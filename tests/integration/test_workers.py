"""--workers N: N event loops in N threads, each with its own sockets on the
same addresses (SO_REUSEPORT), upstream connections, cache and share of the
limits.  Worker 0 takes the signals and passes them on."""

import signal
import socket
import time

import dns.message
import dns.rdatatype

from dotproxy_proc import AUTH_NAME
from netutil import make_query, tcp_query

WORKERS = ["--workers", "2", "--cache-size", "0"]
# Source ports, which the kernel spreads over the workers by hash: enough
# that both workers get some (all on one: a chance of 2^-23), few enough
# that neither has the 32 in flight that would open a second connection,
# so "two upstream connections" means "both workers forwarded".
CLIENTS = 24


def ask_from_many_ports(p, names):
    """Each query from its own UDP socket (so its own source port), all sent
    before any answer is read; returns {name: A records}."""
    socks = []
    try:
        for name in names:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(5)
            s.sendto(make_query(name).to_wire(), (p.addr, p.port))
            socks.append((name, s))
        answers = {}
        for name, s in socks:
            reply = dns.message.from_wire(s.recv(4096))
            answers[name] = sorted(str(rr) for rrset in reply.answer for rr in rrset
                                   if rrset.rdtype == dns.rdatatype.A)
        return answers
    finally:
        for _, s in socks:
            s.close()


def test_every_worker_listens_and_forwards_on_its_own_connection(unbound, dotproxy):
    p = dotproxy([unbound], extra_args=WORKERS)
    names = [f"n{i}.example." for i in range(CLIENTS)]
    answers = ask_from_many_ports(p, names)
    assert answers == {n: [f"198.51.100.{i}"] for i, n in enumerate(names)}
    for i in range(8):  # TCP clients too, each a new connection
        assert tcp_query(p.port, "www.example.").answer
    s = p.stats()
    # The counters are summed over the workers ...
    assert s["answers_forwarded"] == CLIENTS + 8, s
    # ... and each worker keeps its own connection.
    assert s["upstream_connects"] == 2, s


def _conf(path, up):
    path.write_text(f"upstream 127.0.0.1@{up.port}#{AUTH_NAME}\nworkers 2\ncache-size 0\n")


def test_sighup_reloads_every_worker(fake_upstream, dotproxy, workdir):
    a, b = fake_upstream(), fake_upstream()
    conf = workdir / "dotproxy.conf"
    _conf(conf, a)
    p = dotproxy([], extra_args=["--config", conf], verbose=1)
    ask_from_many_ports(p, [f"before{i}.example." for i in range(CLIENTS)])
    assert (len(a.queries), len(b.queries)) == (CLIENTS, 0)
    assert a.connections == 2  # one per worker

    _conf(conf, b)
    p.send_signal(signal.SIGHUP)
    assert p.wait_log(r"configuration reloaded"), p.log()
    time.sleep(0.2)  # the other worker reloads on its own loop
    answers = ask_from_many_ports(p, [f"after{i}.example." for i in range(CLIENTS)])
    assert all(v == ["192.0.2.1"] for v in answers.values())
    assert (len(a.queries), len(b.queries)) == (CLIENTS, CLIENTS)
    assert p.log().count("SIGHUP: configuration reloaded") == 1  # said once, not per worker


def test_sigterm_drains_every_worker(fake_upstream, dotproxy):
    up = fake_upstream(delay=0.5)
    p = dotproxy([up], extra_args=WORKERS)
    socks = []
    try:
        for i in range(CLIENTS):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(5)
            s.sendto(make_query(f"slow{i}.example.").to_wire(), (p.addr, p.port))
            socks.append(s)
        deadline = time.monotonic() + 3
        while len(up.queries) < CLIENTS and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(up.queries) == CLIENTS
        assert up.connections == 2  # both workers have queries in flight
        p.send_signal(signal.SIGTERM)
        for s in socks:  # every one answered, by whichever worker holds it
            reply = dns.message.from_wire(s.recv(4096))
            assert reply.answer
    finally:
        for s in socks:
            s.close()
    assert p.proc.wait(timeout=5) == 0
