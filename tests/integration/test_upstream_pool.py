"""The upstream pool: policies, health and probes, hedging, silent connections,
connection pools, SPKI pins, privacy profiles, session resumption, idle
handling, configuration reload and network changes.

Everything runs against in-process fake upstreams on loopback. Timing
assertions use the daemon's documented constants (daemon/upstream.c):
hedge after 400 ms before any RTT sample, a connection silent for 1 s is
replaced, probes back off from 250 ms doubling to 4 s.
"""

import os
import re
import signal
import socket
import statistics
import subprocess
import time

import dns.edns
import dns.message
import dns.rcode
import pytest

from dotproxy_proc import AUTH_NAME, binary_path, run_cli
from netutil import ede_codes, free_port, make_query
from pki import PKI
from procutil import wait_for


# -- helpers ---------------------------------------------------------------------------



def a_records(reply):
    return sorted(str(rr) for rrset in reply.answer for rr in rrset)


def label(up, auth_name=AUTH_NAME):
    """How dotproxy names an upstream in its log."""
    return f"127.0.0.1@{up.port}#{auth_name}"


def spec(up, *pins, auth_name=AUTH_NAME):
    """An --upstream value for a fake upstream, with optional SPKI pins."""
    return label(up, auth_name) + "".join("^" + p for p in pins)


class UdpClient:
    """One UDP socket sending many queries (distinct IDs) to the proxy.

    Cheaper and more predictable than a thread per query: a burst of N
    queries really is N queries in flight at once.
    """

    def __init__(self, proxy):
        self.addr = (proxy.addr, proxy.port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.next_id = 1

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _query(self, name, **kw):
        q = make_query(name, "A", id=self.next_id, **kw)
        self.next_id = (self.next_id + 1) % 65536 or 1
        return q

    def send(self, names, **kw):
        """Send one query per name; return {id: (name, sent_time)}."""
        out = {}
        for name in names:
            q = self._query(name, **kw)
            self.sock.sendto(q.to_wire(), self.addr)
            out[q.id] = (name, time.monotonic())
        return out

    def collect(self, sent, timeout):
        """Replies to `sent` (from send()) by name: {name: (reply, seconds)}.
        Names with no reply within `timeout` are missing from the result."""
        got = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(sent):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65535)
            except socket.timeout:
                break
            now = time.monotonic()
            reply = dns.message.from_wire(data)
            if reply.id in sent:
                name, t0 = sent[reply.id]
                if str(reply.question[0].name) == name and name not in got:
                    got[name] = (reply, now - t0)
        return got

    def burst(self, names, timeout=5.0, **kw):
        return self.collect(self.send(names, **kw), timeout)

    def ask(self, name, timeout=5.0, **kw):
        """One query, waited for: (reply, seconds); AssertionError if none."""
        got = self.burst([name], timeout, **kw)
        assert name in got, f"no reply to {name} within {timeout} s"
        return got[name]


def report(capsys, text):
    """Print a measured figure so it shows even in a quiet (-q) run."""
    with capsys.disabled():
        print(f"\n[figure] {text}")


# -- 1. policies -----------------------------------------------------------------------

def test_failover_policy_sends_everything_to_the_first(fake_upstream, dotproxy):
    a, b = fake_upstream(), fake_upstream()
    p = dotproxy([a, b], extra_args=["--policy", "failover"])
    with UdpClient(p) as c:
        for i in range(20):
            reply, _ = c.ask(f"fo{i}.example.")
            assert a_records(reply) == ["192.0.2.1"]
    assert len(a.queries) == 20
    assert len(b.queries) == 0


def test_round_robin_policy_spreads_queries(fake_upstream, dotproxy):
    a, b = fake_upstream(), fake_upstream()
    p = dotproxy([a, b], extra_args=["--policy", "round-robin"])
    with UdpClient(p) as c:
        for i in range(20):
            reply, _ = c.ask(f"rr{i}.example.")
            assert reply.rcode() == dns.rcode.NOERROR
    na, nb = len(a.queries), len(b.queries)
    assert na + nb == 20
    assert abs(na - nb) <= 2, (na, nb)


