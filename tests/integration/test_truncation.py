"""UDP truncation (RFC 1035 §4.2.1, RFC 6891 §6.2.5) and the TCP retry."""

import subprocess

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

BIG = "big.example."


def answer_count(reply):
    return sum(len(rrset) for rrset in reply.answer)


def test_truncated_to_512_without_edns(unbound, dotproxy):
    p = dotproxy([unbound])
    reply = p.udp(BIG, use_edns=False)
    assert reply.flags & dns.flags.TC
    assert len(reply.to_wire()) <= 512
    assert str(reply.question[0].name) == BIG
    assert reply.edns == -1
    assert p.stats()["answers_truncated"] == 1


def test_truncated_to_the_clients_edns_size(unbound, dotproxy):
    p = dotproxy([unbound])
    reply = p.udp(BIG, use_edns=0, payload=1232)
    assert reply.flags & dns.flags.TC
    assert reply.edns == 0  # the client sent OPT: the truncated reply keeps one


def test_whole_answer_when_the_client_can_take_it(unbound, dotproxy):
    p = dotproxy([unbound], extra_args=["--max-udp-size", "4096"])
    reply = p.udp(BIG, use_edns=0, payload=4096)
    assert not reply.flags & dns.flags.TC
    assert answer_count(reply) == 100


def test_answers_capped_at_max_udp_size_whatever_the_client_advertises(unbound, dotproxy):
    # The default cap is 1232 bytes (DNS Flag Day 2020): a client advertising
    # 4096 still gets a truncated answer for one that would fragment.
    p = dotproxy([unbound])
    reply = p.udp(BIG, use_edns=0, payload=4096)
    assert reply.flags & dns.flags.TC
    assert len(reply.to_wire()) <= 1232
    assert p.stats()["answers_truncated"] == 1
    whole = p.tcp(BIG, use_edns=0)
    assert len(whole.to_wire()) > 1232  # so the cap, not the answer, decided
    assert answer_count(whole) == 100


def test_small_answer_is_not_truncated_without_edns(unbound, dotproxy):
    p = dotproxy([unbound])
    reply = p.udp("www.example.", use_edns=False)
    assert not reply.flags & dns.flags.TC
    assert answer_count(reply) == 1


def test_tcp_gets_the_whole_answer(unbound, dotproxy):
    p = dotproxy([unbound])
    reply = p.tcp(BIG, use_edns=False)
    assert not reply.flags & dns.flags.TC
    assert answer_count(reply) == 100


def test_dig_retries_over_tcp_and_gets_everything(unbound, dotproxy):
    p = dotproxy([unbound])
    out = subprocess.run(["dig", "+tries=1", "+time=3", "+bufsize=1232", f"@{p.addr}",
                          "-p", str(p.port), BIG, "A"],
                         capture_output=True, text=True, timeout=15)
    assert out.returncode == 0, out.stderr
    assert "Truncated, retrying in TCP mode" in out.stdout
    assert "ANSWER: 100," in out.stdout
    s = p.stats()
    assert s["queries_udp"] == 1 and s["queries_tcp"] == 1


def test_answer_near_64_kib_arrives_whole_over_tcp(fake_upstream, dotproxy):
    """An answer spread over several TLS records, which dotproxy decrypts a
    record's worth at a time, arrives whole and unchanged."""
    strings = [f"{i:04d}".encode() * 60 for i in range(250)]  # 240 bytes each

    def huge(query):
        resp = dns.message.make_response(query)
        resp.answer.append(dns.rrset.from_text_list(
            query.question[0].name, 300, "IN", "TXT", [f'"{s.decode()}"' for s in strings]))
        return resp

    up = fake_upstream(responder=huge)
    p = dotproxy([up], extra_args=["--cache-size", "0"])
    for _ in range(3):  # the same connection, so records also straddle reads
        reply = p.tcp("huge.example.", "TXT")
        assert len(reply.to_wire()) > 60000
        got = [s for rrset in reply.answer for rr in rrset for s in rr.strings]
        assert sorted(got) == sorted(strings)
