"""Plain DNS (udp://IP[:PORT]) upstreams of a --forward-zone: daemon/plain.c.

A real server (unbound serving plain DNS from local data, never recursing)
checks interoperation: answers, NXDOMAIN, truncation and the TCP retry. Our
fake (fake_plain.py) does what a real one does not on demand: truncate every
UDP answer, forge answers (wrong ID, wrong question, another source port)
before the right one, never answer, or refuse TCP. The default upstream is
the DoT unbound, so names outside the zone have somewhere to go.
"""

import concurrent.futures
import os
import re
import signal
import socket
import time

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from dotproxy_proc import run_cli
from fake_upstream import ANSWER_A, BIG_COUNT, POISON_A
from netutil import free_port, wait_udp_dns
from procutil import wait_for
from unbound_dot import UnboundDoT

ZONE = "corp.test."
ZONE_A = "192.0.2.53"
ZONE_RECORDS = [f"www.{ZONE} 300 IN A {ZONE_A}"] + \
    [f"big.{ZONE} 300 IN A 198.51.100.{i}" for i in range(1, BIG_COUNT + 1)]


def plain_spec(server):
    host = f"[{server.host}]" if ":" in server.host else server.host
    return f"udp://{host}:{server.port}"


def zone_args(*servers, zone=ZONE, extra=()):
    """--forward-zone ZONE=udp://... for the servers; no cache, so every query goes out."""
    return ["--cache-size", "0", "--forward-zone",
            f"{zone}=" + ",".join(s if isinstance(s, str) else plain_spec(s) for s in servers),
            *extra]


def a_records(reply):
    return sorted(rr.address for rrset in reply.answer for rr in rrset
                  if rr.rdtype == dns.rdatatype.A)


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class UnboundPlain(UnboundDoT):
    """The private unbound of unbound_dot.py, serving plain DNS on UDP and TCP."""

    def __init__(self, workdir, **kw):
        super().__init__(workdir, "/nonexistent/cert", "/nonexistent/key", **kw)

    def config_text(self):
        return "".join(line for line in super().config_text().splitlines(True)
                       if not line.lstrip().startswith("tls-"))

    def _wait_ready(self, timeout):
        if not wait_udp_dns(self.host, self.port, timeout=timeout,
                            alive=lambda: self.proc.poll() is None):
            raise RuntimeError(f"plain unbound did not answer on {self.host}:{self.port}:\n"
                               f"{self.log_tail()}")
        self.ready_mark = len(self.log())  # past the readiness probes

    def names_asked(self):
        """Every name unbound logged a query for since it was ready, lower case."""
        return [m.group(1).lower() for m in
                re.finditer(r"info: \S+ (\S+) \S+ IN$", self.log()[self.ready_mark:], re.M)]


@pytest.fixture
def unbound_plain(workdir):
    u = UnboundPlain(workdir / "unbound-plain", records=ZONE_RECORDS,
                     extra_conf="  log-queries: yes")
    u.start()
    yield u
    u.stop()


# -- a real server ----------------------------------------------------------------------------

def test_the_zone_is_answered_by_a_real_plain_server(unbound, unbound_plain, dotproxy):
    p = dotproxy([unbound], extra_args=zone_args(unbound_plain))
    assert a_records(p.udp(f"www.{ZONE}")) == [ZONE_A]
    assert a_records(p.tcp(f"WWW.{ZONE.upper()}")) == [ZONE_A]
    assert p.udp(f"nx.{ZONE}").rcode() == dns.rcode.NXDOMAIN
    assert a_records(p.udp("www.example.")) == ["192.0.2.10"]  # the DoT default
    asked = unbound_plain.names_asked()
    assert set(asked) == {f"www.{ZONE}", f"nx.{ZONE}"}, asked


def test_a_truncated_answer_from_a_real_server_is_fetched_over_tcp(unbound, unbound_plain,
                                                                  dotproxy):
    p = dotproxy([unbound], extra_args=zone_args(unbound_plain))
    reply = p.tcp(f"big.{ZONE}")
    assert not reply.flags & dns.flags.TC
    assert len(a_records(reply)) == BIG_COUNT
    # unbound truncated it over UDP (EDNS 1232), then answered over TCP.
    assert unbound_plain.names_asked().count(f"big.{ZONE}") == 2


