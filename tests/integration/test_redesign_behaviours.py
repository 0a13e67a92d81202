"""Behaviours the daemon redesign adds (worker context, frontends and upstream
transports behind interfaces).

Each test fails against the binary from before the redesign, for the reason
its name gives, except test_a_server_that_never_answers_still_ends_in_servfail,
which guards the retry budget the redesign must keep. Upstreams are
FakeUpstreams on loopback; every wait is bounded.

  1. Routine closes (FIN, close_notify, RST after answering) never lose a query.
  2. A whole read from a TCP client cannot overrun its pipeline cap.
  3. A reload is one configuration, and a shorter --timeout applies at once.
  4. Queries failed by a shutdown count as servfail_shutdown.
  5. The upstreams a query tried are known by identity across a reordering reload.
  6. --udp-recv-buffer sizes the UDP listening sockets' receive buffers.
"""

import contextlib
import ctypes
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import dns.exception
import dns.message
import dns.rcode
import pytest

from dotproxy_proc import AUTH_NAME, run_cli, upstream_arg
from fake_upstream import CLOSE_MODES, default_responder
from netutil import frame, make_query, read_frame, wait_tcp
from procutil import wait_for


# -- helpers ------------------------------------------------------------------------------

def ask_udp_from_many_sockets(p, groups, timeout=12.0):
    """Send each group of names from its own UDP socket (its own source port),
    everything before any reply is read; return {name: reply, or None if none
    came within `timeout` seconds of the last send}."""
    socks = []
    replies = {name: None for names in groups for name in names}
    try:
        for names in groups:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.connect((p.addr, p.port))
            for name in names:
                s.send(make_query(name).to_wire())
        deadline = time.monotonic() + timeout
        for s, names in zip(socks, groups):
            missing = set(names)
            while missing and time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    reply = dns.message.from_wire(s.recv(65535))
                except socket.timeout:
                    break
                name = reply.question[0].name.to_text() if reply.question else None
                if name in missing:
                    missing.discard(name)
                    replies[name] = reply
    finally:
        for s in socks:
            s.close()
    return replies


def names_asked(up):
    """The query names an upstream received, lower-cased, without the root dot."""
    return {m.question[0].name.to_text(omit_final_dot=True).lower()
            for m in up.queries if m is not None and m.question}


def unanswered_or_failed(replies):
    """The names whose reply is missing or is not a NOERROR for that name."""
    return sorted(n for n, r in replies.items()
                  if r is None or r.rcode() != dns.rcode.NOERROR or not r.answer)


