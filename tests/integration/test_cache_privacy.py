"""The answer cache (RFC 2308, RFC 8767) and privacy by default (RFC 7830,
RFC 8467, RFC 7871 §11.1): what reaches the upstream, and what does not."""

import concurrent.futures
import threading
import time

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from fake_upstream import default_responder
from netutil import make_query


def a_records(reply):
    return sorted(str(rr) for rrset in reply.answer for rr in rrset)


def ttls(reply):
    return [rrset.ttl for rrset in reply.answer + reply.authority]


def with_ttl(ttl):
    """A responder whose answers carry TTL `ttl`."""
    def respond(query):
        resp = default_responder(query)
        for rrset in resp.answer + resp.authority:
            rrset.ttl = ttl
        return resp
    return respond


def upstream_names(up):
    return [str(q.question[0].name) for q in up.queries if q is not None]


# -- cache ------------------------------------------------------------------------------

def test_repeated_question_is_answered_from_the_cache(fake_upstream, dotproxy):
    up = fake_upstream()
    p = dotproxy([up])
    first = p.udp("c.example.", id=1)
    second = p.udp("C.EXAMPLE.", id=2)  # any case, the client's spelling comes back
    assert a_records(first) == a_records(second) == ["192.0.2.1"]
    assert second.id == 2
    assert str(second.question[0].name) == "C.EXAMPLE."
    assert upstream_names(up) == ["c.example."]
    s = p.stats()
    assert s["cache_hits"] == 1 and s["cache_misses"] == 1


def test_ttls_are_aged_by_the_time_in_cache(fake_upstream, dotproxy):
    up = fake_upstream(responder=with_ttl(100))
    p = dotproxy([up])
    assert ttls(p.udp("age.example.")) == [100]
    time.sleep(2.2)
    aged = ttls(p.udp("age.example."))[0]
    assert 96 <= aged <= 98
    assert len(up.queries) == 1


def test_expired_entries_are_fetched_again(fake_upstream, dotproxy):
    up = fake_upstream(responder=with_ttl(1))
    p = dotproxy([up])
    p.udp("short.example.")
    time.sleep(1.3)
    p.udp("short.example.")
    assert len(up.queries) == 2


def test_negative_answers_are_cached_by_the_soa(unbound, dotproxy):
    p = dotproxy([unbound])
    assert p.udp("missing.example.").rcode() == dns.rcode.NXDOMAIN
    again = p.udp("missing.example.")
    assert again.rcode() == dns.rcode.NXDOMAIN
    assert again.authority and again.authority[0].rdtype == dns.rdatatype.SOA
    nodata = p.udp("www.example.", "MX")  # NODATA: NOERROR, no answer
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    p.udp("www.example.", "MX")
    s = p.stats()
    assert s["cache_hits"] == 2 and s["cache_misses"] == 2


def test_servfail_is_not_cached(fake_upstream, dotproxy):
    def servfail(query):
        resp = default_responder(query)
        resp.set_rcode(dns.rcode.SERVFAIL)
        return resp

    up = fake_upstream(responder=servfail)
    p = dotproxy([up])
    assert p.udp("sf.example.").rcode() == dns.rcode.SERVFAIL
    assert p.udp("sf.example.").rcode() == dns.rcode.SERVFAIL
    assert len(up.queries) == 2


def test_cache_size_zero_disables_it(fake_upstream, dotproxy):
    up = fake_upstream()
    p = dotproxy([up], extra_args=["--cache-size", "0"])
    p.udp("x.example.")
    p.udp("x.example.")
    assert len(up.queries) == 2


def test_small_cache_evicts_the_least_recently_used(fake_upstream, dotproxy):
    up = fake_upstream()
    p = dotproxy([up], extra_args=["--cache-size", "4K"])
    for i in range(100):
        p.udp(f"e{i}.example.")
    up.reset_counters()
    p.udp("e99.example.")  # recent: still cached
    assert len(up.queries) == 0
    p.udp("e0.example.")   # oldest: evicted
    assert len(up.queries) == 1


