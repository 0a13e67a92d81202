"""DNS-over-HTTPS upstreams (https://IP[:PORT][/PATH][#NAME]): daemon/doh.c.

Against three real DoH servers from Debian on loopback (doh_servers.py:
BIND's named, Knot Resolver, dnsdist), each answering from local data with
a certificate from the session's throwaway CA: POST and GET, the client's
own DNS ID, authentication (name, IP, pins) failing as for DoT, an HTTP
error failing only its query, failover from DoH to DoT, DoH inside a
--forward-zone, the query's form on the wire (padding, no keepalive),
session resumption and the idle close.

Behaviours that need a server misbehaving on purpose (GOAWAY,
REFUSED_STREAM, one stream at a time, 5xx, another content type, a stalled
stream, a silent connection) are in test_doh_faults.py, against the
fault-injecting DoH server.
"""

import concurrent.futures
import re
import signal
import socket

import dns.edns
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from doh_servers import AUTH_NAME, BURST_A, SERVERS, WWW_A, WWW_AAAA
from dotproxy_proc import run_cli
from netutil import free_port
from pki import PKI
from procutil import wait_for

ALL = sorted(SERVERS)


def _add_log_source(request, title, get_text):
    # As conftest.py does: a failing test shows what the servers said.
    request.node.__dict__.setdefault("_log_sources", []).append((title, get_text))


@pytest.fixture
def doh_factory(request, workdir, certs):
    """doh_factory(kind, tls=(cert, key), ca_file=..., **kw) -> a started DoH
    server (its readiness checked trusting ca_file), stopped at teardown."""
    started = []

    def start(kind, *, tls=None, ca_file=None, **kw):
        cls = SERVERS[kind]
        if not cls.available():
            pytest.skip(f"{cls.binary} or kdig is not installed")
        cert, key = tls or certs.good
        s = cls(workdir / f"{kind}{len(started) or ''}", cert, key, ca_file or certs.ca_file,
                **kw)
        started.append(s)
        _add_log_source(request, f"{kind} log ({s.log_file})", s.log)
        return s.start()

    yield start
    for s in started:
        s.stop()


@pytest.fixture(params=ALL)
def doh_server(request, doh_factory):
    """Each real DoH server in turn, with certs.good."""
    return doh_factory(request.param)


def a_records(reply):
    return sorted(rr.to_text() for rrset in reply.answer for rr in rrset
                  if rr.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA))


def ede_codes(reply):
    return [o.code for o in reply.options if isinstance(o, dns.edns.EDEOption)]


def ask(p, name, rdtype="A", *, qid=None, tcp=False, use_edns=0):
    q = dns.message.make_query(name, rdtype, use_edns=use_edns)
    if qid is not None:
        q.id = qid
    if tcp:
        return q, dns.query.tcp(q, p.addr, port=p.port, timeout=3)
    return q, dns.query.udp(q, p.addr, port=p.port, timeout=3)


# -- the servers themselves --------------------------------------------------------

@pytest.mark.parametrize("kind", ALL)
def test_server_answers_kdig_post_and_get(doh_factory, kind):
    """The cross-check: each server answers an independent client (kdig) by
    POST and GET, before dotproxy is judged against it."""
    s = doh_factory(kind)
    for get in (False, True):
        rc, out = s.kdig("www.example.", "AAAA", get=get)
        assert rc == 0 and "status: NOERROR" in out and WWW_AAAA in out, out
        assert ("HTTP/2-GET" if get else "HTTP/2-POST") in out, out


# -- forwarding ---------------------------------------------------------------------

@pytest.mark.parametrize("method", ["post", "get"])
def test_forwards_over_doh_with_the_clients_id(doh_server, dotproxy, method):
    p = dotproxy([doh_server.spec()], ["--doh-method", method, "--cache-size", "0"])
    for i, (rdtype, want) in enumerate([("A", WWW_A), ("AAAA", WWW_AAAA)] * 3):
        qid = 0x1111 * (i + 1)
        q, r = ask(p, "www.example.", rdtype, qid=qid, tcp=bool(i % 2))
        assert r.rcode() == dns.rcode.NOERROR
        assert want in a_records(r)
        assert r.id == qid  # the upstream saw ID 0; the client gets its own back
    s = p.stats()
    assert s["answers_forwarded"] == 6
    assert s["upstream_connects"] == 1  # one connection carries them all
    assert s["upstream_doh_status"] == s["upstream_doh_refused"] == 0


def test_many_queries_at_once_share_streams(doh_server, dotproxy):
    """200 distinct questions at once: multiplexed over a few connections,
    every one answered, in whatever order the server finishes them."""
    p = dotproxy([doh_server.spec()], ["--cache-size", "0"])

    def one(i):
        _, r = ask(p, f"n{i}.burst.example.")
        return r

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(one, range(200)))
    assert all(r.rcode() == dns.rcode.NOERROR and BURST_A in a_records(r) for r in replies)
    s = p.stats()
    assert s["answers_forwarded"] == 200
    assert 1 <= s["upstream_connects"] <= 4  # --max-connections


