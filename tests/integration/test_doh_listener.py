"""The DoH listener (--listen-https, RFC 8484 over HTTP/2): real clients
(kdig, dig, dnsperf, Python's h2 through doh_client.py) against the real
binary, with certificates from the test CA.

Covers: answers by GET, POST and HEAD with their headers (content type,
length, cache-control from the TTLs), the DNS ID kept, padding, every
status code, --https-path, ALPN h2 only and HTTP/1.1 refused cleanly,
answers in completion order, exactly 100 streams, reset streams and
departed clients cancelling their queries, HTTP/2 Rapid Reset, a
CONTINUATION flood and oversized headers, handshakes and first requests
that never come, idleness, the cap per client address, the certificate read
again on SIGHUP, --allow, GOAWAY at shutdown, and a hundred DoT and DoH
clients with the same DNS IDs at once."""

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

import dns.edns
import dns.message
import dns.rcode
import hpack
import pytest

import h2wire
import procutil
from doh_client import DNS_MESSAGE, DoHClient, b64url, make_doh_query
from lan_listener import LAN_NAME, a_records, lan_leaf, listener_starter
from netutil import DoTClient, client_tls_context, ede_codes, free_port, make_query


@pytest.fixture
def lan_cert(pki):
    return lan_leaf(pki)


@pytest.fixture
def doh_proxy(dotproxy, fake_upstream, lan_cert):
    """dotproxy with a DoH listener; returns (proc, https port, fake upstream)."""
    return listener_starter(dotproxy, fake_upstream, lan_cert, "--listen-https")


@pytest.fixture
def doh(pki):
    """Factory: doh(port, **kw) -> DoHClient trusting the test CA, for LAN_NAME;
    closed at teardown."""
    clients = []

    def connect(port, **kw):
        kw.setdefault("ca_file", pki.ca_file)
        kw.setdefault("server_hostname", LAN_NAME)
        c = DoHClient(port, **kw)
        clients.append(c)
        return c

    yield connect
    for c in clients:
        c.close()


def get_path(query, path="/dns-query"):
    return f"{path}?dns={b64url(query.to_wire())}"


# -- answers -----------------------------------------------------------------------------

@pytest.mark.skipif(not shutil.which("kdig"), reason="kdig (knot-dnsutils) not installed")
@pytest.mark.parametrize("method", ["+https", "+https-get"])
def test_kdig_gets_local_and_forwarded_answers_with_the_name_verified(doh_proxy, pki, method):
    p, port, up = doh_proxy()
    for name, want in ((f"www.{LAN_NAME}", "192.0.2.7"), ("www.example.", "192.0.2.1")):
        out = subprocess.run(["kdig", "@127.0.0.1", "-p", str(port), method,
                              f"+tls-ca={pki.ca_file}", f"+tls-hostname={LAN_NAME}", "+short",
                              name, "A"], capture_output=True, text=True, timeout=10)
        assert out.stdout.split() == [want], out
    assert [q.question[0].name.to_text() for q in up.queries] == ["www.example."]
    s = p.stats()
    assert s["queries_doh"] == 2 and s["doh_handshakes"] == 2 and s["doh_http_errors"] == 0


@pytest.mark.skipif(not shutil.which("dig"), reason="dig (bind9-dnsutils) not installed")
@pytest.mark.parametrize("method", ["+https", "+https-get"])
def test_dig_https_is_answered(doh_proxy, method):
    p, port, _ = doh_proxy()
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), method, "+short",
                          f"www.{LAN_NAME}"], capture_output=True, text=True, timeout=10)
    assert out.stdout.split() == ["192.0.2.7"], out


def _dnsperf_has_doh():
    if not shutil.which("dnsperf"):
        return False
    out = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True)
    return "doh" in out.stdout + out.stderr


