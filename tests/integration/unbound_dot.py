"""A private unbound that serves DNS-over-TLS from local data only.

The fake upstream tests our edge cases; this one checks that dotproxy
interoperates with a real, independent DoT implementation (its TLS stack,
its framing, its idea of EDNS and truncation).

The configuration is built so that this unbound can never send a packet
to the internet: every name falls into `local-zone: "." static` (names
without local data get NXDOMAIN from unbound itself), the validator is not
loaded and no trust anchor is configured (no DNSKEY fetches), and as a
last fence every destination address is on the do-not-query list.
"""

import os
import subprocess
import time

import dns.exception

import netutil
import procutil

UNBOUND = os.environ.get("UNBOUND", "/usr/sbin/unbound")

BIG_COUNT = 100  # A records at big.example.: ~1.6 kB, above both 512 and 1232
N_COUNT = 200    # n0.example. .. n199.example.


def default_records():
    """The local data every test can rely on (documentation address ranges only)."""
    recs = [
        "www.example. 300 IN A 192.0.2.10",
        "www.example. 300 IN AAAA 2001:db8::10",
        'txt.example. 300 IN TXT "dotproxy test record"',
    ]
    recs += [f"big.example. 300 IN A 192.0.2.{i}" for i in range(1, BIG_COUNT + 1)]
    recs += [f"n{i}.example. 300 IN A 198.51.100.{i % 250}" for i in range(N_COUNT)]
    return recs


# Negative answers carry this SOA, so its minimum (60 s) is the negative TTL.
_ROOT_SOA = ". 3600 IN SOA ns.example. hostmaster.example. 1 3600 600 86400 60"


def _quote(s):
    # unbound's config parser takes double-quoted strings; local-data values
    # may themselves contain double quotes (TXT), which go in single quotes.
    return f"'{s}'" if '"' in s else f'"{s}"'


class UnboundDoT:
    """unbound -d on 127.0.0.1:<port>, TLS on that port's TCP side."""

    def __init__(self, workdir, cert, key, *, port=0, records=(), extra_conf="",
                 host="127.0.0.1", session_ticket_keys=False):
        self.workdir = os.path.abspath(str(workdir))
        self.cert, self.key = os.path.abspath(cert), os.path.abspath(key)
        self.port = port
        self.host = host
        self.records = list(records) if records else default_records()
        self.extra_conf = extra_conf
        self.session_ticket_keys = session_ticket_keys
        self.conf_file = os.path.join(self.workdir, "unbound.conf")
        self.log_file = os.path.join(self.workdir, "unbound.log")
        self.pid_file = os.path.join(self.workdir, "unbound.pid")
        self.proc = None

    def config_text(self):
        ip6 = ":" in self.host
        lines = [
            "server:",
            "  verbosity: 1",
            f'  directory: "{self.workdir}"',
            # No chroot and no privilege drop: we are not root-owned daemons
            # and the workdir must stay reachable at the same path.
            '  chroot: ""',
            '  username: ""',
            "  do-daemonize: no",
            "  use-syslog: no",
            f'  logfile: "{self.log_file}"',
            "  log-time-ascii: yes",
            f'  pidfile: "{self.pid_file}"',
            f"  interface: {self.host}@{self.port}",
            f"  port: {self.port}",
            # The interface whose port equals tls-port speaks TLS on TCP; its
            # UDP side stays plain DNS, handy for comparisons.
            f"  tls-port: {self.port}",
            f'  tls-service-key: "{self.key}"',
            f'  tls-service-pem: "{self.cert}"',
            f"  do-ip4: {'no' if ip6 else 'yes'}",
            f"  do-ip6: {'yes' if ip6 else 'no'}",
            "  do-udp: yes",
            "  do-tcp: yes",
            # Another process on the same port must be a loud bind failure,
            # not a silent load-balancing partner.
            "  so-reuseport: no",
            f"  access-control: {'::1/128' if ip6 else '127.0.0.0/8'} allow",
            # Concurrency tests open many TLS connections; the default is 10.
            "  incoming-num-tcp: 512",
            "  num-threads: 1",
            # Deterministic RRset order (1.17 rotates by default).
            "  rrset-roundrobin: no",
            "  minimal-responses: yes",
            # --- never recurse ---
            '  module-config: "iterator"',
            "  do-not-query-localhost: yes",
            "  do-not-query-address: 0.0.0.0/0",
            "  do-not-query-address: ::/0",
            '  local-zone: "." static',
            f'  local-data: "{_ROOT_SOA}"',
        ]
        if self.session_ticket_keys:
            key_file = os.path.join(self.workdir, "ticket.key")
            if not os.path.exists(key_file):
                with open(key_file, "wb") as f:
                    f.write(os.urandom(80))  # name 16 + AES 32 + HMAC 32
            lines.append(f'  tls-session-ticket-keys: "{key_file}"')
        lines += [f"  local-data: {_quote(r)}" for r in self.records]
        if self.extra_conf:
            lines.append(self.extra_conf.rstrip("\n"))
        lines += [
            "remote-control:",
            "  control-enable: no",
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout=10.0):
        """Write the config, run unbound in the foreground, wait until it answers over TLS."""
        if self.proc is not None:
            raise RuntimeError("unbound already started")
        os.makedirs(self.workdir, exist_ok=True)
        if not self.port:
            self.port = netutil.free_port(self.host)
        with open(self.conf_file, "w") as f:
            f.write(self.config_text())
        # unbound writes its own log file; its stderr only carries start-up
        # failures that happen before the log file is open.
        self._stderr = open(os.path.join(self.workdir, "unbound.stderr"), "wb")
        argv = procutil.die_with_parent([UNBOUND, "-d", "-c", self.conf_file])
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._stderr,
                                     stderr=subprocess.STDOUT, cwd=self.workdir)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"unbound exited with status {self.proc.returncode} "
                                   f"during start-up:\n{self.log_tail()}")
            try:
                # Any certificate will do here: readiness only, and some tests
                # deliberately start unbound with a bad one.
                netutil.dot_query(self.port, "www.example.", "A", host=self.host,
                                  verify=False, timeout=0.5)
                return
            except (OSError, EOFError, dns.exception.DNSException) as e:
                last = e
            time.sleep(0.05)
        raise TimeoutError(f"unbound did not answer over TLS on {self.host}:{self.port} "
                           f"within {timeout} s (last error: {last!r}):\n{self.log_tail()}")

    def log(self):
        """Everything unbound logged so far (log file, then early stderr)."""
        out = ""
        for path in (self.log_file, os.path.join(self.workdir, "unbound.stderr")):
            try:
                with open(path, errors="replace") as f:
                    out += f.read()
            except FileNotFoundError:
                pass
        return out

    def log_tail(self, lines=30):
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout=5.0):
        """SIGTERM the child we started, wait, SIGKILL if it will not go. Returns exit status."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        status = procutil.terminate(proc, timeout)
        self._stderr.close()
        return status

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self.start() if self.proc is None else self

    def __exit__(self, *exc):
        self.stop()
