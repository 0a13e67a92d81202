"""What happens when upstreams stall, close, go away or fail authentication."""

import concurrent.futures
import time

import dns.edns
import dns.rcode
import dns.rdatatype
import pytest

from netutil import ede_codes, free_port




def a_records(reply):
    return sorted(str(rr) for rrset in reply.answer for rr in rrset)


def test_stalled_upstream_gives_servfail_with_ede_by_the_deadline(fake_upstream, dotproxy):
    up = fake_upstream(stall=True)
    p = dotproxy([up], extra_args=["--timeout", "700"])
    start = time.monotonic()
    reply = p.udp("stall.example.", use_edns=0, timeout=5)
    elapsed = time.monotonic() - start
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert 0.6 < elapsed < 2.0
    assert ede_codes(reply) == [22]  # No Reachable Authority
    assert p.stats()["servfail_timeout"] == 1
    # Without EDNS in the query, no OPT in the reply.
    assert p.udp("stall2.example.", use_edns=False, timeout=5).edns == -1


def test_full_inflight_table_answers_servfail_at_once(fake_upstream, dotproxy):
    up = fake_upstream(stall=True)
    p = dotproxy([up], extra_args=["--timeout", "3000", "--max-inflight", "5"])
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(p.udp, f"o{i}.example.", timeout=6) for i in range(20)]
        start = time.monotonic()
        early = []
        for f in concurrent.futures.as_completed(futures):
            if time.monotonic() - start < 1.5:
                early.append(f.result())
    assert len(early) >= 15
    assert all(r.rcode() == dns.rcode.SERVFAIL for r in early)
    s = p.stats()
    assert s["servfail_overload"] == 15
    # The 5 in flight end in SERVFAIL too: by the deadline, or sooner once the
    # silent connection was replaced, silent again, and the upstream given up.
    assert s["servfail_timeout"] + s["servfail_no_upstream"] == 5


@pytest.mark.parametrize("mode", ["notify", "reset"])
def test_queries_in_flight_are_resent_after_a_close(fake_upstream, dotproxy, mode):
    # Each connection answers 2 queries then closes with the rest unanswered.
    up = fake_upstream(close_after=2, close_mode=mode, delay=0.05)
    p = dotproxy([up])
    for batch in range(5):
        names = [f"b{batch}q{i}.example." for i in range(3)]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            replies = list(pool.map(lambda n: p.udp(n, timeout=5), names))
        for name, reply in zip(names, replies):
            assert reply.rcode() == dns.rcode.NOERROR, name
            assert str(reply.question[0].name) == name
    s = p.stats()
    assert s["upstream_resent"] >= 1
    assert s["servfail_timeout"] == 0 and s["servfail_no_upstream"] == 0
    assert up.connections >= 2


def test_routine_idle_close_costs_the_client_nothing(fake_upstream, dotproxy):
    up = fake_upstream(idle_timeout=0.2)
    p = dotproxy([up])
    for i in range(4):
        assert p.udp(f"i{i}.example.").rcode() == dns.rcode.NOERROR
        time.sleep(0.35)
    assert up.connections == 4
    s = p.stats()
    assert s["answers_forwarded"] == 4
    assert s["upstream_resumed"] >= 1  # reconnects resume the TLS session


@pytest.mark.time_limit(60)
def test_upstream_down_at_start_is_used_once_it_comes_up(fake_upstream, dotproxy, certs):
    from fake_upstream import FakeUpstream
    port = free_port()
    up = FakeUpstream(*certs.good, port=port)
    p = dotproxy([f"127.0.0.1@{port}#dns.example.test"], extra_args=["--timeout", "1000"])
    reply = p.udp("early.example.", timeout=5)
    assert reply.rcode() == dns.rcode.SERVFAIL
    up.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            reply = p.udp("later.example.", timeout=5)
            if reply.rcode() == dns.rcode.NOERROR:
                break
            assert time.monotonic() < deadline, "never used the upstream after it came up"
            time.sleep(0.2)
        assert a_records(reply) == ["192.0.2.1"]
    finally:
        up.stop()


def test_upstream_restarted_under_load_loses_nothing_routine(fake_upstream, dotproxy):
    up = fake_upstream()
    p = dotproxy([up])
    assert p.udp("a.example.").rcode() == dns.rcode.NOERROR
    up.stop()
    up.start()  # same port; the proxy's connection was cut
    replies = [p.udp(f"after{i}.example.", timeout=5) for i in range(5)]
    assert all(r.rcode() == dns.rcode.NOERROR for r in replies)


