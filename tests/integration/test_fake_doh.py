"""Self-tests of fake_doh.py (and doh_client.py), none of which needs dotproxy.

The DoH upstream tests will trust the fake to misbehave exactly as asked;
these pin each behaviour down with python3-h2 as the client (doh_client.py),
and the normal path also with kdig and dig, two DoH clients written by
other people.
"""

import shutil
import subprocess
import threading
import time

import dns.rcode
import dns.rdatatype
import pytest

pytest.importorskip("h2", reason="python3-h2 not installed")

import h2wire  # noqa: E402
from doh_client import ALPNError, DoHClient, b64url, make_doh_query  # noqa: E402
from dotproxy_proc import AUTH_NAME  # noqa: E402
from fake_upstream import ANSWER_A, ANSWER_AAAA, BIG_COUNT, POISON_A  # noqa: E402

REFUSED_STREAM = h2wire.REFUSED_STREAM


def addresses(msg):
    return [rr.address for rrset in msg.answer for rr in rrset
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)]


def q(name, rdtype="A", **kw):
    return make_doh_query(name, rdtype, **kw)


# -- the normal path ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["POST", "GET"])
def test_answers_and_records_a_query(fake_doh, doh_client, method):
    doh = fake_doh()
    c = doh_client(doh)
    assert c.alpn_protocol == "h2"
    assert c.max_concurrent_streams == 100
    r = c.query(q("www.example.", use_edns=0, pad=128), method=method)
    assert r.status == 200 and r.ended and r.reset is None
    assert r.content_type == "application/dns-message"
    assert r.header("content-length") == str(len(r.body))
    assert r.message.id == 0 and addresses(r.message) == [ANSWER_A]

    [req] = doh.requests
    assert (req.conn, req.stream_id, req.method, req.scheme) == (0, 1, method, "https")
    assert req.authority == AUTH_NAME and req.accept == "application/dns-message"
    assert req.user_agent is None
    assert req.id == 0 and req.qname == "www.example." and req.qtype == dns.rdatatype.A
    assert len(req.wire) % 128 == 0 and req.padding is not None
    assert req.outcome == "answered" and req.status == 200 and req.action == "ok"
    if method == "GET":
        assert req.path == "/dns-query?dns=" + b64url(req.wire)
        assert "=" not in req.dns_param and req.body == b"" and req.content_type is None
    else:
        assert req.path == "/dns-query" and req.body == req.wire
        assert req.content_type == "application/dns-message"
    [conn] = doh.connections
    assert conn.alpn == "h2" and conn.sni == AUTH_NAME and conn.requests == 1
    assert doh.names() == {"www.example."}


def test_answers_like_fake_upstream(fake_doh, doh_client):
    c = doh_client(fake_doh())
    assert addresses(c.query(q("x.example.", "AAAA")).message) == [ANSWER_AAAA]
    assert len(addresses(c.query(q("big.example.", use_edns=0)).message)) == BIG_COUNT
    assert c.query(q("nx1.example.")).message.rcode() == dns.rcode.NXDOMAIN
    nodata = c.query(q("x.example.", "MX")).message
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer


def test_user_agent_and_other_headers_are_recorded(fake_doh, doh_client):
    doh = fake_doh()
    c = doh_client(doh, user_agent="tester/1", authority="doh.example.test")
    c.query(q("ua.example."), extra_headers=[("x-extra", "1")])
    [req] = doh.requests
    assert req.user_agent == "tester/1" and req.authority == "doh.example.test"
    assert req.header("x-extra") == "1"


@pytest.mark.parametrize("kind, status", [
    ("wrong path", 404), ("PUT", 405), ("wrong content-type", 415), ("no dns=", 400),
    ("dns= not base64url", 400), ("unparseable query", 400), ("empty body", 400)])
def test_bad_requests_get_http_errors(fake_doh, doh_client, kind, status):
    doh = fake_doh()
    c = doh_client(doh)
    wire = q("bad.example.").to_wire()
    sid = {
        "wrong path": lambda: c.send_query(wire, path="/other"),
        "PUT": lambda: c.send_query(wire, method="PUT"),
        "wrong content-type": lambda: c.send_query(wire, content_type="text/plain"),
        "no dns=": lambda: c.request("GET"),
        "dns= not base64url": lambda: c.request("GET", path="/dns-query?dns=a+b/"),
        "unparseable query": lambda: c.send_query(b"\x00\x00\x01"),
        "empty body": lambda: c.send_query(b""),
    }[kind]()
    assert c.response(sid).status == status
    [req] = doh.requests
    assert req.status == status and req.outcome == "answered"


