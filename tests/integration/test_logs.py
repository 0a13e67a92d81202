"""Logs people can read: sd-daemon priorities when stderr is the journal, a
rate-limited line for refused clients, a start-up warning for a listener
that only loopback clients may use, and one line per upstream state change."""

import os
import re
import shutil
import subprocess
import time

import dns.rcode
import pytest

from dotproxy_proc import AUTH_NAME, binary_path
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


# -- upstream outages: one line when it starts, one when it ends ------------------------

def _warnings_about(log, lab):
    return [line for line in log.splitlines()
            if re.search(r"(warning|error): ", line) and lab in line]


def test_a_refusing_upstream_is_one_warning_not_one_per_query_or_probe(dotproxy):
    port = free_port()
    lab = f"127.0.0.1@{port}#{AUTH_NAME}"
    p = dotproxy([lab], extra_args=["--timeout", "1000"])
    off = p.log_offset()
    start = time.monotonic()
    for i in range(200):  # 200 failing queries in about 5 s
        assert p.udp(f"q{i}.example.", timeout=3).rcode() == dns.rcode.SERVFAIL
        time.sleep(max(0.0, start + (i + 1) * 0.025 - time.monotonic()))
    new = [line for line in p.log()[off:].splitlines() if line]
    assert len(new) <= 20, new
    warned = _warnings_about(p.log(), lab)
    assert len(warned) == 1, warned
    assert re.search(rf"warning: upstream {re.escape(lab)} is down: cannot connect: "
                     r"connection refused", warned[0]), warned


def test_an_upstream_that_comes_back_says_how_long_it_was_down(fake_upstream, dotproxy):
    up = fake_upstream()
    lab = f"127.0.0.1@{up.port}#{AUTH_NAME}"
    p = dotproxy([up], extra_args=["--timeout", "1000"])
    assert p.udp("before.example.").rcode() == dns.rcode.NOERROR
    up.stop()
    for i in range(10):
        assert p.udp(f"down{i}.example.", timeout=3).rcode() == dns.rcode.SERVFAIL
        time.sleep(0.1)
    up.start()  # same port
    deadline = time.monotonic() + 5
    while p.udp("back.example.", timeout=3).rcode() != dns.rcode.NOERROR:
        assert time.monotonic() < deadline, p.log()
        time.sleep(0.1)
    m = p.wait_log(rf"notice: upstream {re.escape(lab)} is up again after (\d+\.\d) s down")
    assert m, p.log()
    assert 0.9 <= float(m.group(1)) <= 8, m.group(0)
    warned = _warnings_about(p.log(), lab)
    assert len(warned) == 1 and " is down: " in warned[0], warned


def test_ready_line_counts_only_the_addresses_bound(workdir):
    # A host without IPv6 on loopback: the default [::1]:53 cannot be bound
    # and is skipped (not fatal for the default list); the ready line must
    # count the one address actually served.  A network namespace of our
    # own makes such a host, and frees port 53 for the default list.
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare(1) and ip(8) to make a host without IPv6")
    script = ("ip link set lo up && sysctl -qw net.ipv6.conf.lo.disable_ipv6=1 && "
              f"exec timeout -s INT 2 {binary_path()} --upstream 127.0.0.1@8853#dns.test")
    out = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True,
                         text=True, timeout=20, cwd=workdir)
    assert "cannot listen on [::1]:53/udp" in out.stderr, out.stderr
    assert re.search(r"ready: 1 listen address\(es\), 1 upstream\(s\)", out.stderr), out.stderr
