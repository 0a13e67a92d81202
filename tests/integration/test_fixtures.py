"""Self-tests of the integration fixtures; none of them needs dotproxy.

If a fixture lies (an upstream that does not misbehave as asked, a
certificate that is accepted when it should not be), every dotproxy test
built on it proves nothing. These tests pin each promise down with
dnspython and Python's ssl module as the client. The fixtures around the
dotproxy binary are exercised with stub_dotproxy.py, a stand-in.
"""

import base64
import hashlib
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import fake_upstream as fu
from dotproxy_proc import AUTH_NAME, DotProxy, run_cli, split_listen
from netutil import DoTClient, dot_query, free_port, make_query, udp_query, tcp_query
from unbound_dot import BIG_COUNT, UnboundDoT

HERE = os.path.dirname(os.path.abspath(__file__))
STUB = os.path.join(HERE, "stub_dotproxy.py")


def client(up, certs, **kw):
    kw.setdefault("ca_file", certs.ca_file)
    kw.setdefault("server_hostname", AUTH_NAME)
    kw.setdefault("timeout", 2.0)
    return DoTClient(up.port, **kw)


def a_addresses(resp):
    return [rr.address for rrset in resp.answer if rrset.rdtype == dns.rdatatype.A
            for rr in rrset]


# -- pki ----------------------------------------------------------------------------------

