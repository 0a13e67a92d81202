"""DoH upstreams against the fault-injecting DoH server (fake_doh.py).

What no real server does on demand: GOAWAY, REFUSED_STREAM, a stream limit
of one, error statuses, other content types, bodies too large or not DNS,
a stalled stream, a silent connection, an unanswered PING, Age; and what
only the fake can see: the request's form on the wire, resets after a
complete response, streams beyond the advertised limit.

fake_doh.py and its fixture come from the fake DoH server's own branch;
until that is merged, this module skips itself.
"""

import concurrent.futures
import time

import dns.edns
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

pytest.importorskip("fake_doh")

from dotproxy_proc import AUTH_NAME  # noqa: E402
from fake_upstream import ANSWER_A  # noqa: E402
from procutil import wait_for  # noqa: E402

KEEPALIVE = 11


def spec(f, path="/dns-query"):
    return f"https://127.0.0.1:{f.port}{path}#{AUTH_NAME}"


def ask(p, name, rdtype="A", *, qid=None, timeout=3, use_edns=0):
    q = dns.message.make_query(name, rdtype, use_edns=use_edns)
    if qid is not None:
        q.id = qid
    return dns.query.udp(q, p.addr, port=p.port, timeout=timeout)


def addrs(r):
    return sorted(rr.to_text() for rrset in r.answer for rr in rrset
                  if rr.rdtype == dns.rdatatype.A)


def ede(r):
    return [o.code for o in r.options if isinstance(o, dns.edns.EDEOption)]


def many(p, names, workers=32):
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda n: ask(p, n), names))


NO_CACHE = ["--cache-size", "0"]


# -- the request -----------------------------------------------------------------------

@pytest.mark.parametrize("method", ["post", "get"])
def test_request_form_on_the_wire(fake_doh, dotproxy, method):
    f = fake_doh()
    p = dotproxy([spec(f)], ["--doh-method", method] + NO_CACHE)
    r = ask(p, "www.example.com.", qid=0x4242)
    assert r.id == 0x4242 and addrs(r) == [ANSWER_A]
    [req] = f.requests
    assert req.method == method.upper()
    assert req.scheme == "https" and req.authority == f"{AUTH_NAME}:{f.port}"
    assert req.accept == "application/dns-message"
    assert req.user_agent is None
    if method == "post":
        assert req.content_type == "application/dns-message"
        assert req.path == "/dns-query"
    else:
        assert req.path.startswith("/dns-query?dns=") and "=" not in req.dns_param
    assert req.id == 0
    assert len(req.wire) % 128 == 0 and req.padding is not None
    assert KEEPALIVE not in [o.otype for o in req.options]
    assert f.resets_after_response == []


def test_authority_is_the_ip_without_a_name(fake_doh, dotproxy):
    f = fake_doh()
    p = dotproxy([f"https://127.0.0.1:{f.port}/dns-query"], NO_CACHE)
    assert addrs(ask(p, "www.example.com.")) == [ANSWER_A]
    assert f.requests[0].authority == f"127.0.0.1:{f.port}"
    assert f.sni_names == [None]


# -- answers that are not answers --------------------------------------------------------

@pytest.mark.parametrize("action,counter", [
    (503, "upstream_doh_status"), (404, "upstream_doh_status"),
    ("wrong_content_type", "upstream_doh_content_type"),
    ("no_content_type", "upstream_doh_content_type"),
    ("big_body", "upstream_doh_too_large"),
    ("garbage", "upstream_bad_answers"), ("empty", "upstream_bad_answers"),
    ("wrong_id", "upstream_bad_answers"), ("wrong_question", "upstream_unmatched"),
    ("reset", "upstream_doh_reset"),
])
def test_non_answers_fail_the_query_not_the_connection(fake_doh, dotproxy, action, counter):
    f = fake_doh(rules=(("bad", action),))
    p = dotproxy([spec(f)], NO_CACHE)
    r = ask(p, "bad.example.com.")
    assert r.rcode() == dns.rcode.SERVFAIL and ede(r) == [23]
    assert "6.6.6.6" not in str(r)
    assert addrs(ask(p, "good.example.com.")) == [ANSWER_A]
    s = p.stats()
    assert s[counter] >= 1
    assert s["upstream_connects"] == 1 and s["upstream_closed"] == 0
    assert len(f.connections) == 1
    assert f.resets_after_response == []