def test_many_connections_and_streams_at_once(fake_doh, doh_client):
    doh = fake_doh(delay=0.02)  # so that streams overlap for sure
    clients = [doh_client(doh) for _ in range(3)]
    sids = [[c.send_query(q(f"c{i}s{j}.example.")) for j in range(30)]
            for i, c in enumerate(clients)]
    for c, ss in zip(clients, sids):
        assert all(c.response(s).status == 200 for s in ss)
    reqs = doh.requests
    assert len(reqs) == 90 and {r.conn for r in reqs} == {0, 1, 2}
    assert {r.stream_id for r in reqs if r.conn == 1} == set(range(1, 61, 2))
    assert doh.max_open_streams > 1 and doh.limit_exceeded == 0


# -- kdig and dig: other people's DoH clients, normal path only --------------------------------

def _run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=10)


@pytest.mark.skipif(shutil.which("kdig") is None, reason="kdig (knot-dnsutils) not installed")
@pytest.mark.parametrize("https", ["+https=/dns-query", "+https-get"])
def test_kdig_gets_answers(fake_doh, certs, https):
    doh = fake_doh()
    out = _run(["kdig", "@127.0.0.1", "-p", str(doh.port), https, f"+tls-ca={certs.ca_file}",
                f"+tls-hostname={AUTH_NAME}", "+timeout=2", "+retry=0", "kdig.example.", "A"])
    assert out.returncode == 0, out.stderr
    assert ANSWER_A in out.stdout and "NOERROR" in out.stdout
    [req] = doh.requests
    assert req.method == ("GET" if https == "+https-get" else "POST")
    assert req.id == 0 and req.qname == "kdig.example." and len(req.wire) % 128 == 0


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (bind9-dnsutils) not installed")
@pytest.mark.parametrize("https", ["+https", "+https-get"])
def test_dig_gets_answers(fake_doh, certs, https):
    doh = fake_doh()
    out = _run(["dig", "@127.0.0.1", "-p", str(doh.port), https, f"+tls-ca={certs.ca_file}",
                f"+tls-hostname={AUTH_NAME}", "+time=2", "+tries=1", "nx.dig.example.", "A"])
    assert out.returncode == 0, out.stderr
    assert "status: NXDOMAIN" in out.stdout
    [req] = doh.requests
    assert req.method == ("GET" if https == "+https-get" else "POST")
    assert req.qname == "nx.dig.example." and req.outcome == "answered"


# -- stream limits -----------------------------------------------------------------------------

def test_max_concurrent_streams_is_advertised_and_a_correct_client_stays_within(
        fake_doh, doh_client):
    doh = fake_doh(max_concurrent_streams=1)
    c = doh_client(doh)
    assert c.max_concurrent_streams == 1
    for i in range(3):  # one at a time, as h2 itself insists
        assert c.query(q(f"one{i}.example.")).status == 200
    [conn] = doh.connections
    assert conn.max_open_streams == 1 and conn.limit_exceeded == 0 and conn.settings_acks == 1


def test_streams_beyond_the_limit_are_refused_and_counted(fake_doh, doh_client):
    doh = fake_doh(max_concurrent_streams=1, delay=0.1)
    c = doh_client(doh, ignore_stream_limit=True)
    sids = [c.send_query(q(f"over{i}.example.")) for i in range(3)]
    rs = [c.response(s) for s in sids]
    assert [r.status for r in rs] == [200, None, None]
    assert [r.reset for r in rs] == [None, REFUSED_STREAM, REFUSED_STREAM]
    [conn] = doh.connections
    assert conn.limit_exceeded == 2 and conn.max_open_streams == 2
    assert [r.over_limit for r in doh.requests] == [None, "acked", "acked"]
    assert [r.outcome for r in doh.requests] == ["answered", "refused", "refused"]