@pytest.mark.skipif(not _dnsperf_has_doh(), reason="dnsperf with -m doh not installed")
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_dnsperf_doh_gets_every_answer(doh_proxy, workdir, method):
    p, port, _ = doh_proxy()
    data = workdir / "queries.txt"
    data.write_text(f"www.{LAN_NAME} A\nwww.example. A\n")
    out = subprocess.run(["dnsperf", "-m", "doh", "-s", "127.0.0.1", "-p", str(port),
                          "-O", f"doh-method={method}", "-d", str(data), "-n", "500",
                          "-c", "2", "-q", "50", "-t", "3"],
                         capture_output=True, text=True, timeout=60)
    assert "Queries completed:    1000 (100.00%)" in out.stdout, out.stdout + out.stderr
    assert p.stats()["queries_doh"] == 1000


def test_get_post_and_head_carry_the_answer_and_its_headers(doh_proxy, doh):
    p, port, up = doh_proxy()
    c = doh(port)
    post = c.query(make_doh_query("www.example."))
    get = c.query(make_doh_query("www.example."), method="GET")
    head = c.response(c.request("HEAD", path=get_path(make_doh_query("www.example."))))
    for r in (post, get, head):
        assert r.status == 200 and r.content_type == DNS_MESSAGE
        assert r.header("cache-control") == "max-age=300"  # the fake's TTL
    for r in (post, get):
        assert a_records(r.message) == ["192.0.2.1"]
        assert r.header("content-length") == str(len(r.body))
    assert head.body == b"" and head.header("content-length") == get.header("content-length")


def test_cache_control_is_the_smallest_ttl_or_the_soa_minimum(doh_proxy, doh):
    p, port, _ = doh_proxy(extra=["--local-data", f"short.{LAN_NAME} 42 A 192.0.2.8"])
    c = doh(port)
    assert c.query(make_doh_query(f"short.{LAN_NAME}")).header("cache-control") == "max-age=42"
    nx = c.query(make_doh_query("nx.example."))
    assert nx.message.rcode() == dns.rcode.NXDOMAIN
    assert nx.header("cache-control") == "max-age=60"  # the SOA's TTL and MINIMUM


def test_the_dns_id_is_kept(doh_proxy, doh):
    p, port, _ = doh_proxy()
    c = doh(port)
    for qid in (0, 0x1234):
        for method in ("POST", "GET"):
            r = c.query(make_doh_query(f"www.{LAN_NAME}", id=qid), method=method)
            assert r.message.id == qid


def test_padded_queries_get_padded_answers(doh_proxy, doh):
    p, port, _ = doh_proxy()
    c = doh(port)
    r = c.query(make_doh_query(f"www.{LAN_NAME}", use_edns=0, pad=128))
    assert len(r.body) % 468 == 0
    assert dns.edns.OptionType.PADDING in [o.otype for o in r.message.options]


def test_answers_come_back_in_completion_order(doh_proxy, doh, fake_upstream):
    slow = fake_upstream(delay=0.3)
    p, port, _ = doh_proxy(upstream=slow)
    c = doh(port)
    first = c.send_query(make_doh_query("slow.example."))
    second = c.send_query(make_doh_query(f"www.{LAN_NAME}"))
    local = c.response(second, timeout=0.25)  # does not wait for the slow one
    assert a_records(local.message) == ["192.0.2.7"]
    assert a_records(c.response(first).message) == ["192.0.2.1"]


# -- status codes ------------------------------------------------------------------------

