"""The DoT listener (--listen-tls, RFC 7858): real clients (kdig, dig, Python's
ssl) against the real binary, with certificates from the test CA.

Covers: answers over TLS (local data and forwarded), pipelining with
answers in completion order and clients with the same DNS IDs kept apart,
ALPN "dot" and no ALPN, TLS 1.2 minimum, session resumption, the
certificate read again on SIGHUP (new connections get it, open ones keep
theirs, a bad pair changes nothing), start-up errors, handshakes that never
finish, the cap per client address, --allow, and many clients at once."""

import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import time

import dns.edns
import dns.query
import dns.message
import dns.rcode
import pytest

import procutil
from dotproxy_proc import run_cli
from lan_listener import LAN_NAME, a_records, lan_leaf, listener_starter
from netutil import DoTClient, ede_codes, free_port, make_query


@pytest.fixture
def lan_cert(pki):
    return lan_leaf(pki)


@pytest.fixture
def dot_proxy(dotproxy, fake_upstream, lan_cert):
    """dotproxy with a DoT listener; returns (proc, tls port, fake upstream)."""
    return listener_starter(dotproxy, fake_upstream, lan_cert, "--listen-tls")


def client_ctx(ca_file, *, alpn=("dot",), max_version=None, min_version=None):
    ctx = ssl.create_default_context(cafile=ca_file)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if max_version:
        ctx.maximum_version = max_version
    if min_version:
        ctx.minimum_version = min_version
    return ctx


def connect(port, pki, source=None, **kw):
    return DoTClient(port, ca_file=pki.ca_file, server_hostname=LAN_NAME,
                     context=client_ctx(pki.ca_file, **kw), source=source)


# -- answers -----------------------------------------------------------------------------

@pytest.mark.skipif(not shutil.which("kdig"), reason="kdig (knot-dnsutils) not installed")
def test_kdig_gets_local_and_forwarded_answers_with_the_name_verified(dot_proxy, pki):
    p, port, up = dot_proxy()
    for name, want in ((f"www.{LAN_NAME}", "192.0.2.7"), ("www.example.", "192.0.2.1")):
        out = subprocess.run(["kdig", "@127.0.0.1", "-p", str(port), f"+tls-ca={pki.ca_file}",
                              f"+tls-hostname={LAN_NAME}", "+short", name, "A"],
                             capture_output=True, text=True, timeout=10)
        assert out.stdout.split() == [want], out
    assert [q.question[0].name.to_text() for q in up.queries] == ["www.example."]
    s = p.stats()
    assert s["queries_dot"] == 2 and s["dot_handshakes"] == 2


@pytest.mark.skipif(not shutil.which("dig"), reason="dig (bind9-dnsutils) not installed")
def test_dig_tls_is_answered(dot_proxy):
    p, port, _ = dot_proxy()
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+tls", "+short",
                          f"www.{LAN_NAME}"], capture_output=True, text=True, timeout=10)
    assert out.stdout.split() == ["192.0.2.7"], out


@pytest.mark.skipif(not shutil.which("dnsperf"), reason="dnsperf not installed")
def test_dnsperf_dot_gets_every_answer(dot_proxy, workdir):
    """dnsperf's DoT client, 2 connections with 50 queries in flight each:
    answers come many to a TLS record, and every one arrives."""
    p, port, up = dot_proxy()
    data = workdir / "queries.txt"
    data.write_text(f"www.{LAN_NAME} A\nwww.example. A\n")
    out = subprocess.run(["dnsperf", "-m", "dot", "-s", "127.0.0.1", "-p", str(port),
                          "-d", str(data), "-n", "500", "-c", "2", "-q", "50", "-t", "3"],
                         capture_output=True, text=True, timeout=60)
    assert "Queries completed:    1000 (100.00%)" in out.stdout, out.stdout + out.stderr
    assert p.stats()["queries_dot"] == 1000


def big_hosts(workdir):
    """A hosts file giving big.LAN_NAME 800 addresses: a 13 KiB answer."""
    hosts = workdir / "hosts"
    hosts.write_text("".join(f"10.9.{i // 250}.{i % 250 + 1} big.{LAN_NAME}\n"
                             for i in range(800)))
    return hosts