# -- what reaches the zone's server -------------------------------------------------------------

def test_names_outside_the_zone_never_reach_its_server(unbound, fake_plain, dotproxy):
    f = fake_plain()
    p = dotproxy([unbound], extra_args=zone_args(f))
    inside = [ZONE, f"a.{ZONE}", f"A.B.{ZONE.upper()}"]
    outside = ["www.example.", "test.", f"not{ZONE}", f"x{ZONE}", f"{ZONE}example."]
    for name in inside + outside:
        p.udp(name, timeout=3)
    assert f.names() == {n.lower() for n in inside}


def test_plain_queries_carry_no_keepalive_or_padding(unbound, fake_plain, dotproxy):
    # RFC 7828 §3.2.1: edns-tcp-keepalive never goes over UDP; padding hides
    # nothing in cleartext. The OPT itself (payload size, DO) stays.
    f = fake_plain()
    p = dotproxy([unbound], extra_args=zone_args(f))  # padding is on by default
    assert p.udp(f"www.{ZONE}", use_edns=0, want_dnssec=True).rcode() == dns.rcode.NOERROR
    [q] = [dns.message.from_wire(r.wire) for r in f.received]
    assert q.edns == 0 and q.payload == 1232 and q.ednsflags & dns.flags.DO
    assert [o.otype for o in q.options] == []


def test_each_query_has_its_own_random_source_port_and_id(unbound, fake_plain, dotproxy):
    f = fake_plain()
    p = dotproxy([unbound], extra_args=zone_args(f))
    n = 40
    for i in range(n):
        assert p.udp(f"p{i}.{ZONE}").rcode() == dns.rcode.NOERROR
    got = f.received
    assert len(got) == n
    ports = [r.peer[1] for r in got]
    ids = [r.id for r in got]
    # Random draws from ~28,000 ports and 65,536 IDs: a few repeats at most,
    # no sequence (a port counter would step by one), and a wide spread.
    assert len(set(ports)) >= n - 3, ports
    assert len(set(ids)) >= n - 3, ids
    steps = sum(1 for a, b in zip(ports, ports[1:]) if 0 < b - a <= 2)
    assert steps <= 3, ports
    assert max(ports) - min(ports) > 2000, ports


# -- truncation ---------------------------------------------------------------------------------

def test_a_truncated_udp_answer_is_asked_again_over_tcp(unbound, fake_plain, dotproxy):
    f = fake_plain(truncate=True)
    p = dotproxy([unbound], extra_args=zone_args(f))
    reply = p.tcp(f"big.{ZONE}")
    assert not reply.flags & dns.flags.TC
    assert len(a_records(reply)) == BIG_COUNT
    assert a_records(p.udp(f"small.{ZONE}")) == [ANSWER_A]
    got = [(r.transport, r.name, r.id) for r in f.received]
    big_udp, big_tcp, small_udp, small_tcp = got
    assert big_udp[:2] == ("udp", f"big.{ZONE}") and big_tcp[:2] == ("tcp", f"big.{ZONE}")
    assert big_udp[2] == big_tcp[2]  # the same query: same ID
    assert small_udp[0] == "udp" and small_tcp[0] == "tcp"
    assert f.received[0].wire == f.received[1].wire


@pytest.mark.parametrize("tcp_fault, seconds, asked", [
    # TCP refused: at once.
    ({"tcp": False}, (0, 0.5), ["udp"]),
    # TCP accepted and the query read, no answer: half the timeout, not all of it.
    ({"tcp_stall": True}, (0.4, 0.9), ["udp", "tcp"]),
], ids=["tcp-refused", "tcp-silent"])
def test_tcp_failing_after_truncation_passes_the_truncated_answer_on(
        unbound, fake_plain, dotproxy, tcp_fault, seconds, asked):
    f = fake_plain(truncate=True, **tcp_fault)
    p = dotproxy([unbound], extra_args=zone_args(f, extra=["--timeout", "1000"]))
    start = time.monotonic()
    reply = p.tcp(f"big.{ZONE}", timeout=3)
    assert seconds[0] <= time.monotonic() - start < seconds[1]
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.TC
    assert p.wait_log(r"no answer over TCP after a truncated one .*passing the truncated")
    time.sleep(0.3)
    assert [r.transport for r in f.received] == asked  # asked once: no loop of retries