def test_over_limit_protocol_error(fake_doh, doh_client):
    doh = fake_doh(max_concurrent_streams=1, over_limit="protocol_error", delay=0.1)
    c = doh_client(doh, ignore_stream_limit=True)
    sids = [c.send_query(q(f"pe{i}.example.")) for i in range(2)]
    assert [c.response(s).reset for s in sids] == [None, h2wire.PROTOCOL_ERROR]
    assert [r.outcome for r in doh.requests] == ["answered", "reset"]


def test_streams_opened_before_the_limit_was_acknowledged_are_not_counted(fake_doh, doh_client):
    # RFC 9113 §6.5.3: a limit applies once the client acknowledged it. A
    # client that opens streams before the server's SETTINGS arrived breaks
    # nothing; the fake still refuses them (nghttp2 does) but does not count them.
    doh = fake_doh(max_concurrent_streams=1, delay=0.1)
    c = doh_client(doh, wait_settings=False, ignore_stream_limit=True)
    sids = [c.send_query(q(f"early{i}.example.")) for i in range(2)]
    assert [c.response(s).reset for s in sids] == [None, REFUSED_STREAM]
    assert [r.over_limit for r in doh.requests] == [None, "pending"]
    assert doh.limit_exceeded == 0


def test_over_limit_serve_answers_anyway_and_counts(fake_doh, doh_client):
    doh = fake_doh(max_concurrent_streams=2, over_limit="serve", delay=0.1)
    c = doh_client(doh, ignore_stream_limit=True)
    sids = [c.send_query(q(f"serve{i}.example.")) for i in range(4)]
    assert [c.response(s).status for s in sids] == [200] * 4
    assert doh.max_open_streams == 4 and doh.limit_exceeded == 2


def test_a_new_limit_reaches_open_connections(fake_doh, doh_client):
    doh = fake_doh()
    c = doh_client(doh)
    doh.set(max_concurrent_streams=3)
    c.pump(0.1)
    assert c.max_concurrent_streams == 3
    assert doh.wait_until(lambda d: d.connections[0].settings_acks == 2)


# -- GOAWAY, refusals, resets ------------------------------------------------------------------

def test_goaway_after_n_streams_serves_those_and_ignores_the_rest(fake_doh, doh_client):
    doh = fake_doh(goaway_after=2, delay=0.05)
    c = doh_client(doh)
    sids = [c.send_query(q(f"ga{i}.example.")) for i in range(4)]
    assert c.wait_goaway() == (3, h2wire.NO_ERROR)
    assert [c.response(s).status for s in sids[:2]] == [200, 200]
    assert c.wait_closed() and c.close_reason == "close_notify"
    assert not any(c.responses[s].done for s in sids[2:])
    assert [r.outcome for r in doh.requests] == ["answered", "answered",
                                                 "unprocessed", "unprocessed"]
    assert doh.names() == {f"ga{i}.example." for i in range(4)}  # seen, if not served
    assert doh.connections[0].goaway_sent == 3 and doh.connections[0].closed_by == "server"


def test_goaway_at_once_with_an_error_code(fake_doh, doh_client):
    doh = fake_doh(goaway_after=0, goaway_error=h2wire.INTERNAL_ERROR)
    c = doh_client(doh)
    assert c.wait_goaway() == (0, h2wire.INTERNAL_ERROR)
    assert c.wait_closed()


def test_goaway_without_close_waits_for_the_client(fake_doh, doh_client):
    doh = fake_doh(goaway_after=1, goaway_close=False)
    c = doh_client(doh)
    assert c.query(q("one.example.")).status == 200
    assert c.wait_goaway() == (1, 0)
    c.pump(0.2)
    assert not c.closed and doh.open_connections == 1
    c.close()
    assert doh.wait_until(lambda d: d.open_connections == 0)
    assert doh.connections[0].closed_by == "client"
    assert doh.connections[0].goaways_received == [(0, 0)]


def test_refuse_by_name(fake_doh, doh_client):
    doh = fake_doh(rules={r"^refused\.": "refuse"})
    c = doh_client(doh)
    sids = [c.send_query(q(n)) for n in ("refused.example.", "fine.example.")]
    bad, good = (c.response(s) for s in sids)
    assert bad.reset == REFUSED_STREAM and bad.status is None
    assert good.status == 200
    assert [(r.qname, r.outcome, r.reset_code) for r in doh.requests] == [
        ("refused.example.", "refused", REFUSED_STREAM), ("fine.example.", "answered", None)]