def test_fastest_policy_prefers_the_fast_one_and_samples_the_other(fake_upstream, dotproxy):
    slow, fast = fake_upstream(delay=0.05), fake_upstream()
    p = dotproxy([slow, fast])  # the default policy is fastest
    with UdpClient(p) as c:
        # Unknown latency first: the slow one is tried (and measured: the
        # query riding the first handshake is not a sample), then the fast
        # one, still unknown and so preferred to 50 ms.
        for i in range(3):
            c.ask(f"warm{i}.example.")
        assert len(fast.queries) >= 1, "the upstream of unknown latency was not tried"
        warm_slow, warm_fast = len(slow.queries), len(fast.queries)
        n = 256  # 16 sampling rounds (1 in 16): the slow one is hit ~8 times
        for i in range(n):
            reply, _ = c.ask(f"fast{i}.example.")
            assert reply.rcode() == dns.rcode.NOERROR
    sampled = len(slow.queries) - warm_slow
    assert len(fast.queries) - warm_fast >= 0.85 * n, (len(slow.queries), len(fast.queries))
    # 1 in 16 queries picks a random usable upstream; over 16 rounds the slow
    # one is never picked with probability 2^-16 only.
    assert sampled >= 1, (f"the slow upstream was never sampled again after the warm-up "
                          f"({len(fast.queries)} queries went to the fast one)")


# -- 2. health: down, skipped, probed, back ----------------------------------------------------

def test_stopped_upstream_is_probed_and_preferred_again_when_back(fake_upstream, dotproxy):
    a, b = fake_upstream(), fake_upstream()
    p = dotproxy([a, b], extra_args=["--policy", "failover"], verbose=1)
    with UdpClient(p) as c:
        for i in range(3):
            c.ask(f"before{i}.example.")
        assert (len(a.queries), len(b.queries)) == (3, 0)

        a.stop()
        # While A is down every query is answered at once, by B.
        for i in range(10):
            reply, secs = c.ask(f"down{i}.example.")
            assert a_records(reply) == ["192.0.2.1"], i
            assert secs < 0.5, (i, secs)
            time.sleep(0.1)
        assert len(b.queries) == 10
        lab = re.escape(label(a))
        m = p.wait_log(rf"upstream {lab}: failure 1 in a row, probing again in 250 ms: "
                       r"cannot connect: connection refused")
        assert m, p.log()
        backoffs = [int(x) for x in re.findall(
            rf"upstream {lab}: failure \d+ in a row, probing again in (\d+) ms", p.log())]
        assert backoffs[:3] == [250, 500, 1000], backoffs
        # Skipped while B is usable: only the background probes try A, not
        # each of the ten queries.
        attempts = len(re.findall(rf"upstream {lab}: cannot connect", p.log()))
        assert 2 <= attempts <= 5, attempts

        a.start()  # same port
        deadline = time.monotonic() + 5
        i = 0
        while not a.queries:
            reply, _ = c.ask(f"back{i}.example.")
            assert a_records(reply) == ["192.0.2.1"], f"back{i} failed"
            assert time.monotonic() < deadline, "the first upstream was never used again"
            i += 1
            time.sleep(0.05)
        assert p.wait_log(rf"upstream {lab}: reachable again")
        before_b = len(b.queries)
        for i in range(5):
            reply, _ = c.ask(f"after{i}.example.")
            assert reply.rcode() == dns.rcode.NOERROR
        assert len(b.queries) == before_b, "failover did not switch back to the first upstream"
    s = p.stats()
    assert s["servfail_timeout"] == 0 and s["servfail_no_upstream"] == 0