def test_a_round_of_large_answers_is_not_a_client_that_does_not_read(dot_proxy, pki, workdir):
    """100 pipelined queries for a local name of 800 addresses (13 KiB an
    answer) are answered in one round: 1.3 MiB held for the flush, more than
    the 1 MiB a session may leave unread.  What waits for the end of the
    round is not a backlog: every answer arrives."""
    p, port, _ = dot_proxy(extra=["--hosts", str(big_hosts(workdir)),
                                  "--max-tcp-pipeline", "128"])
    with connect(port, pki) as c:
        c.send(*[make_query(f"big.{LAN_NAME}", id=i) for i in range(100)])
        answers = [c.recv() for _ in range(100)]
    assert sorted(a.id for a in answers) == list(range(100))
    assert all(len(a_records(a)) == 800 for a in answers)


def test_a_client_that_does_not_read_is_closed_at_the_backlog_cap(dot_proxy, pki, workdir):
    """A client that asks and asks and never reads: once more than 1 MiB of
    its answers waits for the kernel, it is closed, and others are served."""
    p, port, _ = dot_proxy(extra=["--hosts", str(big_hosts(workdir))], verbose=2)
    with connect(port, pki) as c:
        for round_ in range(60):  # at most 6,000 answers of 13 KiB: 78 MiB unread
            try:
                c.send(*[make_query(f"big.{LAN_NAME}", id=i) for i in range(100)])
            except (OSError, ssl.SSLError):
                break  # closed under us
            if p.wait_log(r"dot client .* does not read its answers: closing", timeout=0.05):
                break
        assert p.wait_log(r"dot client .* does not read its answers: closing", timeout=5), \
            p.log_tail()
    with connect(port, pki) as other:
        other.send(make_query(f"www.{LAN_NAME}"))
        assert a_records(other.recv()) == ["192.0.2.7"]


def test_answers_of_one_round_share_a_tls_record(dot_proxy, pki):
    """Twenty local queries sent in one write are answered in one loop round;
    their answers leave as one TLS record (one encryption, one write(2)), so
    one recv() of the record's plaintext holds all twenty."""
    p, port, _ = dot_proxy()
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with client_ctx(pki.ca_file).wrap_socket(raw, server_hostname=LAN_NAME) as s:
        wire = b"".join(len(m).to_bytes(2, "big") + m for m in
                        (make_query(f"www.{LAN_NAME}", id=i).to_wire() for i in range(20)))
        s.sendall(wire)
        first = s.recv(65536)  # the plaintext of one TLS record, at most
        got = []
        while len(first) >= 2:
            n = int.from_bytes(first[:2], "big")
            got.append(dns.message.from_wire(first[2:2 + n]).id)
            first = first[2 + n:]
    assert sorted(got) == list(range(20))


def test_pipelined_queries_come_back_in_completion_order(dot_proxy, fake_upstream, pki):
    slow = fake_upstream(delay=0.3)
    p, port, _ = dot_proxy(upstream=slow)
    with connect(port, pki) as c:
        c.send(make_query("slow.example.", id=1), make_query(f"www.{LAN_NAME}", id=2))
        first, second = c.recv(), c.recv()
    assert (first.id, second.id) == (2, 1)  # the local answer did not wait
    assert a_records(first) == ["192.0.2.7"] and a_records(second) == ["192.0.2.1"]


def test_clients_with_the_same_ids_get_their_own_answers(dot_proxy, pki):
    p, port, up = dot_proxy()
    clients = [connect(port, pki) for _ in range(20)]
    try:
        for i, c in enumerate(clients):
            c.send(*[make_query(f"c{i}-q{j}.example.", id=j) for j in range(5)])
        for i, c in enumerate(clients):
            got = {}
            for _ in range(5):
                r = c.recv()
                got[r.id] = r.question[0].name.to_text()
            assert got == {j: f"c{i}-q{j}.example." for j in range(5)}
    finally:
        for c in clients:
            c.close()


