"""Run the real dotproxy binary as a child process and observe it.

Used by the `dotproxy` fixture in conftest.py and by demo.py. It knows the
command-line contract (doc: shared DESIGN.md, "Command line") and nothing
of the daemon's internals: everything is observed from outside, through
sockets, signals, exit status and the stderr log.
"""

import os
import re
import signal
import subprocess
import time

import netutil
import procutil

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Name in the test certificates; what `--upstream IP@PORT#AUTH-NAME` names.
AUTH_NAME = "dns.example.test"

# Written by ASan/UBSan/LSan: a sanitizer build exits 1 with one of these in
# the log, which must fail a test just as a plain SIGSEGV does.
_SANITIZER_RE = re.compile(
    r"ERROR: (AddressSanitizer|LeakSanitizer|MemorySanitizer|ThreadSanitizer)"
    r"|runtime error: |WARNING: ThreadSanitizer")

_STATS_RE = re.compile(r"(?:^|\s)stats:\s?(.*)$")


def binary_path():
    """$DOTPROXY, else <repo>/build/dotproxy."""
    return os.environ.get("DOTPROXY") or os.path.join(REPO_ROOT, "build", "dotproxy")


def check_binary(path):
    """Raise FileNotFoundError with a helpful message unless `path` is runnable."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"dotproxy binary not found at {path}: build it (make) or set DOTPROXY=/path/to/it")
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"dotproxy binary at {path} is not executable")


def upstream_arg(server, auth_name=AUTH_NAME):
    """Format `--upstream` for a FakeUpstream/UnboundDoT (anything with .host/.port).

    Strings pass through unchanged. auth_name=None leaves the name out, so
    the certificate must then carry the upstream's IP.
    """
    if isinstance(server, str):
        return server
    s = f"{server.host}@{server.port}"
    return s + (f"#{auth_name}" if auth_name else "")


def split_listen(listen):
    """ "127.0.0.1:53" -> ("127.0.0.1", 53); "[::1]:53" -> ("::1", 53)."""
    if listen.startswith("["):
        host, _, port = listen[1:].partition("]:")
    else:
        host, _, port = listen.rpartition(":")
    return host, int(port)


def run_cli(args, *, binary=None, timeout=5.0, **kw):
    """Run dotproxy to completion (for --help, bad-argument and start-up failure tests).

    Returns subprocess.CompletedProcess with text stdout/stderr.
    """
    binary = binary or binary_path()
    check_binary(binary)
    return subprocess.run([binary] + list(args), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, **kw)


class DotProxy:
    """One dotproxy child process listening on `listen` (first address used for probes)."""

    def __init__(self, args, *, workdir, listen, binary=None, env=None, name="dotproxy"):
        self.binary = binary or binary_path()
        self.args = list(args)
        self.listen = [listen] if isinstance(listen, str) else list(listen)
        self.addr, self.port = split_listen(self.listen[0])
        self.workdir = str(workdir)
        self.name = name
        self.log_file = os.path.join(self.workdir, name + ".log")
        self.stdout_file = os.path.join(self.workdir, name + ".stdout")
        self.env = env
        self.proc = None
        self.stopped_by_us = False  # SIGTERM came from stop(), so exit 0 is owed
        self.killed_after_timeout = False

    @property
    def argv(self):
        return [self.binary] + self.args

    def start(self, *, wait=True, timeout=5.0):
        """Start the process; with wait=True, return only once it serves (or raise)."""
        check_binary(self.binary)
        os.makedirs(self.workdir, exist_ok=True)
        with open(self.log_file, "wb") as err, open(self.stdout_file, "wb") as out:
            env = dict(os.environ, **(self.env or {}))
            self.proc = subprocess.Popen(procutil.die_with_parent(self.argv),
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env=env, cwd=self.workdir)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=5.0):
        """Wait until the TCP port accepts (or, failing that, UDP answers anything).

        TCP first because a bare connect sends nothing upstream: a UDP probe
        would be forwarded and show up in the upstream's query counts. The UDP
        probe is only a fallback after a second without TCP.
        """
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        alive = lambda: self.proc.poll() is None  # noqa: E731
        while True:
            if not alive():
                raise RuntimeError(
                    f"dotproxy exited with status {self.proc.returncode} during start-up\n"
                    f"command: {' '.join(self.argv)}\nlog:\n{self.log_tail()}")
            if netutil.wait_tcp(self.addr, self.port, timeout=0, alive=alive):
                return
            if (time.monotonic() - started > 1.0 and
                    netutil.wait_udp_dns(self.addr, self.port, timeout=0, alive=alive)):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"dotproxy did not start serving on {self.listen[0]} within {timeout} s\n"
                    f"command: {' '.join(self.argv)}\nlog:\n{self.log_tail()}")
            time.sleep(0.05)

    # -- observing ------------------------------------------------------------

    def log(self):
        """The stderr text so far."""
        try:
            with open(self.log_file, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=50):
        return "\n".join(self.log().splitlines()[-lines:])

    def log_offset(self):
        """A mark for log_since(): the current length of the log."""
        return len(self.log())

    def log_since(self, offset):
        return self.log()[offset:]

    def wait_log(self, pattern, timeout=2.0, since=0):
        """Wait for a regex to appear in the log (after `since`); return the match or None."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log(), since)
            if m or time.monotonic() >= deadline:
                return m
            time.sleep(0.02)

    @staticmethod
    def parse_stats(line):
        """'stats: a=1 b=2' -> {'a': 1, 'b': 2}; non-integer values stay strings."""
        m = _STATS_RE.search(line)
        out = {}
        for tok in (m.group(1) if m else line).split():
            k, eq, v = tok.partition("=")
            if not eq:
                continue
            try:
                out[k] = int(v)
            except ValueError:
                out[k] = v
        return out

    def stats_lines(self):
        return [ln for ln in self.log().splitlines() if _STATS_RE.search(ln)]

    def stats(self, timeout=2.0):
        """SIGUSR1, then parse the new last `stats:` line of stderr into a dict.

        Waits for a line that was not there before the signal (up to
        `timeout`) instead of a fixed sleep, so a slow machine does not read
        stale numbers and a fast one does not wait for nothing.
        """
        before = len(self.stats_lines())
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while True:
            lines = self.stats_lines()
            if len(lines) > before:
                # Give a line still being written a moment to be complete.
                time.sleep(0.02)
                return self.parse_stats(self.stats_lines()[-1])
            if self.proc.poll() is not None:
                raise AssertionError(f"dotproxy exited ({self.proc.returncode}) on SIGUSR1\n"
                                     f"{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"no 'stats:' line on stderr within {timeout} s of "
                                     f"SIGUSR1\n{self.log_tail()}")
            time.sleep(0.02)

    # -- querying ---------------------------------------------------------------

    def udp(self, name, rdtype="A", **kw):
        return netutil.udp_query(self.port, name, rdtype, host=self.addr, **kw)

    def tcp(self, name, rdtype="A", **kw):
        return netutil.tcp_query(self.port, name, rdtype, host=self.addr, **kw)

    # -- ending ---------------------------------------------------------------

    @property
    def returncode(self):
        return None if self.proc is None else self.proc.poll()

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=5.0, sig=signal.SIGTERM):
        """Send SIGTERM (or `sig`), wait up to `timeout`; return the exit status.

        If the process does not exit in time it is SIGKILLed and the return is
        -SIGKILL, which check_exit() reports as a failure.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.stopped_by_us = True
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
                self.killed_after_timeout = True
        return self.proc.returncode

    def problems(self):
        """Reasons this run counts as a failure regardless of the test's own asserts."""
        out = []
        rc = self.returncode
        if self.killed_after_timeout:
            out.append("did not exit within the timeout after SIGTERM and was killed")
        elif rc is not None and rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = str(-rc)
            out.append(f"died from signal {name}")
        elif self.stopped_by_us and rc not in (0, None):
            out.append(f"exit status {rc} after SIGTERM (the contract says 0)")
        m = _SANITIZER_RE.search(self.log())
        if m:
            out.append(f"sanitizer report in the log: {m.group(0).strip()!r}")
        return out

    def check_exit(self):
        """Raise AssertionError if the process crashed (signal, sanitizer) or stopped badly."""
        probs = self.problems()
        if probs:
            raise AssertionError(f"dotproxy ({' '.join(self.argv)}): " + "; ".join(probs)
                                 + f"\nlog tail:\n{self.log_tail()}")
