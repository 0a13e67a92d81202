#!/usr/bin/python3
"""`make bench`: dotproxy against its peers, on loopback, from scratch.

One command sets everything up in build/bench/ (a throwaway CA, a DoT
upstream answering a synthetic zone from memory, every proxy on its own
port), measures each proxy in alternation for ROUNDS rounds, and prints one
Markdown table of medians and ranges (also written to build/bench/results.md,
raw numbers to build/bench/results.json). bench/README.md explains the
method; this file is the method.

Nothing leaves the machine: every daemon listens and connects on 127.0.0.1,
the upstreams have no route to recurse (unbound: `local-zone: "." static`,
iterator only, every address on the do-not-query list; dnsdist: no backend
at all), and the proxies forward only to them.

A peer that is not installed or fails to start is reported as
"unavailable: why" and the run goes on; only a missing dnsperf, dotproxy or
upstream ends it. Every load is bounded in time, every process we start is
stopped by its PID (and gets SIGTERM from the kernel if this script dies).
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

# bench/serve.py does `import run`: when this file runs as a program it is
# __main__, and that import must find this module, not load a second copy
# (with its own list of started daemons).
if __name__ == "__main__":
    sys.modules.setdefault("run", sys.modules["__main__"])

import burst  # noqa: E402
import latency_probe  # noqa: E402
from netutil import free_port  # noqa: E402  (the integration tests' helpers)
from pki import PKI  # noqa: E402  (the integration tests' throwaway CA)
from procutil import cpu_seconds, tcp_nodelay  # noqa: E402
from unbound_dot import UnboundDoT  # noqa: E402  (the same private unbound)

AUTH_NAME = "dns.example.test"
# Not under .test/.invalid/.localhost: unbound and Knot Resolver answer
# those RFC 6761 names themselves (NXDOMAIN) instead of forwarding them.
ZONE = "bench.example."
ZONE_NAMES = 20000            # names in the synthetic zone (and in the query file)
LATENCY_RATE = 2000           # qps of the fixed-rate latency runs
# Throughput load: 10 UDP clients (source ports), at most 200 queries
# outstanding. 200 rather than dnsperf's usual 500: dnsperf opens with a burst
# of the whole window, and a listener with the kernel's default receive
# buffer (208 KiB, ~210 small datagrams) drops the excess before it has read
# a thing; those queries then hold their window slots until the 5 s timeout.
# Every proxy here reaches the same or a higher rate with 200 (measured).
THROUGHPUT_CLIENTS = 10
THROUGHPUT_OUTSTANDING = 200
WARMUP_SECONDS = 0.5
# --baseline: the row of the second dotproxy binary (an older commit).
BASELINE = "dotproxy (baseline)"
# --burst: BURST_COUNT UDP queries spread over BURST_WINDOW_MS (bench/burst.py)
# to each of these proxies (those that run), once per round, after the rounds.
BURST_COUNT = 20000
BURST_WINDOW_MS = 40
BURST_PEERS = ("dotproxy", BASELINE, "unbound")

START = time.monotonic()
CHILDREN = []                 # every Daemon we started, for the final cleanup


def log(msg):
    """Progress goes to stderr, with the time since start."""
    sys.stderr.write(f"[bench {time.monotonic() - START:6.1f}s] {msg}\n")
    sys.stderr.flush()


# ----------------------------------------------------------------------------
# Packages

# binary -> Debian package. dnsperf and one upstream are required; the rest
# are peers, skipped when missing.
PACKAGES = {
    "dnsperf": "dnsperf",
    "unbound": "unbound",
    "dnsdist": "dnsdist",
    "stubby": "stubby",
    "kresd": "knot-resolver",
}


def which(binary):
    return shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")


def ensure_packages(install):
    """Install missing packages with apt-get when root; never fail here."""
    missing = sorted({pkg for b, pkg in PACKAGES.items() if not which(b)})
    if not missing:
        return
    if not install:
        log(f"not installed: {' '.join(missing)} (--no-install given)")
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log(f"not installed: {' '.join(missing)}; to include them run: "
            f"sudo apt-get install -y {' '.join(missing)}")
        return
    log(f"installing with apt-get: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
    r = subprocess.run(cmd + missing, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=600)
    if r.returncode != 0:
        # Stale or absent package lists are the usual cause; then one by
        # one, so that one unavailable package does not cost the others.
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=600)
        for pkg in missing:
            r = subprocess.run(cmd + [pkg], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, timeout=600)
            if r.returncode != 0:
                log(f"apt-get could not install {pkg}: "
                    f"{r.stderr.decode(errors='replace').strip().splitlines()[-1:]}")


def tool_version(argv, pattern=r"(\d+\.\d+[\w.\-+]*)"):
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    m = re.search(pattern, r.stdout.decode(errors="replace"))
    return m.group(1) if m else "?"


# ----------------------------------------------------------------------------
# Processes, ports, tiny DNS clients

def make_query(name, qid=None):
    qid = secrets.randbelow(65536) if qid is None else qid
    return qid, (struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
                 + latency_probe.encode_name(name) + struct.pack("!HH", 1, 1))


def udp_query(port, name, timeout=0.5):
    """RCODE of one UDP query to 127.0.0.1:port, or None."""
    qid, q = make_query(name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(q, ("127.0.0.1", port))
            while True:
                data = s.recv(4096)
                if len(data) >= 12 and struct.unpack("!H", data[:2])[0] == qid:
                    return data[3] & 0x0F
        except OSError:
            return None


def dot_connect(port, ca_file, timeout=2.0):
    """An open, verified TLS connection to the DoT server at 127.0.0.1:port."""
    ctx = ssl.create_default_context(cafile=ca_file)
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=AUTH_NAME)
    except BaseException:
        raw.close()
        raise


def dot_query(conn, name):
    """RCODE of one query on an open DoT connection."""
    qid, q = make_query(name)
    conn.sendall(struct.pack("!H", len(q)) + q)
    buf = b""
    while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
        chunk = conn.recv(4096)
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf[5] & 0x0F


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return None


def machine_jiffies():
    """(process time, interrupt time, total) of the whole machine, /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]] + [0] * 8
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    return user + nice + system, irq + softirq, user + nice + system + idle + iowait + irq \
        + softirq + steal


class CpuMeter:
    """CPU used during one measurement, split by who used it.

    `pids`: processes of interest (proxy, upstream); this script and the
    children it waited for (dnsperf) are counted as ours too. What the
    machine spent in processes beyond that is someone else's load (other_pct,
    % of all CPUs): on a shared machine it is the first thing to look at when
    a number looks odd. Interrupt time (loopback packet processing in
    softirq, much of it ours) is reported apart (irq_pct).
    """

    def __init__(self, pids=()):
        self.pids = [p for p in pids if p]

    def __enter__(self):
        self.t0, self.j0 = os.times(), machine_jiffies()
        self.p0 = {p: cpu_seconds(p) for p in self.pids}
        return self

    def __exit__(self, *exc):
        t1, j1 = os.times(), machine_jiffies()
        self.pid_cpu = {p: cpu_seconds(p) - self.p0[p] for p in self.pids}
        self.self_cpu = sum(getattr(t1, f) - getattr(self.t0, f) for f in
                            ("user", "system", "children_user", "children_system"))
        hz = os.sysconf("SC_CLK_TCK")
        total = max(1, j1[2] - self.j0[2]) / hz
        procs = (j1[0] - self.j0[0]) / hz
        ours = self.self_cpu + sum(self.pid_cpu.values())
        self.busy_pct = 100.0 * (procs + (j1[1] - self.j0[1]) / hz) / total
        self.other_pct = 100.0 * max(0.0, procs - ours) / total
        self.irq_pct = 100.0 * (j1[1] - self.j0[1]) / hz / total
        return False


def udp_listener_drops(port):
    """Datagrams the kernel dropped at the UDP socket(s) bound to port (ss 'd')."""
    try:
        r = subprocess.run(["ss", "-uamnH", f"sport = :{port}"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.findall(r"\bd(\d+)\)", r.stdout.decode())
    return sum(int(x) for x in found) if found else None


class Daemon:
    """One process we started: argv, a log file, readiness, stop by PID."""

    def __init__(self, name, argv, workdir, env=None):
        self.name, self.argv, self.workdir = name, [str(a) for a in argv], workdir
        self.env = env
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.proc = None

    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        argv = self.argv
        if shutil.which("setpriv"):
            # The kernel sends SIGTERM if this script dies without cleaning
            # up; setpriv execs in place, so the PID is the daemon's.
            argv = ["setpriv", "--pdeathsig", "TERM", "--"] + argv
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     env=self.env)
        CHILDREN.append(self)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, check, timeout=10.0):
        """Poll check() until true; raise with the log tail if it never is."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"exited with status {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            try:
                if check():
                    return
            except (OSError, EOFError, ssl.SSLError) as e:
                last = e
            time.sleep(0.1)
        raise RuntimeError(f"not answering after {timeout:.0f} s"
                           f"{f' ({last})' if last else ''}: {self.log_tail()}")

    def log_tail(self, n=3):
        try:
            with open(self.log_path, errors="replace") as f:
                lines = [ln.strip() for ln in f if ln.strip()]
        except OSError:
            return ""
        return " | ".join(lines[-n:])[-400:]

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        self.proc = None


def stop_all():
    while CHILDREN:
        CHILDREN.pop().stop()


# ----------------------------------------------------------------------------
# TCP_NODELAY, read from the live sockets of another process

# tcp_nodelay() comes from tests/integration/procutil.py.


def nodelay_word(values):
    if not values:
        return "unknown"
    if all(values):
        return "set"
    if not any(values):
        return "not set"
    return f"set on {sum(values)} of {len(values)}"


# ----------------------------------------------------------------------------
# The synthetic zone and the upstreams

def zone_records(ttl=300):
    """ZONE_NAMES A records n0.bench.example. .. (documentation ranges only)."""
    for i in range(ZONE_NAMES):
        yield f"n{i}.{ZONE} {ttl} IN A 198.51.100.{1 + i % 254}" if i % 2 else \
              f"n{i}.{ZONE} {ttl} IN A 203.0.113.{1 + i % 254}"


def write_query_file(path, names=ZONE_NAMES):
    """dnsperf data file: n0 .. n(names-1), each once, in order."""
    with open(path, "w") as f:
        for i in range(names):
            f.write(f"n{i}.{ZONE.rstrip('.')} A\n")


class Upstream:
    """A DoT server on 127.0.0.1:port answering the synthetic zone."""
    name = "?"
    nodelay_expected = None

    def __init__(self, workdir, cert, key, ca_file, ttl=300):
        self.workdir, self.cert, self.key, self.ca_file = workdir, cert, key, ca_file
        self.ttl = ttl                # TTL of every answer of the synthetic zone
        self.port = free_port()
        self.daemon = None

    @property
    def udp_port(self):
        """Where it answers plain DNS over UDP (the cache-hit reference row)."""
        return self.port

    def ready(self):
        conn = dot_connect(self.port, self.ca_file, timeout=1.0)
        try:
            return dot_query(conn, "n1." + ZONE) == 0
        finally:
            conn.close()

    def start(self):
        self.daemon = Daemon(f"upstream-{self.name}", self.argv(), self.workdir).start()
        self.daemon.wait_ready(self.ready)
        return self

    def query_count(self):
        """Queries the upstream has received so far, if it can tell."""
        return None

    def measured_nodelay(self):
        """TCP_NODELAY on the upstream's side of a fresh DoT connection."""
        conn = dot_connect(self.port, self.ca_file)
        try:
            dot_query(conn, "n1." + ZONE)
            return nodelay_word(tcp_nodelay(self.daemon.pid, local_port=self.port,
                                            remote_port=conn.getsockname()[1]))
        finally:
            conn.close()