def test_non_answer_fails_over_to_the_next_upstream(fake_doh, unbound, dotproxy):
    f = fake_doh(action=503)
    p = dotproxy([spec(f), unbound], ["--policy", "failover"] + NO_CACHE)
    r = ask(p, "www.example.")
    assert r.rcode() == dns.rcode.NOERROR and addrs(r) == ["192.0.2.10"]


def test_an_upstream_that_answers_only_errors_is_marked_down(fake_doh, fake_upstream,
                                                               dotproxy):
    """Five queries in a row answered with an error (here HTTP 503) mark a
    DoH upstream down, with a warning that says why: the queries after them
    go straight to the next upstream rather than each paying a round trip to
    the broken one first (under failover, every one of them went to it)."""
    f = fake_doh(action=503)
    up = fake_upstream()
    p = dotproxy([spec(f), up], ["--policy", "failover"] + NO_CACHE)
    off = p.log_offset()
    for i in range(30):
        r = ask(p, f"q{i}.example.com.")
        assert addrs(r) == [ANSWER_A], (i, r)
    # Five, then about one a probe (the probe's handshake brings it back,
    # its first error sends it down again).
    assert 5 <= len(f.requests) <= 12, len(f.requests)
    log = p.log_since(off)
    assert "is down: 5 queries in a row answered with an error, the last: HTTP status 503" \
        in log, log


def test_an_answer_between_errors_keeps_the_upstream(fake_doh, fake_upstream, dotproxy):
    """Errors only count in a row: a server that fails some questions and
    answers others stays in use."""
    f = fake_doh(rules=(("bad", 503),))
    up = fake_upstream()
    p = dotproxy([spec(f), up], ["--policy", "failover"] + NO_CACHE)
    for i in range(12):
        assert addrs(ask(p, f"bad{i}.example.com.")) == [ANSWER_A]
        if i % 4 == 3:
            assert addrs(ask(p, f"good{i}.example.com.")) == [ANSWER_A]
    assert len(f.requests) == 15  # every one went to it first
    assert "good11.example.com." in f.names()


def test_age_is_taken_off_the_ttls(fake_doh, dotproxy):
    f = fake_doh(age=100)
    p = dotproxy([spec(f)], NO_CACHE)
    r = ask(p, "www.example.com.")
    ttl = r.answer[0].ttl
    f.set(age=None)
    r2 = ask(p, "www2.example.com.")
    assert ttl == r2.answer[0].ttl - 100


# -- streams -------------------------------------------------------------------------------

def test_refused_streams_are_resent_free(fake_doh, dotproxy):
    f = fake_doh(refuse_first=3)
    p = dotproxy([spec(f)], NO_CACHE)
    rs = many(p, [f"n{i}.example.com." for i in range(5)])
    assert all(addrs(r) == [ANSWER_A] for r in rs)
    s = p.stats()
    assert s["upstream_doh_refused"] == 3
    assert s["upstream_connects"] == 1


def test_one_stream_at_a_time_under_50_queries(fake_doh, dotproxy):
    """SETTINGS_MAX_CONCURRENT_STREAMS=1: never more than that in flight once
    known, more connections up to --max-connections, every query answered."""
    f = fake_doh(max_concurrent_streams=1, delay=0.01)
    p = dotproxy([spec(f)], NO_CACHE)
    rs = many(p, [f"q{i}.example.com." for i in range(50)])
    assert all(r.rcode() == dns.rcode.NOERROR and addrs(r) == [ANSWER_A] for r in rs)
    assert f.limit_exceeded == 0
    assert 1 <= len(f.connections) <= 4
    assert f.resets_after_response == []