# -- answers that must never be delivered ---------------------------------------------------

@pytest.mark.parametrize("forgery", ["wrong_id", "wrong_question", "from_elsewhere", "all"])
def test_forged_answers_before_the_right_one_are_never_delivered(unbound, fake_plain, dotproxy,
                                                                 forgery):
    kinds = ["wrong_id", "wrong_question", "from_elsewhere"] if forgery == "all" else [forgery]
    # The right answer comes 50 ms after the forgeries, which go at once.
    f = fake_plain(delay=0.05, **{k: True for k in kinds})
    p = dotproxy([unbound], extra_args=zone_args(f))
    n = 5
    for i in range(n):
        reply = p.udp(f"f{i}.{ZONE}")
        assert a_records(reply) == [ANSWER_A], reply
        assert POISON_A not in str(reply)
    unmatched = p.stats()["upstream_unmatched"]
    # A wrong ID or question is read and dropped (counted); a datagram from
    # another port never reaches the connected socket at all.
    counted = sum(k in kinds for k in ("wrong_id", "wrong_question"))
    assert unmatched == counted * n


# -- no answer, refusals --------------------------------------------------------------------

def test_no_answer_gives_servfail_by_the_deadline(unbound, fake_plain, dotproxy):
    f = fake_plain(stall=True)
    p = dotproxy([unbound], extra_args=zone_args(f, extra=["--timeout", "1000"]))
    start = time.monotonic()
    reply = p.udp(f"x.{ZONE}", timeout=4)
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - start < 1.5
    assert a_records(p.udp("www.example.")) == ["192.0.2.10"]  # the rest is not held up
    # Asked once (its one attempt, never resent into the silence).
    assert [r.name for r in f.received] == [f"x.{ZONE}"]


def test_no_answer_goes_to_the_zones_next_upstream(unbound, fake_plain, dotproxy):
    silent, good = fake_plain(stall=True), fake_plain()
    p = dotproxy([unbound], extra_args=zone_args(silent, good,
                                                 extra=["--policy", "failover"]))
    start = time.monotonic()
    assert a_records(p.udp(f"y.{ZONE}", timeout=4)) == [ANSWER_A]
    assert time.monotonic() - start < 1.5
    assert f"y.{ZONE}" in silent.names() and f"y.{ZONE}" in good.names()


def test_a_refused_port_fails_at_once_and_marks_the_upstream_down(unbound, fake_plain,
                                                                  dotproxy):
    closed = f"udp://127.0.0.1:{free_port(tcp=False)}"  # ICMP port unreachable
    good = fake_plain()
    p = dotproxy([unbound], verbose=1,
                 extra_args=zone_args(closed, good,
                                      extra=["--policy", "failover", "--timeout", "3000"]))
    start = time.monotonic()
    assert a_records(p.udp(f"r1.{ZONE}", timeout=4)) == [ANSWER_A]
    assert time.monotonic() - start < 0.5  # no hedge delay: the refusal is immediate
    assert p.wait_log(r"port unreachable")
    assert p.wait_log(r"upstream udp://127\.0\.0\.1:\d+ is down")
    # Down: the next query goes straight to the zone's other upstream.
    assert a_records(p.udp(f"r2.{ZONE}")) == [ANSWER_A]
    assert [r.name for r in good.received] == [f"r1.{ZONE}", f"r2.{ZONE}"]


def test_a_refused_port_alone_gives_servfail_at_once(unbound, dotproxy):
    closed = f"udp://127.0.0.1:{free_port(tcp=False)}"
    p = dotproxy([unbound], extra_args=zone_args(closed, extra=["--timeout", "3000"]))
    for name in (f"s1.{ZONE}", f"s2.{ZONE}"):
        start = time.monotonic()
        assert p.udp(name, timeout=4).rcode() == dns.rcode.SERVFAIL
        assert time.monotonic() - start < 1.0


def test_a_server_that_goes_away_gives_servfail_at_once(unbound, fake_plain, dotproxy):
    f = fake_plain()
    p = dotproxy([unbound], extra_args=zone_args(f, extra=["--timeout", "3000"]))
    assert a_records(p.udp(f"before.{ZONE}")) == [ANSWER_A]
    f.stop()  # the port closes: ICMP port unreachable from now on
    start = time.monotonic()
    assert p.udp(f"after.{ZONE}", timeout=4).rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - start < 1.0


