"""dnstap (--dnstap PATH): every client query and answer, and every exchange
with an upstream, as Frame Streams to a unix socket.

The receiver is our own (dnstap_receiver.FstrmReceiver, whose decoder knows
the published schema's field numbers and rejects anything else) or Debian's
fstrm_capture, whose file is then decoded the same way and by BIND's
dnstap-read.  Checked per query: which messages come (CLIENT_QUERY and
CLIENT_RESPONSE for local answers and cache hits, all four for a forwarded
query), their socket protocol (UDP, TCP, DOT), addresses and ports, times,
identity and version, and that each message is byte for byte what the
client or the upstream sent or received.  Then the receiver's absences: not
there at start (answers go on, drops are counted, messages flow within 10 s
of it appearing), gone and back, stopped with SIGSTOP while 5,000 queries
are answered, every event counted as sent, dropped or lost.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import dns.message
import pytest

from dnstap_receiver import FstrmReceiver, decode_dnstap
from dotproxy_proc import AUTH_NAME, run_cli
from fake_upstream import default_responder
from netutil import DoTClient, free_port, make_query

LOCAL_NAME = "nas.home.arpa."
LOCAL = ["--local-data", f"{LOCAL_NAME} A 192.168.1.10"]
RECONNECT_S = 10.0  # the contract: messages flow again within this of the receiver's return
FLUSH_S = 3.0       # fstrm writes what is queued at least every second or two


@pytest.fixture
def sockdir():
    # A unix socket path must fit 108 bytes: pytest's tmp_path may not.
    d = tempfile.mkdtemp(prefix="dnstap", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def receiver(sockdir):
    """receiver(path=None) -> a started FstrmReceiver; stopped, and its errors
    checked, at teardown."""
    started = []

    def start(path=None):
        r = FstrmReceiver(path or os.path.join(sockdir, "tap.sock"))
        started.append(r)
        return r.start()

    yield start
    errors = []
    for r in started:
        r.stop()
        errors += r.errors
    if errors:
        pytest.fail("the dnstap receiver saw errors:\n" + "\n".join(errors), pytrace=False)


def udp_exchange(port, wire, timeout=2.0):
    """Send @wire, return (reply bytes, our port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind(("127.0.0.1", 0))
        s.sendto(wire, ("127.0.0.1", port))
        return s.recvfrom(65535)[0], s.getsockname()[1]


def tcp_exchange(port, wire, timeout=2.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(len(wire).to_bytes(2, "big") + wire)
        buf = b""
        while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
            chunk = s.recv(65536)
            assert chunk, "connection closed before the answer"
            buf += chunk
        return buf[2:], s.getsockname()[1]


def of_type(msgs, mtype):
    return [m for m in msgs if m["type"] == mtype]


def one(msgs, mtype, field, value):
    """The one message of @mtype whose @field is @value."""
    found = [m for m in msgs if m["type"] == mtype and m.get(field) == value]
    assert len(found) == 1, (mtype, field, value, msgs)
    return found[0]


def recording_responder(sent):
    def respond(query):
        wire = default_responder(query).to_wire(max_size=65535, want_shuffle=False)
        sent.append(wire)
        return wire
    return respond


def read_fstrm_file(path):
    """The data frames of a Frame Streams file (fstrm_capture -w)."""
    with open(path, "rb") as f:
        data = f.read()
    frames, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        pos += 4
        if n == 0:  # a control frame: START, STOP
            n = int.from_bytes(data[pos:pos + 4], "big")
            pos += 4 + n
            continue
        frames.append(data[pos:pos + n])
        pos += n
    return frames


def check_client_pair(msgs, query, reply, protocol, client_port, server_port):
    """CLIENT_QUERY and CLIENT_RESPONSE of one exchange: returns them."""
    cq = one(msgs, "CLIENT_QUERY", "query_message", query)
    cr = one(msgs, "CLIENT_RESPONSE", "response_message", reply)
    for m in (cq, cr):
        assert m["socket_family"] == "INET" and m["socket_protocol"] == protocol, m
        assert (m["query_address"], m["query_port"]) == ("127.0.0.1", client_port), m
        assert (m["response_address"], m["response_port"]) == ("127.0.0.1", server_port), m
        assert "http_protocol" not in m
    assert "response_message" not in cq and "response_time" not in cq
    assert "query_message" not in cr
    # The response knows when its query came: the same moment, to a millisecond.
    assert abs(cr["query_time"] - cq["query_time"]) < 0.002, (cq, cr)
    assert cq["query_time"] <= cr["response_time"] + 1e-6
    assert abs(time.time() - cr["response_time"]) < 30
    return cq, cr


def test_every_query_and_exchange_is_reported(fake_upstream, dotproxy, receiver, certs):
    sent = []
    up = fake_upstream(responder=recording_responder(sent))
    r = receiver()
    tls_port = free_port()
    p = dotproxy([up], extra_args=[*LOCAL, "--dnstap", r.path, "--dnstap-identity", "tap-test",
                                   "--listen-tls", f"127.0.0.1:{tls_port}",
                                   "--cert-file", certs.good[0], "--key-file", certs.good[1]])
    assert r.wait_for(lambda _: r.handshakes == 1, 5) is not None, "no handshake"

    # A local answer over UDP: the client's pair, nothing forwarded.
    q1 = make_query(LOCAL_NAME, "A", id=0x1111).to_wire()
    a1, port1 = udp_exchange(p.port, q1)
    # A forwarded query over TCP: both pairs.
    q2 = make_query("fwd.example.", "A", id=0x2222, use_edns=0).to_wire()
    a2, port2 = tcp_exchange(p.port, q2)
    # The same question again, over UDP: a cache hit, the client's pair only.
    q3 = make_query("fwd.example.", "A", id=0x3333, use_edns=0).to_wire()
    a3, port3 = udp_exchange(p.port, q3)
    # Over TLS (our DoT listener): socket_protocol DOT.
    q4 = make_query(LOCAL_NAME, "A", id=0x4444).to_wire()
    with DoTClient(tls_port, ca_file=certs.ca_file, server_hostname=AUTH_NAME) as c:
        c.send(q4)
        a4 = c.recv_frame()
        port4 = c.raw.getsockname()[1]

    msgs = r.wait_for(lambda ms: len(ms) >= 10, 5 + FLUSH_S)
    assert msgs is not None, r.messages
    assert len(msgs) == 10, msgs
    assert len(of_type(msgs, "CLIENT_QUERY")) == 4
    assert len(of_type(msgs, "CLIENT_RESPONSE")) == 4
    for m in msgs:
        assert m["identity"] == b"tap-test" and m["version"].startswith(b"dotproxy "), m

    check_client_pair(msgs, q1, a1, "UDP", port1, p.port)
    cq2, cr2 = check_client_pair(msgs, q2, a2, "TCP", port2, p.port)
    check_client_pair(msgs, q3, a3, "UDP", port3, p.port)
    check_client_pair(msgs, q4, a4, "DOT", port4, tls_port)

    # The exchange with the upstream: what it received and what it sent,
    # byte for byte, with its address and DoT.
    assert len(up.raw_queries) == 1 and len(sent) == 1
    fq = one(msgs, "FORWARDER_QUERY", "query_message", up.raw_queries[0])
    fr = one(msgs, "FORWARDER_RESPONSE", "response_message", sent[0])
    for m in (fq, fr):
        assert m["socket_family"] == "INET" and m["socket_protocol"] == "DOT", m
        assert (m["response_address"], m["response_port"]) == ("127.0.0.1", up.port), m
        assert "query_address" not in m and "query_port" not in m
    assert "response_message" not in fq and "query_message" not in fr
    assert cq2["query_time"] <= fq["query_time"] <= fr["response_time"] <= cr2["response_time"]
    assert abs(fr["query_time"] - fq["query_time"]) < 0.002
    # The upstream's answer reached the client (its ID and OPT adapted).
    assert dns.message.from_wire(a2).answer == dns.message.from_wire(sent[0]).answer

    s = p.stats()
    assert s["dnstap_dropped"] == 0 and s["dnstap_lost"] == 0
    assert s["dnstap_sent"] >= 10


def test_receiver_absent_at_start_then_appears(dotproxy, receiver, sockdir):
    path = os.path.join(sockdir, "late.sock")
    p = dotproxy(extra_args=[*LOCAL, "--dnstap", path])
    for i in range(20):
        reply, _ = udp_exchange(p.port, make_query(LOCAL_NAME, "A", id=i).to_wire())
        assert dns.message.from_wire(reply).answer
    s = p.stats()
    assert s["dnstap_dropped"] == 40 and s["dnstap_sent"] == 0
    assert p.wait_log(r"dnstap: cannot reach .*late\.sock")

    r = receiver(path)
    appeared = time.monotonic()
    assert r.wait_for(lambda _: r.handshakes >= 1, RECONNECT_S) is not None, \
        "dotproxy did not connect within 10 s of the receiver appearing"
    connected_after = time.monotonic() - appeared
    marker = make_query(LOCAL_NAME, "A", id=0xbeef).to_wire()
    udp_exchange(p.port, marker)
    assert r.wait_for(lambda ms: any(m.get("query_message") == marker for m in ms), FLUSH_S)
    assert p.wait_log(r"dnstap: streaming to .*late\.sock")
    print(f"connected {connected_after:.1f} s after the receiver appeared")


def test_receiver_that_goes_away_and_comes_back(fake_upstream, dotproxy, receiver):
    up = fake_upstream()
    r = receiver()
    p = dotproxy([up], extra_args=[*LOCAL, "--dnstap", r.path])
    q = make_query(LOCAL_NAME, "A", id=1).to_wire()
    udp_exchange(p.port, q)
    assert r.wait_for(lambda ms: len(ms) == 2, 5 + FLUSH_S), r.messages

    r.stop()
    # Answers go on while it is away; what cannot be written is counted.
    for i in range(50):
        reply, _ = udp_exchange(p.port, make_query(f"away{i}.example.", "A", id=i).to_wire())
        assert dns.message.from_wire(reply).answer
        time.sleep(0.02)
    assert p.wait_log(r"dnstap: lost .*tap\.sock", timeout=FLUSH_S)
    s = p.stats()
    assert s["dnstap_dropped"] + s["dnstap_lost"] > 0, s

    back = receiver(r.path)
    assert back.wait_for(lambda _: back.handshakes >= 1, RECONNECT_S) is not None
    marker = make_query("back.example.", "A", id=0xbac).to_wire()
    udp_exchange(p.port, marker)
    msgs = back.wait_for(lambda ms: sum(m.get("query_message") == marker for m in ms) == 1
                         and len(of_type(ms, "FORWARDER_RESPONSE")) >= 1, FLUSH_S)
    assert msgs, back.messages
    # Every event is accounted for: written, dropped or lost.
    s = p.stats()
    events = 2 + 50 * 4 + 4
    assert s["dnstap_sent"] + s["dnstap_dropped"] + s["dnstap_lost"] == events, s


@pytest.mark.time_limit(120)
@pytest.mark.skipif(not shutil.which("fstrm_capture"), reason="fstrm_capture (fstrm-bin) missing")
def test_stopped_receiver_never_delays_answers(fake_upstream, dotproxy, sockdir):
    """fstrm_capture stopped with SIGSTOP: 5,000 queries are answered at once
    all the same, the overflow is counted, and once it runs again every
    event is accounted for (written or dropped) and the file holds exactly
    the ones written, the later ones included."""
    path = os.path.join(sockdir, "cap.sock")
    out = os.path.join(sockdir, "cap.fstrm")
    cap = subprocess.Popen(["fstrm_capture", "-t", "protobuf:dnstap.Dnstap", "-u", path,
                            "-w", out], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5
        while not os.path.exists(path):
            assert time.monotonic() < deadline, "fstrm_capture did not listen"
            time.sleep(0.05)
        up = fake_upstream()
        p = dotproxy([up], extra_args=[*LOCAL, "--dnstap", path])
        udp_exchange(p.port, make_query("first.example.", "A", id=1).to_wire())
        assert p.wait_log(r"dnstap: streaming to", timeout=5 + FLUSH_S)

        cap.send_signal(signal.SIGSTOP)
        n, slowest = 5000, 0.0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2.0)
            for i in range(n):
                t = time.monotonic()
                s.sendto(make_query(LOCAL_NAME, "A", id=i & 0xFFFF).to_wire(),
                         ("127.0.0.1", p.port))
                assert dns.message.from_wire(s.recvfrom(65535)[0]).id == i & 0xFFFF
                slowest = max(slowest, time.monotonic() - t)
        stats = p.stats()
        assert stats["dnstap_dropped"] > 0, stats
        print(f"{n} answers while the receiver was stopped, the slowest in "
              f"{slowest * 1000:.1f} ms; {stats['dnstap_dropped']} events dropped")

        def accounted(events):
            """Wait until every event so far is sent, dropped or lost."""
            deadline = time.monotonic() + 10
            while True:
                stats = p.stats()
                done = stats["dnstap_sent"] + stats["dnstap_dropped"] + stats["dnstap_lost"]
                if done == events or time.monotonic() > deadline:
                    assert done == events, stats
                    return stats

        cap.send_signal(signal.SIGCONT)
        accounted(4 + 2 * n)  # the backlog drains
        marker = make_query("marker.example.", "A", id=0x4d4d).to_wire()
        udp_exchange(p.port, marker)
        stats = accounted(4 + 2 * n + 4)
        assert p.stop() == 0
    finally:
        if cap.poll() is None:
            cap.send_signal(signal.SIGCONT)
            cap.send_signal(signal.SIGINT)
        cap.wait(5)
    frames = read_fstrm_file(out)
    assert len(frames) == stats["dnstap_sent"]
    msgs = [decode_dnstap(f) for f in frames]
    assert any(m.get("query_message") == marker for m in msgs)


def test_exit_is_not_held_by_a_receiver_that_does_not_read(dotproxy, receiver):
    r = receiver()
    p = dotproxy(extra_args=[*LOCAL, "--dnstap", r.path])
    assert r.wait_for(lambda _: r.handshakes == 1, 5) is not None
    r.pause()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2.0)
        for i in range(5000):
            s.sendto(make_query(LOCAL_NAME, "A", id=i & 0xFFFF).to_wire(), ("127.0.0.1", p.port))
            s.recvfrom(65535)
    t = time.monotonic()
    assert p.stop() == 0
    took = time.monotonic() - t
    assert took < 3.0, f"exit took {took:.1f} s with a receiver that does not read"
    assert "dnstap_dropped=0 " not in p.log()


@pytest.mark.skipif(not (shutil.which("fstrm_capture") and shutil.which("dnstap-read")),
                    reason="fstrm_capture (fstrm-bin) or dnstap-read (bind9-dnsutils) missing")
def test_bind_dnstap_read_reads_the_capture(fake_upstream, dotproxy, sockdir):
    path = os.path.join(sockdir, "cap.sock")
    out = os.path.join(sockdir, "cap.fstrm")
    cap = subprocess.Popen(["fstrm_capture", "-t", "protobuf:dnstap.Dnstap", "-u", path,
                            "-w", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not os.path.exists(path):
            assert time.monotonic() < deadline, "fstrm_capture did not listen"
            time.sleep(0.05)
        up = fake_upstream()
        p = dotproxy([up], extra_args=["--dnstap", path, "--dnstap-identity", "bind-read"])
        tcp_exchange(p.port, make_query("read.example.", "A", id=7).to_wire())
        time.sleep(0.2)
        assert p.stop() == 0  # the stream is written out and closed at exit
    finally:
        cap.send_signal(signal.SIGINT)
        cap.wait(5)
    text = subprocess.run(["dnstap-read", "-y", out], capture_output=True, text=True,
                          timeout=10, check=True).stdout
    docs = [d for d in text.split("\n---") if "type: MESSAGE" in d]
    kinds = [(line.split(":")[1].strip()) for d in docs for line in d.splitlines()
             if line.startswith("  type: ")]
    assert kinds == ["CLIENT_QUERY", "FORWARDER_QUERY", "FORWARDER_RESPONSE",
                     "CLIENT_RESPONSE"], text
    assert text.count("identity: bind-read") == 4
    # BIND 9.18's dnstap-read knows no protocol but UDP and TCP, and prints
    # UDP for the others: DOT is checked by our own decoder above.
    protocols = [line.split(":")[1].strip() for d in docs for line in d.splitlines()
                 if line.startswith("  socket_protocol: ")]
    assert protocols == ["TCP", "UDP", "UDP", "TCP"], text
    assert f"response_port: {up.port}" in text
    assert text.count("read.example.") >= 4


def test_options_are_checked_and_documented():
    long_path = "/tmp/" + "x" * 120
    r = run_cli(["--dnstap", long_path, "--check-config"])
    assert r.returncode == 2 and "--dnstap" in r.stderr, r
    r = run_cli(["--dnstap-identity", "", "--check-config"])
    assert r.returncode == 2 and "--dnstap-identity" in r.stderr, r
    r = run_cli(["--help"])
    assert "--dnstap PATH" in r.stdout and "--dnstap-identity NAME" in r.stdout


def test_every_worker_reports(dotproxy, receiver):
    """Each worker has its own queue: with two, every event still arrives."""
    r = receiver()
    p = dotproxy(extra_args=[*LOCAL, "--dnstap", r.path, "--workers", "2"])
    assert r.wait_for(lambda _: r.handshakes == 1, 5) is not None
    sent = set()
    for i in range(60):  # a new source port each time: SO_REUSEPORT spreads them
        q = make_query(LOCAL_NAME, "A", id=i).to_wire()
        udp_exchange(p.port, q)
        sent.add(q)
    msgs = r.wait_for(lambda ms: len(ms) >= 120, 5 + FLUSH_S)
    assert msgs is not None and len(msgs) == 120, r.messages
    assert {m["query_message"] for m in of_type(msgs, "CLIENT_QUERY")} == sent
    s = p.stats()
    assert s["dnstap_sent"] == 120 and s["dnstap_dropped"] == 0


def test_reload_keeps_the_stream_and_says_a_change_needs_a_restart(dotproxy, receiver, workdir):
    r = receiver()
    conf = workdir / "dotproxy.conf"
    conf.write_text(f"dnstap {r.path}\ndnstap-identity one\n")
    p = dotproxy(extra_args=[*LOCAL, "--config", conf])
    assert r.wait_for(lambda _: r.handshakes == 1, 5) is not None
    conf.write_text(f"dnstap {r.path}\ndnstap-identity two\n")
    p.send_signal(signal.SIGHUP)
    assert p.wait_log(r"SIGHUP: --dnstap-identity changes only on restart; still running with "
                      r"the old one")
    q = make_query(LOCAL_NAME, "A", id=9).to_wire()
    udp_exchange(p.port, q)
    msgs = r.wait_for(lambda ms: len(ms) == 2, 5 + FLUSH_S)
    assert msgs and all(m["identity"] == b"one" for m in msgs), r.messages


def test_doh_upstream_exchange_is_reported_as_doh(fake_doh, dotproxy, receiver):
    """The FORWARDER pair of a DoH upstream: DOH over HTTP2, its address,
    the query as the server received it (ID 0, RFC 8484) and its answer."""
    sent = []
    f = fake_doh(responder=recording_responder(sent))
    r = receiver()
    p = dotproxy([f"https://127.0.0.1:{f.port}/dns-query#{AUTH_NAME}"],
                 extra_args=["--dnstap", r.path])
    q = make_query("doh.example.", "A", id=0x5151).to_wire()
    a, port = udp_exchange(p.port, q)
    msgs = r.wait_for(lambda ms: len(ms) >= 4, 5 + FLUSH_S)
    assert msgs is not None and len(msgs) == 4, r.messages
    check_client_pair(msgs, q, a, "UDP", port, p.port)
    wire = f.requests[0].wire
    assert wire[:2] == b"\0\0"
    fq = one(msgs, "FORWARDER_QUERY", "query_message", wire)
    fr = one(msgs, "FORWARDER_RESPONSE", "response_message", sent[0])
    for m in (fq, fr):
        assert m["socket_protocol"] == "DOH" and m["http_protocol"] == "HTTP2", m
        assert (m["response_address"], m["response_port"]) == ("127.0.0.1", f.port), m


def test_plain_dns_exchange_is_reported_as_sent(fake_upstream, fake_plain, dotproxy, receiver):
    """A forward zone's udp:// server: UDP, its address, and the query as it
    received it (the upstream ID, without our hop's EDNS options)."""
    sent = []
    f = fake_plain(responder=recording_responder(sent))
    r = receiver()
    p = dotproxy([fake_upstream()], extra_args=[
        "--forward-zone", f"lan.example=udp://127.0.0.1:{f.port}", "--dnstap", r.path])
    q = make_query("host.lan.example.", "A", id=0x6161, use_edns=0).to_wire()
    a, port = udp_exchange(p.port, q)
    msgs = r.wait_for(lambda ms: len(ms) >= 4, 5 + FLUSH_S)
    assert msgs is not None and len(msgs) == 4, r.messages
    check_client_pair(msgs, q, a, "UDP", port, p.port)
    [received] = f.received
    fq = one(msgs, "FORWARDER_QUERY", "query_message", received.wire)
    fr = one(msgs, "FORWARDER_RESPONSE", "response_message", sent[0])
    for m in (fq, fr):
        assert m["socket_protocol"] == "UDP" and "http_protocol" not in m, m
        assert (m["response_address"], m["response_port"]) == ("127.0.0.1", f.port), m