class UnboundUpstream(Upstream):
    """unbound 1.17 serving ZONE_NAMES local-data records.

    unbound 1.17.1 does not set TCP_NODELAY on DoT sockets: the only
    TCP_NODELAY in the binary is for DoH (`http-nodelay`); strace of an
    accepted DoT connection shows no setsockopt, and the listening socket
    gets only SO_REUSEADDR and TCP_FASTOPEN. tcp_nodelay() re-checks it live.
    """
    name = "unbound"

    def argv(self):
        # The integration tests' configuration (never recurses: local data
        # only), with the benchmark's zone.
        unbound = UnboundDoT(self.workdir, self.cert, self.key, port=self.port,
                             records=zone_records(self.ttl))
        conf = os.path.join(self.workdir, "upstream-unbound.conf")
        with open(conf, "w") as f:
            f.write(unbound.config_text())
        return [which("unbound"), "-d", "-c", conf]


class DnsdistUpstream(Upstream):
    """dnsdist as a DoT server that answers the zone itself, with no backend.

    A suffix rule spoofs one A record for every name under ZONE (a synthetic
    zone of any size, served from memory); anything else is REFUSED. With no
    newServer() there is nothing to forward to. dnsdist sets TCP_NODELAY on
    the connections it accepts (seen with strace; re-checked live).
    Its console counts the queries it answered: the harness uses that to
    check that no proxy answered from a cache.
    """
    name = "dnsdist"

    udp_port = None                   # a plain attribute here, not the property

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.udp_port = free_port()
        self.console_port = free_port()
        self.console_key = base64.b64encode(os.urandom(32)).decode()
        self.console_conf = os.path.join(self.workdir, "upstream-dnsdist-console.conf")

    def argv(self):
        conf = os.path.join(self.workdir, "upstream-dnsdist.conf")
        console = (f'controlSocket("127.0.0.1:{self.console_port}")\n'
                   f'setKey("{self.console_key}")\n')
        with open(self.console_conf, "w") as f:
            f.write(console)
        with open(conf, "w") as f:
            f.write(
                # dnsdist's security poll is a DNS query to the internet.
                'setSecurityPollSuffix("")\n'
                f'setLocal("127.0.0.1:{self.udp_port}")\n'
                f'addTLSLocal("127.0.0.1:{self.port}", "{self.cert}", "{self.key}", '
                '{provider="openssl"})\n'
                f'addAction(makeRule("{ZONE}"), SpoofAction({{"192.0.2.53"}}, {{ttl={self.ttl}}}))\n'
                "addAction(AllRule(), RCodeAction(DNSRCode.REFUSED))\n"
                + console)
        return [which("dnsdist"), "--supervised", "--disable-syslog", "-C", conf]

    def query_count(self):
        try:
            r = subprocess.run([which("dnsdist"), "-C", self.console_conf, "-c", "-e",
                                'getStatisticsCounters()["queries"]'],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=5)
            return int(r.stdout.split()[-1])
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None


UPSTREAMS = {"unbound": UnboundUpstream, "dnsdist": DnsdistUpstream}


# ----------------------------------------------------------------------------
# The proxies. Each verifies the upstream's certificate against the test CA
# by name, forwards everything over TLS, and has no cache (or none in use).
# Where a peer has a knob for workers it gets one, like dotproxy today.
# With cache=True (the cache-hit variant) each has its cache ON instead, at
# its usual size; a peer without a cache (has_cache False) is not run then.

class Proxy:
    name = "?"            # as the report shows it
    binary = None
    has_cache = True
    # Text added to the generated configuration (or argv for dotproxy): the
    # serving rows (bench/serve.py) add their DoT and DoH listeners here.
    # Empty for the main table.

    def extra_config(self):
        return ""

    @property
    def slug(self):
        """The name in file and directory names."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")

    def __init__(self, workdir, upstream, ca_file, dotproxy=None, cache=False):
        self.upstream = upstream
        self.ca_file = ca_file
        self.dotproxy = dotproxy
        self.cache = cache
        self.port = free_port()
        self.workdir = os.path.join(workdir, f"{self.slug}-via-{upstream.name}")
        self.daemon = None
        self.unavailable = None

    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        try:
            self.daemon = Daemon(self.slug, self.argv(), self.workdir).start()
            self.daemon.wait_ready(lambda: udp_query(self.port, "n0." + ZONE) == 0)
        except (RuntimeError, OSError) as e:
            self.unavailable = f"failed to start: {e}"
            if self.daemon:
                self.daemon.stop()
                if self.daemon in CHILDREN:
                    CHILDREN.remove(self.daemon)
            self.daemon = None
        return self

    @property
    def pid(self):
        return self.daemon.pid

    def write(self, filename, text):
        path = os.path.join(self.workdir, filename)
        with open(path, "w") as f:
            f.write(text)
        return path


class Dotproxy(Proxy):
    name = "dotproxy"
    workers = 1  # --dotproxy-workers

    def argv(self):
        argv = [self.dotproxy, "--listen", f"127.0.0.1:{self.port}",
                "--upstream", f"127.0.0.1@{self.upstream.port}#{AUTH_NAME}",
                "--ca-file", self.ca_file]
        if self.workers > 1:
            argv += ["--workers", self.workers]
        # Cache OFF, like every peer here -- unless this is the cache-hit
        # variant, which leaves the default (--cache-size 32M, prefetch on).
        if dotproxy_has_cache(self.dotproxy) and not self.cache:
            argv += ["--cache-size", "0"]
        return argv + self.extra_argv()

    def extra_argv(self):
        return []


class DotproxyBaseline(Dotproxy):
    """--baseline: another dotproxy binary (an older commit), run as one more
    peer with exactly the arguments, upstream and measurements of the main
    dotproxy row (Dotproxy.argv, given this binary instead)."""
    name = BASELINE


def dotproxy_has_cache(binary):
    """Whether this dotproxy has an answer cache (and so --cache-size)."""
    try:
        r = subprocess.run([binary, "--help"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"--cache-size" in r.stdout


def snapshot_dotproxy(binary, work, dest_name="dotproxy"):
    """Copy a dotproxy binary into the work directory (bin/DEST_NAME).

    The build tree may be rebuilt while the benchmark runs (a long run, other
    work in the same tree); every dotproxy of this run is the same file, and
    the report names it by commit and hash. The commit is that of the git
    tree the binary was found in (the baseline's is usually another
    worktree), "?" outside one.
    """
    os.makedirs(os.path.join(work, "bin"), exist_ok=True)
    dest = os.path.join(work, "bin", dest_name)
    shutil.copy2(binary, dest)
    with open(dest, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    try:
        r = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(binary)),
                            "describe", "--always", "--dirty"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10)
        rev = r.stdout.decode().strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        rev = "?"
    return dest, f"tree {rev}, binary sha256 {digest}"


def snapshot_binaries(args, peer_names, work, ctx):
    """Snapshot the dotproxy binaries of this run (dotproxy, and the
    baseline when given): {peer name: the copy it runs}; their commit and
    hash go to ctx["binary_id"]."""
    binaries, ctx["binary_id"] = {}, {}
    for name, attr, dest in (("dotproxy", "dotproxy", "dotproxy"),
                             (BASELINE, "baseline", "dotproxy-baseline")):
        if name in peer_names:
            path, ctx["binary_id"][name] = snapshot_dotproxy(getattr(args, attr), work, dest)
            setattr(args, attr, path)
            binaries[name] = path
    return binaries


class Stubby(Proxy):
    name = "stubby"
    binary = "stubby"
    has_cache = False

    def argv(self):
        conf = self.write("stubby.yml", f"""\
resolution_type: GETDNS_RESOLUTION_STUB
dns_transport_list:
  - GETDNS_TRANSPORT_TLS
tls_authentication: GETDNS_AUTHENTICATION_REQUIRED
tls_ca_file: "{self.ca_file}"
round_robin_upstreams: 0
listen_addresses:
  - 127.0.0.1@{self.port}
upstream_recursive_servers:
  - address_data: 127.0.0.1
    tls_port: {self.upstream.port}
    tls_auth_name: "{AUTH_NAME}"
""")
        return [which("stubby"), "-C", conf]


class UnboundForwarder(Proxy):
    name = "unbound"
    binary = "unbound"

    def argv(self):
        conf = self.write("unbound.conf", f"""\
server:
  verbosity: 1
  directory: "{self.workdir}"
  chroot: ""
  username: ""
  do-daemonize: no
  use-syslog: no
  pidfile: ""
  interface: 127.0.0.1@{self.port}
  port: {self.port}
  do-ip6: no
  so-reuseport: no
  access-control: 127.0.0.0/8 allow
  num-threads: 1
  module-config: "iterator"
  # The upstream is on loopback.
  do-not-query-localhost: no
  tls-cert-bundle: "{self.ca_file}"
{self.cache_settings()}
  prefetch: no
  serve-expired: no
  qname-minimisation: no
  minimal-responses: yes
{self.extra_config()}forward-zone:
  name: "."
  forward-tls-upstream: yes
  forward-addr: 127.0.0.1@{self.upstream.port}#{AUTH_NAME}