def test_cache_max_and_min_ttl(fake_upstream, dotproxy):
    up = fake_upstream(responder=with_ttl(100000))
    p = dotproxy([up], extra_args=["--cache-max-ttl", "1"])
    p.udp("clamp.example.")
    time.sleep(1.2)
    p.udp("clamp.example.")
    assert len(up.queries) == 2
    up2 = fake_upstream(responder=with_ttl(0))
    p2 = dotproxy([up2], extra_args=["--cache-min-ttl", "60"])
    p2.udp("zero.example.")
    p2.udp("zero.example.")
    assert len(up2.queries) == 1


def test_dnssec_bits_pass_through_and_key_the_cache(fake_upstream, dotproxy):
    def with_ad(query):
        resp = default_responder(query)
        resp.want_dnssec(bool(query.ednsflags & dns.flags.DO))  # as real servers mirror DO
        resp.flags |= query.flags & dns.flags.CD                 # and CD (RFC 4035 §3.1.6)
        if query.flags & dns.flags.CD or query.ednsflags & dns.flags.DO:
            resp.flags |= dns.flags.AD
        return resp

    up = fake_upstream(responder=with_ad)
    p = dotproxy([up])
    plain = p.udp("sec.example.", use_edns=0)
    do = p.udp("sec.example.", use_edns=0, want_dnssec=True)
    assert not plain.flags & dns.flags.AD
    assert do.flags & dns.flags.AD
    assert do.ednsflags & dns.flags.DO
    # DO reached the upstream, and the two were cached apart.
    assert [bool(q.ednsflags & dns.flags.DO) for q in up.queries] == [False, True]
    q = make_query("cd.example.", "A")
    q.flags |= dns.flags.CD
    reply = p.udp("cd.example.", query=q)
    assert reply.flags & dns.flags.CD and reply.flags & dns.flags.AD
    assert up.queries[-1].flags & dns.flags.CD
    again = p.udp("sec.example.", use_edns=0, want_dnssec=True)
    assert again.flags & dns.flags.AD  # the cached answer keeps it
    assert len(up.queries) == 3


def test_identical_questions_in_flight_share_one_upstream_query(fake_upstream, dotproxy):
    up = fake_upstream(delay=0.4)
    p = dotproxy([up])
    ids = list(range(100, 120))
    with concurrent.futures.ThreadPoolExecutor(len(ids)) as pool:
        replies = list(pool.map(lambda i: p.udp("same.example.", id=i, timeout=3), ids))
    assert [r.id for r in replies] == ids
    assert all(a_records(r) == ["192.0.2.1"] for r in replies)
    assert len(up.queries) == 1
    assert p.stats()["queries_collapsed"] == len(ids) - 1


def test_a_later_identical_question_outlives_the_first_ones_deadline(fake_upstream, dotproxy):
    """The second client joined the first one's upstream query; when that
    one times out, the second still has time: it asks again instead of
    failing with it."""
    late = []

    def first_late_one_unanswered(query):
        if str(query.question[0].name) == "late.example.":
            late.append(query)
            return 30 if len(late) == 1 else 0
        return 0

    up = fake_upstream(delay=first_late_one_unanswered)
    p = dotproxy([up], extra_args=["--timeout", "1000", "--cache-size", "0"])
    stop = threading.Event()

    def keep_connection_busy():
        # Answers keep arriving on the connection, so it is not "silent"
        # and the unanswered query is not resent: it waits for its deadline.
        i = 0
        while not stop.wait(0.05):
            p.udp(f"alive{i}.example.")
            i += 1

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        busy = pool.submit(keep_connection_busy)
        first = pool.submit(p.udp, "late.example.", id=1, timeout=3)
        time.sleep(0.5)
        start = time.monotonic()
        second = pool.submit(p.udp, "late.example.", id=2, timeout=3)
        assert first.result().rcode() == dns.rcode.SERVFAIL  # its own deadline
        reply = second.result()
        waited = time.monotonic() - start
        stop.set()
        busy.result()
    assert reply.rcode() == dns.rcode.NOERROR, reply
    assert a_records(reply) == ["192.0.2.1"]
    assert len(late) == 2  # joined the first, asked again at the first's deadline
    assert waited < 0.9, waited  # within its own timeout (1 s), not failed at 0.5 s
    s = p.stats()
    assert s["queries_collapsed"] == 1
    assert s["servfail_timeout"] == 1


