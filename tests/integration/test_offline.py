"""Fast, quiet failure when an upstream is unreachable (a network that drops
port 853 silently: hotel Wi-Fi, captive portals, some firewalls).

The black hole is a listening socket whose accept queue is full: Linux then
drops further SYNs, so a connect to it neither completes nor fails.
"""

import socket
import time

import dns.rcode
import pytest

from dotproxy_proc import upstream_arg
from netutil import ede_codes, free_port


class BlackHole:
    """A TCP port on 127.0.0.1 that swallows SYNs: never accepted, never refused."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers = []
        # Fill the accept queue (backlog 0 holds one, sometimes two).
        for _ in range(4):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(s)
        time.sleep(0.2)
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", self.port))
            raise RuntimeError("the black hole accepted a connection")
        except socket.timeout:
            pass  # what we want: the SYN was dropped
        finally:
            probe.close()

    def spec(self):
        return f"127.0.0.1@{self.port}#dns.example.test"

    def close(self):
        for s in self.fillers:
            s.close()
        self.listener.close()


@pytest.fixture
def black_hole():
    bh = BlackHole()
    yield bh
    bh.close()


def timed_udp(p, name, timeout=6):
    start = time.monotonic()
    reply = p.udp(name, use_edns=0, timeout=timeout)
    return reply, time.monotonic() - start


@pytest.mark.time_limit(30)
def test_only_upstream_black_holed_answers_at_once_after_detection(black_hole, dotproxy):
    p = dotproxy([black_hole.spec()], extra_args=["--cache-size", "0"])
    first, secs = timed_udp(p, "first.example.")
    assert first.rcode() == dns.rcode.SERVFAIL
    # A connect that does not complete is given up well before the 4 s timeout.
    assert secs < 2.0, secs
    t0 = time.monotonic()
    worst = 0.0
    i = 0
    while time.monotonic() - t0 < 6:
        reply, secs = timed_udp(p, f"q{i}.example.")
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert ede_codes(reply) in ([22], [23])
        if time.monotonic() - t0 > 5 - 1.5:  # 5 s after the first query
            worst = max(worst, secs)
        i += 1
        time.sleep(0.05)
    assert worst < 0.3, worst


@pytest.mark.time_limit(30)
def test_black_holed_first_upstream_costs_nothing_after_its_detection(black_hole,
                                                                      fake_upstream, dotproxy):
    good = fake_upstream()
    p = dotproxy([black_hole.spec(), good], extra_args=["--cache-size", "0",
                                                        "--policy", "failover"], verbose=1)
    first, secs = timed_udp(p, "first.example.")
    assert first.rcode() == dns.rcode.NOERROR  # hedged to the good one
    assert p.wait_log(r"is down", timeout=3), p.log()
    for i in range(20):
        reply, secs = timed_udp(p, f"after{i}.example.")
        assert reply.rcode() == dns.rcode.NOERROR, i
        assert secs < 0.3, (i, secs)
        time.sleep(0.05)


@pytest.mark.time_limit(30)
def test_upstream_back_is_used_within_a_second_while_queries_arrive(fake_upstream, dotproxy):
    port = free_port()
    up = fake_upstream(port=port, start=False)
    p = dotproxy([f"127.0.0.1@{port}#dns.example.test"], extra_args=["--cache-size", "0"])
    reply, _ = timed_udp(p, "early.example.")
    assert reply.rcode() == dns.rcode.SERVFAIL
    for i in range(15):  # down for three seconds, asked all along: answered at once
        reply, secs = timed_udp(p, f"down{i}.example.")
        assert reply.rcode() == dns.rcode.SERVFAIL and secs < 0.3, (i, secs)
        time.sleep(0.2)
    up.start()
    back = time.monotonic()
    i = 0
    while True:
        reply, _ = timed_udp(p, f"back{i}.example.")
        if reply.rcode() == dns.rcode.NOERROR:
            break
        assert time.monotonic() - back < 1.5, "not used within a second of coming back"
        i += 1
        time.sleep(0.05)


@pytest.mark.time_limit(30)
def test_a_blocked_853_costs_one_detection_when_doh_is_there_too(black_hole, fake_doh,
                                                                 dotproxy):
    # The defaults' shape: a provider over DoT (here black-holed, as on a
    # network that drops port 853) and over DoH, with the default policy.
    doh = fake_doh()
    p = dotproxy([black_hole.spec(), f"https://127.0.0.1:{doh.port}/dns-query#dns.example.test"],
                 extra_args=["--cache-size", "0"])
    first, secs = timed_udp(p, "first.example.")
    assert first.rcode() == dns.rcode.NOERROR  # hedged to DoH
    assert secs < 1.5, secs
    assert p.wait_log(r"is down: cannot connect: no answer within 1000 ms", timeout=3), p.log()
    for i in range(20):
        reply, secs = timed_udp(p, f"after{i}.example.")
        assert reply.rcode() == dns.rcode.NOERROR, i
        assert secs < 0.3, (i, secs)
    assert len(doh.requests) >= 21
