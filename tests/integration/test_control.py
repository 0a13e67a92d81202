"""The control socket (--control) and dotproxyctl: every command against a
running daemon (a flushed name goes upstream again, the others stay cached),
--json, the socket's permissions whatever the umask, the peer's
credentials, a stale socket replaced, garbage and slow clients that change
nothing and stall nothing, and dotproxyctl's exit statuses and messages."""

import json
import os
import pathlib
import socket
import stat
import subprocess
import tempfile
import time

import dns.rcode
import pytest

from dotproxy_proc import binary_path
from netutil import free_port
from promtext import http_get, parse_exposition, parse_lines, samples_of

AUTH = "dns.example.test"


def ctl_binary():
    """$DOTPROXYCTL, else dotproxyctl next to the dotproxy binary."""
    return os.environ.get("DOTPROXYCTL") or os.path.join(os.path.dirname(binary_path()),
                                                         "dotproxyctl")


def ctl(sock_path, *args, timeout=15, user=None):
    """Run dotproxyctl -s sock_path ARGS; CompletedProcess with text output."""
    path = ctl_binary()
    if not os.access(path, os.X_OK):
        pytest.fail(f"dotproxyctl not found at {path}: build it (make) or set DOTPROXYCTL",
                    pytrace=False)
    argv = [path, "-s", str(sock_path), *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + argv
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def start(dotproxy, workdir, upstreams, extra=(), **kw):
    path = workdir / "control.sock"
    p = dotproxy(upstreams, ["--control", str(path), *extra], **kw)
    return p, path


def raw(path, data, *, timeout=5.0, shut=True):
    """Send `data` on a fresh connection, read to EOF; the bytes received."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        return read_all(s)


def read_all(s):
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return out


def upstream_names(up):
    return [str(q.question[0].name).lower() for q in up.queries if q is not None]


# -- the commands ------------------------------------------------------------------------

def test_stats_has_the_metric_names_one_per_line(fake_upstream, dotproxy, workdir):
    up = fake_upstream()
    port = free_port(udp=False)
    p, path = start(dotproxy, workdir, [up], ["--metrics", f"127.0.0.1:{port}"])
    p.udp("s1.example.")
    p.udp("s1.example.")
    p.tcp("s2.example.")
    r = ctl(path, "stats")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    stats = parse_lines(r.stdout)
    key = lambda name, **labels: (name, frozenset(labels.items()))  # noqa: E731
    assert stats[key("dotproxy_queries_total", frontend="udp")] == 2
    assert stats[key("dotproxy_queries_total", frontend="tcp")] == 1
    assert stats[key("dotproxy_cache_hits_total")] == 1
    spec = f"127.0.0.1@{up.port}#{AUTH}"
    assert stats[key("dotproxy_upstream_up", upstream=spec, transport="dot")] == 1
    # The same series as GET /metrics, by the same names.
    status, _, body = http_get(port)
    assert status == 200
    assert set(samples_of(parse_exposition(body.decode()))) == set(stats)
    # Every counter of the SIGUSR1 line has its series: as many as names.
    assert len({n for n, _ in stats}) >= 40

    j = ctl(path, "--json", "stats")
    assert j.returncode == 0, j.stderr
    doc = json.loads(j.stdout)
    by_key = {(m["name"], frozenset(m["labels"].items())): m for m in doc["metrics"]}
    assert set(by_key) == set(stats)
    m = by_key[key("dotproxy_queries_total", frontend="udp")]
    assert m["value"] == 2 and m["type"] == "counter"
    assert ctl(path, "stats", "--json").returncode == 0  # options anywhere


def test_upstreams_one_line_each(fake_upstream, dotproxy, workdir):
    good = fake_upstream()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connections are refused
    dead = f"127.0.0.1@{dead_port}#{AUTH}"
    p, path = start(dotproxy, workdir, [good, dead], ["--policy", "failover"])
    # The first query waits for the connection: not an RTT sample; the next are.
    for i in range(3):
        assert p.udp(f"u1-{i}.example.").rcode() == dns.rcode.NOERROR
    r = ctl(path, "upstreams")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    fields = {line.split()[0]: line.split() for line in lines}
    g = fields[f"127.0.0.1@{good.port}#{AUTH}"]
    assert g[1] == "up" and g[2].endswith("ms") and float(g[2][:-2]) > 0
    assert g[3] == "0" and int(g[4]) >= 1 and g[5] == "dot"
    # The dead one has not been tried (failover): up and unmeasured.  Stop the
    # good one: queries go to the dead one, which is marked down.
    assert fields[dead][1:] == ["up", "-", "0", "0", "dot"]
    good.stop()
    p.udp("u2.example.", timeout=6)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        fields = {line.split()[0]: line.split() for line in ctl(path, "upstreams").stdout
                  .splitlines()}
        if fields[dead][1] == "down":
            break
        time.sleep(0.1)
    assert fields[dead][1] == "down" and int(fields[dead][3]) >= 1

    j = json.loads(ctl(path, "--json", "upstreams").stdout)
    by = {u["upstream"]: u for u in j["upstreams"]}
    assert by[dead]["state"] == "down" and by[dead]["srtt_ms"] is None
    assert by[dead]["transport"] == "dot" and by[dead]["failures"] >= 1
    assert by[f"127.0.0.1@{good.port}#{AUTH}"]["srtt_ms"] > 0


def test_flush_a_name_and_everything_below_it(fake_upstream, dotproxy, workdir):
    up = fake_upstream()
    p, path = start(dotproxy, workdir, [up])
    names = ["a.example.", "x.a.example.", "b.example.", "xa.example."]
    for n in names:
        p.udp(n)
    for n in names:
        p.udp(n)  # all cached now
    assert sorted(upstream_names(up)) == sorted(names)

    r = ctl(path, "flush", "A.Example")  # any case, no trailing dot
    assert r.returncode == 0, r.stderr
    assert r.stdout == "flushed a.example. and every name below it: 2 entries removed\n"
    for n in names:
        p.udp(n)
    seen = upstream_names(up)
    assert seen.count("a.example.") == 2 and seen.count("x.a.example.") == 2
    assert seen.count("b.example.") == 1 and seen.count("xa.example.") == 1  # still cached

    j = ctl(path, "--json", "flush", "b.example.")
    assert j.returncode == 0, j.stderr
    assert json.loads(j.stdout) == {"flushed": "b.example.", "removed": 1}
    p.udp("b.example.")
    assert upstream_names(up).count("b.example.") == 2

    r = ctl(path, "flush")  # the whole cache
    assert r.returncode == 0
    assert r.stdout == "flushed the whole cache: 4 entries removed\n"
    p.udp("xa.example.")
    assert upstream_names(up).count("xa.example.") == 2
    assert ctl(path, "flush", "nothing.example").stdout.endswith(": 0 entries removed\n")


@pytest.mark.time_limit(60)
def test_flush_reaches_every_worker(fake_upstream, dotproxy, workdir):
    up = fake_upstream()
    p, path = start(dotproxy, workdir, [up], ["--workers", "2"])
    # Many sockets: the kernel spreads them over both workers' sockets.
    for i in range(40):
        p.udp("w.example.")
    fetched = upstream_names(up).count("w.example.")
    assert fetched == 2, fetched  # once per worker: each has its own cache
    r = ctl(path, "flush", "w.example")
    assert r.returncode == 0
    assert r.stdout == "flushed w.example. and every name below it: 2 entries removed\n"


def test_reload_is_sighup(fake_upstream, dotproxy, workdir):
    a, b = fake_upstream(), fake_upstream()
    conf = workdir / "dotproxy.conf"
    conf.write_text(f"upstream 127.0.0.1@{a.port}#{AUTH}\n")
    p, path = start(dotproxy, workdir, [], ["--config", str(conf)])
    p.udp("r1.example.")
    assert len(a.queries) == 1
    conf.write_text(f"upstream 127.0.0.1@{b.port}#{AUTH}\n")
    mark = p.log_offset()
    r = ctl(path, "reload")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "configuration reloaded: 1 upstream(s), policy fastest\n"
    assert "control: configuration reloaded" in p.log_since(mark)
    p.udp("r2.example.")
    assert len(b.queries) == 1 and len(a.queries) == 1

    conf.write_text("upstream not-an-address\n")
    r = ctl(path, "--json", "reload")
    assert r.returncode == 1
    assert "reload failed, configuration unchanged" in r.stderr
    assert "not-an-address" in r.stderr
    p.udp("r3.example.")
    assert len(b.queries) == 2  # unchanged
    conf.write_text(f"upstream 127.0.0.1@{a.port}#{AUTH}\n")
    j = ctl(path, "--json", "reload")
    assert j.returncode == 0
    assert json.loads(j.stdout)["reloaded"] is True


# -- who may use it ------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o000, 0o077, 0o022])
def test_socket_mode_is_0600_whatever_the_umask(fake_upstream, dotproxy, workdir, umask):
    old = os.umask(umask)
    try:
        p, path = start(dotproxy, workdir, [fake_upstream()])
    finally:
        os.umask(old)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    assert ctl(path, "stats").returncode == 0


@pytest.fixture
def open_dir():
    """A directory that every user may enter (the test's own is under a 0700 one)."""
    d = tempfile.mkdtemp(prefix="dotproxy-ctl-", dir="/tmp")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_other_users_are_refused(fake_upstream, dotproxy, open_dir):
    p, path = start(dotproxy, open_dir, [fake_upstream()])
    r = ctl(path, "stats", user=65534)  # the file mode stops it
    assert r.returncode == 1
    assert "permission denied" in r.stderr
    # Past the file mode (as if the directory or mode were opened up), the
    # peer's credentials still stop it.
    os.chmod(path, 0o666)
    r = ctl(path, "stats", user=65534)
    assert r.returncode == 1
    assert "permission denied: uid 65534 is neither root nor dotproxy's user" in r.stderr
    assert r.stdout == ""
    assert p.wait_log(r"control: refused a client running as uid 65534")
    assert ctl(path, "stats").returncode == 0  # root still may


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for --user")
def test_user_gets_the_socket(fake_upstream, dotproxy, open_dir):
    p, path = start(dotproxy, open_dir, [fake_upstream()], ["--user", "nobody", "-v"])
    assert p.wait_log(r"running as user nobody", timeout=3)
    st = os.stat(path)
    assert st.st_uid == 65534 and stat.S_IMODE(st.st_mode) == 0o600
    assert ctl(path, "upstreams").returncode == 0  # root
    assert ctl(path, "upstreams", user=65534).returncode == 0  # dotproxy's own user


def test_a_stale_socket_is_replaced(fake_upstream, dotproxy, workdir):
    path = workdir / "control.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # a crash leaves the file behind, nobody listening
    assert path.exists()
    r = ctl(path, "stats")
    assert r.returncode == 1 and "nothing listens on" in r.stderr
    p = dotproxy([fake_upstream()], ["--control", str(path), "-v"])
    assert p.wait_log(r"replaced the stale socket")
    assert ctl(path, "stats").returncode == 0
    p.stop()
    assert not path.exists()  # removed at exit


def test_a_live_socket_or_another_file_stops_start_up(fake_upstream, dotproxy, workdir):
    path = workdir / "control.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen(1)
    try:
        p = dotproxy([fake_upstream()], ["--control", str(path)], wait=False)
        p.proc.wait(5)
        assert p.proc.returncode == 1
        assert "another process is listening on it" in p.log()
    finally:
        live.close()
    path.unlink()
    path.write_text("not a socket\n")
    p = dotproxy([fake_upstream()], ["--control", str(path)], wait=False)
    p.proc.wait(5)
    assert p.proc.returncode == 1
    assert "exists and is not a socket" in p.log()
    assert path.read_text() == "not a socket\n"


# -- garbage and slow clients -------------------------------------------------------------

def test_garbage_gets_an_error_and_changes_nothing(fake_upstream, dotproxy, workdir):
    up = fake_upstream()
    p, path = start(dotproxy, workdir, [up])
    p.udp("g.example.")
    for junk in [b"\x00\xff\xfe\n", b"flush\x01\n", b"FLUSH\n", b"flush a b\n",
                 b"--yes reload\n", b"\n", b"stats now\r\n"]:
        answer = raw(path, junk)
        assert answer.startswith(b"error "), (junk, answer)
        assert answer.endswith(b"\n") and answer.count(b"\n") == 1
    # A half line then the end: an error, nothing done.
    assert raw(path, b"flus").startswith(b"error incomplete request")
    # A huge line.
    answer = raw(path, b"flush " + b"a" * 5000 + b"\n")
    assert answer.startswith(b"error request too long"), answer[:80]
    # Nothing was flushed or reloaded.
    p.udp("g.example.")
    assert upstream_names(up).count("g.example.") == 1
    assert "reload" not in p.log()
    # Two requests on one connection: only the first is answered.
    answer = raw(path, b"flush\nflush\n")
    assert answer == b"ok\nflushed the whole cache: 1 entries removed\n"


@pytest.mark.time_limit(30)
def test_a_half_line_then_silence_stalls_nothing(fake_upstream, dotproxy, workdir):
    p, path = start(dotproxy, workdir, [fake_upstream()])
    slow = []
    for _ in range(3):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(b"sta")
        slow.append(s)
    t0 = time.monotonic()
    # Meanwhile: DNS, and other control clients, at once.
    assert p.udp("h.example.").rcode() == dns.rcode.NOERROR
    r = ctl(path, "upstreams")
    assert r.returncode == 0
    assert time.monotonic() - t0 < 1
    for s in slow:
        answer = read_all(s)
        assert answer.startswith(b"error no complete request line within"), answer
        s.close()
    assert 1.5 < time.monotonic() - t0 < 5


def test_connections_beyond_the_cap_are_closed(fake_upstream, dotproxy, workdir):
    p, path = start(dotproxy, workdir, [fake_upstream()])
    idle = []
    for _ in range(16):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(path))
        idle.append(s)
    time.sleep(0.2)
    # The 17th: closed at once, without an answer.  The close may come
    # before our request is written (EPIPE) or after (EOF): either way,
    # nothing is read and nothing waits for the timeout.
    t0 = time.monotonic()
    try:
        got = raw(path, b"stats\n")
    except (BrokenPipeError, ConnectionResetError):
        got = b""
    assert got == b"" and time.monotonic() - t0 < 2
    for s in idle:
        s.close()
    time.sleep(0.2)
    assert ctl(path, "stats").returncode == 0


# -- dotproxyctl --------------------------------------------------------------------------

def test_dotproxyctl_exit_statuses_and_messages(fake_upstream, dotproxy, workdir):
    missing = workdir / "nope.sock"
    r = ctl(missing, "stats")
    assert r.returncode == 1
    assert f"no control socket at {missing}" in r.stderr and "--control" in r.stderr

    p, path = start(dotproxy, workdir, [fake_upstream()])
    for bad, why in [(["bogus"], "unknown command 'bogus'"), ([], "no command"),
                     (["--frobnicate", "stats"], "unknown option '--frobnicate'"),
                     (["stats", "extra"], "'stats' takes no argument"),
                     (["flush", "a..b"], "bad name 'a..b'"),
                     (["flush", "a", "b"], "usage: flush [NAME]"),
                     (["flush", "with space"], "spaces and control characters"),
                     (["-t", "0", "stats"], "bad --timeout"),
                     (["-s"], "option -s needs a value")]:
        r = subprocess.run([ctl_binary(), *(["-s", str(path)] if bad[:1] != ["-s"] else []),
                            *bad], capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, (bad, r.stderr)
        assert why in r.stderr, (bad, r.stderr)
        assert r.stdout == ""
    assert "reload" not in p.log()

    r = subprocess.run([ctl_binary(), "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "flush [NAME]" in r.stdout
    r = subprocess.run([ctl_binary(), "--version"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith("dotproxyctl ")
    assert ctl(path, "stats").returncode == 0
    # "--" ends the options: a name that looks like one.
    r = ctl(path, "flush", "--", "-x.example")
    assert r.returncode == 0, r.stderr
    assert "-x.example." in r.stdout

    # A socket with nobody behind it any more.
    p.stop()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    r = ctl(path, "stats")
    assert r.returncode == 1 and "nothing listens on" in r.stderr