def test_serve_stale_when_every_upstream_fails(fake_upstream, dotproxy):
    up = fake_upstream(responder=with_ttl(1))
    p = dotproxy([up], extra_args=["--serve-stale", "60", "--timeout", "1000"])
    assert a_records(p.udp("stale.example.")) == ["192.0.2.1"]
    up.stop()
    time.sleep(1.3)
    start = time.monotonic()
    reply = p.udp("stale.example.", timeout=3)
    assert reply.rcode() == dns.rcode.NOERROR
    assert a_records(reply) == ["192.0.2.1"]
    assert ttls(reply) == [30]  # RFC 8767 §4
    assert time.monotonic() - start < 1.5
    assert p.stats()["cache_stale_served"] == 1


def test_no_stale_answers_by_default(fake_upstream, dotproxy):
    up = fake_upstream(responder=with_ttl(1))
    p = dotproxy([up], extra_args=["--timeout", "1000"])
    p.udp("stale.example.")
    up.stop()
    time.sleep(1.3)
    assert p.udp("stale.example.", timeout=3).rcode() == dns.rcode.SERVFAIL


@pytest.mark.time_limit(40)
def test_prefetch_keeps_a_popular_name_warm(fake_upstream, dotproxy):
    up = fake_upstream(responder=with_ttl(10))
    p = dotproxy([up])
    p.udp("warm.example.")
    p.udp("warm.example.")
    time.sleep(9.2)  # into the last tenth of the TTL
    p.udp("warm.example.")  # a hit, which starts the refresh
    deadline = time.monotonic() + 2
    while len(up.queries) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(up.queries) == 2
    time.sleep(1.0)  # past the original expiry
    reply = p.udp("warm.example.")
    assert len(up.queries) == 2, "the client had to wait for a fetch"
    assert ttls(reply)[0] >= 8
    s = p.stats()
    assert s["cache_prefetches"] == 1 and s["cache_hits"] == 3


# -- privacy ---------------------------------------------------------------------------

def test_every_query_upstream_is_padded_to_128_bytes(fake_upstream, dotproxy):
    up = fake_upstream()
    p = dotproxy([up], extra_args=["--cache-size", "0"])
    p.udp("a.example.", use_edns=False)
    p.udp("a-much-longer-name-to-change-the-length.example.", use_edns=0)
    p.tcp("t.example.", "AAAA")
    assert len(up.raw_queries) == 3
    for raw, q in zip(up.raw_queries, up.queries):
        assert len(raw) % 128 == 0, len(raw)
        assert any(o.otype == dns.edns.PADDING for o in q.options)


def test_no_padding_option(fake_upstream, dotproxy):
    up = fake_upstream()
    p = dotproxy([up], extra_args=["--no-padding"])
    p.udp("a.example.")
    assert not any(o.otype == dns.edns.PADDING for o in up.queries[0].options)


def test_client_subnet_and_cookie_are_stripped(fake_upstream, dotproxy):
    up = fake_upstream()
    p = dotproxy([up])
    ecs = dns.edns.ECSOption("198.51.100.77", 24)
    cookie = dns.edns.GenericOption(dns.edns.COOKIE, b"\x01\x02\x03\x04\x05\x06\x07\x08")
    nsid = dns.edns.GenericOption(dns.edns.NSID, b"")
    reply = p.udp("ecs.example.", use_edns=0, options=[ecs, cookie, nsid])
    assert reply.rcode() == dns.rcode.NOERROR
    sent = up.queries[0]
    codes = [o.otype for o in sent.options]
    assert dns.edns.ECS not in codes and dns.edns.COOKIE not in codes
    assert dns.edns.NSID in codes  # identifies nobody: kept
    assert b"198.51.100" not in up.raw_queries[0]
    assert p.stats()["ecs_stripped"] == 1


