"""Real DNS-over-HTTPS servers from Debian, private and on loopback.

Three independent HTTP/2 stacks check that dotproxy's DoH upstreams
interoperate: BIND 9.18 (named, its own nghttp2-based server), Knot
Resolver 5.6 (kresd, `kind = 'doh2'`) and dnsdist 1.7 (`addDOHLocal`,
h2o). Each is started as unbound_dot.py starts unbound: a generated
configuration in a temporary directory, the process in the foreground,
stopped by its PID, readiness proved by a real DoH query (kdig +https,
the cross-check that the server works before dotproxy is judged by it).

Each answers from local data only and has no way out:
  - named: one authoritative zone, `recursion no` (anything else: REFUSED);
  - kresd: answers from policy rules, everything else DENY, and
    `net.ipv4 = false; net.ipv6 = false` so that it cannot send a packet
    upstream even by mistake (no trust anchor, no priming);
  - dnsdist: no backend at all, answers spoofed by rules, everything else
    REFUSED, and its security poll (a DNS query about its own version)
    turned off.

The data every server holds:
  www.example.        A 192.0.2.10, AAAA 2001:db8::10
  *.burst.example.    A 198.51.100.7 (any name: many distinct queries)
dnsdist also answers probe.example. with a CNAME that describes the query
it received: len<bytes>.ka<0|1>.pad<0|1>.probe.example. (edns-tcp-keepalive
and padding options present or not).
"""

import os
import shutil
import subprocess
import time

import netutil
import procutil

WWW_A = "192.0.2.10"
WWW_AAAA = "2001:db8::10"
BURST_A = "198.51.100.7"
AUTH_NAME = "dns.example.test"
KDIG = os.environ.get("KDIG", "/usr/bin/kdig")


class DoHServer:
    """Base: one server process serving DoH on host:port at `path`."""

    name = "doh"
    binary = None

    def __init__(self, workdir, cert, key, ca_file, *, host="127.0.0.1", port=0,
                 path="/dns-query"):
        self.workdir = os.path.abspath(str(workdir))
        self.cert, self.key = os.path.abspath(cert), os.path.abspath(key)
        self.ca_file = os.path.abspath(ca_file)
        self.host = host
        self.port = port
        self.path = path
        self.log_file = os.path.join(self.workdir, self.name + ".log")
        self.proc = None
        self._log = None

    @classmethod
    def available(cls):
        return shutil.which(cls.binary) is not None and os.access(KDIG, os.X_OK)

    # -- what subclasses provide ----------------------------------------------

    def write_config(self):
        raise NotImplementedError

    def argv(self):
        raise NotImplementedError

    # -- life -------------------------------------------------------------------

    def start(self, timeout=15.0):
        if self.proc is not None:
            raise RuntimeError(f"{self.name} already started")
        os.makedirs(self.workdir, exist_ok=True)
        if not self.port:
            self.port = netutil.free_port(self.host)
        self.write_config()
        self._log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(procutil.die_with_parent(self.argv()),
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=self.workdir)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def kdig(self, qname, rdtype="A", *, get=False, timeout=1):
        """Ask the server over DoH with kdig; returns (exit status, output)."""
        mode = "+https-get" if get else "+https"
        argv = [KDIG, f"@{self.host}", "-p", str(self.port), f"{mode}={self.path}",
                f"+tls-ca={self.ca_file}", f"+tls-hostname={AUTH_NAME}",
                f"+timeout={timeout}", "+retry=0", qname, rdtype]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 5)
        return r.returncode, r.stdout + r.stderr

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.proc.returncode} "
                                   f"during start-up:\n{self.log_tail()}")
            rc, out = self.kdig("www.example.")
            if rc == 0 and "status: NOERROR" in out and WWW_A in out:
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not answer over DoH on {self.host}:{self.port} "
                           f"within {timeout} s; kdig said:\n{out}\nlog:\n{self.log_tail()}")

    def spec(self, auth_name=AUTH_NAME, path=None, pins=()):
        """The --upstream spec for this server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        s = f"https://{host}:{self.port}{path or self.path}"
        if auth_name:
            s += f"#{auth_name}"
        return s + "".join("^" + p for p in pins)

    def log(self):
        try:
            with open(self.log_file, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=30):
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout=5.0):
        """SIGTERM the process we started (by its PID), SIGKILL if it will not go."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        status = procutil.terminate(proc, timeout)
        if self._log:
            self._log.close()
        return status

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self.start() if self.proc is None else self

    def __exit__(self, *exc):
        self.stop()