remote-control:
  control-enable: no
""")
        return [which("unbound"), "-d", "-c", conf]

    def cache_settings(self):
        if self.cache:
            # Cache ON: unbound's default sizes (msg 4m, rrset 4m) and TTL
            # limits, stated here so that the config says what was measured.
            return ("  # Cache ON at unbound's defaults.\n"
                    "  msg-cache-size: 4m\n"
                    "  rrset-cache-size: 4m\n"
                    "  cache-max-ttl: 86400")
        # No cache: unbound always has one, so make it useless. cache-max-ttl 0
        # expires every entry at once (answers go out with TTL 0); the sizes
        # are the minimum. The upstream's query counter confirms every query
        # is forwarded.
        return ("  msg-cache-size: 0\n"
                "  rrset-cache-size: 0\n"
                "  cache-max-ttl: 0\n"
                "  cache-max-negative-ttl: 0")


class DnsdistForwarder(Proxy):
    name = "dnsdist"
    binary = "dnsdist"

    def argv(self):
        # No packet cache is configured, so there is none -- unless this is
        # the cache-hit variant: then a packet cache for the default pool,
        # 100,000 entries (dnsdist's documented example size), default TTLs.
        cache = ('pc = newPacketCache(100000)\n'
                 'getPool(""):setCache(pc)\n') if self.cache else ""
        conf = self.write("dnsdist.conf", f"""\
setSecurityPollSuffix("")
setLocal("127.0.0.1:{self.port}")
newServer({{address="127.0.0.1:{self.upstream.port}", tls="openssl",
  subjectName="{AUTH_NAME}", caStore="{self.ca_file}", validateCertificates=true,
  checkName="n0.{ZONE}"}})
{cache}{self.extra_config()}""")
        return [which("dnsdist"), "--supervised", "--disable-syslog", "-C", conf]


class Kresd(Proxy):
    name = "kresd"
    binary = "kresd"

    def argv(self):
        cache_dir = os.path.join(self.workdir, "cache")
        os.makedirs(cache_dir, exist_ok=True)
        conf = self.write("kresd.conf", f"""\