def test_pki_leaf_has_requested_names_and_dates(certs):
    with open(certs.good[0], "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [AUTH_NAME]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    with open(certs.expired[0], "rb") as f:
        expired = x509.load_pem_x509_certificate(f.read())
    assert expired.not_valid_after.year == 2021
    assert oct(os.stat(certs.good[1]).st_mode & 0o777) == "0o600"


def test_spki_pin_matches_what_the_server_presents(fake_upstream, certs, pki):
    up = fake_upstream()
    with client(up, certs) as c:
        der = c.peer_certificate()
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert pki.spki_pin(certs.good[0]) == base64.b64encode(hashlib.sha256(spki).digest()).decode()
    assert pki.spki_pin(certs.good[0]) != pki.spki_pin(certs.wrong_name[0])


# -- netutil --------------------------------------------------------------------------------

def test_free_port_is_free_for_udp_and_tcp():
    port = free_port()
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", port))
    assert split_listen(f"127.0.0.1:{port}") == ("127.0.0.1", port)
    assert split_listen(f"[::1]:{port}") == ("::1", port)


# -- unbound --------------------------------------------------------------------------------

def test_unbound_answers_local_data_over_tls(unbound, certs):
    def q(name, rdtype, **kw):
        return dot_query(unbound.port, name, rdtype, ca_file=certs.ca_file,
                         server_hostname=AUTH_NAME, **kw)

    assert a_addresses(q("www.example.", "A")) == ["192.0.2.10"]
    assert q("www.example.", "AAAA").answer[0][0].address == "2001:db8::10"
    assert q("txt.example.", "TXT").answer[0][0].strings == (b"dotproxy test record",)
    assert a_addresses(q("n150.example.", "A")) == ["198.51.100.150"]
    nodata = q("www.example.", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    big = q("big.example.", "A", use_edns=0)
    assert len(a_addresses(big)) == BIG_COUNT
    assert len(big.to_wire(max_size=65535)) > 1232


def test_unbound_never_recurses(unbound, certs):
    # A name outside the local data is NXDOMAIN from unbound itself (AA set,
    # answered at once), not an attempt to ask the root servers.
    t = time.monotonic()
    r = dot_query(unbound.port, "example.com.", "A", ca_file=certs.ca_file,
                  server_hostname=AUTH_NAME)
    assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA
    assert time.monotonic() - t < 1.0
    with open(unbound.conf_file) as f:
        conf = f.read()
    for line in ('local-zone: "." static', 'module-config: "iterator"',
                 "do-not-query-address: 0.0.0.0/0", "control-enable: no"):
        assert line in conf
    assert "trust-anchor" not in conf and "root-hints" not in conf


def test_unbound_truncates_big_answer_over_plain_udp(unbound):
    # Its UDP side is plain DNS: a handy reference for what truncation looks like.
    r = udp_query(unbound.port, "big.example.", "A")
    assert r.flags & dns.flags.TC


def test_unbound_pipelined_queries_on_one_connection(unbound, certs):
    queries = [make_query(f"n{i}.example.", "A") for i in range(20)]
    with client(unbound, certs) as c:
        c.send(*queries)
        answers = {r.id: r for r in (c.recv() for _ in queries)}
    for i, q in enumerate(queries):
        assert a_addresses(answers[q.id]) == [f"198.51.100.{i}"]


def test_unbound_with_wrong_name_certificate_is_rejected(unbound_factory, certs):
    u = unbound_factory(tls=certs.wrong_name, records=["www.example. 300 IN A 192.0.2.10"])
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        dot_query(u.port, "www.example.", "A", ca_file=certs.ca_file, server_hostname=AUTH_NAME)
    # ...while the same server is fine for a client that expects that name.
    r = dot_query(u.port, "www.example.", "A", ca_file=certs.ca_file,
                  server_hostname="other.example.test")
    assert a_addresses(r) == ["192.0.2.10"]


def test_unbound_stop_and_restart_on_same_port(workdir, certs):
    u = UnboundDoT(workdir / "ub", *certs.good).start()
    try:
        port = u.port
        assert u.stop() == 0
        with pytest.raises(OSError):
            dot_query(port, "www.example.", "A", verify=False, timeout=0.5)
        u.start()
        assert u.port == port
        assert a_addresses(dot_query(port, "www.example.", "A", verify=False)) == ["192.0.2.10"]
    finally:
        u.stop()


# -- fake upstream: well-behaved ----------------------------------------------------------------

def test_fake_default_answers_and_records(fake_upstream, certs):
    up = fake_upstream()

    def q(name, rdtype="A", **kw):
        return dot_query(up.port, name, rdtype, ca_file=certs.ca_file,
                         server_hostname=AUTH_NAME, **kw)

    r = q("www.example.")
    assert a_addresses(r) == [fu.ANSWER_A]
    assert r.flags & dns.flags.QR and r.flags & dns.flags.RA and r.edns < 0
    assert q("www.example.", "AAAA").answer[0][0].address == fu.ANSWER_AAAA
    big = q("big.example.", use_edns=0)
    assert a_addresses(big) == [f"192.0.2.{i}" for i in range(1, 101)]  # in order
    assert len(big.to_wire(max_size=65535)) > 1500 and big.payload == 1232
    nx = q("nx.example.")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].rdtype == dns.rdatatype.SOA
    nodata = q("www.example.", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer

    assert up.connections == up.handshakes == 5
    assert up.resumed_handshakes == 0
    assert [m.question[0].name.to_text() for m in up.queries] == [
        "www.example.", "www.example.", "big.example.", "nx.example.", "www.example."]
    assert up.app_bytes == sum(2 + len(w) for w in up.raw_queries)
    assert up.sni_names == [AUTH_NAME] * 5
    assert up.query_connections == [0, 1, 2, 3, 4]
    up.reset_counters()
    assert (up.connections, up.queries, up.app_bytes) == (0, [], 0)


def test_fake_custom_responder(fake_upstream, certs):
    def servfail_or_silence(q):
        if q.question[0].name.labels[0] == b"quiet":
            return None
        r = dns.message.make_response(q)
        r.set_rcode(dns.rcode.SERVFAIL)
        return r

    up = fake_upstream(responder=servfail_or_silence)
    with client(up, certs, timeout=0.5) as c:
        c.send(make_query("quiet.example.", "A"), make_query("loud.example.", "A"))
        assert c.recv().rcode() == dns.rcode.SERVFAIL
        with pytest.raises(socket.timeout):
            c.recv()


def test_fake_set_changes_behaviour_at_runtime(fake_upstream, certs):
    up = fake_upstream(stall=True)
    with client(up, certs, timeout=0.3) as c:
        c.send(make_query("a.example.", "A"))
        with pytest.raises(socket.timeout):
            c.recv()
        up.set(stall=False)
        q = make_query("b.example.", "A")
        c.send(q)
        assert c.recv().id == q.id
    with pytest.raises(TypeError):
        up.set(no_such_behaviour=1)


def test_fake_keepalive_option(fake_upstream, certs):
    up = fake_upstream(keepalive=50)
    r = dot_query(up.port, "www.example.", "A", ca_file=certs.ca_file,
                  server_hostname=AUTH_NAME, use_edns=0)
    assert [(o.otype, o.data) for o in r.options] == [(11, (50).to_bytes(2, "big"))]


def test_fake_idle_timeout_closes_quiet_connections(fake_upstream, certs):
    up = fake_upstream(idle_timeout=0.2)
    with client(up, certs) as c:
        c.send(make_query("a.example.", "A"))
        c.recv()
        t = time.monotonic()
        with pytest.raises(EOFError):
            c.recv_frame()
        assert 0.1 < time.monotonic() - t < 1.5


def test_fake_session_resumption_is_counted(fake_upstream, certs):
    up = fake_upstream()
    with client(up, certs) as first:
        first.send(make_query("a.example.", "A"))
        first.recv()  # TLS 1.3 tickets arrive after the handshake, with data
        session = first.session
        ctx = first.ctx
    with client(up, certs, context=ctx, session=session) as second:
        second.send(make_query("a.example.", "A"))
        second.recv()
        assert second.session_reused
    assert (up.handshakes, up.resumed_handshakes) == (2, 1)


def test_fake_many_concurrent_connections(fake_upstream, certs):
    up = fake_upstream(delay=0.05)
    results, errors = [], []

    def one(i):
        try:
            with client(up, certs) as c:
                qs = [make_query(f"c{i}-{j}.example.", "A") for j in range(5)]
                c.send(*qs)
                got = sorted(c.recv().id for _ in qs)
                results.append(got == sorted(q.id for q in qs))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors and results == [True] * 50
    assert up.connections == 50 and len(up.queries) == 250


def test_fake_on_ipv6_loopback(fake_upstream, certs):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    up = fake_upstream(host="::1")
    r = dot_query(up.port, "www.example.", "A", host="::1", ca_file=certs.ca_file,
                  server_hostname="::1")
    assert a_addresses(r) == [fu.ANSWER_A]


# -- fake upstream: misbehaviour ------------------------------------------------------------------

def test_fake_delay_lets_fast_answers_overtake(fake_upstream, certs):
    up = fake_upstream(delay=lambda q: 0.3 if q.question[0].name.labels[0] == b"slow" else 0)
    slow, fast = make_query("slow.example.", "A"), make_query("fast.example.", "A")
    with client(up, certs) as c:
        c.send(slow, fast)
        assert [c.recv().id, c.recv().id] == [fast.id, slow.id]


def test_fake_reorder_reverses_answers(fake_upstream, certs):
    up = fake_upstream(reorder=3)
    qs = [make_query(f"r{i}.example.", "A") for i in range(3)]
    with client(up, certs) as c:
        c.send(*qs)
        got = [c.recv() for _ in qs]
    assert [r.id for r in got] == [q.id for q in reversed(qs)]
    assert [a_addresses(r) for r in got] == [[fu.ANSWER_A]] * 3


@pytest.mark.parametrize("mode", ["notify", "reset"])
def test_fake_close_after(fake_upstream, certs, mode):
    up = fake_upstream(close_after=2, close_mode=mode)
    qs = [make_query(f"k{i}.example.", "A") for i in range(3)]
    with client(up, certs) as c:
        c.send(*qs)  # one write, so the server reads all three before answering
        assert [c.recv().id for _ in range(2)] == [qs[0].id, qs[1].id]
        if mode == "notify":
            with pytest.raises(EOFError):  # close_notify: a clean end of stream
                c.recv_frame()
            assert c.close_reason == "close_notify"
        else:
            with pytest.raises(ConnectionResetError):
                c.recv_frame()
    assert up.wait_queries(3)
    assert [m.id for m in up.queries] == [q.id for q in qs]  # the third was read, not answered


def test_fake_close_after_zero_records_but_never_answers(fake_upstream, certs):
    up = fake_upstream(close_after=0)
    q = make_query("lost.example.", "A")
    with client(up, certs) as c:
        c.send(q)
        with pytest.raises(EOFError):
            c.recv_frame()
    assert [m.id for m in up.queries] == [q.id]


def test_fake_stall_times_out_but_records(fake_upstream, certs):
    up = fake_upstream(stall=True)
    with pytest.raises(dns.exception.Timeout):
        dot_query(up.port, "www.example.", "A", ca_file=certs.ca_file,
                  server_hostname=AUTH_NAME, timeout=0.3)
    assert len(up.queries) == 1 and up.handshakes == 1


def test_fake_stall_handshake(fake_upstream, certs):
    up = fake_upstream(stall_handshake=True)
    with pytest.raises(socket.timeout):
        client(up, certs, timeout=0.3)
    assert (up.connections, up.handshakes) == (1, 0)


def test_fake_wrong_id(fake_upstream, certs):
    up = fake_upstream(wrong_id=True)
    q = make_query("www.example.", "A")
    with client(up, certs, timeout=0.3) as c:
        c.send(q)
        r = c.recv()
        assert r.id == q.id ^ 0x5A5A and r.question == q.question
        with pytest.raises(socket.timeout):  # and nothing else
            c.recv()
    with pytest.raises(dns.query.BadResponse):
        dot_query(up.port, "www.example.", "A", ca_file=certs.ca_file, server_hostname=AUTH_NAME)


def test_fake_wrong_question(fake_upstream, certs):
    up = fake_upstream(wrong_question=True)
    q = make_query("www.example.", "A")
    with client(up, certs, timeout=0.3) as c:
        c.send(q)
        r = c.recv()
        assert r.id == q.id and r.question[0].name.to_text() == "evil.www.example."
        with pytest.raises(socket.timeout):
            c.recv()


def test_fake_wrong_then_right(fake_upstream, certs):
    up = fake_upstream(wrong_then_right=True)
    q = make_query("www.example.", "A")
    with client(up, certs) as c:
        c.send(q)
        bad_id, bad_q, good = c.recv(), c.recv(), c.recv()
    assert bad_id.id == q.id ^ 0x5A5A and a_addresses(bad_id) == [fu.POISON_A]
    assert bad_q.id == q.id and bad_q.question[0].name.to_text() == "evil.www.example."
    assert a_addresses(bad_q) == [fu.POISON_A]
    assert q.is_response(good) and a_addresses(good) == [fu.ANSWER_A]


@pytest.mark.parametrize("kind", [True, "same_id"])
def test_fake_garbage_then_answer(fake_upstream, certs, kind):
    up = fake_upstream(garbage=kind)
    q = make_query("www.example.", "A")
    with client(up, certs) as c:
        c.send(q)
        junk = c.recv_frame()
        t = time.monotonic()
        good = c.recv()
        assert time.monotonic() - t >= 0.03
    assert len(junk) == (32 if kind == "same_id" else 30)
    if kind == "same_id":
        assert junk[:2] == q.id.to_bytes(2, "big")
    assert q.is_response(good)


def test_fake_garbage_raw_breaks_framing(fake_upstream, certs):
    up = fake_upstream(garbage_raw=True)
    with client(up, certs) as c:
        c.send(make_query("www.example.", "A"))
        assert c.recv_exact(2) == b"\xff\xff"
        with pytest.raises(EOFError, match=r"closed \(close_notify\) after 5 of 65535"):
            c.recv_exact(0xFFFF)


def test_fake_endless_frame_trickles(fake_upstream, certs):
    up = fake_upstream(endless_frame=True, trickle_interval=0.05)
    with client(up, certs) as c:
        c.send(make_query("www.example.", "A"))
        got = c.read_for(0.5)
    # The length says 65535; bytes keep coming, one at a time, and never that many.
    assert got[:2] == b"\xff\xff" and 2 + 3 <= len(got) < 2 + 20
    assert c.close_reason is None


# -- fake upstream: certificates -------------------------------------------------------------------

@pytest.mark.parametrize("case, cafile, message", [
    ("wrong_name", "ca_file", "Hostname mismatch"),
    ("expired", "ca_file", "certificate has expired"),
    ("not_yet_valid", "ca_file", "certificate is not yet valid"),
    ("unknown_ca", "ca_file", "unable to get local issuer certificate"),
])
def test_fake_bad_certificates_are_rejected(fake_upstream, certs, case, cafile, message):
    up = fake_upstream(tls=getattr(certs, case))
    with pytest.raises(ssl.SSLCertVerificationError, match=message):
        dot_query(up.port, "www.example.", "A", ca_file=getattr(certs, cafile),
                  server_hostname=AUTH_NAME)
    # The server saw the client's alert; no query was ever sent.
    assert up.wait_until(lambda s: s.handshake_errors) and up.handshakes == 0
    assert up.queries == []


def test_fake_unknown_ca_is_fine_for_its_own_ca(fake_upstream, certs):
    up = fake_upstream(tls=certs.unknown_ca)
    r = dot_query(up.port, "www.example.", "A", ca_file=certs.unknown_ca_file,
                  server_hostname=AUTH_NAME)
    assert a_addresses(r) == [fu.ANSWER_A]


def test_ip_san_is_checked_when_no_name_is_given(fake_upstream, certs):
    # `--upstream IP` without #AUTH-NAME means the certificate must carry the IP.
    good = fake_upstream(tls=certs.ip_only)
    assert dot_query(good.port, "www.example.", "A", ca_file=certs.ca_file,
                     server_hostname="127.0.0.1").answer
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        bad = fake_upstream(tls=certs.wrong_name)
        dot_query(bad.port, "www.example.", "A", ca_file=certs.ca_file,
                  server_hostname="127.0.0.1")


# -- fake upstream: lifecycle ---------------------------------------------------------------------

def test_fake_stop_and_start_on_same_port(fake_upstream, certs):
    up = fake_upstream()
    port = up.port
    c = client(up, certs)
    c.send(make_query("a.example.", "A"))
    c.recv()
    up.stop()
    with pytest.raises(EOFError):
        c.recv_frame()  # the open connection died with the server...
    assert c.close_reason == "eof"  # ...abruptly: FIN without close_notify
    c.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5)
    up.start()
    assert up.port == port
    assert a_addresses(dot_query(port, "a.example.", "A", ca_file=certs.ca_file,
                                 server_hostname=AUTH_NAME)) == [fu.ANSWER_A]


def test_fake_drop_connections_keeps_listening(fake_upstream, certs):
    up = fake_upstream()
    with client(up, certs) as c:
        c.send(make_query("a.example.", "A"))
        c.recv()
        assert up.open_connections == 1
        up.drop_connections()
        with pytest.raises(EOFError):
            c.recv_frame()
    assert up.wait_until(lambda s: s.open_connections == 0)
    assert dot_query(up.port, "a.example.", "A", ca_file=certs.ca_file,
                     server_hostname=AUTH_NAME).answer


# -- the dotproxy fixture, driven with a stub binary ----------------------------------------

def test_dotproxy_fixture_runs_and_reads_stats(dotproxy, fake_upstream):
    up = fake_upstream()
    p = dotproxy(upstreams=[up], extra_args=["--log-queries"], binary=STUB, verbose=1)
    assert up.queries == []  # the readiness probe sent nothing upstream
    assert a_addresses(udp_query(p.port, "www.example.", "A")) == [fu.ANSWER_A]
    assert a_addresses(tcp_query(p.port, "www.example.", "A")) == [fu.ANSWER_A]
    assert udp_query(p.port, "big.example.", "A").flags & dns.flags.TC
    assert p.stats() == {"queries": 3, "answered": 3, "servfail": 0}
    assert p.wait_log(r"query www\.example\.")
    assert up.sni_names == [AUTH_NAME] * 3
    assert p.stop() == 0


def test_dotproxy_stats_parsing():
    parse = DotProxy.parse_stats
    assert parse("stats: a=1 b=22 name=x") == {"a": 1, "b": 22, "name": "x"}
    assert parse("12:00:00 info: stats: q=5") == {"q": 5}


def test_dotproxy_crash_is_reported(workdir, fake_upstream):
    up = fake_upstream()
    port = free_port()
    p = DotProxy(["--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1@{up.port}",
                  "--stub-crash-on", "boom.example."],
                 workdir=workdir, listen=f"127.0.0.1:{port}", binary=STUB).start()
    with pytest.raises(dns.exception.Timeout):
        udp_query(port, "boom.example.", "A", timeout=0.5)
    p.proc.wait(2)
    assert p.problems() == ["died from signal SIGSEGV"]
    with pytest.raises(AssertionError, match="SIGSEGV"):
        p.check_exit()


def test_dotproxy_hang_on_sigterm_is_reported(workdir):
    port = free_port()
    p = DotProxy(["--listen", f"127.0.0.1:{port}", "--stub-ignore-term"],
                 workdir=workdir, listen=f"127.0.0.1:{port}", binary=STUB).start()
    assert p.stop(timeout=0.5) == -9
    assert p.problems() == ["did not exit within the timeout after SIGTERM and was killed"]


def test_dotproxy_sanitizer_report_is_a_failure(workdir):
    p = DotProxy([], workdir=workdir, listen="127.0.0.1:1", binary=STUB)
    with open(p.log_file, "w") as f:
        f.write("==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n")
    assert p.problems() == ["sanitizer report in the log: 'ERROR: AddressSanitizer'"]


def test_dotproxy_fixture_fails_clearly(dotproxy, workdir):
    with pytest.raises(pytest.fail.Exception, match="dotproxy binary not found at /nonexistent"):
        dotproxy(binary="/nonexistent/dotproxy")
    # Start-up failure (port taken): the message carries the exit status and the log.
    # The UDP side is the one taken, so no listener of ours answers the TCP probe.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(pytest.fail.Exception, match="(?s)exited with status 1.*cannot listen"):
            dotproxy(listen=f"127.0.0.1:{port}", binary=STUB)


def test_run_cli_bad_argument():
    r = run_cli(["--no-such-option"], binary=STUB)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1


@pytest.mark.time_limit(30)
def test_demo_runs_against_the_stub():
    r = subprocess.run([sys.executable, os.path.join(HERE, "demo.py"), STUB],
                       capture_output=True, text=True, timeout=25)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "demo passed" in r.stdout and "Truncated, retrying in TCP mode" in r.stdout


def test_demo_fails_without_binary():
    r = subprocess.run([sys.executable, os.path.join(HERE, "demo.py"), "/nonexistent/dotproxy"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "not found" in r.stderr
