"""Logs people can read: sd-daemon priorities when stderr is the journal, a
rate-limited line for refused clients, and a start-up warning for a listener
that only loopback clients may use."""

import os
import re

import dns.rcode

from netutil import free_port


def test_journal_gets_priorities_and_no_timestamps(fake_upstream, dotproxy, workdir):
    # The fixture writes stderr to <workdir>/dotproxy.log, reopening it in
    # place: made first, its device and inode are known in advance.
    log = workdir / "dotproxy.log"
    log.touch()
    st = os.stat(log)
    env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    p = dotproxy([fake_upstream()], verbose=1, env=env)
    assert p.udp("www.example.").rcode() == dns.rcode.NOERROR
    lines = [line for line in p.log().splitlines() if line]
    assert lines
    for line in lines:
        assert re.match(r"<[3-7]>[a-z]+: ", line), line
        assert not re.match(r"<\d>\S*\d{4}-\d\d-\d\dT", line), line
    assert any(re.match(r"<5>notice: dotproxy .* ready", line) for line in lines), lines
    assert any(line.startswith("<6>info: listening on") for line in lines), lines


def test_journal_stream_of_another_file_changes_nothing(fake_upstream, dotproxy, workdir):
    # $JOURNAL_STREAM inherited from a parent whose stderr was the journal,
    # while ours is a file: timestamps stay, no prefixes.
    env = dict(os.environ, JOURNAL_STREAM="1:1")
    p = dotproxy([fake_upstream()], verbose=1, env=env)
    lines = [line for line in p.log().splitlines() if line]
    assert lines and all(re.match(r"\d{4}-\d\d-\d\dT", line) for line in lines), lines


def test_refused_clients_are_logged_once_a_minute_not_per_query(fake_upstream, dotproxy):
    p = dotproxy([fake_upstream()], extra_args=["--allow", "10.0.0.0/8"])
    for i in range(200):
        assert p.udp(f"q{i}.example.").rcode() == dns.rcode.REFUSED
    refused = re.findall(r"refused a query from 127\.0\.0\.1#\d+/udp: not in --allow", p.log())
    assert len(refused) == 1, p.log()
    assert p.stats()["refused_clients"] == 200


def test_listening_beyond_loopback_without_allow_warns(fake_upstream, dotproxy):
    port = free_port()
    p = dotproxy([fake_upstream()], listen=f"0.0.0.0:{port}")
    assert re.search(rf"warning: listening on 0\.0\.0\.0:{port}, but only loopback clients "
                     r"are answered .*--allow", p.log()), p.log()


def test_no_warning_with_allow_or_on_loopback(fake_upstream, dotproxy):
    p = dotproxy([fake_upstream()], listen=f"0.0.0.0:{free_port()}",
                 extra_args=["--allow", "192.168.0.0/16", "--allow", "127.0.0.0/8"])
    q = dotproxy([fake_upstream()])  # 127.0.0.1, the default --allow
    assert "only loopback clients" not in p.log() + q.log()