def test_refuse_first_k_across_connections(fake_doh, doh_client):
    doh = fake_doh(refuse_first=2)
    a, b = doh_client(doh), doh_client(doh)
    assert a.query(q("r1.example.")).reset == REFUSED_STREAM
    assert b.query(q("r2.example.")).reset == REFUSED_STREAM
    assert a.query(q("r3.example.")).status == 200
    doh.set(refuse_first=1)  # counts again from now
    assert b.query(q("r4.example.")).reset == REFUSED_STREAM
    assert b.query(q("r5.example.")).status == 200


def test_reset_action(fake_doh, doh_client):
    c = doh_client(fake_doh(action="reset"))
    assert c.query(q("x.example.")).reset == h2wire.INTERNAL_ERROR


# -- bad answers -------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [500, 503])
def test_error_status_for_all_or_by_name(fake_doh, doh_client, status):
    doh = fake_doh(action=status)
    c = doh_client(doh)
    r = c.query(q("any.example."))
    assert r.status == status and r.content_type == "text/plain"
    doh.set(action="ok", rules={"fail": status})
    assert c.query(q("fail.example.")).status == status
    assert c.query(q("ok.example.")).status == 200


def test_wrong_content_type_carries_a_valid_answer(fake_doh, doh_client):
    c = doh_client(fake_doh(action="wrong_content_type"))
    r = c.query(q("portal.example."))
    assert r.status == 200 and r.content_type.startswith("text/html")
    assert addresses(r.message) == [ANSWER_A]  # so only the content-type is wrong


def test_no_content_type(fake_doh, doh_client):
    r = doh_client(fake_doh(action="no_content_type")).query(q("x.example."))
    assert r.status == 200 and r.content_type is None and addresses(r.message) == [ANSWER_A]


def test_big_body_exceeds_65535_bytes_without_content_length(fake_doh, doh_client):
    doh = fake_doh(action="big_body")
    c = doh_client(doh)
    r = c.query(q("big.example."))
    assert r.status == 200 and r.ended and len(r.body) == 70000 > 65535
    assert r.header("content-length") is None
    doh.set(big_body_size=100000)  # flow control carries it through windows of 65535
    assert len(c.query(q("bigger.example.")).body) == 100000


@pytest.mark.parametrize("action", ["garbage", "empty"])
def test_body_that_does_not_parse(fake_doh, doh_client, action):
    r = doh_client(fake_doh(action=action)).query(q("x.example."))
    assert r.status == 200 and r.content_type == "application/dns-message"
    with pytest.raises(Exception):
        r.message


def test_answer_to_another_question(fake_doh, doh_client):
    m = doh_client(fake_doh(action="wrong_question")).query(q("x.example.")).message
    assert m.question[0].name.to_text() == "evil.x.example."
    assert addresses(m) == [POISON_A] and m.id == 0


def test_answer_with_another_id(fake_doh, doh_client):
    m = doh_client(fake_doh(action="wrong_id")).query(q("x.example.")).message
    assert m.id == 0x5A5A and addresses(m) == [ANSWER_A]


def test_age_and_extra_headers(fake_doh, doh_client):
    doh = fake_doh(age=250, headers=[("cache-control", "max-age=100")])
    r = doh_client(doh).query(q("x.example."))
    assert r.header("age") == "250" and r.header("cache-control") == "max-age=100"


def test_a_responder_decides_the_answer(fake_doh, doh_client):
    seen = []

    def responder(query):
        seen.append(query.question[0].name.to_text())
        return None if "quiet" in seen[-1] else b"\x00\x00\x81\x80" + bytes(8)

    c = doh_client(fake_doh(responder=responder))
    assert c.query(q("loud.example.")).body == b"\x00\x00\x81\x80" + bytes(8)
    with pytest.raises(TimeoutError):
        c.query(q("quiet.example."), timeout=0.2)


# -- timing: stalls and delays -----------------------------------------------------------------

def test_a_stalled_stream_never_blocks_the_others(fake_doh, doh_client):
    doh = fake_doh(rules={r"^stall\.": "stall"})
    c = doh_client(doh)
    stalled = c.send_query(q("stall.example."))
    others = [c.send_query(q(f"go{i}.example.")) for i in range(5)]
    assert all(c.response(s).status == 200 for s in others)
    with pytest.raises(TimeoutError):
        c.response(stalled, timeout=0.2)
    assert doh.requests[0].outcome == "stalled"
    assert doh.connections[0].max_open_streams >= 2