def test_stalled_handshake_marks_down_and_is_used_again_once_fixed(fake_upstream, dotproxy):
    a = fake_upstream(stall_handshake=True)
    b = fake_upstream()
    # --timeout 1000: a handshake gets half of it, 500 ms.
    p = dotproxy([a, b], extra_args=["--policy", "failover", "--timeout", "1000"], verbose=1)
    with UdpClient(p) as c:
        reply, secs = c.ask("first.example.")
        assert a_records(reply) == ["192.0.2.1"]
        assert secs < 1.0
        assert p.wait_log(rf"upstream {re.escape(label(a))} is down: no TLS session within",
                          timeout=2), p.log()
        # Down: skipped, no hedge delay any more.
        for i in range(5):
            reply, secs = c.ask(f"skip{i}.example.")
            assert reply.rcode() == dns.rcode.NOERROR
            assert secs < 0.2, (i, secs)
        a.set(stall_handshake=False)
        deadline = time.monotonic() + 6
        i = 0
        while not a.queries:
            reply, _ = c.ask(f"again{i}.example.")
            assert reply.rcode() == dns.rcode.NOERROR
            assert time.monotonic() < deadline, "never used the first upstream again"
            i += 1
            time.sleep(0.05)
    assert a.handshakes >= 1


# -- 3. hedging -------------------------------------------------------------------------

def test_stalled_first_upstream_is_hedged_in_well_under_a_second(fake_upstream, dotproxy):
    a, b = fake_upstream(stall=True), fake_upstream()
    p = dotproxy([a, b], extra_args=["--policy", "failover"])
    with UdpClient(p) as c:
        reply, secs = c.ask("hedge.example.")
    assert a_records(reply) == ["192.0.2.1"]
    assert secs < 1.0, secs
    assert len(a.queries) == 1 and len(b.queries) == 1
    assert p.stats()["upstream_hedged"] >= 1


def test_every_upstream_stalled_gives_servfail_with_ede_at_the_deadline(fake_upstream, dotproxy):
    a, b = fake_upstream(stall=True), fake_upstream(stall=True)
    p = dotproxy([a, b], extra_args=["--policy", "failover", "--timeout", "1500"])
    with UdpClient(p) as c:
        reply, secs = c.ask("allstall.example.", use_edns=0)
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert 1.3 < secs < 2.5, secs
    assert ede_codes(reply) == [22]  # No Reachable Authority
    assert len(a.queries) >= 1 and len(b.queries) >= 1  # both were tried
    assert p.stats()["servfail_timeout"] == 1


# -- 4. silent connections -----------------------------------------------------------------

def test_silent_connection_is_replaced_and_the_query_resent(fake_upstream, dotproxy):
    up = fake_upstream()
    p = dotproxy([up], extra_args=["--timeout", "4000"], verbose=1)
    with UdpClient(p) as c:
        c.ask("talk.example.")
        assert up.connections == 1
        up.set(stall=True)
        sent = c.send(["quiet.example."])
        # The fake decides to stall when it reads a query: once it has read
        # this one (never to be answered), it may answer the next ones.
        assert up.wait_queries(2, timeout=1.0)
        up.set(stall=False)
        got = c.collect(sent, timeout=5)
    assert "quiet.example." in got, "no reply"
    reply, secs = got["quiet.example."]
    assert a_records(reply) == ["192.0.2.1"]
    assert 0.8 < secs < 2.5, secs  # ~1 s of silence, then resent; well before 4 s
    assert p.wait_log(r"connection closed: silent")
    assert up.connections == 2
    names = [str(q.question[0].name) for q in up.queries]
    assert names[-2:] == ["quiet.example.", "quiet.example."]
    conns = up.query_connections
    assert conns[-1] != conns[-2], "the resent query must use a new connection"
    s = p.stats()
    assert s["upstream_silent"] == 1
    assert s["servfail_timeout"] == 0


# -- 5. connection pool under load -------------------------------------------------------------

@pytest.mark.parametrize("max_conns,expected", [(None, (2, 4)), (1, (1, 1))])
def test_slow_upstream_under_load_gets_more_connections(fake_upstream, dotproxy, max_conns,
                                                        expected):
    up = fake_upstream(delay=0.3)
    args = [] if max_conns is None else ["--max-connections", str(max_conns)]
    p = dotproxy([up], extra_args=args)
    names = [f"load{i}.example." for i in range(100)]
    with UdpClient(p) as c:
        got = c.burst(names, timeout=5)
    assert len(got) == 100, f"{100 - len(got)} queries got no reply"
    assert all(r.rcode() == dns.rcode.NOERROR for r, _ in got.values())
    lo, hi = expected
    assert lo <= up.connections <= hi, up.connections
    assert len(up.queries) == 100


