"""Socket activation: sockets handed over by systemd (LISTEN_PID, LISTEN_FDS)
are used instead of binding --listen, so that dotproxy needs no privilege.

systemd-socket-activate (from systemd) plays systemd's part. It makes
sockets of one kind per run (-d: all datagram), and passes on the sockets it
was handed itself, so two of them in a row hand over TCP and UDP: the outer
one (TCP) waits for a first connection -- the readiness probe of DotProxy
makes it -- and execs the inner one (UDP), which sees that connection
waiting and execs dotproxy at once, in the same process.
"""

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile

import dns.rcode
import pytest

from dotproxy_proc import AUTH_NAME, DotProxy, binary_path, check_binary
from netutil import free_port, tcp_query, udp_query
from procutil import proc_status, wait_for

LAUNCHER = shutil.which("systemd-socket-activate") or "/usr/bin/systemd-socket-activate"
SETPRIV = shutil.which("setpriv")

pytestmark = pytest.mark.skipif(not os.access(LAUNCHER, os.X_OK),
                                reason="systemd-socket-activate not installed (package systemd)")


def _listening_ports(pid):
    """{(proto, port)} of pid's listening TCP and bound UDP sockets, and the
    number of descriptors that point at each socket inode."""
    inodes = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if m:
            inodes[m.group(1)] = inodes.get(m.group(1), 0) + 1
    found = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/net/{proto}") as f:
                next(f)
                for line in f:
                    p = line.split()
                    if p[9] not in inodes:
                        continue
                    if proto.startswith("tcp") and p[3] != "0A":  # LISTEN only
                        continue
                    if proto.startswith("udp") and p[2].split(":")[1] != "0000":
                        continue  # a connected UDP socket is no listener
                    port = int(p[1].split(":")[1], 16)
                    found[(proto[:3], port)] = found.get((proto[:3], port), 0) + inodes[p[9]]
        except FileNotFoundError:
            pass
    return found


def _port_free(port, host="127.0.0.1"):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def _free_low_port():
    """A port below 1024, free for TCP and UDP on 127.0.0.1: one only root
    may bind."""
    for port in range(853 + 100, 600, -1):
        if _port_free(port):
            return port
    pytest.skip("no free port below 1024 on 127.0.0.1")


@pytest.fixture
def activated(request, workdir, certs):
    """activated(upstream, addrs=[...], args=[...], user=None, workers=1) -> DotProxy

    dotproxy started through systemd-socket-activate on `addrs` (TCP and
    UDP on each), and also given an unused --listen address (returned as
    .unused_listen) that it must leave alone.
    """
    procs = []

    def start(upstream, *, addrs=None, args=(), user=None, binary=None, ca_file=None):
        binary = binary or binary_path()
        try:
            check_binary(binary)
        except FileNotFoundError as e:
            pytest.fail(str(e), pytrace=False)
        addrs = addrs or [f"127.0.0.1:{free_port()}"]
        unused = f"127.0.0.1:{free_port()}"
        argv = []
        for a in addrs:
            argv += ["-l", a]
        argv += ["--", LAUNCHER, "--datagram"]
        for a in addrs:
            argv += ["-l", a]
        argv += ["--"]
        if user:
            pw = pwd.getpwnam(user)
            argv += [SETPRIV, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                     "--pdeathsig", "TERM", "--"]
        argv += [binary, "--listen", unused,
                 "--upstream", f"{upstream.host}@{upstream.port}#{AUTH_NAME}",
                 "--ca-file", ca_file or certs.ca_file, "-v"] + list(args)
        p = DotProxy(argv, workdir=workdir, listen=addrs, binary=LAUNCHER,
                     name=f"activated{len(procs) or ''}")
        p.unused_listen = unused
        procs.append(p)
        request.node.__dict__.setdefault("_log_sources", []).append(
            (f"{p.name} stderr ({p.log_file})", p.log))
        p.start()  # returns once the TCP socket accepts: systemd's, not dotproxy's yet
        if not p.wait_log(r"notice: dotproxy .* ready", timeout=5):
            pytest.fail(f"dotproxy did not become ready:\n{p.log_tail()}", pytrace=False)
        return p

    yield start
    problems = []
    for p in procs:
        p.stop()
        problems += p.problems()
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