def test_delay_per_answer_and_per_name(fake_doh, doh_client):
    doh = fake_doh(delay=lambda r: 0.3 if r.qname.startswith("slow") else 0)
    c = doh_client(doh)
    t0 = time.monotonic()
    slow = c.send_query(q("slow.example."))
    fast = c.send_query(q("fast.example."))
    assert c.response(fast).status == 200
    assert time.monotonic() - t0 < 0.25 and not c.responses[slow].done
    assert c.response(slow).status == 200 and time.monotonic() - t0 >= 0.3
    doh.set(delay=0.2)
    t0 = time.monotonic()
    assert c.query(q("any.example.")).status == 200 and time.monotonic() - t0 >= 0.2


# -- PING, silence, idle -----------------------------------------------------------------------

def test_pings_are_answered_and_counted(fake_doh, doh_client):
    doh = fake_doh()
    c = doh_client(doh)
    c.ping(b"12345678")
    assert c.wait_ping_ack(b"12345678")
    assert doh.pings == 1 and doh.connections[0].ping_acks_sent == 1


def test_ping_ack_off_leaves_pings_unanswered_but_serves_queries(fake_doh, doh_client):
    doh = fake_doh(ping_ack=False)
    c = doh_client(doh)
    c.ping()
    assert not c.wait_ping_ack(timeout=0.2)
    assert c.query(q("x.example.")).status == 200
    assert doh.pings == 1 and doh.connections[0].ping_acks_sent == 0


def test_silent_connection_ignores_everything_but_stays_open(fake_doh, doh_client):
    doh = fake_doh()
    c = doh_client(doh)
    assert c.query(q("before.example.")).status == 200
    doh.set(silent=True)
    c.ping()
    sid = c.send_query(q("during.example."))
    assert not c.wait_ping_ack(timeout=0.3)
    assert not c.responses[sid].done and not c.closed
    assert doh.wait_until(lambda d: d.pings == 1)  # counted, not answered
    assert len(doh.requests) == 1  # the query was read but not processed
    assert doh.open_connections == 1
    doh.set(silent=False)  # everything held is processed now
    assert c.wait_ping_ack() and c.response(sid).status == 200


def test_a_new_connection_while_silent_gets_no_settings(fake_doh, doh_client):
    doh = fake_doh(silent=True)
    c = doh_client(doh, wait_settings=False)
    c.pump(0.3)
    assert c.settings_received == 0 and not c.closed
    assert doh.handshakes == 1 and doh.open_connections == 1
    assert doh.connections[0].frames == {"PREFACE": 1, "SETTINGS": 1}  # read, unanswered
    with pytest.raises(TimeoutError):
        doh_client(doh, timeout=0.3)  # waits for the SETTINGS in vain


def test_silent_after_n_requests(fake_doh, doh_client):
    doh = fake_doh(silent_after=2)
    c = doh_client(doh)
    assert [c.query(q(f"s{i}.example.")).status for i in range(2)] == [200, 200]
    c.ping()
    sid = c.send_query(q("never.example."))
    assert not c.wait_ping_ack(timeout=0.3) and not c.responses[sid].done
    assert not c.closed and doh.connections[0].silent
    assert doh.pings == 1 and len(doh.requests) == 2
    assert doh_client(doh).query(q("other.example.")).status == 200  # per connection


@pytest.mark.parametrize("mode, goaway, reason", [
    ("goaway", True, "close_notify"), ("notify", False, "close_notify"),
    ("fin", False, "eof"), ("reset", False, "reset")])
def test_idle_close(fake_doh, doh_client, mode, goaway, reason):
    doh = fake_doh(idle_timeout=0.2, idle_close=mode)
    c = doh_client(doh)
    assert c.query(q("x.example.")).status == 200
    t0 = time.monotonic()
    assert c.wait_closed(timeout=2)
    assert time.monotonic() - t0 >= 0.15
    assert c.close_reason == reason
    assert c.goaways == ([(1, 0)] if goaway else [])
    assert doh.connections[0].idle_closed


