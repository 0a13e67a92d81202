"""--check-config finds the mistakes: duplicates, contradictions, a '#' that
would cut a value, and errors that name their cause (issue 11, point 5).

Each case runs the real binary once, as an administrator would before a
restart, and reads its exit status and its one line on stderr.
"""

import os
import re
import shutil
import signal
import tempfile

import dns.rcode
import pytest

from dotproxy_proc import DotProxy, run_cli
from netutil import free_port


def check(*args, conf=None):
    """dotproxy [--config conf] args... --check-config"""
    argv = (["--config", str(conf)] if conf else []) + [str(a) for a in args]
    return run_cli(argv + ["--check-config"], timeout=10)


def error_line(r):
    """The one line of a configuration error (exit status 2)."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("dotproxy: ")
    return lines[0]


# -- duplicates ---------------------------------------------------------------------------------

@pytest.mark.parametrize("first,second,mention", [
    ("127.0.0.1:5353", "127.0.0.1:5353", "the same address as 127.0.0.1:5353"),
    ("127.0.0.1:5353", "127.0.0.1:05353", "the same address as 127.0.0.1:5353"),
    ("[::1]:5353", "[0::1]:5353", "the same address as [::1]:5353"),
    ("0.0.0.0:5353", "127.0.0.1:5353", "0.0.0.0:5353, given before, already listens"),
    ("[::1]:5353", "[::]:5353", "every IPv6 address at port 5353, [::1]:5353"),
])
def test_the_same_listen_address_twice_is_an_error(first, second, mention):
    line = error_line(check("--listen", first, "--listen", second))
    assert f"--listen {second}" in line and mention in line


def test_a_duplicate_line_in_the_file_names_the_line_but_the_command_line_is_apart(tmp_path):
    conf = tmp_path / "dotproxy.conf"
    conf.write_text("listen 127.0.0.1:5353\nlisten [::1]:5353\nlisten 127.0.0.1:5353\n"
                    "upstream 127.0.0.1@853#dns.example.test\n")
    line = error_line(check(conf=conf))
    assert f"{conf}:3: --listen 127.0.0.1:5353: the same address as 127.0.0.1:5353" in line
    # A list on the command line replaces the file's: the same address or
    # upstream in both places is not given twice.
    conf.write_text("listen 127.0.0.1:5353\nlisten [::1]:5353\n"
                    "upstream 127.0.0.1@853#dns.example.test\n")
    r = check("--listen", "127.0.0.1:5353", "--upstream", "127.0.0.1@853#dns.example.test",
              conf=conf)
    assert r.returncode == 0, r.stderr
    assert "configuration OK: 1 listen address(es), 1 upstream(s)" in r.stdout


def test_an_ipv4_mapped_listen_address_says_what_to_write():
    line = error_line(check("--listen", "[::ffff:127.0.0.1]:5353"))
    assert "write 127.0.0.1:5353" in line


@pytest.mark.parametrize("args,mention", [
    (["--upstream", "9.9.9.9#dns.quad9.net", "--upstream", "9.9.9.9@853#DNS.quad9.net"],
     "--upstream 9.9.9.9@853#DNS.quad9.net: the same upstream as 9.9.9.9@853#dns.quad9.net"),
    (["--upstream", "2620:fe::fe", "--upstream", "2620:00fe:0::fe@853"],
     "the same upstream as 2620:fe::fe@853"),
    (["--forward-zone", "corp.example=10.0.0.1,10.0.0.2,10.0.0.1@853"],
     "--forward-zone corp.example=10.0.0.1,10.0.0.2,10.0.0.1@853: the same upstream as "
     "10.0.0.1@853"),
    (["--forward-zone", "lan=udp://192.168.1.1,udp://192.168.1.1:53"],
     "the same upstream as udp://192.168.1.1:53"),
])
def test_the_same_upstream_twice_is_an_error(args, mention):
    assert mention in error_line(check(*args))


def test_the_same_upstream_in_another_zone_is_not_a_duplicate():
    zones = ["--forward-zone", "corp.example=10.0.0.1@853#dns.example",
             "--forward-zone", "lab.corp.example=10.0.0.1@853#dns.example,udp://10.0.0.1:853"]
    r = check("--upstream", "10.0.0.1@853#dns.example", *zones)
    assert r.returncode == 0, r.stderr
    line = error_line(check("--upstream", "10.0.0.1@853#dns.example",
                            "--upstream", "10.0.0.1#dns.example", *zones))
    assert "the same upstream as 10.0.0.1@853#dns.example" in line


# -- contradictions -----------------------------------------------------------------------------

def test_cache_min_ttl_above_cache_max_ttl_is_an_error_naming_both(tmp_path):
    line = error_line(check("--cache-min-ttl", "3600", "--cache-max-ttl", "60"))
    assert ("--cache-min-ttl 3600 (command line) is above --cache-max-ttl 60 (command line)"
            in line)
    conf = tmp_path / "dotproxy.conf"
    conf.write_text("# caching\ncache-min-ttl 100000\n")
    line = error_line(check(conf=conf))
    assert f"--cache-min-ttl 100000 ({conf}:2) is above --cache-max-ttl 86400 (default)" in line


@pytest.mark.parametrize("args,warning", [
    (["--serve-stale", "86400", "--cache-size", "0"],
     "--serve-stale 86400 (command line) does nothing with --cache-size 0 (command line)"),
    (["--cache-size", "0", "--cache-min-ttl", "60"],
     "--cache-min-ttl (command line) does nothing with --cache-size 0 (command line)"),
    (["--block-action", "null"],
     "--block-action null (command line) does nothing without --block"),
    (["--profile", "opportunistic",
      "--upstream", "127.0.0.1#dns.example.test^47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="],
     "upstream 127.0.0.1@853#dns.example.test has pins, but with --profile opportunistic"),
])
def test_an_option_without_effect_is_a_warning(args, warning):
    r = check(*args)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [r.stderr.strip()]  # one line
    assert r.stderr.startswith("dotproxy: warning: " + warning), r.stderr
    assert r.stdout.startswith("configuration OK")


def test_warnings_are_logged_at_start_up_and_on_sighup(unbound, dotproxy, workdir):
    conf = workdir / "dotproxy.conf"
    conf.write_text("block-action refused\n")
    p = dotproxy([unbound], extra_args=["--config", conf])
    assert p.wait_log(rf"warning: --block-action refused \({conf}:1\) does nothing without "
                      r"--block"), p.log()
    mark = p.log_offset()
    conf.write_text("cache-size 0\nserve-stale 60\n")
    p.send_signal(signal.SIGHUP)
    assert p.wait_log(r"configuration reloaded", since=mark), p.log_since(mark)
    assert re.search(rf"warning: SIGHUP: --serve-stale 60 \({conf}:2\) does nothing with "
                     rf"--cache-size 0 \({conf}:1\)", p.log_since(mark)), p.log_since(mark)
    assert "block-action" not in p.log_since(mark)


# -- a '#' that would cut a value ---------------------------------------------------------------

@pytest.mark.parametrize("line,fix", [
    ("upstream 127.0.0.1@8853 #dns.example", "write 127.0.0.1@8853#dns.example (no space"),
    ("forward-zone corp.example=10.0.0.1 #dns.corp.example",
     "write corp.example=10.0.0.1#dns.corp.example (no space"),
])
def test_a_space_before_the_auth_name_is_refused_not_silently_dropped(tmp_path, line, fix):
    conf = tmp_path / "dotproxy.conf"
    conf.write_text("# upstreams\n" + line + "\n")
    err = error_line(check(conf=conf))
    assert f"{conf}:2: " in err
    assert "starts a comment, which would drop the auth name" in err and fix in err
    assert "or '# dns." in err


def test_a_comment_after_a_value_is_still_a_comment(unbound, dotproxy, workdir):
    conf = workdir / "dotproxy.conf"
    conf.write_text(f"upstream 127.0.0.1@{unbound.port} #dns.example.test\n")
    assert "would drop the auth name dns.example.test" in error_line(check(conf=conf))
    # With a space after the '#', or on a spec that has its name, a comment.
    conf.write_text(f"upstream 127.0.0.1@{unbound.port} # dns.example.test, no name: IP checked\n"
                    f"upstream 127.0.0.1@{unbound.port}#dns.example.test #secondary.example\n"
                    "timeout 2000 #two.seconds\n")
    r = check(conf=conf)
    assert r.returncode == 0, r.stderr
    assert "2 upstream(s)" in r.stdout
    # The first line's comment really is one: that upstream is verified by IP.
    p = dotproxy([], extra_args=["--config", conf], verbose=1)
    assert p.wait_log(rf"upstream 127\.0\.0\.1@{unbound.port} \(certificate must carry the IP\)")
    assert p.wait_log(rf"upstream 127\.0\.0\.1@{unbound.port}#dns\.example\.test "
                      r"\(certificate must match the name\)")


# -- errors that name the cause -----------------------------------------------------------------

def test_a_missing_ca_file_says_no_such_file():
    line = error_line(check("--ca-file", "/nonexistent/ca.pem"))
    assert line == ("dotproxy: --ca-file: cannot read trust anchors from /nonexistent/ca.pem: "
                    "No such file or directory")


def test_a_ca_file_that_is_a_directory_says_so(tmp_path):
    line = error_line(check("--ca-file", tmp_path))
    assert line.endswith(f"cannot read trust anchors from {tmp_path}: Is a directory")


def test_a_ca_file_without_certificates_says_so_without_an_openssl_code(tmp_path):
    pem = tmp_path / "ca.pem"
    pem.write_text("not a certificate\n")
    line = error_line(check("--ca-file", pem))
    assert f"cannot load trust anchors from {pem}: no certificate or crl found" in line
    assert "error:" not in line


def _as_nobody():
    """preexec_fn: run the child as nobody, for whom a 0600 root file is unreadable."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


