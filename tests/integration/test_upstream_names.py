"""Upstreams given by name (tls://NAME, https://NAME/...): daemon/bootstrap.c.

A fake plain-DNS server plays the --bootstrap server: it answers the
upstream's name (A and AAAA) with a loopback address and records what it
was asked, so the tests can check that it saw the upstream's name and
nothing else. The upstream is a fake DoT or DoH server whose certificate
carries that name alone: the name is what dotproxy authenticates.
"""

import signal
import time

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from fake_upstream import ANSWER_A
from procutil import wait_for

NAME = "dns.named.test"
CLIENT_NAME = "client-secret.example."


def bootstrap_responder(addresses, ttl=300, ordered=False):
    """A responder answering NAME with addresses (a dict type -> [address]),
    REFUSED for anything else. `addresses` may be changed between queries.
    dnspython shuffles the records of a set on the wire: `ordered` sends
    them in the order given (as wire bytes)."""
    def respond(query):
        q = query.question[0]
        resp = dns.message.make_response(query, recursion_available=True)
        if q.name.to_text().lower() != NAME + ".":
            resp.set_rcode(dns.rcode.REFUSED)
            return resp
        kind = dns.rdatatype.to_text(q.rdtype)
        addrs = addresses.get(kind, [])
        if addrs:
            resp.answer.append(dns.rrset.from_text(q.name, ttl, "IN", kind, *addrs))
        return resp.to_wire(want_shuffle=False) if ordered else resp
    return respond


def bootstrap_arg(server):
    return f"{server.host}:{server.port}"


def asked(server):
    return sorted((r.name, dns.rdatatype.to_text(r.rdtype)) for r in server.received)


def by_name(dotproxy, fake_plain, upstream, *addresses, timeout=3, **responder):
    """dotproxy with the one upstream `upstream` (a URL naming NAME), cache
    off, whose bootstrap server answers bootstrap_responder(*addresses,
    **responder), once it answers a query; returns (proc, bootstrap server)."""
    boot = fake_plain(responder=bootstrap_responder(*addresses, **responder))
    p = dotproxy(extra_args=["--upstream", upstream,
                             "--bootstrap", bootstrap_arg(boot), "--cache-size", "0"])
    assert wait_for(lambda: p.udp(CLIENT_NAME).rcode() == dns.rcode.NOERROR,
                    timeout=timeout), p.log_tail()
    return p, boot


@pytest.fixture
def named_cert(pki):
    return pki.leaf("named-upstream", dns_names=[NAME])


def test_dot_by_name(dotproxy, fake_plain, fake_upstream, named_cert):
    up = fake_upstream(tls=named_cert)
    p, boot = by_name(dotproxy, fake_plain, f"tls://{NAME}:{up.port}",
                      {"A": ["127.0.0.1"], "AAAA": []})
    r = p.udp(CLIENT_NAME)
    assert [rr.address for rrset in r.answer for rr in rrset] == [ANSWER_A]
    assert up.sni_names and set(up.sni_names) == {NAME}
    assert boot.wait_queries(2)
    # The bootstrap server saw the upstream's name, A and AAAA, and nothing else.
    assert set(asked(boot)) == {(NAME + ".", "A"), (NAME + ".", "AAAA")}
    assert CLIENT_NAME not in boot.names()


def test_doh_by_name(dotproxy, fake_plain, fake_doh):
    up = fake_doh(cert_name=NAME)
    p, boot = by_name(dotproxy, fake_plain, f"https://{NAME}:{up.port}/dns-query",
                      {"A": ["127.0.0.1"]})
    assert CLIENT_NAME in up.names()
    assert set(asked(boot)) <= {(NAME + ".", "A"), (NAME + ".", "AAAA")}
    assert CLIENT_NAME not in boot.names()


