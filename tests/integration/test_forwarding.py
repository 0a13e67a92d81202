"""Forwarding through a real unbound DoT upstream: answers, connection reuse,
pipelining, message IDs, real clients (dig, kdig)."""

import concurrent.futures
import select
import socket
import subprocess
import time

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

import procutil
from netutil import frame, make_query, read_frame, tcp_query, udp_query


def a_records(reply):
    return sorted(str(rr) for rrset in reply.answer for rr in rrset
                  if rrset.rdtype == dns.rdatatype.A)


# Tests of forwarding itself run without the cache, so that every query
# really goes upstream (the cache has tests of its own).
NO_CACHE = ["--cache-size", "0"]


def test_udp_and_tcp_answers_come_through_tls(unbound, dotproxy):
    p = dotproxy([unbound], extra_args=NO_CACHE)
    for reply in (p.udp("www.example."), p.tcp("www.example.")):
        assert reply.rcode() == dns.rcode.NOERROR
        assert a_records(reply) == ["192.0.2.10"]
    nx = p.udp("nope.example.")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    s = p.stats()
    assert s["upstream_handshakes"] == 1
    assert s["answers_forwarded"] == 3


def test_edns_query_is_answered(unbound, dotproxy):
    """The original script never answered a query carrying EDNS."""
    p = dotproxy([unbound])
    reply = p.udp("www.example.", use_edns=0, payload=1232, want_dnssec=True)
    assert reply.rcode() == dns.rcode.NOERROR
    assert a_records(reply) == ["192.0.2.10"]
    assert reply.edns == 0  # the client sent OPT, so the reply carries one


def test_no_opt_in_reply_to_a_client_without_edns(unbound, dotproxy):
    p = dotproxy([unbound])
    reply = p.udp("www.example.", use_edns=False)
    assert reply.edns == -1


def test_ipv6_listener(unbound, dotproxy):
    from netutil import free_port
    port = free_port("::1")
    dotproxy([unbound], listen=f"[::1]:{port}")
    reply = udp_query(port, "www.example.", "AAAA", host="::1")
    assert [str(rr) for rrset in reply.answer for rr in rrset] == ["2001:db8::10"]
    reply = tcp_query(port, "www.example.", "A", host="::1")
    assert a_records(reply) == ["192.0.2.10"]


@pytest.mark.time_limit(120)
def test_thousand_sequential_queries_reuse_one_connection(unbound, dotproxy):
    p = dotproxy([unbound], extra_args=NO_CACHE)
    for i in range(1000):
        name = f"n{i % 200}.example."
        reply = p.udp(name) if i % 2 else p.tcp(name)
        assert a_records(reply) == [f"198.51.100.{(i % 200) % 250}"]
    s = p.stats()
    assert s["answers_forwarded"] == 1000
    assert s["upstream_handshakes"] <= 3, s
    assert s["upstream_connects"] <= 3, s


def test_concurrent_queries_are_pipelined_on_one_connection(fake_upstream, dotproxy):
    up = fake_upstream(delay=0.2)
    p = dotproxy([up], extra_args=["--max-connections", "1"])
    names = [f"p{i}.example." for i in range(50)]
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        replies = list(pool.map(lambda n: p.udp(n, timeout=3), names))
    elapsed = time.monotonic() - start
    for name, reply in zip(names, replies):
        assert str(reply.question[0].name) == name
        assert a_records(reply) == ["192.0.2.1"]
    assert up.handshakes == 1
    assert up.connections == 1
    # 50 answers each delayed 0.2 s arrive together, not one after another.
    assert elapsed < 0.2 * 50 / 2


def test_out_of_order_answers_reach_the_right_clients(fake_upstream, dotproxy):
    up = fake_upstream(reorder=10)
    p = dotproxy([up])
    names = [f"r{i}.example." for i in range(10)]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda n: p.udp(n, timeout=3), names))
    for name, reply in zip(names, replies):
        assert str(reply.question[0].name) == name
    assert len(up.queries) == 10


def test_two_hundred_clients_with_the_same_id(unbound, dotproxy):
    """Every client picks ID 4660 at the same moment; each gets its own answer."""
    p = dotproxy([unbound])
    socks = []
    try:
        for i in range(200):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            socks.append(s)
        for i, s in enumerate(socks):
            q = make_query(f"n{i}.example.", "A", id=4660)
            s.sendto(q.to_wire(), (p.addr, p.port))
        pending = dict(enumerate(socks))
        deadline = time.monotonic() + 10
        while pending and time.monotonic() < deadline:
            ready, _, _ = select.select(list(pending.values()), [], [], 0.5)
            for s in ready:
                i = socks.index(s)
                reply = dns.message.from_wire(s.recv(4096))
                assert reply.id == 4660
                assert str(reply.question[0].name) == f"n{i}.example."
                assert a_records(reply) == [f"198.51.100.{i % 250}"]
                del pending[i]
        assert not pending, f"{len(pending)} clients got no answer"
    finally:
        for s in socks:
            s.close()


