"""TCP clients (RFC 7766): pipelining, partial frames, idle timeouts, caps."""

import socket
import time

import dns.message
import dns.rcode
import dns.rdatatype

from netutil import frame, make_query, read_frame


def connect(p):
    return socket.create_connection((p.addr, p.port), timeout=3)


def test_pipelined_queries_on_one_connection(fake_upstream, dotproxy):
    # Answers come back in reverse order upstream; each must reach its query.
    up = fake_upstream(reorder=20)
    p = dotproxy([up])
    with connect(p) as s:
        queries = [make_query(f"t{i}.example.", "A") for i in range(20)]
        s.sendall(b"".join(frame(q) for q in queries))
        replies = [read_frame(s) for _ in queries]
    by_id = {r.id: r for r in replies}
    assert len(by_id) == 20
    for q in queries:
        assert by_id[q.id].question[0].name == q.question[0].name


def test_query_split_into_single_bytes(unbound, dotproxy):
    p = dotproxy([unbound])
    with connect(p) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        q = make_query("www.example.", "A")
        for b in frame(q):
            s.sendall(bytes([b]))
            time.sleep(0.002)
        reply = read_frame(s)
    assert reply.id == q.id
    assert reply.rcode() == dns.rcode.NOERROR


def test_stalled_half_frame_does_not_delay_others(unbound, dotproxy):
    p = dotproxy([unbound], extra_args=["--tcp-idle-timeout", "5000"])
    stalled = connect(p)
    try:
        stalled.sendall(frame(make_query("www.example.", "A"))[:7])
        start = time.monotonic()
        for _ in range(20):
            assert p.udp("www.example.").rcode() == dns.rcode.NOERROR
            assert p.tcp("www.example.").rcode() == dns.rcode.NOERROR
        assert time.monotonic() - start < 3
    finally:
        stalled.close()


def test_idle_client_is_closed(unbound, dotproxy):
    p = dotproxy([unbound], extra_args=["--tcp-idle-timeout", "300"])
    with connect(p) as s:
        s.sendall(frame(make_query("www.example.", "A")))
        read_frame(s)
        s.settimeout(3)
        start = time.monotonic()
        assert s.recv(1) == b""  # closed by the proxy
        assert 0.2 < time.monotonic() - start < 2.5
    assert p.stats()["tcp_idle_closed"] == 1


def test_client_waiting_for_an_answer_is_not_idle(fake_upstream, dotproxy):
    up = fake_upstream(delay=0.6)
    p = dotproxy([up], extra_args=["--tcp-idle-timeout", "200"])
    with connect(p) as s:
        s.sendall(frame(make_query("slow.example.", "A")))
        reply = read_frame(s)
    assert reply.rcode() == dns.rcode.NOERROR


def test_half_closed_client_still_gets_its_answers(fake_upstream, dotproxy):
    up = fake_upstream(delay=0.2)
    p = dotproxy([up])
    with connect(p) as s:
        qs = [make_query(f"h{i}.example.", "A") for i in range(3)]
        s.sendall(b"".join(frame(q) for q in qs))
        s.shutdown(socket.SHUT_WR)
        ids = {read_frame(s).id for _ in qs}
    assert ids == {q.id for q in qs}


def test_too_many_tcp_clients_are_refused_and_counted(unbound, dotproxy):
    p = dotproxy([unbound], extra_args=["--max-tcp-clients", "2"])
    time.sleep(0.3)  # let the proxy see the readiness probe's connection close
    a, b = connect(p), connect(p)
    try:
        for s in (a, b):
            s.sendall(frame(make_query("www.example.", "A")))
            read_frame(s)
        c = connect(p)
        c.settimeout(3)
        try:
            c.sendall(frame(make_query("www.example.", "A")))
            assert c.recv(2) == b""
        except ConnectionResetError:
            pass
        finally:
            c.close()
    finally:
        a.close()
        b.close()
    assert p.stats()["tcp_refused"] == 1
    # Room again once the others left.
    deadline = time.monotonic() + 3
    while True:
        try:
            assert p.tcp("www.example.").rcode() == dns.rcode.NOERROR
            break
        except (ConnectionError, OSError, EOFError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_per_client_pipeline_cap_pauses_reading_but_answers_all(fake_upstream, dotproxy):
    up = fake_upstream(delay=0.1)
    p = dotproxy([up], extra_args=["--max-tcp-pipeline", "4"])
    with connect(p) as s:
        qs = [make_query(f"c{i}.example.", "A") for i in range(30)]
        for q in qs:  # one write per query: the cap applies between reads
            s.sendall(frame(q))
        ids = {read_frame(s, timeout=5).id for _ in qs}
    assert ids == {q.id for q in qs}


def test_client_trickling_bytes_is_still_idle(unbound, dotproxy):
    """Bytes that never complete a query are not activity (slowloris)."""
    p = dotproxy([unbound], extra_args=["--tcp-idle-timeout", "800"])
    with connect(p) as s:
        start = time.monotonic()
        data = frame(make_query("www.example.", "A"))
        closed = False
        for b in data[:-1]:  # never the last byte
            try:
                s.sendall(bytes([b]))
            except OSError:
                closed = True
                break
            s.settimeout(0.3)
            try:
                if s.recv(1) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            if time.monotonic() - start > 5:
                break
        assert closed, "a client trickling bytes was never closed"
        assert time.monotonic() - start < 2.5