# -- 6. SPKI pins (RFC 7858 section 4.2) ------------------------------------------------------------

def openssl_pin(cert_path):
    """The pin by the command the README documents."""
    cmd = (f"openssl x509 -in '{cert_path}' -pubkey -noout | openssl pkey -pubin -outform der"
           " | openssl dgst -sha256 -binary | openssl enc -base64")
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_right_pin_answers(fake_upstream, dotproxy, certs):
    up = fake_upstream()
    p = dotproxy([spec(up, PKI.spki_pin(certs.good[0]))], verbose=1)
    assert a_records(p.udp("pinned.example.")) == ["192.0.2.1"]
    assert p.wait_log(r"key must match a pin")


def test_one_of_several_pins_is_enough(fake_upstream, dotproxy, certs):
    up = fake_upstream()
    pins = [PKI.spki_pin(certs.wrong_name[0]), PKI.spki_pin(certs.good[0])]
    p = dotproxy([spec(up, *pins)])
    assert a_records(p.udp("pinned2.example.")) == ["192.0.2.1"]


def test_wrong_pin_sends_nothing_and_logs_the_server_pin(fake_upstream, dotproxy, certs):
    up = fake_upstream()  # a valid chain and name: only the pin is wrong
    p = dotproxy([spec(up, PKI.spki_pin(certs.wrong_name[0]))], extra_args=["--timeout", "1000"])
    reply = p.udp("pinned.example.", timeout=5)
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert up.connections >= 1, "the upstream was never contacted"
    assert up.queries == [] and up.app_bytes == 0, "a query reached a server with the wrong key"
    m = p.wait_log(r"SPKI pin mismatch: the server key is ([A-Za-z0-9+/]{43}=)")
    assert m, p.log()
    expected = PKI.spki_pin(certs.good[0])
    assert m.group(1) == expected
    assert openssl_pin(certs.good[0]) == expected
    assert p.stats()["upstream_tls_failures"] >= 1


@pytest.mark.parametrize("pin", [
    "abc",                                    # too short
    "A" * 43,                                 # not a multiple of 4
    "!" * 43 + "=",                           # not base64
    "qUqP5cyxm6YcTAhz05Hph5gvu9M=",           # base64 of 20 bytes (a SHA-1)
    "A" * 44 + "A" * 4,                       # 36 bytes
], ids=["short", "not-multiple-of-4", "not-base64", "sha1-length", "36-bytes"])
def test_bad_pin_exits_2_naming_it(pin):
    r = run_cli(["--listen", f"127.0.0.1:{free_port()}",
                 "--upstream", f"127.0.0.1@853#x.test^{pin}", "--check-config"])
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert pin in lines[0]


# -- 7. privacy profiles (RFC 8310) --------------------------------------------------------------

def test_strict_profile_refuses_a_wrong_name(fake_upstream, dotproxy, certs):
    up = fake_upstream(tls=certs.wrong_name)
    p = dotproxy([up], extra_args=["--timeout", "1000"])  # strict is the default
    reply = p.udp("strict.example.", timeout=5)
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert up.app_bytes == 0 and up.queries == []
    # It did try TLS (and gave up with an alert), nothing else.
    assert up.wait_until(lambda f: f.handshake_errors, timeout=2), up.connections
    assert p.stats()["upstream_unauthenticated"] == 0


@pytest.mark.parametrize("case", ["wrong_name", "unknown_ca"])
def test_opportunistic_profile_encrypts_anyway_and_says_so(fake_upstream, dotproxy, certs, case):
    up = fake_upstream(tls=getattr(certs, case))
    p = dotproxy([up], extra_args=["--profile", "opportunistic"])
    reply = p.udp("opp.example.", timeout=5)
    assert a_records(reply) == ["192.0.2.1"]
    # The answer came over TLS: the fake only reads queries after a handshake.
    assert up.handshakes >= 1 and up.handshake_errors == []
    assert len(up.queries) == 1
    assert p.wait_log(rf"upstream {re.escape(label(up))}: NOT authenticated"), p.log()
    assert p.stats()["upstream_unauthenticated"] >= 1


