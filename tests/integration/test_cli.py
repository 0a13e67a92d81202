"""The command-line contract: exit statuses, messages, config file, signals, logs."""

import re
import signal
import socket
import subprocess
import time

import dns.rcode
import pytest

from dotproxy_proc import binary_path, run_cli
from netutil import free_port


def run(*args, timeout=10):
    return run_cli([str(a) for a in args], timeout=timeout)


@pytest.mark.parametrize("args,needle", [
    (["--bogus"], "--bogus"),
    (["--upstream", "dns.quad9.net"], "dns.quad9.net"),
    (["--upstream", "9.9.9.9@70000"], "70000"),
    (["--upstream", "9.9.9.9#bad name"], "bad name"),
    (["--listen", "127.0.0.1"], "127.0.0.1"),
    (["--listen", "::1:53"], "::1:53"),
    (["--timeout", "soon"], "--timeout"),
    (["--timeout"], "--timeout"),
    (["--ca-file", "/nonexistent/ca.pem"], "/nonexistent/ca.pem"),
    (["--config", "/nonexistent/dotproxy.conf"], "/nonexistent/dotproxy.conf"),
    (["stray"], "stray"),
])
def test_bad_argument_exits_2_with_one_line(args, needle):
    r = run(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert needle in lines[0]
    assert lines[0].startswith("dotproxy: ")


def test_help_and_version():
    r = run("--help")
    assert r.returncode == 0
    for opt in ("--listen", "--upstream", "--ca-file", "--config", "--timeout",
                "--log-queries", "--verbose", "--version"):
        assert opt in r.stdout
    r = run("--version")
    assert r.returncode == 0 and re.match(r"dotproxy \d+\.\d+", r.stdout)


@pytest.mark.parametrize("workers", ["1", "3"])
def test_port_in_use_exits_1_with_the_reason(certs, workers):
    # Taken without SO_REUSEPORT: workers cannot join it either.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        r = run("--listen", f"127.0.0.1:{port}", "--upstream", "127.0.0.1@853",
                "--ca-file", certs.ca_file, "--workers", workers)
    assert r.returncode == 1
    assert "address already in use" in r.stderr
    assert f"127.0.0.1:{port}" in r.stderr
    assert "Sanitizer" not in r.stderr  # every worker's loop closed, nothing leaked


def test_config_file_with_auth_names_and_comments(unbound, dotproxy, workdir, certs):
    port = free_port()
    conf = workdir / "dotproxy.conf"
    conf.write_text(
        "# a comment\n"
        f"listen 127.0.0.1:{port}   # where clients ask\n"
        f"upstream 127.0.0.1@{unbound.port}#dns.example.test\n"
        f"ca-file {certs.ca_file}\n"
        "\n"
        "timeout 2000\n")
    r = run("--config", str(conf), "--check-config")
    assert r.returncode == 0, r.stderr
    p = dotproxy([], listen=f"127.0.0.1:{port}", ca_file=None, verbose=1,
                 extra_args=["--config", conf])
    assert p.udp("www.example.").rcode() == dns.rcode.NOERROR
    # The '#' of the auth name is part of the value, not a comment.
    assert p.wait_log(rf"upstream 127\.0\.0\.1@{unbound.port}#dns\.example\.test "
                      r"\(certificate must match the name\)")
    s = p.stats()
    assert s["upstream_handshakes"] == 1


def test_config_file_error_names_file_and_line(workdir):
    conf = workdir / "bad.conf"
    conf.write_text("listen 127.0.0.1:5353\nupstreem 9.9.9.9\n")
    r = run("--config", str(conf))
    assert r.returncode == 2
    assert f"{conf}:2:" in r.stderr and "upstreem" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_0_promptly(unbound, dotproxy, sig):
    p = dotproxy([unbound])
    assert p.udp("www.example.").rcode() == dns.rcode.NOERROR
    start = time.monotonic()
    assert p.stop(sig=sig) == 0
    assert time.monotonic() - start < 1.0
    assert "stats:" in p.log()


def test_shutdown_answers_queries_in_flight(fake_upstream, dotproxy):
    up = fake_upstream(delay=0.5)
    p = dotproxy([up])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        from netutil import make_query
        q = make_query("late.example.", "A")
        s.settimeout(3)
        s.sendto(q.to_wire(), (p.addr, p.port))
        time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        import dns.message
        reply = dns.message.from_wire(s.recv(4096))
    assert reply.rcode() == dns.rcode.NOERROR
    assert p.proc.wait(5) == 0


def test_sighup_does_not_kill(unbound, dotproxy):
    p = dotproxy([unbound])
    p.send_signal(signal.SIGHUP)
    time.sleep(0.2)
    assert p.running
    assert p.udp("www.example.").rcode() == dns.rcode.NOERROR


def test_query_log_line(unbound, dotproxy):
    p = dotproxy([unbound], extra_args=["--log-queries"])
    p.udp("www.example.")
    p.tcp("nope.example.", "AAAA")
    m = p.wait_log(r"query: client=127\.0\.0\.1#\d+/udp name=www\.example\. type=A "
                   r"rcode=NOERROR upstream=127\.0\.0\.1@\d+#dns\.example\.test ms=\d+\.\d+")
    assert m, p.log()
    m = p.wait_log(r"query: client=127\.0\.0\.1#\d+/tcp name=nope\.example\. type=AAAA "
                   r"rcode=NXDOMAIN upstream=\S+ ms=")
    assert m, p.log()


def test_verbosity_levels(unbound, dotproxy):
    quiet = dotproxy([unbound])
    quiet.udp("www.example.")
    assert "info:" not in quiet.log() and "query:" not in quiet.log()
    loud = dotproxy([unbound], verbose=2)
    loud.udp("www.example.")
    assert loud.wait_log(r"info: upstream .* connected")
    assert "debug:" in loud.log()


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_tells_systemd_when_ready_reloading_and_stopping(unbound, dotproxy, tmp_path, abstract):
    """sd_notify(3) without libsystemd: what Type=notify in the unit waits for."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        if abstract:
            name = f"@dotproxy-test-{time.monotonic_ns()}"
            notify.bind("\0" + name[1:])
        else:
            name = str(tmp_path / "notify.sock")
            notify.bind(name)
        notify.settimeout(5)
        p = dotproxy([unbound], env={"NOTIFY_SOCKET": name})
        assert notify.recv(4096) == b"READY=1"
        assert p.udp("www.example.").answer  # ready means answering
        p.send_signal(signal.SIGHUP)
        assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", notify.recv(4096).decode())
        assert notify.recv(4096) == b"READY=1"
        p.send_signal(signal.SIGTERM)
        assert notify.recv(4096) == b"STOPPING=1"
        assert p.proc.wait(timeout=5) == 0