def test_query_on_the_wire_is_padded_without_keepalive(doh_factory, dotproxy):
    """RFC 8467 padding to 128-byte blocks as for DoT, and no
    edns-tcp-keepalive (RFC 8484 §5.3), by POST and by GET; with
    --no-padding, no padding option.  dnsdist describes what it received."""
    s = doh_factory("dnsdist")
    for args, pad in ((["--doh-method", "post"], 1), (["--doh-method", "get"], 1),
                      (["--no-padding"], 0)):
        p = dotproxy([s.spec()], args + ["--cache-size", "0"])
        _, r = ask(p, "probe.example.")
        assert r.rcode() == dns.rcode.NOERROR
        length, ka, padded = str(r.answer[0][0].target).split(".")[:3]
        assert ka == "ka0", r.answer
        assert padded == f"pad{pad}", r.answer
        if pad:
            assert int(length[3:]) % 128 == 0, r.answer
        p.stop()


# -- authentication, as for DoT -------------------------------------------------------

@pytest.mark.parametrize("kind", ["dnsdist"])
def test_auth_name_ip_and_pins(doh_factory, dotproxy, certs, kind):
    s = doh_factory(kind)
    pin = PKI.spki_pin(certs.good[0])
    other_pin = PKI.spki_pin(certs.wrong_name[0])
    good = [s.spec(), s.spec(auth_name=None), s.spec(pins=[other_pin, pin])]
    for spec in good:
        p = dotproxy([spec], ["--cache-size", "0"])
        _, r = ask(p, "www.example.")
        assert r.rcode() == dns.rcode.NOERROR and WWW_A in a_records(r), spec
        p.stop()


@pytest.mark.parametrize("bad", ["wrong-name", "wrong-pin", "unknown-ca"])
def test_failed_authentication_sends_nothing(doh_factory, dotproxy, certs, bad):
    """A certificate that does not match the name, a key that matches no pin,
    an issuer nobody trusts: SERVFAIL, the reason in the log, no query sent."""
    if bad == "unknown-ca":
        s = doh_factory("dnsdist", tls=certs.unknown_ca, ca_file=certs.unknown_ca_file)
        spec = s.spec()
    else:
        s = doh_factory("dnsdist")
        spec = (s.spec(auth_name="other.example.test") if bad == "wrong-name"
                else s.spec(pins=[PKI.spki_pin(certs.wrong_name[0])]))
    p = dotproxy([spec], ["--cache-size", "0"])
    _, r = ask(p, "www.example.")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert p.wait_log(r"TLS failed: .*; nothing was sent to it")
    st = p.stats()
    assert st["upstream_handshakes"] == 0 and st["upstream_tls_failures"] >= 1


def test_opportunistic_profile_uses_unauthenticated_doh(doh_factory, dotproxy):
    s = doh_factory("kresd")
    p = dotproxy([s.spec(auth_name="other.example.test")],
                 ["--profile", "opportunistic", "--cache-size", "0"])
    _, r = ask(p, "www.example.")
    assert r.rcode() == dns.rcode.NOERROR and WWW_A in a_records(r)
    assert p.stats()["upstream_unauthenticated"] == 1


def test_server_without_h2_is_a_connection_failure(fake_upstream, dotproxy):
    """A TLS server that selects no ALPN protocol (here the fake DoT server)
    cannot carry DoH: the handshake fails, the log says why, nothing is sent."""
    f = fake_upstream()
    p = dotproxy([f"https://127.0.0.1:{f.port}/dns-query#{AUTH_NAME}"], ["--cache-size", "0"])
    _, r = ask(p, "www.example.")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert p.wait_log(r'TLS failed: the server did not select ALPN "h2".*nothing was sent')
    assert f.app_bytes == 0  # not even the HTTP/2 preface


# -- failures of one query, failover ----------------------------------------------------

def test_http_error_fails_that_query_not_the_connection(doh_server, dotproxy):
    """A path the server does not serve: 404 for every query, each one a
    SERVFAIL with an Extended DNS Error, on the same connection all along."""
    p = dotproxy([doh_server.spec(path="/no-such-path")], ["--cache-size", "0"])
    for i in range(3):
        _, r = ask(p, f"n{i}.burst.example.")
        assert r.rcode() == dns.rcode.SERVFAIL
        assert ede_codes(r) == [23]
    s = p.stats()
    assert s["upstream_doh_status"] == 3
    assert s["upstream_connects"] == 1 and s["upstream_closed"] == 0
    assert p.wait_log(r"HTTP status 404")