def test_goaway_resends_unprocessed_streams_on_a_fresh_connection(fake_doh, dotproxy):
    f = fake_doh(goaway_after=3, delay=0.05)
    p = dotproxy([spec(f)], NO_CACHE)
    rs = many(p, [f"g{i}.example.com." for i in range(10)])
    assert all(addrs(r) == [ANSWER_A] for r in rs)
    s = p.stats()
    assert s["upstream_doh_goaway"] >= 1
    assert s["servfail_no_upstream"] == 0
    assert len(f.connections) >= 2
    assert f.resets_after_response == []


def test_stalled_stream_holds_up_no_other(fake_doh, dotproxy):
    f = fake_doh(rules=(("stall", "stall"),))
    p = dotproxy([spec(f)], ["--timeout", "1500"] + NO_CACHE)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        stalled = pool.submit(ask, p, "stall.example.com.")
        time.sleep(0.05)
        t0 = time.monotonic()
        for i in range(5):
            assert addrs(ask(p, f"ok{i}.example.com.")) == [ANSWER_A]
        assert time.monotonic() - t0 < 0.5
        r = stalled.result()
    assert r.rcode() == dns.rcode.SERVFAIL
    # The deadline cancelled the stream: a reset, before any response.
    assert wait_for(lambda: any(c.error_code == 8 for c in f.client_resets), 2)
    assert f.resets_after_response == []


def test_silent_connection_gets_a_ping_and_is_closed(fake_doh, dotproxy):
    """A stream stays open, another was answered after it went out, then the
    server falls silent: a PING after a second, the close a second later,
    and the stalled query goes to a fresh connection for free."""
    f = fake_doh(rules=(("stall", "stall"),))
    p = dotproxy([spec(f)], ["--timeout", "6000"] + NO_CACHE, verbose=1)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        stalled = pool.submit(ask, p, "stall.example.com.", timeout=7)
        time.sleep(0.05)
        assert addrs(ask(p, "ok.example.com.")) == [ANSWER_A]
        f.set(silent=True)
        t0 = time.monotonic()
        m = p.wait_log(r"no answer to an HTTP/2 PING", timeout=4)
        elapsed = time.monotonic() - t0
        assert m, p.log_tail()
        assert 1.5 < elapsed < 3.0
        assert f.pings >= 1
        f.set(silent=False, rules=())
        r = stalled.result()
    assert addrs(r) == [ANSWER_A]
    s = p.stats()
    assert s["upstream_doh_pings"] >= 1 and s["upstream_silent"] >= 1


def test_answered_ping_keeps_the_connection(fake_doh, dotproxy):
    f = fake_doh(rules=(("stall", "stall"),))
    p = dotproxy([spec(f)], ["--timeout", "4000"] + NO_CACHE)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        stalled = pool.submit(ask, p, "stall.example.com.", timeout=5)
        time.sleep(0.05)
        assert addrs(ask(p, "ok.example.com.")) == [ANSWER_A]
        time.sleep(2.5)
        s = p.stats()
        assert s["upstream_doh_pings"] >= 1
        assert s["upstream_closed"] == 0
        stalled.result()
    assert len(f.connections) == 1


def test_unanswered_ping_closes_the_connection(fake_doh, dotproxy):
    f = fake_doh(rules=(("stall", "stall"),), ping_ack=False)
    p = dotproxy([spec(f)], ["--timeout", "4000"] + NO_CACHE, verbose=1)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        pool.submit(ask, p, "stall.example.com.", timeout=5)
        time.sleep(0.05)
        assert addrs(ask(p, "ok.example.com.")) == [ANSWER_A]
        assert p.wait_log(r"no answer to an HTTP/2 PING", timeout=3.5)


def test_idle_connection_closes_with_goaway(fake_doh, dotproxy):
    f = fake_doh()
    p = dotproxy([spec(f)], ["--idle-timeout", "300"] + NO_CACHE)
    assert addrs(ask(p, "www.example.com.")) == [ANSWER_A]
    assert f.wait_until(lambda fd: fd.connections[0].closed_by == "client", timeout=2)
    c = f.connections[0]
    assert c.goaways_received and c.goaways_received[0][1] == 0