class BindDoH(DoHServer):
    """named -g with `tls` and `http` blocks: authoritative for example., no recursion."""

    name = "named"
    binary = "named"

    def write_config(self):
        zone = os.path.join(self.workdir, "example.zone")
        with open(zone, "w") as f:
            f.write("$TTL 300\n"
                    "@ IN SOA ns.example. hostmaster.example. 1 3600 600 86400 60\n"
                    "@ IN NS ns.example.\n"
                    "ns IN A 192.0.2.1\n"
                    f"www IN A {WWW_A}\n"
                    f"www IN AAAA {WWW_AAAA}\n"
                    f"*.burst IN A {BURST_A}\n")
        d = self.workdir
        listen = "listen-on-v6" if ":" in self.host else "listen-on"
        other = "listen-on { none; };" if ":" in self.host else "listen-on-v6 { none; };"
        # The only listen-on names the DoH port (without one, named would
        # listen on port 53 of every address).
        conf = f"""
options {{
  directory "{d}";
  pid-file "{d}/named.pid";
  session-keyfile "{d}/session.key";
  managed-keys-directory "{d}";
  {listen} port {self.port} tls local-tls http local-http {{ {self.host}; }};
  {other}
  recursion no;
  notify no;
  dnssec-validation no;
  allow-query {{ any; }};
}};
tls local-tls {{ cert-file "{self.cert}"; key-file "{self.key}"; }};
http local-http {{ endpoints {{ "{self.path}"; }}; }};
controls {{ }};
zone "example." {{ type primary; file "{zone}"; }};
"""
        with open(os.path.join(d, "named.conf"), "w") as f:
            f.write(conf)

    def argv(self):
        argv = ["named", "-g", "-c", os.path.join(self.workdir, "named.conf")]
        if os.geteuid() == 0:
            argv += ["-u", "root"]  # stay who we are: the workdir is ours
        return argv


class KresdDoH(DoHServer):
    """kresd -n with a doh2 listener, answering from policy rules, no way out."""

    name = "kresd"
    binary = "kresd"

    def write_config(self):
        d = self.workdir
        conf = f"""
-- No way out: never send a packet to any server, fetch no trust anchor.
net.ipv4 = false
net.ipv6 = false
trust_anchors.remove('.')
modules.unload('priming')
modules.unload('detect_time_skew')
modules.unload('detect_time_jump')
modules.unload('ta_signal_query')
modules.unload('ta_sentinel')
net.listen('{self.host}', {self.port}, {{ kind = 'doh2' }})
net.tls('{self.cert}', '{self.key}')
cache.open(10 * MB, 'lmdb://{d}/cache')
policy.add(policy.domains(
  policy.ANSWER({{
    [kres.type.A] = {{ rdata = kres.str2ip('{WWW_A}'), ttl = 300 }},
    [kres.type.AAAA] = {{ rdata = kres.str2ip('{WWW_AAAA}'), ttl = 300 }},
  }}),
  policy.todnames({{ 'www.example' }})))
policy.add(policy.suffix(
  policy.ANSWER({{ [kres.type.A] = {{ rdata = kres.str2ip('{BURST_A}'), ttl = 300 }} }}),
  policy.todnames({{ 'burst.example' }})))
policy.add(policy.all(policy.DENY))
"""
        with open(os.path.join(d, "kresd.conf"), "w") as f:
            f.write(conf)

    def argv(self):
        return ["kresd", "-n", "-c", os.path.join(self.workdir, "kresd.conf"), self.workdir]


class DnsdistDoH(DoHServer):
    """dnsdist --supervised with addDOHLocal: no backend, answers spoofed by rules."""

    name = "dnsdist"
    binary = "dnsdist"

    def write_config(self):
        plain = netutil.free_port(self.host)
        host = f"[{self.host}]" if ":" in self.host else self.host
        conf = f"""
setSecurityPollSuffix('')
setLocal('{host}:{plain}')
addDOHLocal('{host}:{self.port}', '{self.cert}', '{self.key}', '{self.path}')
function probe(dq)
  local opts = dq:getEDNSOptions()
  local ka = opts[11] ~= nil and 1 or 0
  local pad = opts[12] ~= nil and 1 or 0
  return DNSAction.Spoof, string.format("len%d.ka%d.pad%d.probe.example.", dq.len, ka, pad)
end
addAction(QNameRule('probe.example.'), LuaAction(probe))
addAction(QNameRule('www.example.'), SpoofAction({{'{WWW_A}', '{WWW_AAAA}'}}))
burst = newSuffixMatchNode()
burst:add(newDNSName('burst.example.'))
addAction(SuffixMatchNodeRule(burst), SpoofAction({{'{BURST_A}'}}))
addAction(AllRule(), RCodeAction(DNSRCode.REFUSED))
"""
        with open(os.path.join(self.workdir, "dnsdist.conf"), "w") as f:
            f.write(conf)

    def argv(self):
        return ["dnsdist", "--supervised", "--disable-syslog", "-C",
                os.path.join(self.workdir, "dnsdist.conf")]


SERVERS = {"named": BindDoH, "kresd": KresdDoH, "dnsdist": DnsdistDoH}