def test_edns_tcp_keepalive_is_answered(dot_proxy, pki):
    p, port, _ = dot_proxy(extra=["--tcp-idle-timeout", "7000"])
    q = make_query(f"www.{LAN_NAME}", use_edns=0,
                   options=[dns.edns.GenericOption(dns.edns.OptionType.KEEPALIVE, b"")])
    with connect(port, pki) as c:
        c.send(q)
        r = c.recv()
    opts = [o for o in r.options if o.otype == dns.edns.OptionType.KEEPALIVE]
    assert opts and int.from_bytes(opts[0].to_wire(), "big") == 70  # units of 100 ms


# -- TLS ---------------------------------------------------------------------------------

@pytest.mark.parametrize("alpn,selected", [(("dot",), "dot"), ((), None), (("h2",), None)])
def test_alpn_dot_and_no_alpn_are_both_served(dot_proxy, pki, alpn, selected):
    p, port, _ = dot_proxy()
    with connect(port, pki, alpn=alpn) as c:
        assert c.tls.selected_alpn_protocol() == selected
        c.send(make_query(f"www.{LAN_NAME}"))
        assert a_records(c.recv()) == ["192.0.2.7"]


def test_tls12_is_the_minimum(dot_proxy, pki):
    p, port, _ = dot_proxy()
    with connect(port, pki, max_version=ssl.TLSVersion.TLSv1_2) as c:
        assert c.tls.version() == "TLSv1.2"
        c.send(make_query(f"www.{LAN_NAME}"))
        assert a_records(c.recv()) == ["192.0.2.7"]
    ctx = client_ctx(pki.ca_file, max_version=ssl.TLSVersion.TLSv1_1)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    with pytest.raises((ssl.SSLError, ConnectionError)):
        DoTClient(port, ca_file=pki.ca_file, server_hostname=LAN_NAME, context=ctx)
    assert p.stats()["dot_handshake_failures"] >= 1


def test_client_connections_have_tcp_nodelay(dot_proxy, pki):
    """Answers must not wait for Nagle: the accepted socket has TCP_NODELAY
    (inherited from the listening socket), read from the live socket."""
    p, port, _ = dot_proxy()
    with connect(port, pki) as c:
        c.send(make_query(f"www.{LAN_NAME}"))
        assert a_records(c.recv()) == ["192.0.2.7"]
        assert procutil.tcp_nodelay(p.proc.pid, local_port=port) == [True]


def test_aes128_gcm_is_preferred_over_the_clients_order(dot_proxy, pki):
    """The listener picks the suite (server preference): AES-128-GCM, whose
    SHA-256 key schedule is the cheaper for both sides, although OpenSSL
    clients list AES-256-GCM first; over TLS 1.2 likewise."""
    p, port, _ = dot_proxy()
    with connect(port, pki) as c:
        assert c.tls.cipher()[0] == "TLS_AES_128_GCM_SHA256", c.tls.cipher()
    ctx = client_ctx(pki.ca_file, max_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256")
    with DoTClient(port, ca_file=pki.ca_file, server_hostname=LAN_NAME, context=ctx) as c:
        assert c.tls.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256", c.tls.cipher()
        c.send(make_query(f"www.{LAN_NAME}"))
        assert a_records(c.recv()) == ["192.0.2.7"]


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl(1) not installed")
def test_a_client_that_lists_chacha20_first_gets_it(dot_proxy, pki):
    """A phone without AES instructions lists ChaCha20-Poly1305 first and
    gets it (SSL_OP_PRIORITIZE_CHACHA), server preference notwithstanding."""
    p, port, _ = dot_proxy()
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief",
         "-servername", LAN_NAME, "-CAfile", pki.ca_file, "-verify_return_error",
         "-ciphersuites",
         "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"],
        input="", capture_output=True, text=True, timeout=10)
    assert re.search(r"Ciphersuite: TLS_CHACHA20_POLY1305_SHA256", out.stderr + out.stdout), out


