"""Self-tests of what fake_upstream gained for test_redesign_behaviours.py:
close_mode "fin", the lingering close of "notify" and "fin", and `hold`.
None of them needs dotproxy."""

import pytest

from netutil import make_query
from test_fixtures import client


def test_fake_close_mode_fin_is_a_bare_fin_after_the_answers(fake_upstream, certs):
    up = fake_upstream(close_after=2, close_mode="fin")
    qs = [make_query(f"f{i}.example.", "A") for i in range(3)]
    with client(up, certs) as c:
        c.send(*qs)  # one write, so the server reads all three before answering
        assert [c.recv().id for _ in range(2)] == [qs[0].id, qs[1].id]
        with pytest.raises(EOFError):
            c.recv_frame()
        assert c.close_reason == "eof"  # TCP FIN, no close_notify
    assert up.wait_queries(3)


@pytest.mark.parametrize("mode", ["notify", "fin"])
def test_fake_polite_close_is_never_a_reset(fake_upstream, certs, mode):
    # The client keeps writing after the server closed: a server that closed
    # its socket at once would answer those bytes with a RST (and could drop
    # answers not yet sent); the fake reads and drops them instead.
    up = fake_upstream(close_after=1, close_mode=mode)
    first = make_query("first.example.", "A")
    with client(up, certs) as c:
        c.send(first)
        assert c.recv().id == first.id
        assert up.wait_until(lambda s: s.open_connections == 0)
        for i in range(5):
            c.send(make_query(f"late{i}.example.", "A"))
        with pytest.raises(EOFError):
            c.recv_frame()
        assert c.close_reason == ("close_notify" if mode == "notify" else "eof")


def test_fake_hold_answers_when_released(fake_upstream, certs):
    up = fake_upstream(hold=True)
    qs = [make_query(f"h{i}.example.", "A") for i in range(3)]
    with client(up, certs) as c:
        c.send(*qs)
        assert up.wait_queries(3)
        assert c.read_for(0.3) == b""  # nothing while held
        assert up.held == 3
        up.set(hold=False)
        assert sorted(c.recv().id for _ in qs) == sorted(q.id for q in qs)
        assert up.held == 0
        later = make_query("later.example.", "A")
        c.send(later)  # no longer held
        assert c.recv().id == later.id


def test_fake_hold_drops_queries_whose_connection_closed(fake_upstream, certs):
    up = fake_upstream(hold=True)
    with client(up, certs) as c:
        c.send(make_query("gone.example.", "A"))
        assert up.wait_queries(1)
    assert up.wait_until(lambda s: s.open_connections == 0)
    assert up.held == 0
    up.set(hold=False)  # nothing to answer, nothing fails
    assert up.errors == []