def test_hop_by_hop_options_do_not_reach_udp_clients(fake_upstream, dotproxy):
    up = fake_upstream(keepalive=50)
    p = dotproxy([up])
    reply = p.udp("ka.example.", use_edns=0)
    codes = [o.otype for o in reply.options]
    assert dns.edns.KEEPALIVE not in codes and dns.edns.PADDING not in codes
    # ... but the upstream was asked for its keepalive (RFC 7828).
    assert any(o.otype == dns.edns.KEEPALIVE for o in up.queries[0].options)


# -- locally served zones and the blocklist ----------------------------------------------

LOCAL_CASES = [
    ("localhost.", "A", dns.rcode.NOERROR, ["127.0.0.1"]),
    ("www.LocalHost.", "AAAA", dns.rcode.NOERROR, ["::1"]),
    ("1.0.168.192.in-addr.arpa.", "PTR", dns.rcode.NXDOMAIN, []),
    ("5.0.0.10.in-addr.arpa.", "PTR", dns.rcode.NXDOMAIN, []),
    ("printer.local.", "A", dns.rcode.NXDOMAIN, []),
    ("router.home.arpa.", "A", dns.rcode.NXDOMAIN, []),
    ("_dns.resolver.arpa.", "SVCB", dns.rcode.NOERROR, []),
    ("x.invalid.", "A", dns.rcode.NXDOMAIN, []),
]


def test_locally_served_zones_never_reach_the_upstream(fake_upstream, dotproxy):
    up = fake_upstream()
    p = dotproxy([up], extra_args=["--log-queries"])
    for name, rdtype, rcode, data in LOCAL_CASES:
        reply = p.udp(name, rdtype)
        assert reply.rcode() == rcode, name
        assert sorted(str(rr) for rrset in reply.answer for rr in rrset) == data, name
        assert str(reply.question[0].name) == name  # the client's spelling
    assert up.queries == [], "a locally served name was sent upstream"
    assert p.stats()["local_answers"] == len(LOCAL_CASES)
    assert p.wait_log(r"query: .* name=localhost\. type=A rcode=NOERROR upstream=local ")
    assert a_records(p.udp("www.example.")) == ["192.0.2.1"]  # others still forwarded


def test_blocklist_answers_locally(fake_upstream, dotproxy, workdir):
    up = fake_upstream()
    blocklist = workdir / "block.txt"
    blocklist.write_text("# ads\nads.example\n0.0.0.0 tracker.example  # hosts-file style\n")
    p = dotproxy([up], extra_args=["--block", blocklist])
    for name in ("ads.example.", "sub.ads.example.", "TRACKER.example."):
        reply = p.udp(name, use_edns=0)
        assert reply.rcode() == dns.rcode.NXDOMAIN, name
        assert [o.code for o in reply.options if o.otype == dns.edns.EDE] == [15]  # Blocked
    assert p.udp("bads.example.").rcode() == dns.rcode.NOERROR  # not a subdomain
    assert upstream_names(up) == ["bads.example."]
    assert p.stats()["blocked"] == 3


def test_block_action_null_and_refused(fake_upstream, dotproxy, workdir):
    up = fake_upstream()
    blocklist = workdir / "block.txt"
    blocklist.write_text("ads.example\n")
    null = dotproxy([up], extra_args=["--block", blocklist, "--block-action", "null"])
    assert a_records(null.udp("ads.example.")) == ["0.0.0.0"]
    refused = dotproxy([up], extra_args=["--block", blocklist, "--block-action", "refused"])
    assert refused.udp("ads.example.").rcode() == dns.rcode.REFUSED
    assert up.queries == []


def test_bad_blocklist_is_a_configuration_error(workdir):
    import subprocess
    from dotproxy_proc import binary_path
    blocklist = workdir / "block.txt"
    blocklist.write_text("ok.example\n||adblock^rule\n")
    r = subprocess.run([binary_path(), "--block", str(blocklist), "--check-config"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert f"{blocklist}:2:" in r.stderr