def test_tls12_without_ecdhe_and_aead_is_refused(dot_proxy, pki):
    """RFC 9325 §4.2: over TLS 1.2, only ECDHE key exchange with an AEAD
    cipher; a client offering CBC suites only is refused."""
    p, port, _ = dot_proxy()
    ctx = client_ctx(pki.ca_file, max_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        DoTClient(port, ca_file=pki.ca_file, server_hostname=LAN_NAME, context=ctx)
    assert p.stats()["dot_handshake_failures"] >= 1


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_returning_clients_resume_their_session(dot_proxy, pki, version):
    p, port, _ = dot_proxy()
    ctx = client_ctx(pki.ca_file, max_version=version)
    first = DoTClient(port, ca_file=pki.ca_file, server_hostname=LAN_NAME, context=ctx)
    first.send(make_query(f"www.{LAN_NAME}"))
    first.recv()  # TLS 1.3 tickets come after the handshake: read them
    session = first.session
    first.close()
    assert session is not None and session.has_ticket
    again = DoTClient(port, ca_file=pki.ca_file, server_hostname=LAN_NAME, context=ctx,
                      session=session)
    assert again.session_reused
    again.send(make_query(f"www.{LAN_NAME}"))
    assert a_records(again.recv()) == ["192.0.2.7"]
    again.close()
    s = p.stats()
    assert s["dot_handshakes"] == 2 and s["dot_resumed"] == 1


def test_each_resumption_brings_a_fresh_ticket(dot_proxy, pki):
    """TLS 1.3 tickets are single-use (RFC 8446, C.4): a client that offers
    the ticket of its previous connection each time resumes every time only
    if every connection, resumed ones included, gets a new ticket."""
    p, port, _ = dot_proxy()
    ctx = client_ctx(pki.ca_file, min_version=ssl.TLSVersion.TLSv1_3)
    session = None
    for i in range(5):
        c = DoTClient(port, ca_file=pki.ca_file, server_hostname=LAN_NAME, context=ctx,
                      session=session)
        assert c.session_reused == (i > 0), i
        c.send(make_query(f"www.{LAN_NAME}"))
        assert a_records(c.recv()) == ["192.0.2.7"]  # the tickets came before it
        assert session is None or c.session.id != session.id, "no new ticket"
        session = c.session
        c.close()
    s = p.stats()
    assert s["dot_handshakes"] == 5 and s["dot_resumed"] == 4


def serial_of(client):
    from cryptography import x509
    return x509.load_der_x509_certificate(client.peer_certificate()).serial_number


def test_sighup_serves_a_new_certificate_to_new_connections(dot_proxy, pki, workdir):
    from cryptography import x509
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    first = pki.leaf("reload-1", dns_names=[LAN_NAME])
    shutil.copy(first[0], cert)
    shutil.copy(first[1], key)
    p, port, _ = dot_proxy(cert=(str(cert), str(key)))
    old = connect(port, pki)
    serial1 = serial_of(old)

    second = pki.leaf("reload-2", dns_names=[LAN_NAME])
    shutil.copy(second[0], cert)
    shutil.copy(second[1], key)
    off = p.log_offset()
    p.send_signal(signal.SIGHUP)
    assert p.wait_log(r"configuration reloaded", since=off)
    want = x509.load_pem_x509_certificate(open(second[0], "rb").read()).serial_number
    assert p.wait_log(rf"notice: SIGHUP: TLS listeners serve CN={LAN_NAME}, serial "
                      rf"0?{want:X}, valid until", since=off), p.log()  # whole bytes: maybe a 0
    new = connect(port, pki)
    serial2 = serial_of(new)
    assert serial2 == want != serial1
    for c in (old, new):  # the open connection keeps its session and is served
        c.send(make_query(f"www.{LAN_NAME}"))
        assert a_records(c.recv()) == ["192.0.2.7"]

    # A key that is not the certificate's: the reload is refused, said why,
    # and the pair in use stays.
    third = pki.leaf("reload-3", dns_names=[LAN_NAME])
    shutil.copy(third[0], cert)
    off = p.log_offset()
    p.send_signal(signal.SIGHUP)
    m = p.wait_log(r"SIGHUP: configuration unchanged: .*is not the key of the certificate",
                   since=off)
    assert m, p.log()
    newest = connect(port, pki)
    assert serial_of(newest) == want
    for c in (old, new, newest):
        c.close()


def test_a_key_that_does_not_match_is_a_configuration_error(pki, lan_cert):
    other = pki.leaf("other", dns_names=[LAN_NAME])
    r = run_cli(["--listen-tls", f"127.0.0.1:{free_port()}", "--cert-file", lan_cert[0],
                 "--key-file", other[1], "--check-config"])
    assert r.returncode == 2
    assert f"--key-file {other[1]} is not the key of the certificate in {lan_cert[0]}" in r.stderr


def test_a_missing_certificate_file_says_so(lan_cert, workdir):
    missing = str(workdir / "nope.pem")
    r = run_cli(["--listen-tls", f"127.0.0.1:{free_port()}", "--cert-file", missing,
                 "--key-file", lan_cert[1], "--check-config"])
    assert r.returncode == 2
    assert f"--cert-file {missing}: No such file or directory" in r.stderr


def test_listen_tls_without_a_certificate_is_a_configuration_error():
    r = run_cli(["--listen-tls", f"127.0.0.1:{free_port()}", "--check-config"])
    assert r.returncode == 2 and "--cert-file and --key-file" in r.stderr


# -- limits ----------------------------------------------------------------------------

@pytest.mark.time_limit(30)
def test_handshakes_that_never_finish_are_closed_and_cost_others_nothing(dot_proxy, pki):
    p, port, _ = dot_proxy()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    try:
        start = time.monotonic()
        with connect(port, pki, source="127.0.0.2") as c:  # another host
            c.send(make_query(f"www.{LAN_NAME}"))
            assert a_records(c.recv()) == ["192.0.2.7"]
        assert time.monotonic() - start < 1.0
        for s in idle:
            s.settimeout(10 - (time.monotonic() - start))
            assert s.recv(1) == b""  # closed by the server within 10 s
        elapsed = time.monotonic() - start
        assert 4.0 <= elapsed < 10.0, elapsed
    finally:
        for s in idle:
            s.close()
    # 32 (--max-clients-per-address) waited for the deadline; the others
    # were closed at once.
    s = p.stats()
    assert s["dot_handshake_failures"] == 32 and s["tls_address_refused"] == 18, s


def test_one_address_gets_max_clients_per_address(dot_proxy, pki):
    p, port, _ = dot_proxy(extra=["--max-clients-per-address", "3"])
    mine = [connect(port, pki) for _ in range(3)]
    try:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            connect(port, pki)  # the fourth from 127.0.0.1: closed at once
        with connect(port, pki, source="127.0.0.2") as other:  # another host is served
            other.send(make_query(f"www.{LAN_NAME}"))
            assert a_records(other.recv()) == ["192.0.2.7"]
        for c in mine:  # the three are still served
            c.send(make_query(f"www.{LAN_NAME}"))
            assert a_records(c.recv()) == ["192.0.2.7"]
        mine.pop().close()
        deadline = time.monotonic() + 5
        while True:  # its place comes back once the server saw the close
            try:
                mine.append(connect(port, pki))
                break
            except (ssl.SSLError, ConnectionError):
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        for c in mine:
            c.close()
    assert p.stats()["tls_address_refused"] >= 1


def test_a_client_outside_allow_gets_refused_with_ede_18(dot_proxy, pki):
    p, port, up = dot_proxy(extra=["--allow", "10.0.0.0/8"])
    with connect(port, pki) as c:
        c.send(make_query("www.example.", use_edns=0))
        r = c.recv()
    assert r.rcode() == dns.rcode.REFUSED and ede_codes(r) == [18]
    assert up.queries == []


@pytest.mark.time_limit(60)
def test_a_thousand_clients_at_once(dot_proxy, pki):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2500:
        pytest.skip(f"descriptor limit {hard} is too low for 1,000 clients")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2500), hard))
    try:
        p, port, up = dot_proxy(extra=["--max-tcp-clients", "1100",
                                       "--max-clients-per-address", "1000"])
        clients = []
        try:
            for i in range(1000):
                clients.append(connect(port, pki))
            for i, c in enumerate(clients):
                c.send(make_query(f"www.{LAN_NAME}", id=i % 7))
            for i, c in enumerate(clients):
                r = c.recv()
                assert r.id == i % 7 and a_records(r) == ["192.0.2.7"], i
        finally:
            for c in clients:
                c.close()
        s = p.stats()
        assert s["dot_handshakes"] == 1000 and s["queries_dot"] == 1000
        assert s["tcp_refused"] == 0
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_plain_tcp_clients_get_the_keepalive_too(dotproxy, fake_upstream):
    p = dotproxy([fake_upstream()], extra_args=["--tcp-idle-timeout", "3000"])
    q = make_query("www.example.", use_edns=0,
                   options=[dns.edns.GenericOption(dns.edns.OptionType.KEEPALIVE, b"")])
    r = dns.query.tcp(q, "127.0.0.1", port=p.port, timeout=3)
    opts = [o for o in r.options if o.otype == dns.edns.OptionType.KEEPALIVE]
    assert opts and int.from_bytes(opts[0].to_wire(), "big") == 30
    u = dns.query.udp(q, "127.0.0.1", port=p.port, timeout=3)  # never over UDP
    assert not [o for o in u.options if o.otype == dns.edns.OptionType.KEEPALIVE]