def test_a_plain_upstream_that_comes_back_is_used_again(unbound, fake_plain, dotproxy):
    # Plain DNS has nothing to probe without a query: once the backoff is
    # over, the probe lets the next query try the upstream again.
    port = free_port()
    good = fake_plain()
    p = dotproxy([unbound], verbose=1,
                 extra_args=zone_args(f"udp://127.0.0.1:{port}", good,
                                      extra=["--policy", "failover"]))
    assert a_records(p.udp(f"b1.{ZONE}")) == [ANSWER_A]
    assert p.wait_log(r"is down")
    back = fake_plain(port=port)
    time.sleep(0.5)  # the first backoff is 250 ms
    assert a_records(p.udp(f"b2.{ZONE}")) == [ANSWER_A]
    assert back.names() == {f"b2.{ZONE}"}
    assert good.names() == {f"b1.{ZONE}"}


def test_queries_in_flight_survive_a_reload(unbound, fake_plain, dotproxy, workdir):
    f = fake_plain(delay=0.4)
    conf = workdir / "dotproxy.conf"
    conf.write_text(f"forward-zone {ZONE}={plain_spec(f)}\ncache-size 0\n")
    p = dotproxy([unbound], extra_args=["--config", conf], verbose=1)
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(p.udp, f"h{i}.{ZONE}", timeout=4) for i in range(5)]
        assert f.wait_queries(5)
        mark = p.log_offset()
        p.send_signal(signal.SIGHUP)
        assert p.wait_log(r"configuration reloaded", since=mark)
        replies = [fut.result() for fut in futures]
    assert all(a_records(r) == [ANSWER_A] for r in replies)
    assert p.stats()["servfail_no_upstream"] == 0


def test_shutdown_with_queries_in_flight(unbound, fake_plain, dotproxy):
    f = fake_plain(stall=True)
    p = dotproxy([unbound], extra_args=zone_args(f, extra=["--timeout", "5000"]))
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(p.udp, f"d{i}.{ZONE}", timeout=4) for i in range(5)]
        assert f.wait_queries(5)
        assert p.stop() == 0  # within the fixture's limit; a leak or crash fails at teardown
        for fut in futures:
            try:
                assert fut.result().rcode() == dns.rcode.SERVFAIL
            except dns.exception.Timeout:
                pass  # a UDP reply may be lost while the process ends


# -- resources ----------------------------------------------------------------------------------

@pytest.mark.parametrize("stall", [False, True], ids=["answered", "unanswered"])
def test_sockets_are_closed_when_queries_end(unbound, fake_plain, dotproxy, stall):
    f = fake_plain(stall=stall)
    p = dotproxy([unbound], extra_args=zone_args(f, extra=["--timeout", "600"]))
    pid = p.proc.pid
    base = fd_count(pid)
    n = 100
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        replies = list(pool.map(lambda i: p.udp(f"c{i}.{ZONE}", timeout=4), range(n)))
    want = dns.rcode.SERVFAIL if stall else dns.rcode.NOERROR
    assert [r.rcode() for r in replies] == [want] * n
    assert wait_for(lambda: fd_count(pid) <= base, 2), (fd_count(pid), base)


# -- configuration --------------------------------------------------------------------------

def test_plain_dns_as_a_default_upstream_exits_2_saying_why(workdir):
    r = run_cli(["--listen", f"127.0.0.1:{free_port()}", "--upstream", "udp://127.0.0.1:53"])
    assert r.returncode == 2
    assert "cleartext" in r.stderr and "--forward-zone" in r.stderr, r.stderr
    conf = workdir / "plain.conf"
    conf.write_text("upstream udp://192.0.2.1\n")
    r = run_cli(["--config", str(conf), "--check-config"])
    assert r.returncode == 2 and "cleartext" in r.stderr, r.stderr


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
def test_an_ipv6_plain_upstream(unbound, fake_plain, dotproxy):
    f = fake_plain(host="::1", truncate=True)
    p = dotproxy([unbound], extra_args=zone_args(f))
    assert a_records(p.udp(f"v6.{ZONE}")) == [ANSWER_A]
    assert len(a_records(p.tcp(f"big.{ZONE}"))) == BIG_COUNT
    assert [r.transport for r in f.received] == ["udp", "tcp", "udp", "tcp"]