def test_status_codes(doh_proxy, doh):
    p, port, up = doh_proxy()
    c = doh(port)
    q = make_doh_query(f"www.{LAN_NAME}")
    wire = q.to_wire()
    ct = [("content-type", DNS_MESSAGE)]

    def status(method, path="/dns-query", body=None, headers=(), end_stream=True):
        r = c.response(c.request(method, path=path, body=body, extra_headers=headers,
                                 end_stream=end_stream))
        assert r.body == b"" or r.status == 200
        return r

    assert status("GET", get_path(q, "/other")).status == 404
    assert status("GET", get_path(q, "/dns-query/x")).status == 404
    r = status("PUT", body=wire, headers=ct)
    assert r.status == 405 and r.header("allow") == "GET, POST, HEAD"
    assert status("DELETE", get_path(q)).status == 405
    assert status("BREW", get_path(q)).status == 501
    assert status("POST", body=wire, headers=[("content-type", "text/plain")]).status == 415
    assert status("POST", body=wire).status == 415  # no content type at all
    # Announced too long: answered before the body comes (and the stream reset).
    r = status("POST", headers=ct + [("content-length", "70000")], end_stream=False)
    c.pump(0.2)
    assert r.status == 413 and r.reset == h2wire.NO_ERROR
    assert status("POST", body=bytes(65536), headers=ct).status == 413
    assert status("GET", "/dns-query?dns=" + "A" * 5000).status == 414
    assert status("GET", "/dns-query").status == 400
    assert status("GET", "/dns-query?dns=").status == 400
    assert status("GET", "/dns-query?dns=not*base64").status == 400
    assert status("GET", "/dns-query?dns=" + b64url(wire[:11])).status == 400  # no header
    assert status("POST", body=b"", headers=ct).status == 400
    resp = dns.message.make_response(q).to_wire()
    assert status("POST", body=resp, headers=ct).status == 400  # an answer, not a query
    assert status("GET", "/dns-query", headers=[("x-big", "x" * 20000)]).status == 431
    # The connection survived all of it.
    assert a_records(c.query(q, method="GET").message) == ["192.0.2.7"]
    s = p.stats()
    assert s["doh_http_errors"] == 17 and s["queries_doh"] == 1
    assert up.queries == []


def test_another_https_path(doh_proxy, doh):
    p, port, _ = doh_proxy(extra=["--https-path", "/resolve"])
    c = doh(port, path="/resolve")
    q = make_doh_query(f"www.{LAN_NAME}")
    assert a_records(c.query(q).message) == ["192.0.2.7"]
    assert a_records(c.query(q, method="GET").message) == ["192.0.2.7"]
    assert c.response(c.request("GET", path=get_path(q))).status == 404


# -- ALPN and HTTP/1.1 ---------------------------------------------------------------------

def test_alpn_is_h2(doh_proxy, doh):
    p, port, _ = doh_proxy()
    assert doh(port).alpn_protocol == "h2"


def test_client_connections_have_tcp_nodelay(doh_proxy, doh):
    """As for DoT: the accepted socket has TCP_NODELAY, from the listener."""
    p, port, _ = doh_proxy()
    doh(port)
    assert procutil.tcp_nodelay(p.proc.pid, local_port=port) == [True]


@pytest.mark.parametrize("alpn", [("h2",), None])
def test_a_tls12_client_is_answered(doh_proxy, doh, alpn):
    """In a TLS 1.2 full handshake the server speaks last (its ticket, CCS
    and Finished after the client's Finished). That flight is left for the
    end of the loop round, or the listener's first write of it, so it must
    leave even when the listener writes nothing then (no ALPN: it waits
    for the client's first bytes)."""
    p, port, _ = doh_proxy()
    c = doh(port, max_version=ssl.TLSVersion.TLSv1_2, alpn=alpn, require_h2=False,
            timeout=3)
    assert c.pipe.tls.version() == "TLSv1.2"
    r = c.query(make_doh_query(f"www.{LAN_NAME}"))
    assert r.status == 200 and a_records(r.message) == ["192.0.2.7"]


def test_an_http11_client_gets_the_no_application_protocol_alert(doh_proxy, pki):
    p, port, _ = doh_proxy()
    start = time.monotonic()
    with pytest.raises(ssl.SSLError, match="(?i)no.application.protocol"):
        DoHClient(port, ca_file=pki.ca_file, server_hostname=LAN_NAME, alpn=("http/1.1",))
    assert time.monotonic() - start < 2
    assert p.stats()["doh_handshake_failures"] == 1