def test_forward_zone_by_name(dotproxy, fake_plain, fake_upstream, fake_doh, named_cert):
    default = fake_upstream()
    zone_up = fake_doh(cert_name=NAME)
    boot = fake_plain(responder=bootstrap_responder({"A": ["127.0.0.1"]}))
    p = dotproxy(upstreams=[default],
                 extra_args=["--forward-zone", f"corp.test=https://{NAME}:{zone_up.port}/dns-query",
                             "--bootstrap", bootstrap_arg(boot), "--cache-size", "0"])
    assert wait_for(lambda: p.udp("www.corp.test.").rcode() == dns.rcode.NOERROR,
                    timeout=3), p.log_tail()
    assert "www.corp.test." in zone_up.names()
    assert p.udp("other.example.").rcode() == dns.rcode.NOERROR
    assert "www.corp.test." not in boot.names()
    assert set(boot.names()) == {NAME + "."}


def test_startup_does_not_wait_for_the_bootstrap(dotproxy, fake_plain, fake_upstream,
                                                 named_cert):
    """A bootstrap that does not answer: dotproxy serves at once, the named
    upstream's queries fail fast (or go to another upstream), and it is used
    as soon as the bootstrap answers."""
    up = fake_upstream(tls=named_cert)
    other = fake_upstream()
    boot = fake_plain(stall=True,
                      responder=bootstrap_responder({"A": ["127.0.0.1"]}))
    started = time.monotonic()
    p = dotproxy(extra_args=["--upstream", f"tls://{NAME}:{up.port}",
                             "--bootstrap", bootstrap_arg(boot), "--cache-size", "0",
                             "--timeout", "3000"])
    t0 = time.monotonic()
    r = p.udp(CLIENT_NAME, use_edns=0)
    assert time.monotonic() - t0 < 0.5  # not the 3 s deadline
    assert time.monotonic() - started < 2.5
    assert r.rcode() == dns.rcode.SERVFAIL
    assert any(o.otype == 15 and o.code in (22, 23) for o in r.options), r
    assert not up.queries
    assert boot.wait_queries(2)
    # With another upstream given by address, queries go there meanwhile.
    p2 = dotproxy(upstreams=[other],
                  extra_args=["--upstream", f"tls://{NAME}:{up.port}",
                              "--bootstrap", bootstrap_arg(boot), "--cache-size", "0"])
    assert p2.udp(CLIENT_NAME).rcode() == dns.rcode.NOERROR
    assert other.queries and not up.queries
    # The bootstrap comes back: the retry (1 s, then 2 s) resolves the name.
    boot.set(stall=False)
    assert wait_for(lambda: p.udp(CLIENT_NAME).rcode() == dns.rcode.NOERROR,
                    timeout=6), p.log_tail()
    assert up.queries
    assert CLIENT_NAME not in boot.names()


def test_short_ttl_picks_up_a_new_address(dotproxy, fake_plain, fake_upstream, named_cert):
    """The address is kept for its TTL (here 1 s) and resolved again: a new
    address is used, the old server's connection closed."""
    first = fake_upstream(tls=named_cert, host="127.0.0.1")
    second = fake_upstream(tls=named_cert, host="127.0.0.2", port=first.port)
    addresses = {"A": ["127.0.0.1"]}
    boot = fake_plain(responder=bootstrap_responder(addresses, ttl=1))
    p = dotproxy(extra_args=["--upstream", f"tls://{NAME}:{first.port}",
                             "--bootstrap", bootstrap_arg(boot), "--cache-size", "0"])
    assert wait_for(lambda: p.udp(CLIENT_NAME).rcode() == dns.rcode.NOERROR, timeout=3)
    assert first.queries and not second.queries
    n_asked = len(boot.received)
    addresses["A"] = ["127.0.0.2"]
    assert wait_for(lambda: len(boot.received) >= n_asked + 2, timeout=4)
    assert wait_for(lambda: p.udp(CLIENT_NAME).rcode() == dns.rcode.NOERROR
                    and second.queries, timeout=4), p.log_tail()
    assert CLIENT_NAME not in boot.names()