def test_failover_to_the_next_upstream_when_the_first_refuses(fake_upstream, dotproxy):
    second = fake_upstream()
    dead = f"127.0.0.1@{free_port()}#dns.example.test"
    p = dotproxy([dead, second])
    replies = [p.udp(f"f{i}.example.") for i in range(5)]
    assert all(a_records(r) == ["192.0.2.1"] for r in replies)
    assert len(second.queries) == 5


def test_all_upstreams_down_gives_prompt_servfail(dotproxy):
    dead = [f"127.0.0.1@{free_port()}#dns.example.test" for _ in range(2)]
    p = dotproxy(dead, extra_args=["--timeout", "3000"])
    start = time.monotonic()
    reply = p.udp("x.example.", use_edns=0, timeout=5)
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - start < 1.0
    assert ede_codes(reply) == [23]  # Network Error
    assert p.stats()["servfail_no_upstream"] == 1


# -- TLS authentication ----------------------------------------------------------------

@pytest.mark.parametrize("case,reason", [
    ("wrong_name", "hostname mismatch"),
    ("unknown_ca", "unable to get local issuer certificate"),
    ("expired", "certificate has expired"),
    ("not_yet_valid", "certificate is not yet valid"),
])
def test_tls_failure_sends_nothing_and_says_why(fake_upstream, dotproxy, certs, case, reason):
    up = fake_upstream(tls=getattr(certs, case))
    p = dotproxy([up], extra_args=["--timeout", "1000"])
    reply = p.udp("secret.example.", timeout=5)
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert up.queries == [] and up.app_bytes == 0, "a query reached an unauthenticated server"
    m = p.wait_log(r"warning: upstream 127\.0\.0\.1@\d+#dns\.example\.test is down: TLS failed: .*")
    assert m and reason in m.group(0), p.log()
    assert p.stats()["upstream_tls_failures"] >= 1


def test_ip_is_verified_when_no_auth_name_is_given(fake_upstream, dotproxy, certs):
    good = fake_upstream(tls=certs.ip_only)
    p = dotproxy([good], auth_name=None)
    assert a_records(p.udp("ip.example.")) == ["192.0.2.1"]


def test_certificate_without_the_ip_is_refused_when_no_auth_name(fake_upstream, dotproxy, certs):
    up = fake_upstream(tls=certs.wrong_name)  # a DNS name only, no IP SAN
    p = dotproxy([up], auth_name=None, extra_args=["--timeout", "1000"])
    assert p.udp("ip.example.", timeout=5).rcode() == dns.rcode.SERVFAIL
    assert up.app_bytes == 0
    assert p.wait_log(r"IP address mismatch")


def test_failed_authentication_moves_on_to_the_next_upstream(fake_upstream, dotproxy, certs):
    bad = fake_upstream(tls=certs.wrong_name)
    good = fake_upstream()
    p = dotproxy([bad, good])
    assert a_records(p.udp("next.example.")) == ["192.0.2.1"]
    assert bad.app_bytes == 0
    assert len(good.queries) == 1


# -- bad input from the upstream ---------------------------------------------------------

def test_garbage_frames_are_ignored(fake_upstream, dotproxy):
    up = fake_upstream(garbage=True)
    p = dotproxy([up])
    reply = p.udp("g.example.")
    assert a_records(reply) == ["192.0.2.1"]
    assert p.stats()["upstream_bad_answers"] >= 1


def test_garbage_sharing_the_query_id_is_ignored(fake_upstream, dotproxy):
    up = fake_upstream(garbage="same_id")
    p = dotproxy([up])
    assert a_records(p.udp("g.example.")) == ["192.0.2.1"]


def test_broken_framing_closes_the_connection_and_the_proxy_survives(fake_upstream, dotproxy):
    up = fake_upstream(garbage_raw=True)
    p = dotproxy([up], extra_args=["--timeout", "800"])
    reply = p.udp("raw.example.", timeout=5)
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert not reply.answer
    up.set(garbage_raw=False)
    deadline = time.monotonic() + 5
    while p.udp("ok.example.", timeout=5).rcode() != dns.rcode.NOERROR:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert p.running