# -- 8. session resumption -----------------------------------------------------------------

def test_reconnects_resume_the_tls_session(fake_upstream, dotproxy):
    up = fake_upstream(idle_timeout=0.2)
    p = dotproxy([up])
    with UdpClient(p) as c:
        for i in range(4):
            c.ask(f"res{i}.example.")
            time.sleep(0.4)
    assert up.connections == 4
    assert up.resumed_handshakes >= 1
    s = p.stats()
    assert s["upstream_resumed"] == up.resumed_handshakes
    assert s["upstream_handshakes"] == up.handshakes


def test_no_session_resumption_always_does_full_handshakes(fake_upstream, dotproxy):
    up = fake_upstream(idle_timeout=0.2)
    p = dotproxy([up], extra_args=["--no-session-resumption"])
    with UdpClient(p) as c:
        for i in range(4):
            c.ask(f"nores{i}.example.")
            time.sleep(0.4)
    assert up.handshakes == 4
    assert up.resumed_handshakes == 0
    assert p.stats()["upstream_resumed"] == 0


def test_full_handshakes_per_thousand_queries(fake_upstream, dotproxy, capsys):
    up = fake_upstream(close_after=100)
    p = dotproxy([up])
    with UdpClient(p) as c:
        for i in range(1000):
            reply, _ = c.ask(f"k{i}.example.")
            assert reply.rcode() == dns.rcode.NOERROR, i
    full = up.handshakes - up.resumed_handshakes
    report(capsys, f"full TLS handshakes per 1,000 queries (upstream closes every 100): "
                   f"{full} ({up.handshakes} handshakes, {up.resumed_handshakes} resumed)")
    assert up.handshakes >= 10
    assert full < 15


# -- 9. idle connections ---------------------------------------------------------------------

def _seconds_until_closed(up, timeout):
    t0 = time.monotonic()
    closed = wait_for(lambda: up.open_connections == 0, timeout)
    return time.monotonic() - t0 if closed else None


def test_idle_upstream_connection_is_closed(fake_upstream, dotproxy):
    up = fake_upstream()
    p = dotproxy([up], extra_args=["--idle-timeout", "300"], verbose=1)
    p.udp("idle.example.")
    secs = _seconds_until_closed(up, 3)
    assert secs is not None, "the idle connection was never closed"
    assert 0.15 < secs < 1.0, secs
    assert p.wait_log(r"connection closed: idle")


def test_server_keepalive_shortens_the_idle_timeout(fake_upstream, dotproxy):
    up = fake_upstream(keepalive=2)  # edns-tcp-keepalive: 200 ms
    p = dotproxy([up], extra_args=["--idle-timeout", "5000"], verbose=1)
    p.udp("ka.example.")
    secs = _seconds_until_closed(up, 3)
    assert secs is not None, "the connection outlived the server's keepalive"
    assert 0.1 < secs < 1.0, secs
    assert p.wait_log(r"connection closed: idle")


# -- 10. configuration reload ------------------------------------------------------------------

def _conf(path, up, extra=""):
    path.write_text(f"# test configuration\nupstream {label(up)}\npolicy failover\n{extra}")


def test_sighup_switches_upstreams_and_survives_a_bad_config(fake_upstream, dotproxy, workdir):
    a, b = fake_upstream(), fake_upstream()
    conf = workdir / "dotproxy.conf"
    _conf(conf, a)
    p = dotproxy([], extra_args=["--config", conf], verbose=1)
    with UdpClient(p) as c:
        c.ask("one.example.")
        assert (len(a.queries), len(b.queries)) == (1, 0)

        _conf(conf, b)
        p.send_signal(signal.SIGHUP)
        assert p.wait_log(r"configuration reloaded"), p.log()
        for i in range(3):
            reply, _ = c.ask(f"two{i}.example.")
            assert a_records(reply) == ["192.0.2.1"]
        assert (len(a.queries), len(b.queries)) == (1, 3)

        offset = p.log_offset()
        conf.write_text(f"upstream {label(a)}\nbogus-option 1\n")
        p.send_signal(signal.SIGHUP)
        m = p.wait_log(r"error: SIGHUP: configuration unchanged: (.*)", since=offset)
        assert m, p.log()
        assert f"{conf}:2" in m.group(1)
        assert p.running
        reply, _ = c.ask("three.example.")
        assert a_records(reply) == ["192.0.2.1"]
        assert (len(a.queries), len(b.queries)) == (1, 4), "the old configuration must stay"
    assert "configuration reloaded" not in p.log_since(offset)


