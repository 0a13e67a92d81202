"""The Debian package: built with `dpkg-buildpackage -us -uc -b` from a copy
of the source tree (the tree itself stays clean), its contents checked, and
lintian run on it.

Skipped, with the reason, when dpkg-buildpackage or a build dependency is
missing (`dpkg-checkbuilddeps` says which), and under the sanitizer run of
`make check`: the package builds its own binary, so one run is enough.
About 30 s on the 2-CPU development machine, most of it the build.
"""

import os
import re
import shutil
import subprocess

import pytest

from dotproxy_proc import REPO_ROOT, binary_path

BUILD_TIMEOUT = 600


def _clean_env():
    """The environment without an enclosing make's variables (MAKEFLAGS
    would hand the package build a jobserver it cannot use)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env["DEB_BUILD_OPTIONS"] = "parallel=2"
    return env


def _copy_tree(dest):
    """The files of the work tree (tracked, and new ones not ignored), or
    the whole directory without build products outside git."""
    try:
        names = subprocess.run(["git", "-C", REPO_ROOT, "ls-files", "-z", "-co",
                                "--exclude-standard"], capture_output=True, check=True,
                               timeout=60).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(REPO_ROOT, dest, symlinks=True, ignore=shutil.ignore_patterns(
            "build", ".git", "__pycache__", ".pytest_cache", ".cache"))
        return
    for name in filter(None, names):
        src = os.path.join(REPO_ROOT, name)
        if not os.path.lexists(src):
            continue  # deleted in the work tree, not yet committed
        os.makedirs(os.path.join(dest, os.path.dirname(name)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, name), follow_symlinks=False)


def _programs():
    """PROGRAMS of the Makefile: what the package must ship in /usr/sbin."""
    out = []
    with open(os.path.join(REPO_ROOT, "Makefile")) as f:
        for line in f:
            m = re.match(r"PROGRAMS\s*(:?=|\+=)\s*(.*)$", line)
            if m:
                out = (out if m.group(1) == "+=" else []) + m.group(2).split()
    return out


def _version():
    with open(os.path.join(REPO_ROOT, "lib", "version.h")) as f:
        return re.search(r'#define DOTPROXY_VERSION "([^"]+)"', f.read()).group(1)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """Build once for the module; returns (directory of the results, .deb, .changes)."""
    if os.path.abspath(binary_path()).endswith(os.path.join("build", "sanitize", "dotproxy")):
        pytest.skip("the package builds its own binary: checked in the run without SANITIZE=1")
    if shutil.which("dpkg-buildpackage") is None:
        pytest.skip("dpkg-buildpackage not installed (package dpkg-dev)")
    r = subprocess.run(["dpkg-checkbuilddeps"], cwd=REPO_ROOT, capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        pytest.skip(f"build dependencies missing: {r.stderr.strip()}")
    out = tmp_path_factory.mktemp("package")
    src = out / "dotproxy"
    _copy_tree(src)
    r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, capture_output=True,
                       text=True, timeout=BUILD_TIMEOUT, env=_clean_env())
    assert r.returncode == 0, f"dpkg-buildpackage failed:\n{r.stdout[-5000:]}\n{r.stderr[-5000:]}"
    arch = subprocess.run(["dpkg-architecture", "-qDEB_HOST_ARCH"], capture_output=True,
                          text=True, check=True).stdout.strip()
    deb = out / f"dotproxy_{_version()}_{arch}.deb"
    changes = out / f"dotproxy_{_version()}_{arch}.changes"
    assert deb.exists() and changes.exists(), sorted(os.listdir(out))
    return out, deb, changes


def _deb_files(deb):
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                             check=True).stdout
    return {line.split()[-1].lstrip(".") for line in listing.splitlines()
            if not line.startswith("d")}


def _deb_member(deb, path):
    return subprocess.run(f"dpkg-deb --fsys-tarfile '{deb}' | tar -xOf - '.{path}'", shell=True,
                          capture_output=True, text=True, check=True).stdout


def _control_member(deb, name):
    return subprocess.run(["dpkg-deb", "-I", str(deb), name], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.time_limit(60)
def test_package_ships_the_programs_units_config_and_user(package):
    _, deb, _ = package
    programs = _programs()
    assert "dotproxy" in programs
    expected = ({f"/usr/sbin/{p}" for p in programs}
                | {f"/usr/share/man/man8/{p}.8.gz" for p in programs}
                | {"/lib/systemd/system/dotproxy.service", "/lib/systemd/system/dotproxy.socket",
                   "/usr/lib/sysusers.d/dotproxy.conf", "/etc/dotproxy/dotproxy.conf",
                   "/usr/share/doc/dotproxy/README.md.gz", "/usr/share/doc/dotproxy/changelog.gz",
                   "/usr/share/doc/dotproxy/copyright"})
    assert _deb_files(deb) == expected

    fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Version", "Depends"],
                            capture_output=True, text=True, check=True).stdout
    assert f"Version: {_version()}\n" in fields
    assert re.search(r"Depends: .*systemd-sysusers", fields), fields

    assert _control_member(deb, "conffiles").split() == ["/etc/dotproxy/dotproxy.conf"]
    service = _deb_member(deb, "/lib/systemd/system/dotproxy.service")
    assert re.search(r"^ExecStart=/usr/sbin/dotproxy --config /etc/dotproxy/dotproxy.conf$",
                     service, re.M), service
    # The system user is created on installation ...
    postinst = _control_member(deb, "postinst")
    assert "systemd-sysusers" in postinst and "dotproxy.conf" in postinst
    # ... and the units are not enabled on a first installation: the
    # enabling snippets only re-create the links of an upgrade.
    for unit in ("dotproxy.service", "dotproxy.socket"):
        assert f"if deb-systemd-helper debian-installed '{unit}'; then" in postinst, postinst


@pytest.mark.time_limit(120)
def test_lintian_finds_no_error(package):
    _, _, changes = package
    if shutil.which("lintian") is None:
        pytest.skip("lintian not installed")
    r = subprocess.run(["lintian", "--pedantic", "--display-info", str(changes)],
                       capture_output=True, text=True, timeout=300)
    tags = [line for line in r.stdout.splitlines() if re.match(r"[EWIPX]: ", line)]
    print("lintian:\n" + ("\n".join(tags) or "(nothing)"))
    errors = [t for t in tags if t.startswith("E: ")]
    assert not errors, "\n".join(tags)
    assert r.returncode == 0, f"lintian failed to run:\n{r.stderr}"