-- Nothing but forwarding: no priming, no trust-anchor or time checks (each
-- would send queries of its own), no DNSSEC validation of the fake zone.
modules.unload('priming')
modules.unload('detect_time_skew')
modules.unload('detect_time_jump')
modules.unload('ta_signal_query')
modules.unload('ta_sentinel')
trust_anchors.remove('.')
-- kresd's default of 100 queries in flight per TCP/TLS connection makes it
-- SERVFAIL ~10% of queries at this load; dotproxy allows 4096 per connection.
net.tcp_pipeline(4096)
net.listen('127.0.0.1', {self.port}, {{ kind = 'dns' }})
{self.extra_config()}{self.cache_settings(cache_dir)}
policy.add(policy.all(policy.TLS_FORWARD({{
  {{'127.0.0.1@{self.upstream.port}', hostname='{AUTH_NAME}', ca_file='{self.ca_file}'}}
}})))
""")
        return [which("kresd"), "-n", "-c", conf, self.workdir]

    def cache_settings(self, cache_dir):
        if self.cache:
            # Cache ON, kresd's default size (100 MB), in our work directory.
            return f"cache.open(100 * MB, 'lmdb://{cache_dir}')"
        return ("-- The cache cannot be removed; NO_CACHE keeps every query away from it.\n"
                f"cache.open(10 * MB, 'lmdb://{cache_dir}')\n"
                "policy.add(policy.all(policy.FLAGS({'NO_CACHE'})))")


PEERS = {"dotproxy": Dotproxy, "stubby": Stubby, "unbound": UnboundForwarder,
         "dnsdist": DnsdistForwarder, "kresd": Kresd}
# Not a --peers choice: present when --baseline is given, right after dotproxy.
ALL_PEERS = dict(PEERS, **{BASELINE: DotproxyBaseline})


# ----------------------------------------------------------------------------
# Load

def parse_dnsperf(text):
    def num(pattern, cast=float):
        m = re.search(pattern, text)
        return cast(m.group(1)) if m else None

    rcodes = {}
    m = re.search(r"Response codes:\s+(.*)", text)
    if m:
        for name, count in re.findall(r"([A-Z0-9]+) (\d+) \(", m.group(1)):
            rcodes[name] = int(count)
    return {
        "sent": num(r"Queries sent:\s+(\d+)", int),
        "completed": num(r"Queries completed:\s+(\d+)", int),
        "lost": num(r"Queries lost:\s+(\d+)", int),
        "rcodes": rcodes,
        "runtime": num(r"Run time \(s\):\s+([\d.]+)"),
        "qps_dnsperf": num(r"Queries per second:\s+([\d.]+)"),
        "avg_latency_ms": (num(r"Average Latency \(s\):\s+([\d.]+)") or 0) * 1000,
        # DoT/DoH: connections dnsperf had to open again (0: long-lived).
        "reconnections": num(r"Reconnections:\s+(\d+)", int),
    }


def dnsperf(args, seconds, verbose=False):
    """Run dnsperf for `seconds` (bounded by a hard timeout); parsed output."""
    argv = [which("dnsperf")] + [str(a) for a in args] + ["-l", str(seconds)]
    if verbose:
        argv.append("-v")
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=seconds + 20)
    except subprocess.TimeoutExpired:
        return {"error": "dnsperf did not finish in time"}
    text = r.stdout.decode(errors="replace")
    out = parse_dnsperf(text)
    if out["sent"] is None:
        return {"error": f"dnsperf failed: {text.strip().splitlines()[-1:]}"}
    if verbose:
        # "> NOERROR n1.bench.example A 0.000085" per answer; "T" for a timeout.
        out["latencies_ms"] = sorted(float(m) * 1000 for m in
                                     re.findall(r"^> [A-Z0-9]+ \S+ \S+ ([\d.]+)$", text, re.M))
    return out


def throughput(port, queries, seconds, mode="udp", pid=None, upstream=None,
               clients=THROUGHPUT_CLIENTS, count=True, timeout=None, extra=()):
    """Maximum throughput through port: answered qps, failures, CPU of pid.
    timeout: dnsperf's per-query timeout in s (None: its default, 5);
    extra: more dnsperf arguments (DoH: its URI)."""
    args = ["-m", mode, "-s", "127.0.0.1", "-p", port, "-d", queries,
            "-c", clients, "-q", THROUGHPUT_OUTSTANDING] + list(extra)
    if timeout:
        args += ["-t", timeout]
    drops0 = udp_listener_drops(port) if mode == "udp" else None
    upq0 = upstream.query_count() if upstream and count else None
    up_pid = upstream.daemon.pid if upstream else None
    sample = {}
    if pid and upstream:
        # Halfway through, how many TLS connections the proxy has open to
        # the upstream, and whether they have TCP_NODELAY.
        timer = threading.Timer(seconds / 2, lambda: sample.update(
            nodelay=tcp_nodelay(pid, remote_port=upstream.port)))
        timer.start()
    with CpuMeter([pid, up_pid]) as m:
        r = dnsperf(args, seconds)
    if pid and upstream:
        timer.cancel()
        timer.join()
        if "nodelay" in sample:
            r["upstream_connections"] = len(sample["nodelay"])
            r["upstream_nodelay"] = nodelay_word(sample["nodelay"])
    if "error" in r:
        return r
    answered = r["rcodes"].get("NOERROR", 0)
    r["answered"] = answered
    r["qps"] = answered / r["runtime"] if r["runtime"] else 0.0
    # Everything that did not come back NOERROR is a failure: lost, SERVFAIL,
    # and any other RCODE (every name queried exists).
    r["fail_pct"] = 100.0 * (r["sent"] - answered) / r["sent"] if r["sent"] else None
    r["machine_busy_pct"], r["other_pct"], r["irq_pct"] = m.busy_pct, m.other_pct, m.irq_pct
    r["dnsperf_cpu_s"] = m.self_cpu
    if up_pid:
        r["upstream_cpu_s"] = m.pid_cpu[up_pid]
    if pid:
        r["cpu_s"] = m.pid_cpu[pid]
        r["cpu_per_100k"] = r["cpu_s"] / answered * 1e5 if answered else None
    if drops0 is not None:
        drops1 = udp_listener_drops(port)
        r["listener_drops"] = drops1 - drops0 if drops1 is not None else None
    if upq0 is not None:
        upq1 = upstream.query_count()
        # ~1.0 when every answer came from the upstream (no cache hits);
        # slightly more with health checks or retries; ~0 for cache hits.
        r["upstream_queries"] = upq1 - upq0 if upq1 is not None else None
        r["upstream_per_answer"] = (upq1 - upq0) / answered \
            if upq1 is not None and answered else None
    return r


def latency(port, queries_path, seconds, rate=LATENCY_RATE, pids=()):
    """Per-query latency over UDP at a fixed rate (bench/latency_probe.py)."""
    questions = latency_probe.load_questions(queries_path)
    with CpuMeter(pids) as m:
        r = latency_probe.run("127.0.0.1", port, rate, seconds, questions)
    r["other_pct"] = m.other_pct
    return r


def run_bursts(ctx, names, queries, rounds, upstream):
    """The burst table: per round (order rotated, like the main rounds), for
    each proxy: the light warm-up load (its upstream connection open, as
    before every measurement), then bench/burst.py. {name: [result, ...]}."""
    out = {n: [] for n in names}
    for rnd in range(rounds):
        for name, p in round_order(names, rnd, ctx["main"],
                                   f"burst {rnd + 1}/{rounds}: {BURST_COUNT} UDP queries in "
                                   f"{BURST_WINDOW_MS} ms,"):
            warmup(p.port, queries)
            with CpuMeter([p.pid, upstream.daemon.pid]) as m:
                r = burst.run("127.0.0.1", p.port, BURST_COUNT, BURST_WINDOW_MS)
            r["round"], r["other_pct"] = rnd, m.other_pct
            r["cpu_s"] = m.pid_cpu[p.pid]
            out[name].append(r)
            log(f"  {name}: " + burst.summary(r))
            if not p.daemon.alive():
                log(f"  {name} exited during the burst: {p.daemon.log_tail()}")
    return out


def warmup(port, queries_path):
    """A short, light load: (re)opens the proxy's upstream connection, so
    that a connection closed for idleness between rounds is not measured."""
    latency(port, queries_path, WARMUP_SECONDS, rate=1000)


def latency_direct_tls(port, queries, seconds):
    """Latency straight to the upstream over one TLS connection (dnsperf -v)."""
    r = dnsperf(["-m", "dot", "-s", "127.0.0.1", "-p", port, "-d", queries,
                 "-c", 1, "-Q", LATENCY_RATE], seconds, verbose=True)
    if "error" in r:
        return r
    ms = r.pop("latencies_ms")
    if not ms:
        return {"error": "no answers"}
    return {"sent": r["sent"], "answered": len(ms),
            "p50_ms": round(latency_probe.percentile(ms, 50), 4),
            "p99_ms": round(latency_probe.percentile(ms, 99), 4),
            "avg_ms": round(sum(ms) / len(ms), 4), "max_ms": round(ms[-1], 4)}


# ----------------------------------------------------------------------------
# Report

def fmt(v, kind):
    if v is None:
        return "–"
    if kind == "qps":
        return f"{v / 1000:.1f}k"
    if kind == "pct":
        return f"{v:.0f}" if v >= 10 else f"{v:.1f}"
    if kind == "fail":
        return f"{v:.2f}"
    if kind == "ms":
        return f"{v:.2f}" if v < 10 else f"{v:.1f}"
    if kind == "ms3":  # cache hits: tens of microseconds
        return f"{v:.3f}" if v < 1 else fmt(v, "ms")
    if kind == "raw":
        return f"{v:.0f}"
    if kind in ("pct1", "ratio"):
        return f"{v:.1f}" if kind == "pct1" else f"{v:.2f}"
    if kind in ("cpu", "mib"):
        return f"{v:.2f}" if v < 10 else f"{v:.1f}"
    return str(v)


def proxy_row(name, rs, ref_rounds, ms_kind, *extra):
    """One proxy's Markdown row over its rounds @rs: qps, % of the reference
    run of the same round, fail %, CPU-s/100k, peak RSS, p50/p99/avg latency
    (formatted as @ms_kind), then any @extra cells."""
    pct = []
    for r in rs:
        lim = get(ref_rounds[r["round"]], "thr", "qps") if r["round"] < len(ref_rounds) else None
        q = get(r, "thr", "qps")
        pct.append(100.0 * q / lim if q is not None and lim else None)
    cells = [name, cell([get(r, "thr", "qps") for r in rs], "qps"), cell(pct, "pct"),
             cell([get(r, "thr", "fail_pct") for r in rs], "fail"),
             cell([get(r, "thr", "cpu_per_100k") for r in rs], "cpu"),
             cell([r.get("rss_mib") for r in rs], "mib")]
    cells += [cell([get(r, "lat", k) for r in rs], ms_kind) for k in ("p50_ms", "p99_ms", "avg_ms")]
    return "| " + " | ".join(cells + list(extra)) + " |"


def baseline_line(proxies):
    """dotproxy over the baseline, round by round (both measured in the same
    round, so the ratio cancels what the round shared): one Markdown line,
    or None without both rows."""
    new = {r["round"]: r for r in proxies.get("dotproxy", [])}
    old = {r["round"]: r for r in proxies.get(BASELINE, [])}
    rounds = sorted(set(new) & set(old))
    if not rounds:
        return None

    def ratio(*keys):
        vals = []
        for n in rounds:
            a, b = get(new[n], *keys), get(old[n], *keys)
            vals.append(a / b if a is not None and b else None)
        return cell(vals, "ratio")

    return ("dotproxy ÷ baseline, same round (median, min–max over rounds; below 1 is "
            f"less): qps {ratio('thr', 'qps')}, CPU-s/100k {ratio('thr', 'cpu_per_100k')}, "
            f"p50 {ratio('lat', 'p50_ms')}, p99 {ratio('lat', 'p99_ms')}, "
            f"peak RSS {ratio('rss_mib')}.")


def render_burst(ctx, bursts):
    """The burst table (--burst), as Markdown lines."""
    if not bursts:
        return []
    up = ctx["upstream"]
    rs_all = [r for rs in bursts.values() for r in rs]
    bpq = burst.bytes_per_query()
    lines = [f"### Burst: {BURST_COUNT:,} UDP queries in {BURST_WINDOW_MS} ms", ""]
    lines.append(
        f"`bench/burst.py`: {BURST_COUNT:,} queries (n0 … n{BURST_COUNT - 1}, one ID each) "
        f"spread evenly over {BURST_WINDOW_MS} ms from 4 UDP sockets "
        f"({'/'.join(sorted({r['method'] for r in rs_all}))}; actual send time "
        f"{cell([r['send_ms'] for r in rs_all], 'ms')} ms), then answers collected until "
        f"2 s pass without one (10 s at most); once per round, after the other measurements "
        f"of all rounds, each proxy "
        f"forwarding to {up.name} over DoT with its cache off, after the same light warm-up "
        f"load. Listener buffer: the receive buffer of the proxy's UDP socket(s) (`ss -ulmn` "
        f"skmem rb; net.core.rmem_default is {burst.sysctl('net.core.rmem_default')}, "
        f"rmem_max {burst.sysctl('net.core.rmem_max')}); on this kernel a queued query "
        f"costs {bpq or '?'} bytes of it (its skb), so it holds about the number of queries "
        f"shown. Drops: datagrams the kernel dropped at that socket during the burst (buffer "
        f"full). Cells: median (min–max) over rounds.")
    lines.append("")
    lines.append("| proxy | answered % | NOERROR | SERVFAIL | listener buffer bytes (queries) "
                 "| listener drops | last answer ms | proxy CPU-s |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for name, rs in bursts.items():
        if not rs:
            lines.append(f"| {name} | not run " + "| " * 6 + "|")
            continue
        rbs = sorted({x for r in rs for x in (r.get("listener_rcvbuf") or [])})
        socks = max(len(r.get("listener_rcvbuf") or []) for r in rs)
        rb = "/".join(str(x) for x in rbs) or "?"
        if rbs and bpq:
            rb += f" ({'/'.join(f'~{x // bpq:,}' for x in rbs)})"
        if socks > 1:
            rb += f", {socks} sockets"
        lines.append(f"| {name} | {cell([r['answered_pct'] for r in rs], 'pct1')} | "
                     f"{cell([r['noerror'] for r in rs], 'raw')} | "
                     f"{cell([r['servfail'] for r in rs], 'raw')} | {rb} | "
                     f"{cell([r['listener_drops'] for r in rs], 'raw')} | "
                     f"{cell([r['last_answer_ms'] for r in rs], 'raw')} | "
                     f"{cell([r.get('cpu_s') for r in rs], 'ms')} |")
    lines.append("")
    notes = []
    other = [r.get("other_pct") for r in rs_all]
    notes.append(f"other processes during the bursts {cell(other, 'pct')}% of the machine")
    rate = [r.get("send_rate_qps") for r in rs_all]
    notes.append(f"send rate {cell(rate, 'qps')} q/s")
    own = [r.get("client_drops") for r in rs_all]
    if any(own):
        notes.append(f"answers dropped at the probe's own sockets {cell(own, 'raw')} "
                     f"(the figures above are then too low)")
    sn = [r.get("softnet_drops") for r in rs_all]
    if any(sn):
        notes.append(f"loopback backlog drops (softnet_stat) {cell(sn, 'raw')}")
    other_rc = sorted({k for r in rs_all for k in r["rcodes"]} - {"NOERROR", "SERVFAIL"})
    if other_rc:
        notes.append("other RCODEs: " + ", ".join(other_rc))
    lines.append("Burst details: " + "; ".join(notes) + ".")
    lines.append("")
    return lines


def cell(values, kind):
    """Median, and the min–max range when there is more than one value."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    med = fmt(statistics.median(values), kind)
    if len(values) == 1:
        return med
    lo, hi = fmt(min(values), kind), fmt(max(values), kind)
    return med if lo == hi else f"{med} ({lo}–{hi})"


def machine_line():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {model}, Linux {os.uname().release}"


def command_line(args):
    if os.environ.get("MAKELEVEL"):
        return (f"make bench ROUNDS={args.rounds} BENCH_SECONDS={args.seconds:g}"
                + (" BENCH_CACHE_HIT=1" if args.cache_hit else "")
                + (f" BENCH_WORKERS={args.dotproxy_workers}"
                   if args.dotproxy_workers > 1 else "")
                + (" BENCH_BURST=0" if not args.burst and not args.cache_hit else "")
                + ({"none": " BENCH_SERVE=0", "all": ""}.get(args.serve, f" BENCH_SERVE={args.serve}")
                   if not args.cache_hit else "")
                + (" BENCH_UPSTREAM_TRANSPORT=0"
                   if not args.upstream_transport and not args.cache_hit else "")
                + (f" (with --baseline {args.baseline_src})" if args.baseline_src else ""))
    return " ".join(["bench/run.py"] + sys.argv[1:])


def report_head(args, subtitle, elapsed, what=None):
    """The first lines of a report: the title (`## dotproxy benchmark`, then
    @subtitle, e.g. ": cache hits") with the date, then the machine, the
    command line, @what was run (default: the rounds and the seconds per
    measurement) and the @elapsed seconds."""
    what = what or f"({args.rounds} rounds, {args.seconds:g} s per measurement, "
    return [f"## dotproxy benchmark{subtitle} "
            f"({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
            f"Machine: {machine_line()}. Command: `{command_line(args)}` "
            f"{what}{elapsed / 60:.1f} min in all).", ""]


def write_report(md, text, save_json, append=False):
    """The end of a run: @text written to @md (or appended, after a blank
    line if @md exists), save_json() for the numbers, @text printed, and how
    long it all took."""
    appended = append and os.path.exists(md)
    with open(md, "a" if append else "w") as f:
        f.write(("\n" if appended else "") + text)
    save_json()
    sys.stdout.write(text)
    log(f"done in {(time.monotonic() - START) / 60:.1f} min; "
        f"{'appended to' if appended else 'written to'} {os.path.relpath(md, ROOT)}")