def test_bootstrap_answers_are_checked(dotproxy, fake_plain, fake_upstream, named_cert):
    """Forged bootstrap answers (wrong ID, wrong question, another port) are
    ignored: the name resolves to the real answer's address."""
    up = fake_upstream(tls=named_cert)
    boot = fake_plain(responder=bootstrap_responder({"A": ["127.0.0.1"]}),
                      wrong_id=True, wrong_question=True, from_elsewhere=True)
    p = dotproxy(extra_args=["--upstream", f"tls://{NAME}:{up.port}",
                             "--bootstrap", bootstrap_arg(boot), "--cache-size", "0"])
    assert wait_for(lambda: p.udp(CLIENT_NAME).rcode() == dns.rcode.NOERROR,
                    timeout=3), p.log_tail()
    assert "6.6.6.6" not in p.log()


def test_only_names_without_bootstrap_is_a_configuration_error():
    from dotproxy_proc import run_cli
    r = run_cli(["--upstream", f"tls://{NAME}"])
    assert r.returncode == 2
    assert "--bootstrap" in r.stderr and "given by name" in r.stderr


def test_reload_keeps_the_address(dotproxy, fake_plain, fake_upstream, named_cert):
    """After SIGHUP the new configuration's upstream by name is usable at
    once: the address the old bootstrap knew carries over, so no query fails
    while the name is asked again."""
    up = fake_upstream(tls=named_cert)
    boot = fake_plain(responder=bootstrap_responder({"A": ["127.0.0.1"]}))
    p = dotproxy(extra_args=["--upstream", f"tls://{NAME}:{up.port}",
                             "--bootstrap", bootstrap_arg(boot), "--cache-size", "0"])
    assert wait_for(lambda: p.udp(CLIENT_NAME).rcode() == dns.rcode.NOERROR, timeout=3)
    boot.set(stall=True)  # the new bootstrap cannot help: only the old address can
    offset = p.log_offset()
    p.send_signal(signal.SIGHUP)
    assert p.wait_log(r"configuration reloaded", since=offset, timeout=3)
    for _ in range(5):
        assert p.udp(CLIENT_NAME).rcode() == dns.rcode.NOERROR, p.log_tail()
    assert CLIENT_NAME not in boot.names()


def test_every_worker_resolves(dotproxy, fake_plain, fake_upstream, named_cert):
    up = fake_upstream(tls=named_cert)
    boot = fake_plain(responder=bootstrap_responder({"A": ["127.0.0.1"]}))
    p = dotproxy(extra_args=["--upstream", f"tls://{NAME}:{up.port}",
                             "--bootstrap", bootstrap_arg(boot), "--cache-size", "0",
                             "--workers", "2"])
    # Each worker asks (A and AAAA) on its own.
    assert boot.wait_queries(4, timeout=3)
    time.sleep(0.2)
    for i in range(20):
        assert p.udp(f"q{i}.example.").rcode() == dns.rcode.NOERROR, p.log_tail()
    assert set(boot.names()) == {NAME + "."}


def test_without_bootstrap_names_go_through_upstreams_by_address(dotproxy, fake_upstream,
                                                                 named_cert):
    """No --bootstrap: the upstream given by address resolves the name (A
    and AAAA, as queries of dotproxy's own), then the named one is used."""
    from fake_upstream import default_responder

    def respond(query):
        q = query.question[0]
        if q.name.to_text().lower() == NAME + ".":
            return bootstrap_responder({"A": ["127.0.0.1"]})(query)
        return default_responder(query)

    by_address = fake_upstream(responder=respond)
    named = fake_upstream(tls=named_cert)
    p = dotproxy(upstreams=[by_address],
                 extra_args=["--upstream", f"tls://{NAME}:{named.port}",
                             "--policy", "round-robin", "--cache-size", "0"])
    assert wait_for(lambda: p.udp(CLIENT_NAME).rcode() == dns.rcode.NOERROR
                    and named.queries, timeout=4), p.log_tail()
    asked_by_address = {(m.question[0].name.to_text().lower(), m.question[0].rdtype)
                        for m in by_address.queries if m is not None}
    assert (NAME + ".", dns.rdatatype.A) in asked_by_address
    assert (NAME + ".", dns.rdatatype.AAAA) in asked_by_address
    assert CLIENT_NAME in {m.question[0].name.to_text().lower()
                           for m in named.queries if m is not None}