NOBODY = 65534


def test_an_unreadable_ca_file_says_permission_denied(certs):
    # Root reads everything, so as root the check runs as nobody, on a
    # root-only copy of a good CA file in a directory anyone may enter
    # (pytest's own tmp_path is not: its parents are 0700).
    with tempfile.TemporaryDirectory(prefix="dotproxy-ca-") as shared:
        os.chmod(shared, 0o755)
        pem = os.path.join(shared, "ca.pem")
        shutil.copy(certs.ca_file, pem)
        os.chmod(pem, 0o600)
        if os.geteuid() == 0:
            kw = {"preexec_fn": _as_nobody}
        else:
            os.chmod(pem, 0)
            kw = {}
        r = run_cli(["--ca-file", pem, "--check-config"], timeout=10, **kw)
        line = error_line(r)
        assert line == (f"dotproxy: --ca-file: cannot read trust anchors from {pem}: "
                        "Permission denied")
        # Readable, the same file is fine: it was the permission, not the content.
        os.chmod(pem, 0o644)
        r = run_cli(["--ca-file", pem, "--check-config"], timeout=10, **kw)
        assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("option,value,fix", [
    ("--upstream", "9.9.9.9:853", "the port follows '@', as in unbound: write 9.9.9.9@853"),
    ("--upstream", "9.9.9.9:853#dns.quad9.net", "write 9.9.9.9@853#dns.quad9.net"),
    ("--upstream", "[2620:fe::fe]:853",
     "an IPv6 upstream is written without brackets, the port after '@': write 2620:fe::fe@853"),
    ("--upstream", "[2620:fe::fe]@853#dns.quad9.net", "write 2620:fe::fe@853#dns.quad9.net"),
    ("--listen", "127.0.0.1@5353", "the port follows ':' here: write 127.0.0.1:5353"),
    ("--listen", "::1@5353", "write [::1]:5353"),
])
def test_another_tools_notation_gets_the_right_one(option, value, fix):
    line = error_line(check(option, value))
    assert value in line and line.endswith(fix), line