def test_http11_without_alpn_gets_505_and_a_close(doh_proxy, pki):
    p, port, _ = doh_proxy()
    ctx = client_tls_context(pki.ca_file)  # offers no ALPN
    c = DoTClient(port, context=ctx, server_hostname=LAN_NAME)
    q = make_doh_query(f"www.{LAN_NAME}")
    c.send_raw(f"GET {get_path(q)} HTTP/1.1\r\nHost: {LAN_NAME}\r\n\r\n".encode())
    got = c.read_for(3)
    assert got.startswith(b"HTTP/1.1 505 "), got
    assert c.close_reason is not None  # closed, no hang
    c.close()


@pytest.mark.skipif(not shutil.which("curl"), reason="curl not installed")
def test_curl_http11_is_refused_at_once(doh_proxy, pki):
    p, port, _ = doh_proxy()
    q = make_doh_query(f"www.{LAN_NAME}")
    r = subprocess.run(["curl", "-s", "--http1.1", "--cacert", pki.ca_file, "--resolve",
                        f"{LAN_NAME}:{port}:127.0.0.1",
                        f"https://{LAN_NAME}:{port}{get_path(q)}"],
                       capture_output=True, timeout=10)
    assert r.returncode == 35, r  # CURLE_SSL_CONNECT_ERROR: the alert
    r = subprocess.run(["curl", "-s", "--http2", "-o", "/dev/null", "-w", "%{http_code}",
                        "--cacert", pki.ca_file, "--resolve", f"{LAN_NAME}:{port}:127.0.0.1",
                        "-H", f"accept: {DNS_MESSAGE}",
                        f"https://{LAN_NAME}:{port}{get_path(q)}"],
                       capture_output=True, text=True, timeout=10)
    assert r.stdout == "200", r


# -- streams -------------------------------------------------------------------------------

def test_exactly_100_streams_at_once(doh_proxy, doh, fake_upstream):
    up = fake_upstream(hold=True)
    p, port, _ = doh_proxy(upstream=up)

    def open_streams(c, n, prefix):
        sids = [c.send_query(make_doh_query(f"{prefix}{i}.example.")) for i in range(n)]
        deadline = time.monotonic() + 5
        while sum(q.question[0].name.to_text().startswith(prefix) for q in up.queries) < n:
            assert time.monotonic() < deadline
            c.pump(0.05)
        return sids

    c = doh(port)
    assert c.max_concurrent_streams == 100
    sids = open_streams(c, 100, "n")  # all 100 reach the upstream at once
    up.set(hold=False)
    for i, sid in enumerate(sids):
        assert a_records(c.response(sid).message) == ["192.0.2.1"], i
    # A 101st after the client acknowledged the limit breaks HTTP/2: nghttp2
    # ends the connection (GOAWAY PROTOCOL_ERROR); the stream is never processed.
    up.set(hold=True)
    rude = doh(port, ignore_stream_limit=True)
    sids = open_streams(rude, 100, "m")
    extra = rude.send_query(make_doh_query("one-too-many.example."))
    assert rude.wait_goaway(2) == (sids[-1], h2wire.PROTOCOL_ERROR)
    assert rude.responses[extra].status is None
    assert "one-too-many.example." not in [q.question[0].name.to_text() for q in up.queries]
    assert p.stats()["doh_protocol_errors"] == 1


def test_a_reset_stream_cancels_its_query(doh_proxy, doh, fake_upstream):
    # A pool of 10 queries, an upstream that takes 30 s for "slow" names.
    up = fake_upstream(delay=lambda q: 30 if q.question[0].name.labels[0].startswith(b"slow")
                       else 0)
    p, port, _ = doh_proxy(upstream=up, extra=["--max-inflight", "10", "--timeout", "20000"])
    a = doh(port)
    sids = [a.send_query(make_doh_query(f"slow{i}.example.")) for i in range(10)]
    deadline = time.monotonic() + 5
    while len(up.queries) < 10:
        assert time.monotonic() < deadline
        a.pump(0.05)
    for sid in sids:
        a.reset_stream(sid)
    a.pump(0.2)
    # Their slots are free again: another client is answered, not SERVFAILed.
    b = doh(port)
    r = b.query(make_doh_query("fast.example."), timeout=2)
    assert r.message.rcode() == dns.rcode.NOERROR and a_records(r.message) == ["192.0.2.1"]
    s = p.stats()
    assert s["queries_cancelled"] == 10 and s["servfail_overload"] == 0
    assert a.query(make_doh_query(f"www.{LAN_NAME}")).status == 200  # a is fine