def test_sighup_under_load_loses_no_query(fake_upstream, dotproxy, workdir):
    a, b = fake_upstream(delay=0.5), fake_upstream()
    conf = workdir / "dotproxy.conf"
    _conf(conf, a)
    p = dotproxy([], extra_args=["--config", conf], verbose=1)
    names = [f"busy{i}.example." for i in range(20)]
    with UdpClient(p) as c:
        sent = c.send(names)
        assert a.wait_queries(20, timeout=2), len(a.queries)
        _conf(conf, b)
        p.send_signal(signal.SIGHUP)
        got = c.collect(sent, timeout=5)
    assert len(got) == 20, f"lost: {sorted(set(names) - set(got))}"
    assert all(a_records(r) == ["192.0.2.1"] for r, _ in got.values())
    assert p.wait_log(r"configuration reloaded")
    assert len(b.queries) == 20  # moved to the new upstream, not waited out
    s = p.stats()
    assert s["servfail_timeout"] == 0 and s["servfail_no_upstream"] == 0


def test_check_config_names_the_bad_line(workdir):
    conf = workdir / "bad.conf"
    conf.write_text("# comment\nupstream 127.0.0.1@853#dns.example.test\npolicy quickest\n")
    r = run_cli(["--config", str(conf), "--check-config"])
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{conf}:3" in lines[0], r.stderr


# -- 11. the figure: time a client waits when its first upstream stalls -----------------------------

def test_wait_when_the_first_upstream_stalls(fake_upstream, dotproxy, capsys):
    a, b = fake_upstream(stall=True), fake_upstream()
    p = dotproxy([a, b], extra_args=["--policy", "failover"])
    times = []
    with UdpClient(p) as c:
        for i in range(20):
            reply, secs = c.ask(f"st{i}.example.")
            assert a_records(reply) == ["192.0.2.1"], i
            times.append(secs * 1000)
    report(capsys, f"client wait with the first upstream stalled (failover, 20 queries): "
                   f"median {statistics.median(times):.0f} ms, max {max(times):.0f} ms "
                   f"(all: {' '.join(f'{t:.0f}' for t in times)})")
    assert max(times) < 1000


# -- 12. network changes (netlink) --------------------------------------------------------------

def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10,
                          check=check)


@pytest.mark.time_limit(30)
def test_network_change_reconnects_every_upstream(workdir):
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns")
    ns = f"dptest-{os.getpid()}"
    try:
        r = _ip("netns", "add", ns, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"ip netns unavailable: {e}")
    if r.returncode != 0:
        pytest.skip(f"ip netns add failed: {r.stderr.strip()}")
    proc = None
    log_file = workdir / "netns-dotproxy.log"
    try:
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        import procutil
        with open(log_file, "wb") as err:
            proc = subprocess.Popen(
                procutil.die_with_parent(["ip", "netns", "exec", ns, binary_path(),
                                          "--listen", "127.0.0.1:5353",
                                          "--upstream", "127.0.0.1@853#x.test", "-v"]),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        log = lambda: log_file.read_text(errors="replace")  # noqa: E731
        assert wait_for(lambda: "ready" in log() or proc.poll() is not None, 5), log()
        assert proc.poll() is None, log()
        _ip("netns", "exec", ns, "ip", "addr", "add", "10.11.12.13/32", "dev", "lo")
        assert wait_for(lambda: "network change: reconnecting to every upstream" in log(), 2), \
            log()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0, log()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        _ip("netns", "del", ns, check=False)