def test_truncated_bootstrap_answer_is_retried_later(dotproxy, fake_plain, fake_upstream,
                                                     named_cert):
    """No TCP to the bootstrap server: a truncated answer is a failure, and
    the name is asked again after the backoff (1 s)."""
    up = fake_upstream(tls=named_cert)
    boot = fake_plain(responder=bootstrap_responder({"A": ["127.0.0.1"]}), truncate=True)
    p = dotproxy(extra_args=["--upstream", f"tls://{NAME}:{up.port}",
                             "--bootstrap", bootstrap_arg(boot), "--cache-size", "0"])
    assert p.wait_log(r"cannot resolve dns\.named\.test .*truncated", timeout=3), p.log_tail()
    assert p.udp(CLIENT_NAME).rcode() == dns.rcode.SERVFAIL
    assert not any(r.transport == "tcp" for r in boot.received)
    boot.set(truncate=False)
    assert wait_for(lambda: p.udp(CLIENT_NAME).rcode() == dns.rcode.NOERROR,
                    timeout=4), p.log_tail()


# A loopback address where nothing listens on the upstream's port: a
# connection there is refused at once.
DEAD = "127.0.0.29"


def ipv6_loopback():
    import socket
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def switched(p, dead, working):
    return p.wait_log(rf"notice: upstream tls://{NAME.replace('.', '[.]')}:\d+: "
                      rf"{dead.replace('.', '[.]')} failed \(.+\); "
                      rf"trying its next address {working.replace('.', '[.]')}$", timeout=3)


def test_a_dead_address_gives_way_to_the_next(dotproxy, fake_plain, fake_upstream, named_cert):
    """Two A records, the first where nothing listens: once the connection
    there fails, the upstream uses the second; only its name was asked."""
    up = fake_upstream(tls=named_cert)
    p, boot = by_name(dotproxy, fake_plain, f"tls://{NAME}:{up.port}",
                      {"A": [DEAD, "127.0.0.1"]}, ordered=True)
    assert switched(p, DEAD, "127.0.0.1"), p.log_tail()
    for i in range(5):
        assert p.udp(f"q{i}.example.").rcode() == dns.rcode.NOERROR, p.log_tail()
    assert up.queries
    assert set(boot.names()) == {NAME + "."}


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1)")
def test_an_unreachable_ipv4_address_gives_way_to_the_ipv6_one(dotproxy, fake_plain,
                                                              fake_upstream, named_cert):
    """A and AAAA: the IPv4 address does not work, the IPv6 one does."""
    up = fake_upstream(tls=named_cert, host="::1")
    p, boot = by_name(dotproxy, fake_plain, f"tls://{NAME}:{up.port}",
                      {"A": [DEAD], "AAAA": ["::1"]})
    assert switched(p, DEAD, "::1"), p.log_tail()
    assert up.queries
    assert set(asked(boot)) == {(NAME + ".", "A"), (NAME + ".", "AAAA")}
    assert CLIENT_NAME not in boot.names()


def test_the_same_answer_again_keeps_the_working_address(dotproxy, fake_plain, fake_upstream,
                                                         named_cert):
    """A TTL of 1 s: the name is asked again and again, with the same list;
    the upstream stays on the address that works (its connection too)
    instead of going back to the first one."""
    up = fake_upstream(tls=named_cert)
    p, boot = by_name(dotproxy, fake_plain, f"tls://{NAME}:{up.port}",
                      {"A": [DEAD, "127.0.0.1"]}, ttl=1, ordered=True)
    assert switched(p, DEAD, "127.0.0.1"), p.log_tail()
    connections = up.connections
    n_asked = len(boot.received)
    # Two more rounds (A and AAAA each), a query every 100 ms meanwhile.
    deadline = time.monotonic() + 5
    while len(boot.received) < n_asked + 4 and time.monotonic() < deadline:
        assert p.udp(CLIENT_NAME).rcode() == dns.rcode.NOERROR, p.log_tail()
        time.sleep(0.1)
    assert len(boot.received) >= n_asked + 4
    assert p.udp(CLIENT_NAME).rcode() == dns.rcode.NOERROR, p.log_tail()
    assert p.log().count("trying its next address") == 1, p.log_tail()
    assert up.connections == connections