def test_a_client_that_leaves_mid_query_costs_nothing_more(doh_proxy, doh, fake_upstream):
    up = fake_upstream(delay=lambda q: 30 if q.question[0].name.labels[0].startswith(b"slow")
                       else 0)
    p, port, _ = doh_proxy(upstream=up, extra=["--max-inflight", "10", "--timeout", "20000"])
    a = doh(port)
    for i in range(10):
        a.send_query(make_doh_query(f"slow{i}.example."))
    deadline = time.monotonic() + 5
    while len(up.queries) < 10:
        assert time.monotonic() < deadline
        a.pump(0.05)
    a.close(goaway=False)  # gone, mid-query
    time.sleep(0.2)
    r = doh(port).query(make_doh_query("fast.example."), timeout=2)
    assert a_records(r.message) == ["192.0.2.1"]
    assert p.stats()["queries_cancelled"] == 10


# -- attacks -------------------------------------------------------------------------------

@pytest.mark.time_limit(60)
def test_rapid_reset_is_cut_off_and_costs_others_nothing(doh_proxy, doh, fake_upstream):
    up = fake_upstream(delay=1.0)
    p, port, _ = doh_proxy(upstream=up)
    attacker = doh(port)
    sent = 0
    for i in range(2000):  # HEADERS then RST_STREAM, as fast as it goes
        if attacker.closed:
            break
        try:
            sid = attacker.send_query(make_doh_query(f"r{i}.example."), method="GET")
            attacker.reset_stream(sid)
        except Exception:  # h2 refuses once the connection is gone
            break
        sent += 1
    assert attacker.wait_closed(5), "the attacker was not cut off"
    assert sent < 300  # about 100 at once, then 10 a second
    # What came back after the last frame the client read: a GOAWAY with an
    # error (the client stopped reading when its writes failed).
    rest = h2wire.FrameReader(preface=False).feed(attacker.pipe.read_for(3))
    goaways = [f.error_code() for f in rest if f.type == h2wire.GOAWAY] + \
        [code for _, code in attacker.goaways]
    assert goaways and goaways[0] != h2wire.NO_ERROR, rest
    start = time.monotonic()
    r = doh(port).query(make_doh_query(f"www.{LAN_NAME}"), timeout=2)
    assert a_records(r.message) == ["192.0.2.7"]
    assert time.monotonic() - start < 1.0
    s = p.stats()
    assert s["doh_protocol_errors"] == 1
    assert p.running


def _rss_kib(pid):
    from procutil import proc_status
    return int(proc_status(pid)["VmRSS"].split()[0])


@pytest.mark.time_limit(90)
def test_a_client_that_does_not_read_gets_no_more_than_a_bounded_backlog(doh_proxy, doh):
    # Answers of about 6.5 KB; 4,000 of them would be 26 MB if the server
    # read every request of a client that never reads an answer.
    big = []
    for i in range(16):
        big += ["--local-data", f'big.{LAN_NAME} TXT "{i:02d}{"x" * 198}" "{"y" * 200}"']
    # Under AddressSanitizer, freed memory waits in a quarantine (256 MB by
    # default) and counts in RSS: keep it out of what is measured here.
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS"),
                                                 "quarantine_size_mb=0"]))
    p, port, _ = doh_proxy(extra=big + ["--tcp-idle-timeout", "60000"], env=env)
    q = make_doh_query(f"big.{LAN_NAME}", "TXT")
    warm = doh(port)
    assert len(warm.query(q, method="GET").body) > 6000
    before = _rss_kib(p.proc.pid)
    c = doh(port, ignore_stream_limit=True, timeout=2)
    # All the flow-control credit HTTP/2 allows: only TCP holds the answers back.
    from h2.settings import SettingCodes
    c.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 2 ** 31 - 1})
    c.h2.increment_flow_control_window(2 ** 31 - 1 - 65535)
    c.pump(0.2)
    sent = 0
    for _ in range(4000):
        c.send_query(q, method="GET")  # never pumped: nothing is read
        if c.closed:  # our send blocked: the server stopped reading us
            break
        sent += 1
    time.sleep(1)
    grown = _rss_kib(p.proc.pid) - before
    assert grown < 12 * 1024, f"{grown} KiB more after {sent} unread answers"
    # Others are served meanwhile.
    start = time.monotonic()
    assert warm.query(make_doh_query(f"www.{LAN_NAME}")).status == 200
    assert time.monotonic() - start < 1.0