def test_answers_on_the_handed_sockets_and_binds_nothing(unbound, activated):
    p = activated(unbound)
    assert p.udp("www.example.").rcode() == dns.rcode.NOERROR
    assert p.tcp("www.example.").answer
    assert re.search(r"notice: dotproxy \S+ ready: 2 socket\(s\) from systemd \(1 udp, 1 tcp\)",
                     p.log()), p.log()
    assert "--listen ignored: using the 2 socket(s) systemd handed over" in p.log()
    # The listening sockets are exactly the handed ones, once each (the
    # originals are closed once the worker holds its own descriptor) ...
    assert _listening_ports(p.proc.pid) == {("tcp", p.port): 1, ("udp", p.port): 1}
    # ... and the --listen address was left alone.
    _, unused_port = p.unused_listen.rsplit(":", 1)
    assert _port_free(int(unused_port)), "dotproxy bound its --listen address"


def test_workers_share_every_handed_socket(unbound, activated):
    port = free_port()
    p = activated(unbound, addrs=[f"127.0.0.1:{port}", f"127.0.0.2:{port}"],
                  args=["--workers", "3", "--cache-size", "0"])
    assert "4 socket(s) from systemd (2 udp, 2 tcp)" in p.log(), p.log()
    # Each worker waits on its own descriptor of each socket.
    assert _listening_ports(p.proc.pid) == {("tcp", port): 6, ("udp", port): 6}
    for i in range(20):
        host = f"127.0.0.{1 + i % 2}"
        assert udp_query(port, f"n{i}.example.", host=host).rcode() == dns.rcode.NOERROR
        assert tcp_query(port, f"n{i}.example.", host=host).rcode() == dns.rcode.NOERROR
    assert p.stats()["queries_udp"] == 20


def test_reload_binds_nothing(unbound, activated, workdir):
    p = activated(unbound)
    before = _listening_ports(p.proc.pid)
    mark = p.log_offset()
    p.send_signal(signal.SIGHUP)
    assert p.wait_log(r"notice: SIGHUP: configuration reloaded", since=mark)
    assert "listen addresses" not in p.log_since(mark)
    assert _listening_ports(p.proc.pid) == before
    assert p.udp("www.example.").rcode() == dns.rcode.NOERROR
    assert p.tcp("www.example.").answer


@pytest.mark.skipif(os.geteuid() != 0 or SETPRIV is None,
                    reason="needs root and setpriv to start dotproxy as nobody")
def test_runs_without_any_privilege_on_a_privileged_port(unbound, activated, certs):
    """The launcher (root) binds a port below 1024; dotproxy, as nobody with
    no capability, serves on it."""
    port = _free_low_port()
    with tempfile.TemporaryDirectory(prefix="dotproxy-nobody-") as d:
        os.chmod(d, 0o755)  # nobody reads the trust anchors and runs the binary here
        binary = shutil.copy(binary_path(), os.path.join(d, "dotproxy"))
        ca_file = shutil.copy(certs.ca_file, os.path.join(d, "ca.pem"))
        os.chmod(ca_file, 0o644)
        p = activated(unbound, addrs=[f"127.0.0.1:{port}"], user="nobody", binary=binary,
                      ca_file=ca_file)
        st = proc_status(p.proc.pid)
        nobody = pwd.getpwnam("nobody").pw_uid
        assert st["Uid"].split() == [str(nobody)] * 4, st["Uid"]
        assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0, st
        assert p.udp("www.example.").rcode() == dns.rcode.NOERROR
        assert p.tcp("www.example.").answer
        assert _listening_ports(p.proc.pid) == {("tcp", port): 1, ("udp", port): 1}
        p.stop()
        assert p.returncode == 0


def test_a_socket_it_cannot_use_is_a_configuration_error(unbound, workdir, certs):
    """A unix socket (ListenStream=/path) is refused with exit status 2,
    before anything is bound."""
    path = str(workdir / "dns.sock")
    argv = [LAUNCHER, "-l", path, "--", binary_path(), "--upstream",
            f"{unbound.host}@{unbound.port}#{AUTH_NAME}", "--ca-file", certs.ca_file,
            "--listen", f"127.0.0.1:{free_port()}"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: os.path.exists(path), 5)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)  # the launcher starts its command on the first connection
            _, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, err
    assert re.search(r"dotproxy: socket activation: descriptor 3 is not an IPv4 or IPv6 socket",
                     err), err
    assert "ready" not in err