def test_reload_keeps_the_working_address(dotproxy, fake_plain, fake_upstream, named_cert):
    """After SIGHUP, the upstream goes on with the address that works, not
    the first one of the list, which failed: no query fails."""
    up = fake_upstream(tls=named_cert)
    p, boot = by_name(dotproxy, fake_plain, f"tls://{NAME}:{up.port}",
                      {"A": [DEAD, "127.0.0.1"]}, ordered=True)
    assert switched(p, DEAD, "127.0.0.1"), p.log_tail()
    offset = p.log_offset()
    p.send_signal(signal.SIGHUP)
    assert p.wait_log(r"configuration reloaded", since=offset, timeout=3)
    for i in range(5):
        assert p.udp(f"r{i}.example.").rcode() == dns.rcode.NOERROR, p.log_tail()
    assert "failed" not in p.log_since(offset), p.log_tail()


def test_a_hijacked_address_gives_way_to_the_next(dotproxy, fake_plain, fake_upstream,
                                                   named_cert):
    """The first address answers TLS with a certificate for another name (a
    router that hijacks it): the handshake fails, the next address is used."""
    up = fake_upstream(tls=named_cert)
    hijacker = fake_upstream(host="127.0.0.30", port=up.port)  # certs.good: another name
    p, _ = by_name(dotproxy, fake_plain, f"tls://{NAME}:{up.port}",
                   {"A": ["127.0.0.30", "127.0.0.1"]}, ordered=True)
    assert switched(p, "127.0.0.30", "127.0.0.1"), p.log_tail()
    assert hijacker.connections and not hijacker.queries
    assert up.queries


def test_doh_dead_address_gives_way_to_the_next(dotproxy, fake_plain, fake_doh):
    up = fake_doh(cert_name=NAME)
    p, boot = by_name(dotproxy, fake_plain, f"https://{NAME}:{up.port}/dns-query",
                      {"A": [DEAD, "127.0.0.1"]}, ordered=True)
    assert p.wait_log(rf"notice: upstream https://{NAME.replace('.', '[.]')}:\d+/dns-query: "
                      rf"{DEAD.replace('.', '[.]')} failed \(.+\); trying its next address "
                      rf"127[.]0[.]0[.]1$", timeout=3), p.log_tail()
    assert CLIENT_NAME in up.names()


def test_an_address_that_answers_only_errors_gives_way_to_the_next(dotproxy, fake_plain,
                                                                    fake_doh):
    """The first address completes its handshakes but answers every query
    with HTTP 503 (one bad backend behind one address): after five errors
    the upstream is down, its connection closed, and its next connection
    goes to the next address, which answers."""
    bad = fake_doh(cert_name=NAME, host="127.0.0.2", action=503)
    good = fake_doh(cert_name=NAME, host="127.0.0.1", port=bad.port)
    p, _ = by_name(dotproxy, fake_plain, f"https://{NAME}:{bad.port}/dns-query",
                   {"A": ["127.0.0.2", "127.0.0.1"]}, ordered=True, timeout=5)
    assert p.wait_log(rf"upstream https://{NAME.replace('.', '[.]')}:\d+/dns-query: "
                      rf"127[.]0[.]0[.]2 failed \(5 queries in a row answered with an error, "
                      rf"the last: HTTP status 503\); trying its next address 127[.]0[.]0[.]1$",
                      timeout=3), p.log_tail()
    assert 5 <= len(bad.requests) <= 6, len(bad.requests)
    for i in range(5):
        assert p.udp(f"q{i}.example.").rcode() == dns.rcode.NOERROR, p.log_tail()
    assert CLIENT_NAME in good.names()
    assert len(bad.requests) <= 6