def test_server_goaway_when_idle_is_routine(fake_doh, dotproxy):
    f = fake_doh(idle_timeout=0.2)
    p = dotproxy([spec(f)], NO_CACHE)
    assert addrs(ask(p, "www.example.com.")) == [ANSWER_A]
    time.sleep(0.5)
    assert addrs(ask(p, "www2.example.com.")) == [ANSWER_A]
    assert len(f.connections) == 2


def test_keepalive_keeps_an_idle_connection_open_with_pings(fake_doh, dotproxy):
    """--doh-keepalive: idle far past --idle-timeout, the connection stays,
    a PING goes out each period, and the next query needs no new handshake."""
    f = fake_doh()
    p = dotproxy([spec(f)], ["--idle-timeout", "300", "--doh-keepalive", "1000"] + NO_CACHE)
    assert addrs(ask(p, "www.example.com.")) == [ANSWER_A]
    time.sleep(3.4)
    c = f.connections[0]
    assert c.closed_by is None and not c.goaways_received
    assert 2 <= c.pings <= 4, c.pings
    assert addrs(ask(p, "www2.example.com.")) == [ANSWER_A]
    assert len(f.connections) == 1
    s = p.stats()
    assert s["upstream_closed"] == 0 and s["upstream_doh_pings"] == c.pings


def test_keepalive_finds_a_dead_idle_connection(fake_doh, dotproxy):
    """An idle connection whose PING goes unanswered is closed a second
    later, before any query has to find out; the next query opens a new one."""
    f = fake_doh(ping_ack=False)
    p = dotproxy([spec(f)], ["--doh-keepalive", "1000"] + NO_CACHE, verbose=1)
    assert addrs(ask(p, "www.example.com.")) == [ANSWER_A]
    t0 = time.monotonic()
    assert p.wait_log(r"idle connection's HTTP/2 PING went unanswered", timeout=4), p.log_tail()
    assert 1.5 < time.monotonic() - t0 < 3.0
    assert f.wait_until(lambda fd: fd.connections[0].closed_by == "client", timeout=2)
    f.set(ping_ack=True)
    assert addrs(ask(p, "www2.example.com.")) == [ANSWER_A]
    assert len(f.connections) == 2


@pytest.mark.parametrize("alpn", [("http/1.1",), None])
def test_no_h2_no_queries(fake_doh, dotproxy, alpn):
    f = fake_doh(alpn=alpn)
    p = dotproxy([spec(f)], NO_CACHE)
    r = ask(p, "www.example.com.")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert p.wait_log(r'ALPN')
    assert f.requests == []



def test_goaway_on_every_connection_ends_in_servfail(fake_doh, dotproxy):
    """A server that sends GOAWAY before any stream on every connection: the
    free resends are bounded (8), then SERVFAIL, at once, not at the deadline."""
    f = fake_doh(goaway_after=0)
    p = dotproxy([spec(f)], NO_CACHE)
    t0 = time.monotonic()
    r = ask(p, "www.example.com.")
    assert r.rcode() == dns.rcode.SERVFAIL and ede(r) == [23]
    assert time.monotonic() - t0 < 2
    s = p.stats()
    assert 1 <= s["upstream_doh_goaway"] <= 10
    assert len(f.connections) <= 10


def test_stream_limit_enforced_with_protocol_error(fake_doh, dotproxy):
    """Streams sent before the server's SETTINGS (the limit then unknown)
    and reset PROTOCOL_ERROR for exceeding it are resent, not failed."""
    f = fake_doh(max_concurrent_streams=1, over_limit="protocol_error", delay=0.01)
    p = dotproxy([spec(f)], NO_CACHE)
    rs = many(p, [f"q{i}.example.com." for i in range(50)])
    assert all(r.rcode() == dns.rcode.NOERROR for r in rs)
    assert f.limit_exceeded == 0