def write_table_report(args, work, subtitle, body, peer_names, binary_id, save_json):
    """The report of a run of one table alone (--serve-only,
    --upstream-transport-only): report_head(), @body, the versions of
    dnsperf and @peer_names (@binary_id: the binaries' identities), into
    WORKDIR/results.md; save_json(versions) for the numbers."""
    versions = bench_versions(args, peer_names)
    text = "\n".join(report_head(args, subtitle, time.monotonic() - START) + body
                     + [versions_line({"versions": versions, "binary_id": binary_id})]) + "\n"
    write_report(os.path.join(work, "results.md"), text, lambda: save_json(versions))


def part_if_known(parts, label, values, kind, suffix=""):
    """One part of a report's diagnostics line: @label, the cell of
    @values (one per round, formatted as @kind) and @suffix, added to
    @parts when any of the values is known."""
    if any(v is not None for v in values):
        parts.append(f"{label} {cell(values, kind)}{suffix}")


def round_order(names, rnd, procs, heading):
    """One round over @names (keys of @procs): every one once, the order
    rotated by the round number @rnd so that none always runs first (or
    right after what ends a round), logged after @heading.  Yields (name,
    proc) for each whose daemon still runs; the others are logged as
    skipped."""
    order = names[rnd % len(names):] + names[:rnd % len(names)] if names else []
    log(f"{heading} order {', '.join(order)}")
    for name in order:
        p = procs[name]
        if not p.daemon or not p.daemon.alive():
            log(f"  {name} is no longer running: skipped")
            continue
        yield name, p


def get(run, *keys):
    for k in keys:
        if not isinstance(run, dict) or k not in run:
            return None
        run = run[k]
    return run


def render_footer(ctx):
    lines = []
    unavailable = [f"{n}: {ctx['main'][n].unavailable}" for n in ctx["peer_names"]
                   if ctx["main"][n].unavailable]
    if unavailable:
        lines.append("Unavailable: " + "; ".join(unavailable))
        lines.append("")
    lines.append(versions_line(ctx))
    lines.append("")
    lines.append(f"Load average when the run started: {' '.join(ctx['loadavg'])}"
                 " (anything else running shares the same CPUs).")
    return lines