def raw_h2(port, pki, **kw):
    """A TLS connection with ALPN h2 that has sent the preface and an empty
    SETTINGS, for frames no client library sends."""
    ctx = client_tls_context(pki.ca_file)
    ctx.set_alpn_protocols(["h2"])
    c = DoTClient(port, context=ctx, server_hostname=LAN_NAME, **kw)
    c.send_raw(h2wire.PREFACE + h2wire.settings({}))
    return c


def frame(type_, flags, stream, payload):
    return (len(payload).to_bytes(3, "big") + bytes([type_, flags]) +
            stream.to_bytes(4, "big") + payload)


def frames_until_close(c, seconds):
    """Every frame the server sends until it closes (or `seconds` pass)."""
    return h2wire.FrameReader(preface=False).feed(c.read_for(seconds))


def request_block(path="/dns-query?dns=AAABAAABAAAAAAAAA3d3dwdleGFtcGxlAAABAAE",
                  extra=()):
    return hpack.Encoder().encode([(":method", "GET"), (":scheme", "https"),
                                   (":authority", LAN_NAME), (":path", path), *extra])


def test_settings_and_the_first_answer_share_a_tls_record(doh_proxy, pki):
    """A client whose Finished and first request arrive together gets our
    SETTINGS and the answer in one TLS record (and, with the session ticket
    before it, one write(2)), rather than SETTINGS at the handshake's end
    and the answer after: one TLS record decrypted holds both."""
    p, port, _ = doh_proxy()
    ctx = client_tls_context(pki.ca_file)
    ctx.set_alpn_protocols(["h2"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=LAN_NAME)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                incoming.write(raw.recv(65536))
        path = get_path(make_doh_query(f"www.{LAN_NAME}"))
        tls.write(h2wire.PREFACE + h2wire.settings({}) +
                  frame(h2wire.HEADERS, h2wire.FLAG_END_STREAM | h2wire.FLAG_END_HEADERS, 1,
                        request_block(path)))
        raw.sendall(outgoing.read())  # Finished and the request in one write
        while True:
            try:
                first = tls.read(65536)  # the plaintext of one TLS record
                break
            except ssl.SSLWantReadError:
                incoming.write(raw.recv(65536))
    types = [f.type for f in h2wire.FrameReader(preface=False).feed(first)]
    assert h2wire.SETTINGS in types and h2wire.DATA in types, types


def test_a_continuation_flood_is_cut_off(doh_proxy, doh, pki):
    p, port, _ = doh_proxy()
    c = raw_h2(port, pki)
    block = request_block(extra=[("x-pad", "a" * 300)])
    data = frame(h2wire.HEADERS, h2wire.FLAG_END_STREAM, 1, block[:1])
    for i in range(1, len(block)):  # one CONTINUATION per byte, never END_HEADERS
        data += frame(h2wire.CONTINUATION, 0, 1, block[i:i + 1])
    try:
        c.send_raw(data)
    except OSError:
        pass  # cut off while still sending
    got = frames_until_close(c, 5)
    assert c.close_reason is not None, "still open"
    assert [f for f in got if f.type == h2wire.GOAWAY and f.error_code() != 0], got
    c.close()
    r = doh(port).query(make_doh_query(f"www.{LAN_NAME}"), timeout=2)
    assert a_records(r.message) == ["192.0.2.7"]
    assert p.stats()["doh_protocol_errors"] == 1


def test_headers_too_large_get_431_and_a_header_flood_is_cut_off(doh_proxy, doh):
    p, port, _ = doh_proxy()
    c = doh(port)
    q = make_doh_query(f"www.{LAN_NAME}")
    r = c.response(c.request("GET", path=get_path(q), extra_headers=[("x-a", "a" * 17000)]))
    assert r.status == 431
    # 200 KB of headers: more CONTINUATION frames than the server takes.
    flood = doh(port)
    sid = flood.request("GET", path=get_path(q),
                        extra_headers=[(f"x-{i}", "b" * 4000) for i in range(50)])
    assert flood.wait_closed(5)
    assert flood.responses[sid].status is None
    assert c.query(q).status == 200  # the other connection is untouched
    assert p.stats()["doh_protocol_errors"] == 1


@pytest.mark.time_limit(30)
def test_handshakes_that_never_finish_are_closed_and_cost_others_nothing(doh_proxy, doh):
    p, port, _ = doh_proxy()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    try:
        start = time.monotonic()
        good = doh(port, source="127.0.0.2")  # another host
        r = good.query(make_doh_query(f"www.{LAN_NAME}"))
        assert a_records(r.message) == ["192.0.2.7"]
        assert time.monotonic() - start < 1.0
        for s in idle:
            s.settimeout(10 - (time.monotonic() - start))
            assert s.recv(1) == b""  # closed by the server within 10 s
        elapsed = time.monotonic() - start
        assert 4.0 <= elapsed < 10.0, elapsed
    finally:
        for s in idle:
            s.close()
    # 32 (--max-clients-per-address) waited for the deadline, 18 were closed at once.
    s = p.stats()
    assert s["doh_handshake_failures"] == 32 and s["tls_address_refused"] == 18, s


def test_a_client_that_never_asks_is_closed_after_the_first_request_deadline(doh_proxy, doh):
    p, port, _ = doh_proxy(extra=["--tcp-idle-timeout", "30000"])
    start = time.monotonic()
    c = doh(port)
    assert c.wait_closed(9)
    assert 4.0 <= time.monotonic() - start < 8.0
    assert c.goaways == [(0, h2wire.NO_ERROR)]  # told politely


def test_an_idle_client_is_told_goaway_and_closed(doh_proxy, doh):
    p, port, _ = doh_proxy(extra=["--tcp-idle-timeout", "1000"])
    c = doh(port)
    sid = c.send_query(make_doh_query(f"www.{LAN_NAME}"))
    assert c.response(sid).status == 200
    start = time.monotonic()
    assert c.wait_closed(4)
    assert 0.8 <= time.monotonic() - start < 3.0
    assert c.goaways == [(sid, h2wire.NO_ERROR)]
    assert p.stats()["doh_idle_closed"] == 1


def test_one_address_gets_max_clients_per_address(doh_proxy, doh):
    p, port, _ = doh_proxy(extra=["--max-clients-per-address", "2"])
    q = make_doh_query(f"www.{LAN_NAME}")
    a, b = doh(port), doh(port)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        doh(port)
    assert doh(port, source="127.0.0.2").query(q).status == 200
    assert a.query(q).status == 200 and b.query(q).status == 200
    assert p.stats()["tls_address_refused"] == 1


def test_sighup_serves_a_new_certificate_to_new_connections(doh_proxy, doh, pki, workdir):
    from cryptography import x509

    def serial(client):
        return x509.load_der_x509_certificate(client.pipe.peer_certificate()).serial_number

    cert, key = workdir / "cert.pem", workdir / "key.pem"
    first = pki.leaf("reload-1", dns_names=[LAN_NAME])
    shutil.copy(first[0], cert)
    shutil.copy(first[1], key)
    p, port, _ = doh_proxy(cert=(str(cert), str(key)))
    old = doh(port)
    serial1 = serial(old)
    second = pki.leaf("reload-2", dns_names=[LAN_NAME])
    shutil.copy(second[0], cert)
    shutil.copy(second[1], key)
    off = p.log_offset()
    p.send_signal(signal.SIGHUP)
    assert p.wait_log(r"configuration reloaded", since=off)
    want = x509.load_pem_x509_certificate(open(second[0], "rb").read()).serial_number
    assert p.wait_log(rf"SIGHUP: TLS listeners serve CN={LAN_NAME}, serial 0?{want:X},", since=off)
    new = doh(port)
    assert serial(new) == want != serial1
    q = make_doh_query(f"www.{LAN_NAME}")
    for c in (old, new):  # the open connection keeps its session and is served
        assert a_records(c.query(q).message) == ["192.0.2.7"]


def test_a_client_outside_allow_gets_refused_with_ede_18(doh_proxy, doh):
    p, port, up = doh_proxy(extra=["--allow", "10.0.0.0/8"])
    r = doh(port).query(make_doh_query("www.example.", use_edns=0))
    assert r.status == 200
    assert r.message.rcode() == dns.rcode.REFUSED and ede_codes(r.message) == [18]
    assert up.queries == []
    assert p.stats()["refused_clients"] == 1


def test_shutdown_sends_goaway(doh_proxy, doh):
    p, port, _ = doh_proxy()
    c = doh(port)
    assert c.query(make_doh_query(f"www.{LAN_NAME}")).status == 200
    p.send_signal(signal.SIGTERM)
    assert c.wait_goaway(3) == (1, h2wire.NO_ERROR)
    assert c.wait_closed(3)
    assert p.stop() == 0


@pytest.mark.time_limit(90)
def test_a_hundred_dot_and_doh_clients_with_the_same_ids_get_their_own_answers(
        dotproxy, fake_upstream, lan_cert, pki):
    import random
    rnd = random.Random(8484)
    up = fake_upstream(delay=lambda q: rnd.random() * 0.05)
    dot_port, doh_port = free_port(), free_port()
    p = dotproxy([up], extra_args=["--listen-tls", f"127.0.0.1:{dot_port}",
                                   "--listen-https", f"127.0.0.1:{doh_port}",
                                   "--cert-file", lan_cert[0], "--key-file", lan_cert[1],
                                   "--max-clients-per-address", "200"])
    ctx = client_tls_context(pki.ca_file)
    dots = [DoTClient(dot_port, context=ctx, server_hostname=LAN_NAME) for _ in range(50)]
    dohs = [DoHClient(doh_port, ca_file=pki.ca_file, server_hostname=LAN_NAME)
            for _ in range(50)]
    try:
        for i, c in enumerate(dots):
            c.send(*[make_query(f"dot{i}-q{j}.example.", id=j) for j in range(5)])
        sids = [[c.send_query(make_doh_query(f"doh{i}-q{j}.example."),  # all ID 0
                              method="GET" if j % 2 else "POST") for j in range(5)]
                for i, c in enumerate(dohs)]
        for i, c in enumerate(dots):
            got = {}
            for _ in range(5):
                r = c.recv()
                got[r.id] = r.question[0].name.to_text()
            assert got == {j: f"dot{i}-q{j}.example." for j in range(5)}
        for i, c in enumerate(dohs):
            for j, sid in enumerate(sids[i]):
                m = c.response(sid).message
                assert m.id == 0 and m.question[0].name.to_text() == f"doh{i}-q{j}.example."
                assert a_records(m) == ["192.0.2.1"]
    finally:
        for c in dots + dohs:
            c.close()
    s = p.stats()
    assert s["queries_dot"] == 250 and s["queries_doh"] == 250


def test_listen_https_without_a_certificate_is_a_configuration_error():
    from dotproxy_proc import run_cli
    r = run_cli(["--listen-https", f"127.0.0.1:{free_port()}", "--check-config"])
    assert r.returncode == 2 and "--listen-https needs a certificate" in r.stderr