# -- --check-config -v: every effective setting -------------------------------------------------

def test_check_config_v_prints_every_setting_that_reads_back_the_same(tmp_path, certs):
    conf = tmp_path / "dotproxy.conf"
    conf.write_text("listen 127.0.0.1:5353\n"
                    "upstream 127.0.0.1@8853#dns.example.test\n"
                    "forward-zone lan=udp://192.168.1.1\n"
                    "cache-size 64M\n"
                    "local-data 'nas.home.arpa TXT \"backups #nightly\"'\n"
                    "verbose\n")
    r = check("-v", "--ca-file", certs.ca_file, "--timeout", "1500", conf=conf)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1].startswith("configuration OK: 1 listen address(es), 1 upstream(s)")
    settings = lines[:-1]
    for want in ["listen 127.0.0.1:5353", "upstream 127.0.0.1@8853#dns.example.test",
                 "forward-zone lan.=udp://192.168.1.1:53", f"ca-file {certs.ca_file}",
                 "timeout 1500", "cache-size 64M", "policy fastest", "allow 127.0.0.0/8",
                 "local-data 'nas.home.arpa TXT \"backups #nightly\"'", "verbose",
                 "# user not set: the user dotproxy was started as"]:
        assert want in settings, r.stdout
    # One line per setting, each an option of the file or a comment.
    names = {ln.split()[0] for ln in settings if not ln.startswith("#")}
    assert {"workers", "max-inflight", "udp-recv-buffer", "serve-stale", "max-udp-size",
            "busy-poll"} <= names
    # Pasted back into a file, it is the same configuration.
    again = tmp_path / "again.conf"
    again.write_text("\n".join(settings) + "\n")
    r2 = check("-v", conf=again)
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout == r.stdout and r2.stderr == ""