def test_failover_from_doh_to_dot(doh_factory, unbound, dotproxy):
    """The DoH upstream answers 404: the query goes on to the DoT one."""
    s = doh_factory("named")
    p = dotproxy([s.spec(path="/wrong"), unbound], ["--policy", "failover",
                                                    "--cache-size", "0"])
    _, r = ask(p, "www.example.")
    assert r.rcode() == dns.rcode.NOERROR and WWW_A in a_records(r)
    assert p.stats()["upstream_doh_status"] == 1


def test_failover_from_dead_doh_to_dot(unbound, dotproxy):
    p = dotproxy([f"https://127.0.0.1:{free_port()}/dns-query#{AUTH_NAME}", unbound],
                 ["--policy", "failover", "--cache-size", "0"])
    _, r = ask(p, "www.example.")
    assert r.rcode() == dns.rcode.NOERROR and WWW_A in a_records(r)


def test_doh_upstream_in_a_forward_zone(doh_factory, unbound, dotproxy):
    """burst.example goes to the DoH server; everything else to the DoT
    unbound (which has no burst.example: NXDOMAIN there)."""
    s = doh_factory("kresd")
    p = dotproxy([unbound], ["--forward-zone", f"burst.example={s.spec()}",
                             "--cache-size", "0"])
    _, r = ask(p, "x.burst.example.")
    assert r.rcode() == dns.rcode.NOERROR and a_records(r) == [BURST_A]
    _, r = ask(p, "www.example.")
    assert r.rcode() == dns.rcode.NOERROR and WWW_A in a_records(r)
    p2 = dotproxy([unbound], ["--cache-size", "0"])
    _, r = ask(p2, "x.burst.example.")
    assert r.rcode() == dns.rcode.NXDOMAIN


# -- connections ---------------------------------------------------------------------------

def test_idle_connection_closes_and_the_session_resumes(doh_server, dotproxy):
    """--idle-timeout closes an idle DoH connection; the next one resumes the
    TLS session (as DoT does)."""
    p = dotproxy([doh_server.spec()], ["--idle-timeout", "300", "--cache-size", "0"],
                 verbose=1)
    _, r = ask(p, "www.example.")
    assert r.rcode() == dns.rcode.NOERROR
    assert p.wait_log(r"connection closed: idle", timeout=3)
    _, r = ask(p, "www.example.", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR
    s = wait_for(lambda: (lambda st: st if st["upstream_closed"] >= 2 else None)(p.stats()),
                 timeout=3)
    assert s, p.log_tail()
    assert s["upstream_handshakes"] == 2
    assert s["upstream_resumed"] == 1


def test_idle_timeout_default_is_under_30s():
    """Idle connections close after --idle-timeout, whose default stays below
    the 30 s after which servers commonly close them themselves."""
    out = run_cli(["--help"]).stdout
    m = re.search(r"--idle-timeout MSEC\s+.*?\(default (\d+)\)", out, re.S)
    assert m and int(m.group(1)) < 30000


def test_bad_doh_specs_are_configuration_errors():
    r = run_cli(["--upstream", "https://dns.google/dns-query"])
    assert r.returncode == 2
    assert "given by name" in r.stderr and "--bootstrap" in r.stderr
    r = run_cli(["--upstream", "https://1.1.1.1/dns query"])
    assert r.returncode == 2
    r = run_cli(["--doh-method", "put"])
    assert r.returncode == 2 and "--doh-method" in r.stderr
    r = run_cli(["--upstream", "https://[2620:fe::fe]/dns-query#dns.quad9.net",
                 "--check-config"])
    assert r.returncode == 0, r.stderr


def test_reload_moves_doh_connections(doh_factory, dotproxy):
    """SIGHUP retires the upstream set: its DoH connections close (with a
    GOAWAY of ours) and queries go on over new ones."""
    s = doh_factory("dnsdist")
    p = dotproxy([s.spec()], ["--cache-size", "0"], verbose=1)
    _, r = ask(p, "www.example.")
    assert r.rcode() == dns.rcode.NOERROR
    mark = p.log_offset()
    p.send_signal(signal.SIGHUP)
    assert p.wait_log(r"notice: SIGHUP: configuration reloaded", timeout=3, since=mark)
    for i in range(5):
        _, r = ask(p, f"r{i}.burst.example.")
        assert r.rcode() == dns.rcode.NOERROR and a_records(r) == [BURST_A]
    st = p.stats()
    assert st["upstream_connects"] == 2 and st["upstream_closed"] >= 1


def test_ipv6_doh_upstream(doh_factory, dotproxy):
    """https://[::1]:PORT/...: the bracketed literal, the IP checked against
    the certificate (no name) and given as :authority."""
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    s = doh_factory("kresd", host="::1")
    for auth in (AUTH_NAME, None):
        p = dotproxy([s.spec(auth_name=auth)], ["--cache-size", "0"])
        _, r = ask(p, "www.example.", "AAAA")
        assert r.rcode() == dns.rcode.NOERROR and WWW_AAAA in a_records(r)
        p.stop()


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False