def test_answers_to_padded_queries_are_padded_to_468_bytes(dot_proxy, pki):
    p, port, _ = dot_proxy()
    with connect(port, pki) as c:
        for name in (f"www.{LAN_NAME}", "www.example.", "big1.example."):  # local, forwarded
            c.send(make_query(name, use_edns=0, pad=128))
            wire = c.recv_frame()
            r = dns.message.from_wire(wire)
            assert len(wire) % 468 == 0, (name, len(wire))
            assert any(o.otype == dns.edns.OptionType.PADDING for o in r.options), name
        c.send(make_query("www.example.", use_edns=0))  # not padded: not padded
        r = c.recv()
        assert not any(o.otype == dns.edns.OptionType.PADDING for o in r.options)


def test_plain_tcp_answers_are_never_padded(dotproxy, fake_upstream):
    p = dotproxy([fake_upstream()])
    r = dns.query.tcp(make_query("www.example.", use_edns=0, pad=128), "127.0.0.1",
                      port=p.port, timeout=3)
    assert not any(o.otype == dns.edns.OptionType.PADDING for o in r.options)


def test_a_tls_address_taken_twice_is_a_configuration_error(lan_cert):
    port = free_port()
    cert = ["--cert-file", lan_cert[0], "--key-file", lan_cert[1], "--check-config"]
    r = run_cli(["--listen-tls", f"127.0.0.1:{port}", "--listen-tls", f"127.0.0.1:{port}"]
                + cert)
    assert r.returncode == 2 and "takes that address and port already" in r.stderr, r.stderr
    r = run_cli(["--listen", f"127.0.0.1:{port}", "--listen-tls", f"127.0.0.1:{port}"] + cert)
    assert r.returncode == 2 and "takes that address and port already" in r.stderr, r.stderr


def test_handshakes_under_way_do_not_hold_up_a_shutdown(dot_proxy):
    p, port, _ = dot_proxy()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    try:
        time.sleep(0.2)  # accepted: handshakes under way
        start = time.monotonic()
        assert p.stop(timeout=4.0) == 0
        assert time.monotonic() - start < 2.0  # not the 5 s handshake deadline
    finally:
        for s in idle:
            s.close()


def test_the_query_log_names_dot_clients_as_dot(dot_proxy, pki):
    p, port, _ = dot_proxy(extra=["--log-queries"])
    with connect(port, pki) as c:
        c.send(make_query(f"www.{LAN_NAME}"))
        c.recv()
    assert p.wait_log(rf"query: client=127\.0\.0\.1#\d+/dot name=www\.{re.escape(LAN_NAME)}\. "),\
        p.log()