def test_an_open_stream_keeps_the_connection_from_idling(fake_doh, doh_client):
    doh = fake_doh(idle_timeout=0.1, rules={"stall": "stall"})
    c = doh_client(doh)
    c.send_query(q("stall.example."))
    c.pump(0.3)
    assert not c.closed


def test_a_client_that_breaks_http2_is_recorded(fake_doh, doh_client):
    doh = fake_doh()
    c = doh_client(doh)
    c.send_raw(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")  # DATA on stream 0
    assert c.wait_goaway() == (0, h2wire.PROTOCOL_ERROR)
    assert c.wait_closed()
    assert doh.wait_until(lambda d: d.protocol_errors)
    assert doh.connections[0].closed_by == "server"


# -- the client's resets -----------------------------------------------------------------------

def test_client_resets_are_counted_and_classified(fake_doh, doh_client):
    doh = fake_doh(rules={"stall": "stall"})
    c = doh_client(doh)
    done = c.send_query(q("done.example."))
    c.response(done)
    stalled = c.send_query(q("stall.example."))
    assert doh.wait_until(lambda d: d.requests[-1].outcome == "stalled")
    c.reset_stream(stalled)
    # h2 will not reset a closed stream; a buggy client would, so send it by hand
    c.send_raw(b"\x00\x00\x04\x03\x00" + done.to_bytes(4, "big") + b"\x00\x00\x00\x08")
    assert doh.wait_until(lambda d: len(d.client_resets) == 2)
    assert [(r.stream_id, r.error_code, r.after_response) for r in doh.client_resets] == [
        (stalled, h2wire.CANCEL, False), (done, h2wire.CANCEL, True)]
    assert [r.stream_id for r in doh.resets_after_response] == [done]
    assert doh.requests[-1].outcome == "client_reset"
    assert c.query(q("still.example.")).status == 200


# -- TLS: certificates and ALPN ----------------------------------------------------------------

def test_certificate_for_a_chosen_name(fake_doh, doh_client):
    doh = fake_doh(cert_name="elsewhere.example.test")
    with pytest.raises(Exception, match="(?i)certificate|hostname"):
        doh_client(doh)  # expects dns.example.test
    ok = doh_client(doh, server_hostname="elsewhere.example.test")
    assert ok.query(q("x.example.")).status == 200
    assert doh.handshake_errors  # the first client's alert


@pytest.mark.parametrize("alpn, offered, negotiated", [
    ((), ("h2",), None), (("http/1.1",), ("h2", "http/1.1"), "http/1.1")])
def test_alpn_other_than_h2(fake_doh, doh_client, alpn, offered, negotiated):
    doh = fake_doh(alpn=alpn)
    with pytest.raises(ALPNError):
        doh_client(doh, alpn=offered)
    assert doh.wait_until(lambda d: d.connections and d.connections[0].tls_version)
    assert doh.connections[0].alpn == negotiated
    # the fake speaks HTTP/2 anyway, to a client that tries
    c = doh_client(doh, alpn=offered, require_h2=False)
    assert c.alpn_protocol == negotiated and c.query(q("x.example.")).status == 200


def test_stall_handshake(fake_doh, certs):
    doh = fake_doh(stall_handshake=True)
    with pytest.raises(OSError):  # socket.timeout is an OSError
        DoHClient(doh.port, ca_file=certs.ca_file, server_hostname=AUTH_NAME, timeout=0.3)
    assert doh.handshakes == 0 and len(doh.connections) == 1


# -- lifecycle ---------------------------------------------------------------------------------

def test_drop_connections_and_restart(fake_doh, doh_client):
    doh = fake_doh()
    c = doh_client(doh)
    assert c.query(q("x.example.")).status == 200
    doh.drop_connections("goaway")
    assert c.wait_goaway() == (1, 0) and c.wait_closed()
    port = doh.port
    doh.stop()
    doh.start()
    assert doh.port == port
    assert doh_client(doh).query(q("y.example.")).status == 200


def test_stop_leaves_no_thread(fake_doh, doh_client):
    before = threading.active_count()
    doh = fake_doh(rules={"stall": "stall"}, delay=5)
    c = doh_client(doh)
    c.send_query(q("stall.example."))
    c.send_query(q("delayed.example."))
    assert doh.wait_requests(2)
    doh.stop()
    assert threading.active_count() == before
    assert c.wait_closed()