def test_without_v_on_the_command_line_only_the_summary(tmp_path):
    conf = tmp_path / "dotproxy.conf"
    conf.write_text("verbose\n")  # the daemon's verbosity, not a request for a listing
    r = check(conf=conf)
    assert r.returncode == 0 and r.stdout.startswith("configuration OK"), r
    assert len(r.stdout.splitlines()) == 1
    assert "listen 127.0.0.1:53" in check("-v", conf=conf).stdout


# -- SIGHUP: what needs a restart, compared with what runs --------------------------------------

def _sighup(p):
    """SIGHUP, wait for the reload; return what was logged for it."""
    mark = p.log_offset()
    p.send_signal(signal.SIGHUP)
    assert p.wait_log(r"configuration reloaded", timeout=5, since=mark), p.log_since(mark)
    return p.log_since(mark)


def test_sighup_names_what_needs_a_restart_compared_with_what_runs(unbound, workdir, certs):
    port, other = free_port(), free_port()
    conf = workdir / "dotproxy.conf"

    def write(listen, workers, timeout=4000):
        conf.write_text(f"listen {listen}\n"
                        f"upstream 127.0.0.1@{unbound.port}#dns.example.test\n"
                        f"ca-file {certs.ca_file}\n"
                        f"workers {workers}\ntimeout {timeout}\n")

    write(f"127.0.0.1:{port}", 1)
    p = DotProxy(["--config", str(conf)], workdir=workdir, listen=f"127.0.0.1:{port}")
    try:
        p.start()
        assert p.udp("www.example.").rcode() == dns.rcode.NOERROR

        write(f"127.0.0.1:{other}", 2, timeout=2000)
        said = _sighup(p)
        assert ("warning: SIGHUP: --listen and --workers change only on restart; still "
                "running with the old ones") in said, said
        assert p.udp("www.example.").rcode() == dns.rcode.NOERROR  # still on the old port

        # The listen address back as it runs (written differently): only
        # --workers still differs.
        write(f"127.0.0.1:0{port}", 2)
        said = _sighup(p)
        assert ("warning: SIGHUP: --workers changes only on restart; still running with the "
                "old one") in said, said
        assert "--listen" not in said

        # Everything back: nothing to say (it used to repeat the listen warning).
        write(f"127.0.0.1:{port}", 1)
        said = _sighup(p)
        assert "only on restart" not in said, said
        assert p.udp("www.example.").rcode() == dns.rcode.NOERROR
    finally:
        p.stop()
        p.check_exit()