def write_conf(path, upstreams, **options):
    """A config file: one `upstream` line each, then `name value` per option
    (underscores become dashes); returns the path."""
    lines = [f"upstream {upstream_arg(u)}" for u in upstreams]
    lines += [f"{k.replace('_', '-')} {v}" for k, v in options.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def reload(p, pattern=r"configuration reloaded", timeout=5.0):
    """SIGHUP, then wait for `pattern` in the log written after it; return the match."""
    mark = p.log_offset()
    p.send_signal(signal.SIGHUP)
    m = p.wait_log(pattern, timeout=timeout, since=mark)
    assert m, f"no /{pattern}/ in the log within {timeout} s of SIGHUP:\n{p.log_since(mark)}"
    return m


class FileOpens:
    """Counts every open(2) of one file, by any process (inotify IN_OPEN).

    inotify coalesces an event with an identical one still unread, so two
    opens in a row would count as one; watching the closes too puts a close
    between the opens of readers that come one after the other.
    """

    IN_OPEN = 0x20
    IN_CLOSE = 0x08 | 0x10  # IN_CLOSE_WRITE | IN_CLOSE_NOWRITE

    def __init__(self, path):
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(self.fd, os.fsencode(str(path)),
                                   self.IN_OPEN | self.IN_CLOSE) < 0:
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")

    def take(self):
        """Opens since the last call (or since the watch began)."""
        n = 0
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return n
            off = 0
            while off + 16 <= len(data):
                _wd, mask, _cookie, length = struct.unpack_from("iIII", data, off)
                off += 16 + length
                n += bool(mask & self.IN_OPEN)

    def close(self):
        os.close(self.fd)


@pytest.fixture
def config_opens():
    """config_opens(path) -> FileOpens, closed at teardown."""
    watches = []

    def watch(path):
        w = FileOpens(path)
        watches.append(w)
        return w

    yield watch
    for w in watches:
        w.close()


# -- 1. routine closes never lose a query ---------------------------------------------------

@pytest.mark.parametrize("mode", CLOSE_MODES)
def test_routine_closes_after_answering_lose_no_query(fake_upstream, dotproxy, mode):
    # Every connection answers 3 queries, then the server closes it (`mode`)
    # with the rest unanswered: each of those must go to a fresh connection,
    # as often as it takes, without using up any retry budget.
    up = fake_upstream(close_after=3, close_mode=mode)
    p = dotproxy([up], extra_args=["--cache-size", "0", "--timeout", "8000"])
    tcp_queries = [make_query(f"t{i}.{mode}.example.") for i in range(60)]
    for i, q in enumerate(tcp_queries):
        q.id = i + 1  # distinct on this connection
    udp_groups = [[f"u{c}-{k}.{mode}.example." for k in range(3)] for c in range(30)]
    with socket.create_connection((p.addr, p.port), timeout=5) as s:
        s.sendall(b"".join(frame(q) for q in tcp_queries))  # all 60 pipelined at once
        udp = ask_udp_from_many_sockets(p, udp_groups)
        tcp = {}
        deadline = time.monotonic() + 12
        try:
            while len(tcp) < len(tcp_queries):
                r = read_frame(s, timeout=max(0.01, deadline - time.monotonic()))
                tcp[r.id] = r
        except (OSError, ConnectionError):
            pass  # what is missing is reported below
    tcp_replies = {q.question[0].name.to_text(): tcp.get(q.id) for q in tcp_queries}
    lost = unanswered_or_failed(tcp_replies) + unanswered_or_failed(udp)
    rcodes = sorted({dns.rcode.to_text(r.rcode()) for r in list(tcp.values()) + list(udp.values())
                     if r is not None})
    assert not lost, (f"{len(lost)} of {len(tcp_replies) + len(udp)} queries not answered "
                      f"NOERROR (rcodes seen: {rcodes}), e.g. {lost[:5]}")
    for q in tcp_queries:
        assert tcp[q.id].question[0].name == q.question[0].name
    s = p.stats()
    assert s["servfail_no_upstream"] == 0 and s["servfail_timeout"] == 0, s
    assert up.connections >= 2  # the server really did close


def test_a_server_that_never_answers_still_ends_in_servfail(fake_upstream, dotproxy):
    # Regression guard, not a new behaviour (it also passes before the
    # redesign): a connection that dies without answering anything counts
    # against the queries sent on it, so this ends in SERVFAIL by the retry
    # budget, long before the deadline, and opens a bounded number of connections.
    up = fake_upstream(close_after=0)
    p = dotproxy([up], extra_args=["--cache-size", "0", "--timeout", "10000"])
    names = [f"never{i}.example." for i in range(3)]
    for name in names:
        start = time.monotonic()
        reply = p.udp(name, timeout=12)
        assert reply.rcode() == dns.rcode.SERVFAIL, name
        assert time.monotonic() - start < 8, "the budget, not the 10 s deadline, should end it"
    assert len(up.queries) >= len(names)
    assert up.connections <= 4 * len(names), up.connections
    assert p.stats()["servfail_timeout"] == 0


# -- 2. a whole read cannot overrun the pipeline cap ------------------------------------------

def test_tcp_pipeline_cap_holds_back_queries_already_read(fake_upstream, dotproxy):
    cap, total = 16, 2000
    up = fake_upstream(hold=True)  # answers nothing until told to
    p = dotproxy([up], extra_args=["--max-tcp-pipeline", cap, "--cache-size", "0",
                                   "--timeout", "20000"])
    queries = [make_query(f"p{i}.example.") for i in range(total)]
    for i, q in enumerate(queries):
        q.id = i  # distinct on this connection
    with socket.create_connection((p.addr, p.port), timeout=10) as s:
        s.sendall(b"".join(frame(q) for q in queries))  # ~70 kB in one write
        assert up.wait_queries(cap, timeout=5), f"upstream got only {len(up.queries)}"
        time.sleep(0.3)  # room for any overrun to show up
        taken = p.stats()["queries_tcp"]
        forwarded = len(names_asked(up))
        assert taken <= cap, f"took {taken} queries from a client capped at {cap}"
        assert forwarded <= cap, f"forwarded {forwarded} queries for a client capped at {cap}"

        up.set(hold=False)  # slots free up: the buffered queries must follow
        replies = {}
        deadline = time.monotonic() + 30
        try:
            while len(replies) < total:
                r = read_frame(s, timeout=max(0.01, deadline - time.monotonic()))
                replies[r.id] = r
        except (OSError, ConnectionError):
            pass
    missing = [q.id for q in queries if q.id not in replies]
    assert not missing, f"{len(missing)} of {total} queries never answered, e.g. {missing[:5]}"
    for q in queries:
        r = replies[q.id]
        assert r.rcode() == dns.rcode.NOERROR and r.question[0].name == q.question[0].name
    assert p.stats()["queries_tcp"] == total


# -- 3. a reload is one configuration -------------------------------------------------------

def unanswered_if_slow(query):
    """A responder: names whose first label starts with "slow" get no answer."""
    if query.question and query.question[0].name.labels[0].lower().startswith(b"slow"):
        return None
    return default_responder(query)


@contextlib.contextmanager
def steady_traffic(p, interval=0.05, limit=400):
    """A thread asking p a fresh name over UDP every `interval` s (at most
    `limit` times) while the block runs, so the upstream connection keeps
    answering something and is never torn down as silent."""
    stop = threading.Event()

    def run():
        for i in range(limit):
            if stop.wait(interval):
                return
            try:
                p.udp(f"tick{i}.example.", timeout=1)
            except (OSError, dns.exception.DNSException):
                pass

    t = threading.Thread(target=run, name="steady-traffic", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)


def test_reload_that_shortens_the_timeout_gives_new_queries_their_own_deadline(
        fake_upstream, dotproxy, workdir):
    up = fake_upstream(responder=unanswered_if_slow)
    conf = write_conf(workdir / "dotproxy.conf", [up], timeout=5000, cache_size=0)
    p = dotproxy([], extra_args=["--config", conf], verbose=1)
    with steady_traffic(p), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first:
        first.connect((p.addr, p.port))
        first.send(make_query("slow-first.example.").to_wire())
        assert up.wait_until(lambda u: "slow-first.example" in names_asked(u), timeout=5)
        write_conf(conf, [up], timeout=500, cache_size=0)
        reload(p)
        start = time.monotonic()
        second = p.udp("slow-second.example.", timeout=10)
        waited = time.monotonic() - start
        assert second.rcode() == dns.rcode.SERVFAIL
        # Its own deadline is 500 ms away; the first query's about 5 s.
        assert waited < 2.5, f"the 500 ms query waited {waited:.1f} s (behind the 5 s one?)"
        first.settimeout(10)
        assert dns.message.from_wire(first.recv(65535)).rcode() == dns.rcode.SERVFAIL


WORKERS4 = {"workers": 4, "cache_size": 0}


def test_broken_reload_is_reported_once_and_keeps_the_old_config(
        fake_upstream, dotproxy, workdir, config_opens):
    a = fake_upstream()
    conf = write_conf(workdir / "dotproxy.conf", [a], **WORKERS4)
    p = dotproxy([], extra_args=["--config", conf], verbose=1)
    conf.write_text(conf.read_text() + "bogus-option 1\n")
    opens = config_opens(conf)
    mark = p.log_offset()
    p.send_signal(signal.SIGHUP)
    assert p.wait_log(r"bogus-option", timeout=5, since=mark), p.log_since(mark)
    time.sleep(0.5)  # every worker has had its chance to (wrongly) say it too
    said = [ln for ln in p.log_since(mark).splitlines() if "bogus-option" in ln]
    assert len(said) == 1, "the broken reload should be reported once:\n" + "\n".join(said)
    # One configuration for the whole process: read once, not once per worker.
    assert opens.take() == 1, "the config file was opened more than once for one SIGHUP"
    names = [f"old{i}.example" for i in range(40)]
    replies = ask_udp_from_many_sockets(p, [[n + "."] for n in names])
    assert not unanswered_or_failed(replies)
    assert names_asked(a) >= set(names)  # still the old configuration


def test_reload_moves_every_worker_to_the_new_upstreams(fake_upstream, dotproxy, workdir,
                                                        config_opens):
    a, b = fake_upstream(), fake_upstream()
    conf = write_conf(workdir / "dotproxy.conf", [a], **WORKERS4)
    p = dotproxy([], extra_args=["--config", conf], verbose=1)
    before = ask_udp_from_many_sockets(p, [[f"before{i}.example."] for i in range(20)])
    assert not unanswered_or_failed(before)
    write_conf(conf, [b], **WORKERS4)
    opens = config_opens(conf)
    a_before = len(a.queries)
    reload(p)
    time.sleep(0.5)  # every worker applies it on its own loop
    assert opens.take() == 1, "one SIGHUP, one configuration: the file is read once"
    # Different source ports, so SO_REUSEPORT spreads these over every worker.
    names = [f"after{i}.example" for i in range(50)]
    after = ask_udp_from_many_sockets(p, [[n + "."] for n in names])
    assert not unanswered_or_failed(after)
    assert len(a.queries) == a_before, "the old upstream still got queries after the reload"
    assert names_asked(b) >= set(names)


# -- 4. shutdown is counted right ---------------------------------------------------------

def test_queries_failed_by_shutdown_count_as_servfail_shutdown(fake_upstream, dotproxy):
    up = fake_upstream(stall=True)
    p = dotproxy([up], extra_args=["--timeout", "10000", "--cache-size", "0"])
    socks = []
    try:
        for i in range(5):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.connect((p.addr, p.port))
            s.send(make_query(f"bye{i}.example.").to_wire())
        assert up.wait_queries(5, timeout=5)
        p.send_signal(signal.SIGTERM)  # drain: wait for the queries in flight...
        assert wait_for(lambda: not wait_tcp(p.addr, p.port, timeout=0), 5), \
            "the TCP listener stayed open after SIGTERM"
        p.send_signal(signal.SIGTERM)  # ...no: stop now
        for s in socks:
            s.settimeout(5)
            assert dns.message.from_wire(s.recv(65535)).rcode() == dns.rcode.SERVFAIL
    finally:
        for s in socks:
            s.close()
    assert p.proc.wait(timeout=5) == 0
    final = p.parse_stats(p.stats_lines()[-1])  # the line logged at exit
    assert (final["servfail_shutdown"], final["servfail_no_upstream"]) == (5, 0), final


# -- 5. tried upstreams are known by identity ----------------------------------------------

def test_reordering_reload_keeps_blaming_the_upstream_that_failed(fake_upstream, dotproxy,
                                                                   workdir):
    a = fake_upstream(close_after=0)  # reads the query, closes without answering
    b = fake_upstream(hold=True)      # reads the query, answers when released
    conf = workdir / "dotproxy.conf"
    opts = {"policy": "failover", "timeout": 8000, "cache_size": 0}
    write_conf(conf, [a, b], **opts)
    p = dotproxy([], extra_args=["--config", conf], verbose=1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((p.addr, p.port))
        s.send(make_query("moved.example.").to_wire())
        assert b.wait_queries(1, timeout=5), "the query never reached B after failing on A"
        a_tries = len(a.queries)
        assert a_tries >= 1
        write_conf(conf, [b, a], **opts)  # same upstreams, other order
        reload(p)
        b.set(hold=False)
        s.settimeout(10)
        reply = dns.message.from_wire(s.recv(65535))
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer, \
        f"got {dns.rcode.to_text(reply.rcode())} instead of B's answer"
    assert len(a.queries) == a_tries, "A, which had failed the query, got it again"


# -- 6. --udp-recv-buffer ------------------------------------------------------------------

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
MiB = 1 << 20


def udp_receive_buffers(port):
    """rb (bytes) of every UDP socket bound to `port`, from `ss -ulmn`."""
    out = subprocess.run(["ss", "-ulmnH", f"sport = :{port}"], capture_output=True,
                         text=True, timeout=5, check=True).stdout
    return [int(x) for x in re.findall(r"\brb(\d+)", out)]


def grantable(size):
    """What the kernel grants us for a receive buffer of `size`: SO_RCVBUFFORCE
    when permitted (CAP_NET_ADMIN), else SO_RCVBUF (capped by rmem_max)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except PermissionError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        return s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


@pytest.mark.parametrize("args,size", [
    (["--udp-recv-buffer", "8m"], 8 * MiB),
    (["--udp-recv-buffer", "6291456"], 6 * MiB),
    (["--udp-recv-buffer", "4m", "--workers", "2"], 4 * MiB),
])
def test_udp_recv_buffer_sizes_the_listening_sockets(fake_upstream, dotproxy, args, size):
    p = dotproxy([fake_upstream()], extra_args=args)
    rbs = udp_receive_buffers(p.port)
    workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
    assert len(rbs) == workers, rbs
    # The kernel reports twice what was asked; without CAP_NET_ADMIN it caps at rmem_max.
    want = min(size, grantable(size))
    assert all(rb >= want for rb in rbs), f"rb {rbs} for a request of {size}"


def test_udp_recv_buffer_default_is_8_mib(fake_upstream, dotproxy):
    p = dotproxy([fake_upstream()])
    rbs = udp_receive_buffers(p.port)
    assert rbs, "no UDP socket found on the listening port"
    want = min(8 * MiB, grantable(8 * MiB))
    assert all(rb >= want for rb in rbs), f"rb {rbs}, default should be 8 MiB"


@pytest.mark.parametrize("value", ["banana", "-1", "12q", "8mb", "2g"])
def test_bad_udp_recv_buffer_is_a_configuration_error(certs, value):
    common = ["--upstream", f"127.0.0.1@853#{AUTH_NAME}", "--ca-file", certs.ca_file,
              "--check-config"]
    good = run_cli(["--udp-recv-buffer", "8m"] + common)
    assert good.returncode == 0, f"a good --udp-recv-buffer was refused: {good.stderr}"
    bad = run_cli(["--udp-recv-buffer", value] + common)
    assert bad.returncode == 2, bad
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "udp-recv-buffer" in lines[0] and value in lines[0], bad.stderr
