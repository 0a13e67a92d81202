"""`make install` and `make uninstall` into a staging directory (DESTDIR),
the systemd units they install, and the manual page against --help.

Nothing here touches the system: every path is under a temporary DESTDIR.
"""

import os
import re
import shutil
import subprocess

import pytest

from dotproxy_proc import REPO_ROOT, binary_path, run_cli

PATHS = {"PREFIX": "/opt/dp", "SYSCONFDIR": "/opt/dp-etc"}
# Where each kind of file lands with PATHS (the defaults derived from PREFIX).
SBIN = "opt/dp/sbin"
MAN8 = "opt/dp/share/man/man8"
UNITS = "opt/dp/lib/systemd/system"
SYSUSERS = "opt/dp/lib/sysusers.d"
CONF = "opt/dp-etc/dotproxy/dotproxy.conf"


def make(target, destdir, **variables):
    """Run `make TARGET DESTDIR=...` in the repository, as a user would.

    The build that is installed is the one under test: the sanitizer build
    when $DOTPROXY points there.  The variables of an enclosing make (when
    this runs under `make check`) are not passed on.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    args = ["make", "--no-print-directory", "-C", REPO_ROOT, target, f"DESTDIR={destdir}",
            "ENSURE_DEPS=0"]
    if os.path.abspath(binary_path()).endswith(os.path.join("build", "sanitize", "dotproxy")):
        args.append("SANITIZE=1")
    args += [f"{k}={v}" for k, v in variables.items()]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, f"{' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def files_under(root):
    out = set()
    for d, _, names in os.walk(root):
        for n in names:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


def test_install_puts_everything_in_place_with_its_paths(tmp_path):
    dest = tmp_path / "root"
    make("install", dest, **PATHS)
    files = files_under(dest)
    programs = sorted(os.path.basename(f) for f in files if f.startswith(SBIN + "/"))
    assert "dotproxy" in programs
    expected = ({f"{SBIN}/{p}" for p in programs} | {f"{MAN8}/{p}.8" for p in programs}
                | {f"{UNITS}/dotproxy.service", f"{UNITS}/dotproxy.socket",
                   f"{SYSUSERS}/dotproxy.conf", CONF})
    assert files == expected
    for p in programs:
        assert os.stat(dest / SBIN / p).st_mode & 0o777 == 0o755
    for f in expected - {f"{SBIN}/{p}" for p in programs}:
        assert os.stat(dest / f).st_mode & 0o777 == 0o644, f

    service = (dest / UNITS / "dotproxy.service").read_text()
    assert re.search(r"^ExecStart=/opt/dp/sbin/dotproxy --config "
                     r"/opt/dp-etc/dotproxy/dotproxy.conf$", service, re.M), service
    assert "/usr/local/sbin/" not in service and "/etc/dotproxy/" not in service
    assert re.search(r"^Requires=dotproxy\.socket$", service, re.M)
    assert re.search(r"^Also=dotproxy\.socket$", service, re.M)
    assert (dest / UNITS / "dotproxy.socket").read_text() == \
        (open(os.path.join(REPO_ROOT, "contrib", "dotproxy.socket")).read())
    assert re.search(r"^u dotproxy ", (dest / SYSUSERS / "dotproxy.conf").read_text(), re.M)

    # The example configuration names the installed paths, and is valid.
    conf = dest / CONF
    assert "/etc/dotproxy/" not in conf.read_text()
    assert "/opt/dp-etc/dotproxy/ca.pem" in conf.read_text()
    r = run_cli(["--config", str(conf), "--check-config"])
    assert r.returncode == 0, r.stderr


def test_install_keeps_a_changed_config_and_uninstall_removes_the_rest(tmp_path):
    dest = tmp_path / "root"
    make("install", dest, **PATHS)
    conf = dest / CONF
    conf.write_text("upstream 192.0.2.1@853#dns.example\n")
    out = make("install", dest, **PATHS)
    assert "exists: kept" in out
    assert conf.read_text() == "upstream 192.0.2.1@853#dns.example\n"

    out = make("uninstall", dest, **PATHS)
    assert "was changed: kept" in out
    assert files_under(dest) == {CONF}


def test_uninstall_removes_an_unchanged_config(tmp_path):
    dest = tmp_path / "root"
    make("install", dest, **PATHS)
    make("uninstall", dest, **PATHS)
    assert files_under(dest) == set()
    assert not (dest / "opt/dp-etc/dotproxy").exists()


def test_default_paths(tmp_path):
    """PREFIX=/usr/local: what the README and the unit's comments promise."""
    dest = tmp_path / "root"
    make("install", dest)
    files = files_under(dest)
    assert {"usr/local/sbin/dotproxy", "usr/local/share/man/man8/dotproxy.8",
            "usr/local/lib/systemd/system/dotproxy.service",
            "usr/local/lib/systemd/system/dotproxy.socket",
            "usr/local/lib/sysusers.d/dotproxy.conf", "etc/dotproxy/dotproxy.conf"} <= files
    service = (dest / "usr/local/lib/systemd/system/dotproxy.service").read_text()
    assert re.search(r"^ExecStart=/usr/local/sbin/dotproxy --config "
                     r"/etc/dotproxy/dotproxy.conf$", service, re.M)
    make("uninstall", dest)
    assert files_under(dest) == set()


def test_every_option_is_in_the_man_page():
    r = run_cli(["--help"])
    assert r.returncode == 0
    options = set(re.findall(r"--[a-z][a-z-]*", r.stdout))
    assert len(options) > 30, r.stdout
    man = open(os.path.join(REPO_ROOT, "doc", "dotproxy.8")).read().replace("\\-", "-")
    section = man[man.index("\n.SH OPTIONS\n"):]
    section = section[:section.index("\n.SH ", 1)]
    # Each entry: .TP, then the option in bold (".BR -v \", \" --verbose" for short forms).
    documented = set(re.findall(r"^\.TP\n\.B[IR]? +(?:-[a-zA-Z] \", \" )?(--[a-z][a-z-]*)",
                                section, re.M))
    assert options - documented == set(), "options of --help without an entry in dotproxy.8"


def _exposure(unit):
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", unit],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    if not m:
        pytest.skip(f"systemd-analyze security --offline gave no score: {r.stderr.strip()}")
    return float(m.group(1))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed (package systemd)")
def test_service_unit_exposure_stays_low():
    """2.4 was the score before socket activation and the extra hardening."""
    score = _exposure(os.path.join(REPO_ROOT, "contrib", "dotproxy.service"))
    print(f"systemd-analyze security: {score}")
    assert score <= 2.4