def render(args, ctx, results, elapsed, serve_lines=()):
    up = ctx["upstream"]
    limit_rounds = results["limit"]
    lines = report_head(args, "", elapsed,
                        f"({args.rounds} rounds of bursts only, " if args.burst_only else None)
    if args.burst_only:
        lines += render_burst(ctx, results.get("burst")) + render_footer(ctx)
        return "\n".join(lines) + "\n"
    lines.append(f"Upstream: {up.name} over DoT on loopback, {ZONE_NAMES} names "
                 f"(TCP_NODELAY: {ctx['upstream_nodelay'][up.name]}). "
                 f"Throughput: `dnsperf -c {THROUGHPUT_CLIENTS} -q {THROUGHPUT_OUTSTANDING} "
                 f"-l {args.seconds:g}` over UDP; latency: {LATENCY_RATE} qps over UDP "
                 f"(bench/latency_probe.py); limit: the same dnsperf load with `-m dot` "
                 f"straight to the upstream (latency: `dnsperf -m dot -c 1 -Q {LATENCY_RATE} -v`). "
                 f"Cells: median (min–max) over rounds.")
    lines.append("")
    lines.append("| proxy | qps | % of limit | fail % | CPU-s/100k | peak RSS MiB | p50 ms | p99 ms | avg ms |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    lines.append("| limit: dnsperf -m dot → upstream | "
                 f"{cell([get(r, 'thr', 'qps') for r in limit_rounds], 'qps')} | 100 | "
                 f"{cell([get(r, 'thr', 'fail_pct') for r in limit_rounds], 'fail')} | – | – | "
                 f"{cell([get(r, 'lat', 'p50_ms') for r in limit_rounds], 'ms')} | "
                 f"{cell([get(r, 'lat', 'p99_ms') for r in limit_rounds], 'ms')} | "
                 f"{cell([get(r, 'lat', 'avg_ms') for r in limit_rounds], 'ms')} |")
    for name in ctx["peer_names"]:
        p = ctx["main"][name]
        if p.unavailable:
            lines.append(f"| {name} | unavailable: {p.unavailable[:160]} "
                         + "| " * 7 + "|")
            continue
        rs = results["proxies"].get(name, [])
        lines.append(proxy_row(name, rs, limit_rounds, "ms"))
    lines.append("")
    bl = baseline_line(results["proxies"])
    if bl:
        lines += [bl, ""]

    # Sanity and diagnostics, one line per proxy.
    diag = []
    for name in ctx["peer_names"]:
        rs = results["proxies"].get(name, [])
        if not rs:
            continue
        parts = []
        upa = [get(r, "thr", "upstream_per_answer") for r in rs]
        part_if_known(parts, "upstream queries per answer", upa, "cpu")
        drops = [get(r, "thr", "listener_drops") for r in rs]
        part_if_known(parts, "UDP drops at its listening socket", drops, "raw")
        busy = [get(r, "thr", "machine_busy_pct") for r in rs]
        other = [get(r, "thr", "other_pct") for r in rs]
        parts.append(f"machine CPU busy {cell(busy, 'pct')}%, of which other "
                     f"processes {cell(other, 'pct')}%")
        other = [get(r, "lat", "other_pct") for r in rs]
        parts.append(f"other processes during latency runs {cell(other, 'pct')}%")
        lag = [get(r, "lat", "max_send_lag_ms") for r in rs]
        parts.append(f"probe max send lag {cell(lag, 'ms')} ms")
        conns = [get(r, "thr", "upstream_connections") for r in rs]
        part_if_known(parts, "TLS connections to the upstream under load", conns, "raw")
        nd = sorted({get(r, "thr", "upstream_nodelay") for r in rs} - {None})
        if nd:
            parts.append(f"TCP_NODELAY on them: {', '.join(nd)}")
        diag.append(f"- {name}: " + "; ".join(parts))
    busy = [get(r, "thr", "machine_busy_pct") for r in limit_rounds]
    other = [get(r, "thr", "other_pct") for r in limit_rounds]
    diag.append(f"- limit run: machine CPU busy {cell(busy, 'pct')}%, of which other "
                f"processes {cell(other, 'pct')}%")
    lines.append("Details (throughput runs unless noted):")
    lines += diag
    lines.append("")

    if ctx["alt"]:
        alt = ctx["alt_upstream"]
        cols = [alt, up] if alt.name == "unbound" else [up, alt]
        lines.append(f"### Latency at {LATENCY_RATE} qps vs upstream")
        lines.append("")
        lines.append("p50 / p99 / avg ms, median over rounds. TCP_NODELAY on the upstream's "
                     "side, read from its live socket in this run: " +
                     ", ".join(f"{u.name}: {ctx['upstream_nodelay'][u.name]}" for u in cols) + ".")
        lines.append("")
        lines.append("| proxy | " + " | ".join(
            f"via {u.name} (NODELAY {ctx['upstream_nodelay'][u.name]})" for u in cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for name in ctx["peer_names"]:
            if ctx["main"][name].unavailable:
                continue
            row = []
            for u in cols:
                if u is up:
                    rs = [r["lat"] for r in results["proxies"].get(name, []) if "lat" in r]
                else:
                    if ctx["alt"][name].unavailable:
                        row.append("unavailable")
                        continue
                    rs = results["nodelay"].get(name, [])
                vals = [cell([get(r, k) for r in rs], "ms") for k in ("p50_ms", "p99_ms", "avg_ms")]
                row.append(" / ".join(v.split(" ")[0] for v in vals))
            lines.append(f"| {name} | " + " | ".join(row) + " |")
        lines.append("")

    lines += render_burst(ctx, results.get("burst"))
    lines += list(serve_lines)
    lines += render_footer(ctx)
    lines.append("")
    lines.append(f"Bottleneck check (dnsperf -m dot -q {THROUGHPUT_OUTSTANDING} straight to each "
                 f"upstream, before the rounds): " + "; ".join(ctx["bottleneck"])
                 + f". Main table upstream: {up.name}.")
    return "\n".join(lines) + "\n"


def versions_line(ctx):
    ids = "; ".join(f"{k}: {v}" for k, v in ctx.get("binary_id", {}).items())
    return ("Versions: " + ", ".join(f"{k} {v}" for k, v in ctx["versions"].items())
            + (f" ({ids})" if ids else ""))


def bench_versions(args, peer_names):
    """dnsperf's version, then those of @peer_names (peer_versions())."""
    versions = {"dnsperf": tool_version([which("dnsperf"), "-h"], r"Version (\S+)")}
    versions.update(peer_versions(args, peer_names))
    return versions


def peer_versions(args, peer_names):
    vers = {"dotproxy": ([args.dotproxy, "--version"], None),
            BASELINE: ([args.baseline or "", "--version"], None),
            "stubby": (["stubby", "-V"], None), "unbound": (["unbound", "-V"], r"Version (\S+)"),
            "dnsdist": (["dnsdist", "--version"], r"dnsdist (\S+)"),
            "kresd": (["kresd", "--version"], r"version (\S+)")}
    out = {}
    for name in peer_names:
        argv, pat = vers[name]
        if which(argv[0]) or os.path.isabs(argv[0]):
            out[name] = tool_version(argv, pat) if pat else tool_version(argv)
    return out


# ----------------------------------------------------------------------------
# The cache-hit variant (--cache-hit, BENCH_CACHE_HIT=1)
#
# Every proxy with its cache ON at its usual size, the caches warmed by whole
# passes over a hot set of names, then the same loads as the main table. The
# upstream's query counter is read around every measurement: upstream queries
# per answer should be ~0 (every answer from the cache). The reference row is
# the same load straight to the upstream over plain UDP: a server answering
# from memory with no proxy, no TLS and no cache lookup in between.

CACHE_NAMES = 10000   # the hot set, n0 .. n9999: fits every cache here many times over
CACHE_TTL = 86400     # TTL of the upstream's answers: nothing expires, and nothing
                      # is near enough expiry to be prefetched, however long the run
WARM_PASSES = 3       # at most this many passes over the hot set per proxy
# dnsperf's timeout in this variant: 2 s, the latency probe's. A cache hit
# takes well under a millisecond; dnsperf waits out the timeout at the end of
# a run for every lost query, and 5 s of that per run would cost ~1 min.
CACHE_DNSPERF_TIMEOUT = 2
BACKGROUND_SECONDS = 3  # idle time over which the upstream's background rate is read


def warm_cache(port, queries, upstream, names):
    """Fill a proxy's cache: whole passes over the query set (dnsperf -n 1),
    until a pass reaches the upstream (almost) never. Returns the passes."""
    quiet = max(10, names // 1000)   # dnsdist's health checks, a stray retry
    passes = []
    for _ in range(WARM_PASSES):
        q0 = upstream.query_count()
        r = dnsperf(["-m", "udp", "-s", "127.0.0.1", "-p", port, "-d", queries,
                     "-c", 1, "-q", 100, "-n", 1], 60)
        q1 = upstream.query_count()
        rec = {"sent": r.get("sent"), "answered": get(r, "rcodes", "NOERROR"),
               "upstream_queries": q1 - q0 if q0 is not None and q1 is not None else None}
        if "error" in r:
            rec["error"] = r["error"]
        passes.append(rec)
        if rec["upstream_queries"] is None:
            if len(passes) >= 2:    # cannot tell: two passes and hope
                break
        elif rec["upstream_queries"] <= quiet and rec["answered"] == names:
            break
    return passes


def measure_cached(p, up, queries, seconds):
    """Latency, then throughput, through proxy p; upstream queries around each."""
    q0 = up.query_count()
    lat = latency(p.port, queries, seconds, pids=[p.pid, up.daemon.pid])
    q1 = up.query_count()
    if q0 is not None and q1 is not None:
        lat["upstream_queries"] = q1 - q0
        lat["upstream_per_answer"] = (q1 - q0) / lat["answered"] if lat["answered"] else None
    thr = throughput(p.port, queries, seconds, pid=p.pid, upstream=up,
                     timeout=CACHE_DNSPERF_TIMEOUT)
    return lat, thr


def main_cache_hit(args, peer_names):
    base = os.path.abspath(args.workdir)
    work = os.path.join(base, "cache-hit")
    if os.path.isdir(work):
        shutil.rmtree(work)
    os.makedirs(work)
    t0 = time.monotonic()
    ctx = {"peer_names": peer_names, "main": {}, "warm": {}, "versions": {},
           "loadavg": open("/proc/loadavg").read().split()[:3]}

    log(f"cache-hit variant, in {work}: CA, certificate for {AUTH_NAME} / 127.0.0.1, "
        f"hot set of {CACHE_NAMES} names, TTL {CACHE_TTL}")
    pki = PKI(os.path.join(work, "pki"), name="dotproxy bench CA")
    cert, key = pki.leaf("server", dns_names=[AUTH_NAME], ip_addresses=["127.0.0.1"])
    ca = pki.ca_file
    queries = os.path.join(work, "queries-hot.txt")
    write_query_file(queries, CACHE_NAMES)
    binaries = snapshot_binaries(args, peer_names, work, ctx)
    for name in binaries:
        log(f"{name} under test: {ctx['binary_id'][name]}; its cache on (default --cache-size)")

    # One upstream. dnsdist by default (and for auto): it counts the queries
    # it answers, which is how a cache hit is told from a miss here.
    want = "dnsdist" if args.upstream == "auto" else args.upstream
    order = [want] + [n for n in UPSTREAMS if n != want]
    if args.upstream == "unbound":
        order = ["unbound"]
    up, why = None, []
    for name in order:
        if not which(name):
            why.append(f"{name}: not installed")
            continue
        try:
            up = UPSTREAMS[name](work, cert, key, ca, ttl=CACHE_TTL).start()
            break
        except (RuntimeError, OSError) as e:
            why.append(f"{name}: failed to start: {e}")
    if up is None:
        log("no upstream could be started: " + "; ".join(why))
        stop_all()
        return 1
    ctx["upstream"] = up
    if up.query_count() is None:
        log(f"  {up.name} cannot count its queries: upstream queries per answer not measured")

    for name in peer_names:
        cls = ALL_PEERS[name]
        p = cls(work, up, ca, dotproxy=binaries.get(name), cache=True)
        if not cls.has_cache:
            p.unavailable = "has no cache"
        elif cls.binary and not which(cls.binary):
            p.unavailable = f"{PACKAGES[cls.binary]} not installed"
        else:
            log(f"starting {name} → {up.name} on 127.0.0.1:{p.port}, cache on")
            p.start()
        if p.unavailable:
            log(f"  {name} not run: {p.unavailable}")
        ctx["main"][name] = p
    ctx["versions"] = bench_versions(args, peer_names)

    live = [n for n in peer_names if not ctx["main"][n].unavailable]
    for name in live:
        p = ctx["main"][name]
        passes = warm_cache(p.port, queries, up, CACHE_NAMES)
        ctx["warm"][name] = passes
        log(f"  warmed {name}: " + ", ".join(
            f"pass {i + 1}: {w['answered']}/{w['sent']} NOERROR, "
            f"{w['upstream_queries']} upstream queries" for i, w in enumerate(passes)))

    # What the upstream gets with no load at all (dnsdist as a peer sends a
    # health check every second; the others should send nothing): counted
    # in every proxy's upstream queries, since they share the upstream.
    q0 = up.query_count()
    time.sleep(BACKGROUND_SECONDS)
    q1 = up.query_count()
    ctx["background_qps"] = (q1 - q0) / BACKGROUND_SECONDS \
        if q0 is not None and q1 is not None else None
    log(f"  background: {ctx['background_qps']} upstream queries/s with no load")

    results = {"reference": [], "proxies": {n: [] for n in live}}
    for rnd in range(args.rounds):
        for name, p in round_order(live, rnd, ctx["main"], f"round {rnd + 1}/{args.rounds}:"):
            lat, thr = measure_cached(p, up, queries, args.seconds)
            rec = {"round": rnd, "lat": lat, "thr": thr, "rss_mib": peak_rss_mib(p.pid)}
            results["proxies"][name].append(rec)
            log(f"  {name}: {get(thr, 'qps') or 0:,.0f} qps, fail {get(thr, 'fail_pct') or 0:.2f}%, "
                f"{get(thr, 'cpu_per_100k') or 0:.2f} CPU-s/100k, p50 {lat['p50_ms']} ms, "
                f"p99 {lat['p99_ms']} ms, upstream queries {get(lat, 'upstream_queries')} + "
                f"{get(thr, 'upstream_queries')}" + (f" [{thr['error']}]" if "error" in thr else ""))
        log(f"  reference: dnsperf over UDP straight to {up.name}")
        thr = throughput(up.udp_port, queries, args.seconds, pid=up.daemon.pid,
                         timeout=CACHE_DNSPERF_TIMEOUT)
        lat = latency(up.udp_port, queries, args.seconds, pids=[up.daemon.pid])
        results["reference"].append({"round": rnd, "thr": thr, "lat": lat})
        log(f"  reference: {get(thr, 'qps') or 0:,.0f} qps, p50 {get(lat, 'p50_ms')} ms")

    elapsed = time.monotonic() - t0
    stop_all()
    text = render_cache_hit(args, ctx, results, elapsed + (t0 - START))

    def save_json():
        with open(os.path.join(work, "results.json"), "w") as f:
            json.dump({"args": vars(args), "machine": machine_line(), "upstream": up.name,
                       "cache_names": CACHE_NAMES, "ttl": CACHE_TTL, "versions": ctx["versions"],
                       "binaries": ctx["binary_id"],
                       "warm": ctx["warm"],
                       "unavailable": {n: ctx["main"][n].unavailable for n in peer_names},
                       "results": results}, f, indent=1, default=str)
    write_report(os.path.join(base, "results.md"), text, save_json, append=True)
    return 0


def fmt_ratio(v):
    if v is None:
        return "–"
    if v == 0:
        return "0"
    return f"{v:.1e}" if v < 0.01 else f"{v:.2f}"


def cell_ratio(values):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    med = fmt_ratio(statistics.median(values))
    lo, hi = fmt_ratio(min(values)), fmt_ratio(max(values))
    return med if len(values) == 1 or lo == hi else f"{med} ({lo}–{hi})"


def render_cache_hit(args, ctx, results, elapsed):
    up = ctx["upstream"]
    ref = results["reference"]
    lines = report_head(args, ": cache hits", elapsed)
    lines.append(f"Every proxy with its cache on at its usual size, forwarding to {up.name} over "
                 f"DoT on loopback; hot set of {CACHE_NAMES:,} names (TTL {CACHE_TTL}), each cache "
                 f"warmed by whole passes over it before the rounds. Throughput: `dnsperf -c "
                 f"{THROUGHPUT_CLIENTS} -q {THROUGHPUT_OUTSTANDING} -l {args.seconds:g}` over UDP "
                 f"(the query file wraps around); latency: {LATENCY_RATE} qps over UDP "
                 f"(bench/latency_probe.py). Reference: the same loads straight to the upstream "
                 f"over plain UDP ({up.name} answering from memory: no proxy, no TLS, no cache); "
                 f"its CPU column is the upstream's. Upstream q/answer: queries the upstream "
                 f"received per NOERROR answer during the throughput run (0 = every answer from "
                 f"the cache; it includes the upstream's background of "
                 f"{fmt(ctx.get('background_qps'), 'cpu')} queries/s with no load at all, "
                 f"since every proxy shares it). dnsperf timeout {CACHE_DNSPERF_TIMEOUT} s. "
                 f"Cells: median (min–max) over rounds.")
    lines.append("")
    lines.append("| proxy | qps | % of reference | fail % | CPU-s/100k | peak RSS MiB | "
                 "p50 ms | p99 ms | avg ms | upstream q/answer |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    lines.append(f"| reference: dnsperf → {up.name} over UDP | "
                 f"{cell([get(r, 'thr', 'qps') for r in ref], 'qps')} | 100 | "
                 f"{cell([get(r, 'thr', 'fail_pct') for r in ref], 'fail')} | "
                 f"{cell([get(r, 'thr', 'cpu_per_100k') for r in ref], 'cpu')} | – | "
                 f"{cell([get(r, 'lat', 'p50_ms') for r in ref], 'ms3')} | "
                 f"{cell([get(r, 'lat', 'p99_ms') for r in ref], 'ms3')} | "
                 f"{cell([get(r, 'lat', 'avg_ms') for r in ref], 'ms3')} | – |")
    for name in ctx["peer_names"]:
        p = ctx["main"][name]
        if p.unavailable:
            lines.append(f"| {name} | not run: {p.unavailable[:160]} " + "| " * 8 + "|")
            continue
        rs = results["proxies"].get(name, [])
        lines.append(proxy_row(name, rs, ref, "ms3", cell_ratio(
            [get(r, "thr", "upstream_per_answer") for r in rs])))
    lines.append("")
    bl = baseline_line(results["proxies"])
    if bl:
        lines += [bl, ""]

    diag = []
    for name in ctx["peer_names"]:
        rs = results["proxies"].get(name, [])
        if not rs:
            continue
        parts = []
        warm = ctx["warm"].get(name, [])
        if warm:
            parts.append("warm-up passes (NOERROR / upstream queries): " + ", ".join(
                f"{w['answered']} / {w['upstream_queries']}" for w in warm))
        upq = [(get(r, "lat", "upstream_queries") or 0) + (get(r, "thr", "upstream_queries") or 0)
               for r in rs if get(r, "thr", "upstream_queries") is not None]
        if upq:
            parts.append(f"upstream queries per round during the measured runs {cell(upq, 'raw')}"
                         f" (latency run: {cell_ratio([get(r, 'lat', 'upstream_per_answer') for r in rs])}"
                         f" per answer)")
        drops = [get(r, "thr", "listener_drops") for r in rs]
        part_if_known(parts, "UDP drops at its listening socket", drops, "raw")
        lost = [get(r, "thr", "lost") for r in rs]
        if any(lost):
            parts.append(f"queries lost (throughput) {cell(lost, 'raw')}")
        lfail = [get(r, "lat", "lost") for r in rs]
        if any(lfail):
            parts.append(f"queries lost (latency) {cell(lfail, 'raw')}")
        busy = [get(r, "thr", "machine_busy_pct") for r in rs]
        other = [get(r, "thr", "other_pct") for r in rs]
        parts.append(f"machine CPU busy {cell(busy, 'pct')}%, of which other "
                     f"processes {cell(other, 'pct')}%")
        other = [get(r, "lat", "other_pct") for r in rs]
        parts.append(f"other processes during latency runs {cell(other, 'pct')}%")
        lag = [get(r, "lat", "max_send_lag_ms") for r in rs]
        parts.append(f"probe max send lag {cell(lag, 'ms')} ms")
        diag.append(f"- {name}: " + "; ".join(parts))
    busy = [get(r, "thr", "machine_busy_pct") for r in ref]
    other = [get(r, "thr", "other_pct") for r in ref]
    diag.append(f"- reference run: machine CPU busy {cell(busy, 'pct')}%, of which other "
                f"processes {cell(other, 'pct')}%")
    if ctx.get("background_qps") is not None:
        diag.append(f"- upstream background with no load: {ctx['background_qps']:.2f} queries/s "
                    f"over {BACKGROUND_SECONDS} s (dnsdist as a peer health-checks its backend "
                    f"every second)")
    lines.append("Details (throughput runs unless noted):")
    lines += diag
    lines.append("")
    lines.append(versions_line(ctx))
    lines.append("")
    lines.append(f"Load average when the run started: {' '.join(ctx['loadavg'])}"
                 " (anything else running shares the same CPUs).")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------
# Main

def main():
    # bench/serve.py and bench/upstream_transport.py import this module: only
    # now is it complete.
    import serve  # noqa: F401 (used below)
    import upstream_transport  # noqa: F401 (used below)

    ap = argparse.ArgumentParser(description="dotproxy benchmark harness (loopback only)")
    ap.add_argument("--dotproxy", default=os.path.join(ROOT, "build", "dotproxy"))
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS") or 3))
    ap.add_argument("--seconds", type=float,
                    default=float(os.environ.get("BENCH_SECONDS") or 5),
                    help="length of each throughput and latency measurement")
    ap.add_argument("--peers", default="dotproxy,stubby,unbound,dnsdist,kresd",
                    help="comma-separated subset of: " + ",".join(PEERS))
    ap.add_argument("--upstream", choices=["auto"] + list(UPSTREAMS), default="dnsdist",
                    help="upstream for the main table (auto: the faster on one connection)")
    ap.add_argument("--no-nodelay", action="store_true",
                    help="skip the latency table against the other upstream")
    ap.add_argument("--no-install", action="store_true", help="never run apt-get")
    ap.add_argument("--dotproxy-workers", type=int,
                    default=int(os.environ.get("BENCH_WORKERS") or 1),
                    help="run dotproxy with --workers N (default 1)")
    ap.add_argument("--workdir", default=os.path.join(ROOT, "build", "bench"))
    # The cache-hit variant: every proxy with its cache ON (dotproxy without
    # --cache-size 0, unbound without cache-max-ttl 0, kresd without
    # NO_CACHE, dnsdist with a packet cache; stubby has none), caches warmed
    # first, then the same loads; its table is appended to results.md.
    ap.add_argument("--cache-hit", action="store_true",
                    default=os.environ.get("BENCH_CACHE_HIT") == "1",
                    help="run the cache-hit variant instead (caches on and warmed; "
                         "its table is appended to WORKDIR/results.md)")
    ap.add_argument("--baseline", metavar="PATH",
                    help="a second dotproxy binary (e.g. the commit before a change), measured "
                         f"as one more row, {BASELINE!r}, with the same arguments and rounds")
    ap.add_argument("--burst", action=argparse.BooleanOptionalAction,
                    default=os.environ.get("BENCH_BURST", "1") != "0",
                    help=f"after the rounds, {BURST_COUNT:,} UDP queries in {BURST_WINDOW_MS:g} ms "
                         f"to each of {', '.join(BURST_PEERS)} (those in --peers), once per "
                         "round; the fraction answered and the listener's receive buffer and "
                         "drops (default on, ~3 s per proxy and round; BENCH_BURST=0: off)")
    ap.add_argument("--burst-only", action="store_true",
                    help="only the burst table: no throughput or latency rounds")
    # The serving tables (bench/serve.py): every server as a DoT and DoH
    # server for clients, after the rounds and bursts of the main table.
    ap.add_argument("--serve", choices=["all", "dot", "doh", "none"],
                    default={"0": "none", "": "all"}.get(os.environ.get("BENCH_SERVE", ""),
                                                         os.environ.get("BENCH_SERVE")),
                    help="after the main table, each server serving DoT and/or DoH to "
                         "clients: qps, latency, handshakes/s, CPU, RSS (default all; "
                         "BENCH_SERVE=0, dot or doh)")
    ap.add_argument("--serve-only", action="store_true",
                    help="only the serving tables (the upstream and no main table)")
    ap.add_argument("--handshakes-only", action="store_true",
                    help="the serving tables' handshake columns alone (implies --serve-only): "
                         "rounds ~4x shorter, so more of them for the same time")
    # The upstream-transport table (bench/upstream_transport.py): dotproxy and
    # dnsdist forwarding over DoT and over DoH to one server that speaks both.
    ap.add_argument("--upstream-transport", action=argparse.BooleanOptionalAction,
                    default=os.environ.get("BENCH_UPSTREAM_TRANSPORT", "1") != "0",
                    help="after the other tables, dotproxy and dnsdist forwarding over DoT and "
                         "over DoH to one upstream: qps, CPU, latency, RSS, and issue 12's "
                         "ratios (default on; BENCH_UPSTREAM_TRANSPORT=0: off)")
    ap.add_argument("--upstream-transport-only", action="store_true",
                    help="only the upstream-transport table (its own upstream, no main table)")
    ap.add_argument("--tlsload", default=os.path.join(ROOT, "build", "tlsload"),
                    help="the handshake load generator (make build/tlsload)")
    args = ap.parse_args()
    if args.serve not in ("all", "dot", "doh", "none"):
        ap.error(f"BENCH_SERVE={args.serve}: expected 0, all, dot or doh")
    if args.rounds < 1 or args.seconds < 1:
        ap.error("--rounds and --seconds must be at least 1")
    if args.dotproxy_workers < 1:
        ap.error("--dotproxy-workers must be at least 1")
    Dotproxy.workers = args.dotproxy_workers
    peer_names = [p.strip() for p in args.peers.split(",") if p.strip()]
    for p in peer_names:
        if p not in PEERS:
            ap.error(f"unknown peer {p!r}")
    args.dotproxy = os.path.abspath(args.dotproxy)
    if "dotproxy" in peer_names and not os.access(args.dotproxy, os.X_OK):
        log(f"{args.dotproxy} missing: run make first")
        return 1
    args.baseline_src = args.baseline     # before snapshot_binaries() replaces it
    if args.baseline:
        args.baseline = os.path.abspath(args.baseline)
        if not os.access(args.baseline, os.X_OK):
            log(f"--baseline {args.baseline}: not an executable file")
            return 1
        # Right after dotproxy (the two rows side by side), else first.
        at = peer_names.index("dotproxy") + 1 if "dotproxy" in peer_names else 0
        peer_names.insert(at, BASELINE)
    if args.handshakes_only:
        args.serve_only = True
    if args.serve_only:
        if args.cache_hit or args.burst_only:
            ap.error("--serve-only excludes --cache-hit and --burst-only")
        if args.serve == "none":
            args.serve = "all"
    if args.upstream_transport_only:
        if args.cache_hit or args.burst_only or args.serve_only:
            ap.error("--upstream-transport-only excludes --cache-hit, --burst-only and "
                     "--serve-only")
        args.upstream_transport = True
    if args.burst_only:
        if args.cache_hit:
            ap.error("--burst-only and --cache-hit exclude each other")
        args.burst = True
        peer_names = [p for p in peer_names if p in BURST_PEERS]
        if not peer_names:
            ap.error(f"--burst-only: none of {', '.join(BURST_PEERS)} in --peers")

    ensure_packages(not args.no_install)
    if not which("dnsperf"):
        log("dnsperf is required (apt-get install dnsperf)")
        return 1
    if args.cache_hit:
        return main_cache_hit(args, peer_names)
    if args.serve_only:
        return serve.main_serve_only(args, peer_names)
    if args.upstream_transport_only:
        return upstream_transport.main_only(args)

    work = os.path.abspath(args.workdir)
    if os.path.isdir(work):
        shutil.rmtree(work)
    os.makedirs(work)
    t0 = time.monotonic()
    ctx = {"peer_names": peer_names, "main": {}, "alt": {},
           "upstream_nodelay": {}, "bottleneck": [], "loadavg": open("/proc/loadavg").read().split()[:3]}

    log(f"setting up in {work}: CA, certificate for {AUTH_NAME} / 127.0.0.1, "
        f"{ZONE_NAMES}-name zone")
    pki = PKI(os.path.join(work, "pki"), name="dotproxy bench CA")
    cert, key = pki.leaf("server", dns_names=[AUTH_NAME], ip_addresses=["127.0.0.1"])
    ca = pki.ca_file
    queries = os.path.join(work, "queries.txt")
    write_query_file(queries)

    binaries = snapshot_binaries(args, peer_names, work, ctx)
    for name, path in binaries.items():
        log(f"{name} under test: {ctx['binary_id'][name]}"
            + ("; its cache is turned off (--cache-size 0)" if dotproxy_has_cache(path) else ""))

    # --- Upstreams, and which one is not the bottleneck -----------------------
    upstreams = {}
    for name, cls in UPSTREAMS.items():
        if not which(name):
            ctx["bottleneck"].append(f"{name}: not installed")
            continue
        try:
            upstreams[name] = cls(work, cert, key, ca).start()
            ctx["upstream_nodelay"][name] = upstreams[name].measured_nodelay()
        except (RuntimeError, OSError) as e:
            ctx["bottleneck"].append(f"{name}: failed to start: {e}")
            upstreams.pop(name, None)
    if not upstreams:
        log("no upstream could be started: " + "; ".join(ctx["bottleneck"]))
        stop_all()
        return 1
    # Which upstream is not the bottleneck? Each is driven straight with
    # `dnsperf -m dot`, on one connection and on ten (a proxy opens one to a
    # few). Measured on this project's 2-CPU Xeon VM, 3 s runs:
    #   unbound 1.17, num-threads 1: ~40k qps on one connection with its
    #     thread only ~30% busy -- a per-connection limit, not CPU (likely its
    #     missing TCP_NODELAY against the client's delayed ACKs: dnsperf's p50
    #     straight to it is ~0.55 ms against ~0.06 ms to dnsdist); ~80-87k on
    #     ten, its one thread at 80-90% of a core: CPU-bound. A proxy on one
    #     or a few connections would be measuring unbound.
    #   dnsdist 1.7, answering itself: ~130k qps on one connection (its
    #     threads together at 70-90% of a core); ~85-90k on ten, where
    #     dnsperf's own TLS client is the limit (~100% of the other core).
    #     It answers faster than any proxy here can forward.
    # So the main table uses dnsdist (--upstream picks another); unbound is
    # kept for the TCP_NODELAY comparison. The check is repeated each run
    # and printed, but a busy machine can invert a 3-second measurement, so
    # only --upstream auto lets it decide.
    check_seconds = min(args.seconds, 3)
    single = {}
    for name, u in upstreams.items():
        if args.burst_only:
            break
        parts = []
        for clients in (1, THROUGHPUT_CLIENTS):
            log(f"bottleneck check: dnsperf -m dot -c {clients} straight to {name}")
            r = throughput(u.port, queries, check_seconds, mode="dot", clients=clients,
                           upstream=u, count=False)
            if "error" in r:
                parts.append(f"-c {clients}: {r['error']}")
                continue
            if clients == 1:
                single[name] = r["qps"]
            up_cpu = 100.0 * r["upstream_cpu_s"] / r["runtime"]
            perf_cpu = 100.0 * r["dnsperf_cpu_s"] / r["runtime"]
            parts.append(f"{clients} connection{'s' if clients > 1 else ''} "
                         f"{r['qps'] / 1000:.1f}k qps (its CPU {up_cpu:.0f}% of one core, "
                         f"dnsperf {perf_cpu:.0f}%, other processes {r['other_pct']:.0f}% "
                         f"of the machine)")
        ctx["bottleneck"].append(f"{name}: " + ", ".join(parts))
        log("  " + ctx["bottleneck"][-1])
    if args.upstream == "auto":
        main_up = upstreams[max(single, key=single.get)] if single else \
            next(iter(upstreams.values()))
    elif args.upstream in upstreams:
        main_up = upstreams[args.upstream]
    elif args.upstream == "dnsdist":  # the default, when dnsdist is missing
        main_up = next(iter(upstreams.values()))
    else:
        log(f"upstream {args.upstream} unavailable")
        stop_all()
        return 1
    alt_up = next((u for u in upstreams.values() if u is not main_up), None)
    do_nodelay = alt_up is not None and not args.no_nodelay and not args.burst_only
    ctx["upstream"], ctx["alt_upstream"] = main_up, alt_up

    # --- Proxies ---------------------------------------------------------------
    for name in peer_names:
        cls = ALL_PEERS[name]
        for role, up in (("main", main_up), ("alt", alt_up if do_nodelay else None)):
            if up is None:
                continue
            p = cls(work, up, ca, dotproxy=binaries.get(name))
            if cls.binary and not which(cls.binary):
                p.unavailable = f"{PACKAGES[cls.binary]} not installed"
            else:
                log(f"starting {name} → {up.name} on 127.0.0.1:{p.port}")
                p.start()
            if p.unavailable:
                log(f"  {name} unavailable: {p.unavailable}")
            ctx[role][name] = p
    ctx["versions"] = bench_versions(args, peer_names)

    # --- Rounds ----------------------------------------------------------------
    live = [n for n in peer_names if not ctx["main"][n].unavailable]
    results = {"limit": [], "proxies": {n: [] for n in live}, "nodelay": {n: [] for n in live},
               "burst": {}}
    for rnd in range(0 if args.burst_only else args.rounds):
        # Alternate: every proxy once per round, the order rotated each round
        # so that no proxy always runs first (or right after the limit run).
        for name, p in round_order(live, rnd, ctx["main"], f"round {rnd + 1}/{args.rounds}:"):
            warmup(p.port, queries)
            lat = latency(p.port, queries, args.seconds, pids=[p.pid, main_up.daemon.pid])
            thr = throughput(p.port, queries, args.seconds, pid=p.pid, upstream=main_up)
            rec = {"round": rnd, "lat": lat, "thr": thr, "rss_mib": peak_rss_mib(p.pid)}
            results["proxies"][name].append(rec)
            log(f"  {name}: {get(thr, 'qps') or 0:,.0f} qps, fail {get(thr, 'fail_pct') or 0:.2f}%, "
                f"{get(thr, 'cpu_per_100k') or 0:.2f} CPU-s/100k, p50 {lat['p50_ms']} ms, "
                f"p99 {lat['p99_ms']} ms" + (f" [{thr['error']}]" if "error" in thr else ""))
            if do_nodelay and not ctx["alt"][name].unavailable:
                a = ctx["alt"][name]
                warmup(a.port, queries)
                lat2 = latency(a.port, queries, args.seconds, pids=[a.pid, alt_up.daemon.pid])
                results["nodelay"][name].append(lat2)
                log(f"  {name} via {alt_up.name}: p50 {lat2['p50_ms']} ms, p99 {lat2['p99_ms']} ms, "
                    f"avg {lat2['avg_ms']} ms")
        log(f"  limit: dnsperf -m dot straight to {main_up.name}")
        thr = throughput(main_up.port, queries, args.seconds, mode="dot", upstream=main_up,
                         count=False)
        lat = latency_direct_tls(main_up.port, queries, args.seconds)
        results["limit"].append({"round": rnd, "thr": thr, "lat": lat})
        log(f"  limit: {get(thr, 'qps') or 0:,.0f} qps, p50 {get(lat, 'p50_ms')} ms")

    # --- Bursts, after the rounds (so they cannot disturb the table above) ----
    if args.burst:
        results["burst"] = run_bursts(ctx, [n for n in live if n in BURST_PEERS], queries,
                                      args.rounds, main_up)
    elapsed = time.monotonic() - t0

    # --- The serving tables, with the main table's proxies stopped -------------
    serve_lines, ut_lines = [], []
    if (args.serve != "none" or args.upstream_transport) and not args.burst_only:
        for p in list(ctx["main"].values()) + list(ctx["alt"].values()):
            if p.daemon:
                p.daemon.stop()
        if alt_up:
            alt_up.daemon.stop()
    if args.serve != "none" and not args.burst_only:
        log(f"serving tables: certificate for {serve.SERVE_NAME} / 127.0.0.1")
        scert, skey = pki.leaf("serve", dns_names=[serve.SERVE_NAME],
                               ip_addresses=["127.0.0.1"])
        sresults, sctx = serve.run_serve(args, work, scert, skey, ca, main_up, queries,
                                         binaries, peer_names, results["limit"])
        serve_lines = serve.render_serve(args, sctx, sresults)
        serve.save_json(work, args, sctx, sresults, ctx["versions"])
        elapsed = time.monotonic() - t0

    # --- DoH against DoT upstreams, with its own upstream ---------------------
    if args.upstream_transport and not args.burst_only:
        main_up.daemon.stop()
        uresults, uctx = upstream_transport.run_table(args, work, cert, key, ca, queries,
                                                      binaries)
        ut_lines = upstream_transport.render(args, uctx, uresults)
        upstream_transport.save_json(work, args, uctx, uresults, ctx["versions"])
        elapsed = time.monotonic() - t0

    stop_all()
    text = render(args, ctx, results, elapsed + (t0 - START), serve_lines + ut_lines)

    def save_json():
        with open(os.path.join(work, "results.json"), "w") as f:
            json.dump({"args": vars(args), "machine": machine_line(), "upstream": main_up.name,
                       "bottleneck": ctx["bottleneck"],
                       "upstream_nodelay": ctx["upstream_nodelay"],
                       "versions": ctx["versions"], "binaries": ctx["binary_id"],
                       "unavailable": {n: ctx["main"][n].unavailable for n in peer_names},
                       "results": results}, f, indent=1, default=str)
    write_report(os.path.join(work, "results.md"), text, save_json)
    return 0


def _on_signal(signum, _frame):
    log(f"signal {signum}: stopping what we started")
    stop_all()
    sys.exit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        sys.exit(main())
    finally:
        stop_all()
