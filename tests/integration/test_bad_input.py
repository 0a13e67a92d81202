"""Malformed client input: FORMERR when a header can be read, else dropped;
counted; the proxy keeps serving everyone else."""

import os
import socket
import struct

import dns.flags
import dns.message
import dns.rcode

from netutil import make_query


def udp_raw(p, data, timeout=1.0):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, (p.addr, p.port))
        try:
            return s.recv(65535)
        except socket.timeout:
            return None


def header(qid=0x4242, flags=0x0100, qd=1, an=0, ns=0, ar=0):
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


QUESTION = b"\x03www\x07example\x00" + struct.pack("!HH", 1, 1)

MALFORMED = {
    "two questions": header(qd=2) + QUESTION + QUESTION,
    "no question": header(qd=0),
    "compression loop": header() + b"\xc0\x0c" + struct.pack("!HH", 1, 1),
    "pointer forward": header() + b"\xc0\x20" + struct.pack("!HH", 1, 1) + b"\x00" * 20,
    "label over 63": header() + b"\x40" + b"a" * 64 + b"\x00" + struct.pack("!HH", 1, 1),
    "name over 255": header() + (b"\x3f" + b"a" * 63) * 4 + b"\x00" + struct.pack("!HH", 1, 1),
    "truncated question": header() + b"\x03www\x07exa",
    "record past the end": header(ar=1) + QUESTION + b"\x00\x00\x01\x00\x01\x00\x00\x00\x00\x00\x10ab",
    "two OPT records": header(ar=2) + QUESTION + (b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00") * 2,
    "trailing bytes": header() + QUESTION + b"junk",
    # An OPT whose root owner is a pointer (to the end of the question name):
    # once crashed the proxy, whose OPT rewriting assumed a one-byte owner.
    "OPT owner compressed": header(ar=1) + QUESTION + b"\xc0\x18\x00\x29\x10\x00\x00\x00"
        b"\x00\x00\x01\x00\x03\xff\x00\xfc" + b"\x00" * 252,
}


def test_malformed_queries_get_formerr(unbound, dotproxy):
    p = dotproxy([unbound])
    for what, data in MALFORMED.items():
        raw = udp_raw(p, data)
        assert raw is not None, f"{what}: no reply"
        reply = dns.message.from_wire(raw, question_only=True)
        assert reply.id == 0x4242, what
        assert reply.rcode() == dns.rcode.FORMERR, what
        assert reply.flags & dns.flags.QR
    assert p.stats()["formerr"] == len(MALFORMED)
    assert p.udp("www.example.").rcode() == dns.rcode.NOERROR


def test_too_short_and_response_datagrams_are_dropped(unbound, dotproxy):
    p = dotproxy([unbound])
    assert udp_raw(p, b"\x12\x34\x01", timeout=0.3) is None
    assert udp_raw(p, b"", timeout=0.3) is None
    resp = make_query("www.example.", "A")
    resp.flags |= dns.flags.QR
    assert udp_raw(p, resp.to_wire(), timeout=0.3) is None
    s = p.stats()
    assert s["dropped_malformed"] >= 1
    assert s["dropped_responses"] == 1
    assert p.udp("www.example.").rcode() == dns.rcode.NOERROR


def test_other_opcodes_get_notimp(unbound, dotproxy):
    p = dotproxy([unbound])
    raw = udp_raw(p, header(flags=0x2000) + QUESTION)  # opcode 4 (NOTIFY)
    assert dns.message.from_wire(raw).rcode() == dns.rcode.NOTIMP
    assert p.stats()["notimp"] == 1


def test_random_garbage_never_hurts(unbound, dotproxy):
    p = dotproxy([unbound])
    rng = __import__("random").Random(7)
    for _ in range(300):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
        udp_raw(p, data, timeout=0.02)
    for _ in range(50):
        udp_raw(p, header() + os.urandom(rng.randrange(0, 60)), timeout=0.02)
    assert p.running
    assert p.udp("www.example.").rcode() == dns.rcode.NOERROR
    assert p.tcp("www.example.").rcode() == dns.rcode.NOERROR


def test_malformed_query_over_tcp_gets_formerr_and_the_session_goes_on(unbound, dotproxy):
    p = dotproxy([unbound])
    with socket.create_connection((p.addr, p.port), timeout=3) as s:
        bad = MALFORMED["compression loop"]
        good = make_query("www.example.", "A").to_wire()
        s.sendall(struct.pack("!H", len(bad)) + bad + struct.pack("!H", len(good)) + good)
        replies = []
        buf = b""
        while len(replies) < 2:
            chunk = s.recv(4096)
            assert chunk, "closed"
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                n = struct.unpack("!H", buf[:2])[0]
                replies.append(dns.message.from_wire(buf[2:2 + n], question_only=True))
                buf = buf[2 + n:]
    rcodes = sorted(r.rcode() for r in replies)
    assert rcodes == [dns.rcode.NOERROR, dns.rcode.FORMERR]