def test_upstream_ids_are_random_and_unique_in_flight(fake_upstream, dotproxy):
    up = fake_upstream(stall=True)
    p = dotproxy([up], extra_args=["--timeout", "1500"])
    socks = []
    try:
        for i in range(100):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(make_query(f"id{i}.example.", "A", id=7).to_wire(), (p.addr, p.port))
            socks.append(s)
        deadline = time.monotonic() + 3
        while len(up.queries) < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        queries, conns = up.queries[:100], up.query_connections[:100]
        assert len(queries) == 100
        # Unique among the queries in flight on one connection (RFC 7766
        # §7): 100 queries open several connections (one per 32 in flight),
        # and two connections may well use the same ID.
        per_conn = {}
        for q, c in zip(queries, conns):
            per_conn.setdefault(c, []).append(q.id)
        for c, ids in per_conn.items():
            assert len(set(ids)) == len(ids), f"an ID was reused in flight on connection {c}"
        ids = [q.id for q in queries]
        assert ids.count(7) <= 1, "client IDs are passed through"
        assert len(set(ids)) > 90  # random: 100 draws of 16 bits rarely collide
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("forgery", ["wrong_id", "wrong_question"])
def test_answer_matching_no_query_is_never_delivered(fake_upstream, dotproxy, forgery):
    """An answer with another ID, or for another question, is not ours."""
    up = fake_upstream(**{forgery: True})
    p = dotproxy([up], extra_args=["--timeout", "800"])
    reply = p.udp("poison.example.", timeout=3)
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert not reply.answer
    assert p.stats()["upstream_unmatched"] >= 1


def test_forged_answers_before_the_real_one_are_dropped(fake_upstream, dotproxy):
    up = fake_upstream(wrong_then_right=True)
    p = dotproxy([up])
    reply = p.udp("www.example.")
    assert a_records(reply) == ["192.0.2.1"]
    assert str(reply.question[0].name) == "www.example."
    assert p.stats()["upstream_unmatched"] == 2


def test_question_matching_ignores_case(fake_upstream, dotproxy):
    def upper(query):
        from fake_upstream import default_responder
        resp = default_responder(query)
        wire = bytearray(resp.to_wire())
        # Upper-case the question name in place (0x20 mixing by the server).
        i = 12
        while wire[i]:
            for j in range(i + 1, i + 1 + wire[i]):
                wire[j] = ord(chr(wire[j]).upper())
            i += wire[i] + 1
        return bytes(wire)

    up = fake_upstream(responder=upper)
    p = dotproxy([up])
    reply = p.udp("MiXed.example.")
    assert reply.rcode() == dns.rcode.NOERROR
    assert a_records(reply) == ["192.0.2.1"]


def test_dig_and_kdig_through_the_proxy(unbound, dotproxy):
    p = dotproxy([unbound])
    for cmd in (["dig", "+tries=1", "+time=3"], ["dig", "+tcp", "+tries=1", "+time=3"],
                ["kdig", "+timeout=3", "+retry=0"], ["kdig", "+tcp", "+timeout=3", "+retry=0"]):
        out = subprocess.run(cmd + [f"@{p.addr}", "-p", str(p.port), "www.example.", "A"],
                             capture_output=True, text=True, timeout=15)
        assert out.returncode == 0, out.stderr
        assert "NOERROR" in out.stdout
        assert "192.0.2.10" in out.stdout, out.stdout


def test_answers_keep_flowing_while_the_first_upstream_is_unreachable(unbound, dotproxy):
    from netutil import free_port
    dead = f"127.0.0.1@{free_port()}#dns.example.test"
    p = dotproxy([dead, unbound], extra_args=NO_CACHE)
    for _ in range(5):
        assert a_records(p.udp("www.example.")) == ["192.0.2.10"]
    s = p.stats()
    assert s["upstream_connect_failures"] >= 1
    assert s["answers_forwarded"] == 5


def test_upstream_and_client_connections_set_tcp_nodelay(unbound, dotproxy):
    """Small pipelined messages must not wait for Nagle: TCP_NODELAY on
    dotproxy's side of every TCP connection, read from the live sockets."""
    p = dotproxy([unbound], extra_args=NO_CACHE)
    assert p.udp("www.example.").answer  # opens the upstream connection
    upstream = procutil.tcp_nodelay(p.proc.pid, remote_port=unbound.port)
    assert upstream == [True], upstream
    with socket.create_connection((p.addr, p.port)) as client:
        client.sendall(frame(make_query("www.example.").to_wire()))
        read_frame(client)
        clients = procutil.tcp_nodelay(p.proc.pid, local_port=p.port)
    assert clients == [True], clients


def test_pipelined_answers_from_a_server_without_nodelay_do_not_wait(unbound, dotproxy):
    """unbound 1.17 does not set TCP_NODELAY on DoT, so its kernel holds a
    second small answer until the first is acknowledged (Nagle).  dotproxy
    acknowledges at once (TCP_QUICKACK after each read): a pair of queries
    in flight together is answered in about a millisecond, not after a
    40 ms delayed ACK (measured: 0.8 ms median, 41.8 ms without it)."""
    assert procutil.tcp_nodelay(unbound.proc.pid, local_port=unbound.port) == [], \
        "no connection yet"
    p = dotproxy([unbound], extra_args=NO_CACHE)
    assert p.udp("www.example.").answer
    assert procutil.tcp_nodelay(unbound.proc.pid, local_port=unbound.port) == [False], \
        "the upstream sets TCP_NODELAY: this test would prove nothing"
    waits = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        a.settimeout(2)
        b.settimeout(2)
        for i in range(20):
            start = time.monotonic()
            a.sendto(make_query(f"n{i}.example.").to_wire(), (p.addr, p.port))
            b.sendto(make_query(f"n{i + 100}.example.").to_wire(), (p.addr, p.port))
            a.recv(4096)
            b.recv(4096)
            waits.append(time.monotonic() - start)
            time.sleep(0.01)
    waits.sort()
    assert waits[len(waits) // 2] < 0.02, waits
