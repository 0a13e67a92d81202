"""The serving tables of `make bench`: dotproxy and its peers as DoT and DoH
servers for clients (issue 13, "Speed"; bench/README.md, "Serving DoT and
DoH").

Each server (dotproxy, unbound, dnsdist, kresd; the --baseline dotproxy
too) runs the main table's configuration -- the same upstream, cache off,
one worker where it has the knob -- plus a DoT listener and, where it has
one, a DoH listener, both with one certificate of the bench's throwaway CA
for SERVE_NAME and 127.0.0.1. Its plain listener stays, for the readiness
check only. A server that lacks a listener gets a row saying why.

Per round, per transport (DoT, then DoH), each server in turn (the order
rotates each round), after a light warm-up on the transport:
  latency    bench/latency_probe.py: LATENCY_RATE queries/s on ONE
             connection for BENCH_SECONDS, kernel receive timestamps;
  throughput ten long-lived connections, 200 queries outstanding: DoT with
             `dnsperf -m dot -c 10 -q 200` (it reports its reconnections: 0
             expected), DoH with `tlsload -k 20 -c 10` (dnsperf 2.10's DoH
             client loses answers from dnsdist 1.7);
  handshakes bench/tlsload.c: full, then resumed, new connections with one
             query each, HS_CONNS under way from HS_THREADS threads, for
             half of BENCH_SECONDS each;
then its peak RSS. CPU is the server's own (/proc, all threads), per 100k
answers and per 1k connections. The DoT table has a reference row: the same
throughput and latency runs straight to the upstream over DoT.

This module uses run.py's classes and helpers and is started by it
(--serve, --serve-only); it is not a program of its own.
"""

import json
import os
import re
import select
import shutil
import statistics
import subprocess
import time

import latency_probe
import run
from run import (AUTH_NAME, BASELINE, LATENCY_RATE, THROUGHPUT_CLIENTS, THROUGHPUT_OUTSTANDING,
                 ZONE, CpuMeter, cell, fmt, free_port, get, log, which)

SERVE_NAME = "serve.example.test"   # the serving certificate's name (and 127.0.0.1)
DOH_PATH = "/dns-query"
TRANSPORTS = ("dot", "doh")
LABEL = {"dot": "DoT", "doh": "DoH"}
SERVE_PEERS = ("dotproxy", "unbound", "dnsdist", "kresd")  # stubby serves plain DNS only
# The handshake load: tlsload with HS_CONNS connections under way from
# HS_THREADS threads. On 2 CPUs shared with the server and its upstream,
# two threads are what the client can use; 16 connections keep a server
# busy while the client works on others (more only lengthen the queue).
HS_CONNS = 16
HS_THREADS = 2
# unbound serves at most incoming-num-tcp TCP/TLS/HTTPS clients per thread
# (default 10, fewer than dnsperf's ten connections plus a straggler): 64 is
# above every load here. Each is a buffer allocated at start (RSS).
UNBOUND_INCOMING_TCP = 64
WARMUP_SECONDS = 0.5


def tool_help(argv):
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        return r.stdout.decode(errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        return ""


# ----------------------------------------------------------------------------
# The servers: run.py's proxies plus their DoT and DoH listeners

class Serving:
    """Mixed into one of run.py's proxy classes: the listeners, the
    readiness of each, and why a transport is not served (missing[t])."""

    def setup(self, cert, key):
        self.cert, self.key = cert, key
        self.ports = {"dot": free_port(), "doh": free_port()}
        self.missing = {t: self.lacks(t) for t in TRANSPORTS}

    @property
    def slug(self):
        return "serve-" + super().slug

    def lacks(self, transport):
        """Why this build cannot serve @transport, or None."""
        return None

    def serves(self, transport):
        return not self.unavailable and not self.missing[transport]

    def start(self):
        super().start()
        if self.unavailable:
            return self
        for t in TRANSPORTS:
            if self.missing[t]:
                continue
            why = self.log_says_missing(t)
            if why:
                self.missing[t] = why
                continue
            try:
                self.daemon.wait_ready(lambda t=t: stream_query(self.ports[t], t) == 0,
                                       timeout=5)
            except RuntimeError as e:
                self.missing[t] = f"its {LABEL[t]} listener did not answer: {e}"
        if all(self.missing.values()):
            self.unavailable = "; ".join(f"{LABEL[t]}: {w}" for t, w in self.missing.items())
        return self

    def log_says_missing(self, transport):
        return None


class ServeDotproxy(Serving, run.Dotproxy):
    def lacks(self, transport):
        help_text = tool_help([self.dotproxy, "--help"])
        if transport == "dot" and "--listen-tls" not in help_text:
            return "this dotproxy has no --listen-tls"
        if transport == "doh" and "--listen-https" not in help_text:
            return "this dotproxy has no --listen-https (no DoH listener in this build)"
        return None

    def extra_argv(self):
        argv = ["--cert-file", self.cert, "--key-file", self.key]
        if not self.missing["dot"]:
            argv += ["--listen-tls", f"127.0.0.1:{self.ports['dot']}"]
        if not self.missing["doh"]:
            argv += ["--listen-https", f"127.0.0.1:{self.ports['doh']}"]
            if "--https-path" in tool_help([self.dotproxy, "--help"]):
                argv += ["--https-path", DOH_PATH]
        return argv


class ServeBaseline(ServeDotproxy):
    name = BASELINE


class ServeUnbound(Serving, run.UnboundForwarder):
    def lacks(self, transport):
        # unbound serves DoH only when built with libnghttp2 (its -V
        # configure line says so).
        if transport == "doh" and "libnghttp2" not in tool_help([which("unbound") or "unbound",
                                                                 "-V"]):
            return "unbound was built without libnghttp2 (no https-port)"
        return None

    def extra_config(self):
        # Only interfaces whose @port is tls-port (https-port) serve DoT (DoH).
        lines = [f'  tls-service-pem: "{self.cert}"', f'  tls-service-key: "{self.key}"',
                 f"  incoming-num-tcp: {UNBOUND_INCOMING_TCP}"]
        if not self.missing["dot"]:
            lines += [f"  interface: 127.0.0.1@{self.ports['dot']}",
                      f"  tls-port: {self.ports['dot']}"]
        if not self.missing["doh"]:
            lines += [f"  interface: 127.0.0.1@{self.ports['doh']}",
                      f"  https-port: {self.ports['doh']}",
                      f'  http-endpoint: "{DOH_PATH}"']
        return "\n".join(lines) + "\n"


class ServeDnsdist(Serving, run.DnsdistForwarder):
    def lacks(self, transport):
        features = tool_help([which("dnsdist") or "dnsdist", "--version"])
        if transport == "dot" and "dns-over-tls" not in features:
            return "dnsdist was built without DNS over TLS"
        if transport == "doh" and "dns-over-https" not in features:
            return "dnsdist was built without DNS over HTTPS"
        return None

    def extra_config(self):
        lines = []
        if not self.missing["dot"]:
            lines.append(f'addTLSLocal("127.0.0.1:{self.ports["dot"]}", "{self.cert}", '
                         f'"{self.key}", {{provider="openssl"}})')
        if not self.missing["doh"]:
            lines.append(f'addDOHLocal("127.0.0.1:{self.ports["doh"]}", "{self.cert}", '
                         f'"{self.key}", "{DOH_PATH}")')
        return "\n".join(lines) + "\n"


class ServeKresd(Serving, run.Kresd):
    def extra_config(self):
        lines = [f"net.tls('{self.cert}', '{self.key}')"]
        if not self.missing["dot"]:
            lines.append(f"net.listen('127.0.0.1', {self.ports['dot']}, {{ kind = 'tls' }})")
        if not self.missing["doh"]:
            # doh2 needs kresd built with nghttp2; without it this says so
            # in the log and kresd goes on with DoT.
            lines.append(f"local ok, err = pcall(net.listen, '127.0.0.1', {self.ports['doh']}, "
                         "{ kind = 'doh2' })\n"
                         "if not ok then print('bench: no doh2 listener: ' .. tostring(err)) end")
        return "\n".join(lines) + "\n"

    def log_says_missing(self, transport):
        if transport != "doh":
            return None
        try:
            with open(self.daemon.log_path, errors="replace") as f:
                m = re.search(r"bench: no doh2 listener: (.*)", f.read())
        except OSError:
            return None
        return f"kresd could not listen for DoH: {m.group(1)[:120]}" if m else None


SERVE_CLASSES = {"dotproxy": ServeDotproxy, BASELINE: ServeBaseline, "unbound": ServeUnbound,
                 "dnsdist": ServeDnsdist, "kresd": ServeKresd}


def stream_query(port, transport, ca_file=None, name=SERVE_NAME, timeout=2.0):
    """RCODE of one query over a new DoT or DoH connection, or None."""
    ca_file = ca_file or CA[0]
    stream = latency_probe.TlsStream("127.0.0.1", port, ca_file, name,
                                     alpn=["h2"] if transport == "doh" else None, timeout=timeout)
    try:
        sess = latency_probe.DotSession(stream) if transport == "dot" else \
            latency_probe.DohSession(stream, name, DOH_PATH)
        sess.send(latency_probe.encode_name("n0." + ZONE) + b"\x00\x01\x00\x01")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            select.select([stream.sock], [], [], max(0.0, deadline - time.monotonic()))
            got = sess.receive()
            if got:
                return got[0][1]
        return None
    except latency_probe.StreamClosed:
        return None
    finally:
        stream.close()


CA = [None]   # the CA file of this run (stream_query's default)


# ----------------------------------------------------------------------------
# Measurements

def stream_latency(port, transport, queries, seconds, rate=LATENCY_RATE, pids=(),
                   ca_file=None, name=SERVE_NAME):
    questions = latency_probe.load_questions(queries)
    with CpuMeter(pids) as m:
        try:
            r = latency_probe.run_stream("127.0.0.1", port, rate, seconds, questions, transport,
                                         ca_file or CA[0], name, DOH_PATH)
        except (OSError, latency_probe.StreamClosed, TimeoutError) as e:
            return {"error": f"probe could not connect: {e}"}
    r["other_pct"] = m.other_pct
    return r


def stream_throughput(port, transport, queries, seconds, pid, upstream, tlsload, count=True):
    """Maximum qps on THROUGHPUT_CLIENTS long-lived connections: dnsperf for
    DoT; tlsload -k for DoH (dnsperf 2.10's DoH client loses answers from
    dnsdist 1.7 as soon as two are outstanding on a connection)."""
    if transport == "dot":
        return run.throughput(port, queries, seconds, mode="dot", pid=pid, upstream=upstream,
                              count=count)
    if not tlsload:
        return {"error": "no tlsload (make build/tlsload)"}
    window = THROUGHPUT_OUTSTANDING // THROUGHPUT_CLIENTS
    up_pid = upstream.daemon.pid if upstream else None
    upq0 = upstream.query_count() if upstream and count else None
    r = run_tlsload(tlsload, port, transport, seconds, queries, pid, up_pid,
                    ["-k", window, "-c", THROUGHPUT_CLIENTS, "-T", 1])
    if "error" in r:
        return r
    answers = r["answers_noerror"]
    bad = r["answers"] - answers + r["failed"]["answer"]
    r["fail_pct"] = 100.0 * bad / (r["answers"] + r["failed"]["answer"]) \
        if r["answers"] + r["failed"]["answer"] else None
    r["cpu_per_100k"] = r["cpu_s"] / answers * 1e5 if answers and r["cpu_s"] is not None \
        else None
    r["reconnections"] = r["connections_opened"] - THROUGHPUT_CLIENTS
    r["tool"] = "tlsload"
    if upq0 is not None:
        upq1 = upstream.query_count()
        r["upstream_queries"] = upq1 - upq0 if upq1 is not None else None
        r["upstream_per_answer"] = (upq1 - upq0) / answers if upq1 is not None and answers \
            else None
    return r


def run_tlsload(tlsload, port, transport, seconds, queries, pid, up_pid, extra):
    """bench/tlsload.c with the server's and upstream's CPU around it."""
    argv = [tlsload, "-p", port, "-m", transport, "-l", f"{seconds:g}", "-s", SERVE_NAME,
            "-d", queries, "-u", DOH_PATH] + list(extra)
    with CpuMeter([pid, up_pid]) as m:
        try:
            p = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            return {"error": "tlsload did not finish in time"}
    try:
        r = json.loads(p.stdout)
    except ValueError:
        return {"error": f"tlsload failed: {p.stderr.decode(errors='replace').strip()[-200:]}"}
    r["cpu_s"] = m.pid_cpu.get(pid)
    r["upstream_cpu_s"] = m.pid_cpu.get(up_pid)
    r["other_pct"], r["machine_busy_pct"] = m.other_pct, m.busy_pct
    return r


def handshakes(tlsload, port, transport, seconds, queries, resume, pid, up_pid):
    """New connections per second (bench/tlsload.c), and the server's CPU."""
    r = run_tlsload(tlsload, port, transport, seconds, queries, pid, up_pid,
                    ["-c", HS_CONNS, "-T", HS_THREADS] + (["-r"] if resume else []))
    if "error" in r:
        return r
    r["cpu_per_1k"] = r["cpu_s"] / r["completed"] * 1000 if r["completed"] else None
    r["resumed_pct"] = 100.0 * r["resumed"] / r["completed"] if r["completed"] else None
    r["tickets_per_conn"] = r["tickets"] / r["completed"] if r["completed"] else None
    return r


def threads_of(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


def measure(p, transport, queries, seconds, hs_seconds, upstream, tlsload,
            handshakes_only=False):
    port = p.ports[transport]
    pids = [p.pid, upstream.daemon.pid]
    # Warm-up: opens the server's upstream connection (closed for idleness
    # between rounds, perhaps) and its first client connection's costs.
    stream_latency(port, transport, queries, WARMUP_SECONDS, rate=1000)
    rec = {} if handshakes_only else {
        "lat": stream_latency(port, transport, queries, seconds, pids=pids),
        "thr": stream_throughput(port, transport, queries, seconds, p.pid, upstream, tlsload)}
    if tlsload:
        for key, resume in (("hs_full", False), ("hs_resumed", True)):
            rec[key] = handshakes(tlsload, port, transport, hs_seconds, queries, resume,
                                  p.pid, upstream.daemon.pid)
    rec["rss_mib"] = run.peak_rss_mib(p.pid)
    rec["threads"] = threads_of(p.pid)
    return rec


def hs_seconds_of(seconds):
    return max(1.0, seconds / 2)


def run_serve(args, work, cert, key, ca, upstream, queries, binaries, peer_names,
              limit_rounds=None):
    """Start the serving instances, measure them for args.rounds rounds;
    (results, ctx) for render_serve(). @limit_rounds: the main table's limit
    runs (the same dnsperf load straight to the upstream), reused as the DoT
    reference's qps instead of measuring it again."""
    CA[0] = ca
    transports = TRANSPORTS if args.serve == "all" else (args.serve,)
    names = [n for n in peer_names if n in SERVE_CLASSES]
    tlsload = args.tlsload if args.tlsload and os.access(args.tlsload, os.X_OK) else None
    ctx = {"names": names, "transports": transports, "servers": {}, "upstream": upstream,
           "tlsload": tlsload, "loadavg": open("/proc/loadavg").read().split()[:3],
           "skipped": [n for n in peer_names if n not in SERVE_CLASSES]}
    if not tlsload:
        log(f"serve: no handshake rows: {args.tlsload} missing (make {args.tlsload})")
    sdir = os.path.join(work, "serve")
    os.makedirs(sdir, exist_ok=True)
    for name in names:
        cls = SERVE_CLASSES[name]
        p = cls(sdir, upstream, ca, dotproxy=binaries.get(name))
        p.setup(cert, key)
        if cls.binary and not which(cls.binary):
            p.unavailable = f"{run.PACKAGES[cls.binary]} not installed"
        else:
            log(f"serve: starting {name} (DoT 127.0.0.1:{p.ports['dot']}, DoH "
                f"127.0.0.1:{p.ports['doh']}) → {upstream.name}")
            p.start()
        if p.unavailable:
            log(f"  {name} unavailable: {p.unavailable}")
        else:
            for t in TRANSPORTS:
                if p.missing[t]:
                    log(f"  {name}: no {LABEL[t]}: {p.missing[t]}")
        ctx["servers"][name] = p

    seconds, hs_secs = args.seconds, hs_seconds_of(args.seconds)
    results = {t: {n: [] for n in names} for t in transports}
    results["reference"] = []
    t0 = time.monotonic()
    for rnd in range(args.rounds):
        for t in transports:
            live = [n for n in names if ctx["servers"][n].serves(t)]
            for name, p in run.round_order(live, rnd, ctx["servers"],
                                           f"serve round {rnd + 1}/{args.rounds}, {LABEL[t]}:"):
                rec = measure(p, t, queries, seconds, hs_secs, upstream, tlsload,
                              getattr(args, "handshakes_only", False))
                rec["round"] = rnd
                results[t][name].append(rec)
                log(f"  {name} {LABEL[t]}: " + summary(rec))
                if not p.daemon.alive():
                    log(f"  {name} exited: {p.daemon.log_tail()}")
            if t == "dot" and not getattr(args, "handshakes_only", False):
                log(f"  reference: DoT straight to {upstream.name}")
                lat = stream_latency(upstream.port, "dot", queries, seconds, ca_file=ca,
                                     name=AUTH_NAME, pids=[upstream.daemon.pid])
                if limit_rounds and rnd < len(limit_rounds) and "thr" in limit_rounds[rnd]:
                    thr = dict(limit_rounds[rnd]["thr"], reused="the main table's limit run")
                else:
                    thr = stream_throughput(upstream.port, "dot", queries, seconds, None,
                                            upstream, tlsload, count=False)
                results["reference"].append({"round": rnd, "lat": lat, "thr": thr})
                log(f"  reference: {get(thr, 'qps') or 0:,.0f} qps, p50 {get(lat, 'p50_ms')} ms")
    ctx["elapsed"] = time.monotonic() - t0
    ctx["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    for p in ctx["servers"].values():
        if p.daemon:
            p.daemon.stop()
    return results, ctx


def summary(rec):
    thr, lat = rec.get("thr", {}), rec.get("lat", {})
    parts = [] if not thr and not lat else [
        f"{get(thr, 'qps') or 0:,.0f} qps, fail {get(thr, 'fail_pct') or 0:.2f}%, "
        f"{get(thr, 'cpu_per_100k') or 0:.2f} CPU-s/100k, p50 {lat.get('p50_ms')} ms, "
        f"p99 {lat.get('p99_ms')} ms"]  # none with --handshakes-only
    for k in ("hs_full", "hs_resumed"):
        h = rec.get(k)
        if h:
            parts.append(f"{k[3:]} {h.get('rate', 0):,.0f} hs/s "
                         f"({fmt(h.get('cpu_per_1k'), 'cpu')} CPU-s/1k, "
                         f"{fmt(h.get('resumed_pct'), 'pct')}% resumed)")
    for src in (thr, lat, rec.get("hs_full") or {}, rec.get("hs_resumed") or {}):
        if "error" in src:
            parts.append(f"[{src['error']}]")
    return ", ".join(parts)


# ----------------------------------------------------------------------------
# Report

# (key path, format, higher is better) of each compared metric.
METRICS = {
    "qps": (("thr", "qps"), "qps", True),
    "CPU-s/100k": (("thr", "cpu_per_100k"), "cpu", False),
    "p50": (("lat", "p50_ms"), "ms", False),
    "p99": (("lat", "p99_ms"), "ms", False),
    "full hs/s": (("hs_full", "rate"), "raw", True),
    "CPU-s/1k full": (("hs_full", "cpu_per_1k"), "cpu", False),
    "resumed hs/s": (("hs_resumed", "rate"), "raw", True),
    "CPU-s/1k resumed": (("hs_resumed", "cpu_per_1k"), "cpu", False),
    "peak RSS": (("rss_mib",), "mib", False),
}


def best_peer_ratios(rows, subject):
    """{metric: (per-round ratios subject / best peer, Counter of best peers)}.
    Peers are every row but dotproxy and the baseline; a round counts when
    the subject and at least one peer have the metric."""
    out = {}
    peers = [n for n in rows if n not in ("dotproxy", BASELINE)]
    by_round = {n: {r["round"]: r for r in rows[n]} for n in rows}
    for metric, (keys, _kind, higher) in METRICS.items():
        ratios, bests = [], {}
        for rnd, rec in sorted(by_round.get(subject, {}).items()):
            mine = get(rec, *keys)
            vals = [(get(by_round[n][rnd], *keys), n) for n in peers if rnd in by_round[n]]
            vals = [(v, n) for v, n in vals if v]
            if not mine or not vals:
                continue
            v, n = max(vals) if higher else min(vals)
            ratios.append(mine / v)
            bests[n] = bests.get(n, 0) + 1
        out[metric] = (ratios, bests)
    return out


def ratio_cell(ratios, bests):
    if not ratios:
        return "–"
    c = cell(ratios, "ratio")
    who = "/".join(sorted(bests, key=lambda n: -bests[n]))
    return f"{c} [{who}]"


def render_serve(args, ctx, results):
    lines = []
    up = ctx["upstream"]
    hs_secs = hs_seconds_of(args.seconds)
    lines.append(f"### Serving DoT and DoH to clients ({ctx['elapsed'] / 60:.1f} min)")
    lines.append("")
    lines.append(
        f"Each server answers clients over DoT (and DoH where it can) with a certificate of "
        f"the bench's CA for {SERVE_NAME}, and forwards to {up.name} over DoT with its cache "
        f"off, like the main table. qps on {THROUGHPUT_CLIENTS} long-lived connections, "
        f"{THROUGHPUT_OUTSTANDING} queries outstanding, {args.seconds:g} s: DoT `dnsperf -m dot "
        f"-c {THROUGHPUT_CLIENTS} -q {THROUGHPUT_OUTSTANDING}`, DoH `tlsload -k "
        f"{THROUGHPUT_OUTSTANDING // THROUGHPUT_CLIENTS} -c {THROUGHPUT_CLIENTS}` (HTTP/2 GET "
        f"to {DOH_PATH}; dnsperf 2.10's DoH client loses answers from dnsdist 1.7); p50/p99: `bench/latency_probe.py`, {LATENCY_RATE} qps on "
        f"one connection, kernel timestamps; hs/s: `tlsload` ({HS_CONNS} connections under "
        f"way, {HS_THREADS} threads, {hs_secs:g} s), each connection a TLS handshake (full, or "
        f"resumed from a session ticket) and one query; CPU-s: the server's own, per 100k "
        f"answers and per 1k connections; peak RSS: VmHWM after the round. Cells: median "
        f"(min–max) over {args.rounds} rounds. Ratios: dotproxy ÷ the best peer of the same "
        f"round (in brackets the best peer, several when it changed between rounds, most "
        f"often best first); above 1 is more (better for qps and hs/s, worse for "
        f"CPU, latency and RSS).")
    lines.append("")
    for t in ctx["transports"]:
        lines += render_transport(ctx, results, t)
    skipped = [f"{n} (serves plain DNS only)" for n in ctx["skipped"] if n == "stubby"]
    if skipped:
        lines.append("Not in these tables: " + ", ".join(skipped) + ".")
        lines.append("")
    lines.append(f"Load average: {' '.join(ctx['loadavg'])} when the serving rounds started, "
                 f"{' '.join(ctx['loadavg_end'])} when they ended.")
    lines.append("")
    return lines


def render_transport(ctx, results, t):
    rows = results[t]
    lines = [f"#### {LABEL[t]}", ""]
    lines.append("| server | qps | fail % | CPU-s/100k | p50 ms | p99 ms | full hs/s | "
                 "CPU-s/1k full | resumed hs/s | CPU-s/1k resumed | peak RSS MiB |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    if t == "dot":
        ref = results["reference"]
        lines.append(f"| reference: dnsperf/probe → {ctx['upstream'].name} over DoT | "
                     f"{cell([get(r, 'thr', 'qps') for r in ref], 'qps')} | "
                     f"{cell([get(r, 'thr', 'fail_pct') for r in ref], 'fail')} | – | "
                     f"{cell([get(r, 'lat', 'p50_ms') for r in ref], 'ms')} | "
                     f"{cell([get(r, 'lat', 'p99_ms') for r in ref], 'ms')} | – | – | – | – | – |")
    for name in ctx["names"]:
        p = ctx["servers"][name]
        if p.unavailable or p.missing[t]:
            why = p.unavailable or p.missing[t]
            lines.append(f"| {name} | not run: {why[:160]} " + "| " * 9 + "|")
            continue
        rs = rows.get(name, [])
        cells = [name, cell([get(r, "thr", "qps") for r in rs], "qps"),
                 cell([get(r, "thr", "fail_pct") for r in rs], "fail"),
                 cell([get(r, "thr", "cpu_per_100k") for r in rs], "cpu"),
                 cell([get(r, "lat", "p50_ms") for r in rs], "ms"),
                 cell([get(r, "lat", "p99_ms") for r in rs], "ms"),
                 cell([get(r, "hs_full", "rate") for r in rs], "raw"),
                 cell([get(r, "hs_full", "cpu_per_1k") for r in rs], "cpu"),
                 cell([get(r, "hs_resumed", "rate") for r in rs], "raw"),
                 cell([get(r, "hs_resumed", "cpu_per_1k") for r in rs], "cpu"),
                 cell([r.get("rss_mib") for r in rs], "mib")]
        if name == "dotproxy":
            cells = [f"**{c}**" if i == 0 else c for i, c in enumerate(cells)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")

    p = ctx["servers"].get("dotproxy")
    if p and not rows.get("dotproxy"):
        lines.append(f"dotproxy ÷ best peer: not measured ({p.unavailable or p.missing[t]}).")
        lines.append("")
    for subject in ("dotproxy", BASELINE):
        if not rows.get(subject):
            continue
        ratios = best_peer_ratios(rows, subject)
        if not any(r for r, _b in ratios.values()):
            continue
        lines.append(f"| {subject} ÷ best peer | " + " | ".join(METRICS) + " |")
        lines.append("|---|" + "---|" * len(METRICS))
        lines.append("| same round | " + " | ".join(ratio_cell(*ratios[m]) for m in METRICS)
                     + " |")
        lines.append("")
        if subject == "dotproxy":
            lines.append(goal_line(ratios))
            lines.append("")

    diag = []
    for name in ctx["names"]:
        rs = rows.get(name, [])
        if not rs:
            continue
        parts = []
        threads = sorted({r.get("threads") for r in rs} - {None})
        if threads:
            parts.append(f"threads {'/'.join(map(str, threads))}")
        rc = [get(r, "thr", "reconnections") for r in rs]
        run.part_if_known(parts, "reconnections during the qps run", rc, "raw")
        upa = [get(r, "thr", "upstream_per_answer") for r in rs]
        run.part_if_known(parts, "upstream queries per answer", upa, "cpu")
        conns = [get(r, "thr", "upstream_connections") for r in rs]
        run.part_if_known(parts, "TLS connections to the upstream under load", conns, "raw")
        tls = sorted({" ".join(x for x in (get(r, "hs_full", "tls", "version"),
                                           get(r, "hs_full", "tls", "cipher"),
                                           get(r, "hs_full", "tls", "group")) if x)
                      for r in rs if get(r, "hs_full", "tls")})
        if tls:
            parts.append("TLS " + ", ".join(tls))
        alpn = sorted({get(r, "hs_full", "tls", "alpn") or "none" for r in rs
                       if get(r, "hs_full", "tls")})
        if alpn:
            parts.append(f"ALPN {'/'.join(alpn)}")
        tf = [get(r, "hs_full", "tickets_per_conn") for r in rs]
        tr = [get(r, "hs_resumed", "tickets_per_conn") for r in rs]
        if any(v is not None for v in tf + tr):
            parts.append(f"session tickets per full handshake {cell(tf, 'ratio')}, "
                         f"per resumption {cell(tr, 'ratio')}")
        rp = [get(r, "hs_resumed", "resumed_pct") for r in rs]
        run.part_if_known(parts, "resumed run:", rp, "pct1", "% resumed")
        hp = [get(r, "hs_full", "handshake_ms", "p50") for r in rs]
        run.part_if_known(parts, "full handshake time p50", hp, "ms", f" ms with {HS_CONNS} under way")
        fails = {}
        for k in ("hs_full", "hs_resumed"):
            for r in rs:
                for stage, n in (get(r, k, "failed") or {}).items():
                    if n:
                        fails[f"{k[3:]} {stage}"] = fails.get(f"{k[3:]} {stage}", 0) + n
        if fails:
            errs = sorted({get(r, k, "first_error") for r in rs for k in ("hs_full", "hs_resumed")}
                          - {None, ""})
            parts.append("handshake-run failures: " + ", ".join(
                f"{k} {v}" for k, v in fails.items()) + (f" ({errs[0]})" if errs else ""))
        lost = [get(r, "lat", "lost") for r in rs]
        if any(lost):
            parts.append(f"latency run lost {cell(lost, 'raw')}")
        closed = [f"{get(r, 'lat', 'closed')} after {get(r, 'lat', 'sent')} queries"
                  for r in rs if get(r, "lat", "closed")]
        if closed:
            parts.append(f"latency run: connection closed by the server in {len(closed)} "
                         f"round(s) ({closed[0]})")
        waits = [get(r, "lat", "stream_waits") for r in rs]
        if any(waits):
            parts.append(f"latency run: queries that waited for a free HTTP/2 stream "
                         f"{cell(waits, 'raw')} (limit {get(rs[0], 'lat', 'max_streams')})")
        errors = sorted({get(r, k, "error") for r in rs
                         for k in ("lat", "thr", "hs_full", "hs_resumed")} - {None})
        if errors:
            parts.append("errors: " + "; ".join(errors))
        other = [get(r, "thr", "other_pct") for r in rs]
        parts.append(f"other processes {cell(other, 'pct')}% of the machine (qps run), "
                     f"{cell([get(r, 'hs_full', 'other_pct') for r in rs], 'pct')}% (full "
                     f"handshakes)")
        ccpu = [get(r, "hs_full", "client_cpu_s") for r in rs]
        scpu = [get(r, "hs_full", "cpu_s") for r in rs]
        if any(v is not None for v in ccpu):
            parts.append(f"tlsload CPU-s / server CPU-s (full) {cell(ccpu, 'cpu')} / "
                         f"{cell(scpu, 'cpu')}")
        lag = [get(r, "lat", "max_send_lag_ms") for r in rs]
        parts.append(f"probe max send lag {cell(lag, 'ms')} ms")
        diag.append(f"- {name}: " + "; ".join(parts))
    if diag:
        lines.append(f"{LABEL[t]} details:")
        lines += diag
        lines.append("")
    return lines


def goal_line(ratios):
    """Issue 13's goal: qps at least 1.5x the best peer's, handshakes at least
    the best peer's rate; judged on the median of the per-round ratios."""
    def verdict(metric, goal):
        rs = ratios[metric][0]
        if not rs:
            return f"{metric}: not measured"
        med = statistics.median(rs)
        return f"{metric} {med:.2f}× ({'met' if med >= goal else 'not met'}, goal {goal:g}×)"
    return ("Goal (issue 13): " + "; ".join([verdict("qps", 1.5), verdict("full hs/s", 1.0),
                                             verdict("resumed hs/s", 1.0)]) + ".")


# ----------------------------------------------------------------------------
# --serve-only: the upstream and these tables, nothing else

def main_serve_only(args, peer_names):
    work = os.path.abspath(args.workdir)
    if os.path.isdir(work):
        shutil.rmtree(work)
    os.makedirs(work)
    log(f"serving tables only, in {work}: CA, certificates for {AUTH_NAME} and {SERVE_NAME}")
    pki = run.PKI(os.path.join(work, "pki"), name="dotproxy bench CA")
    up_cert, up_key = pki.leaf("server", dns_names=[AUTH_NAME], ip_addresses=["127.0.0.1"])
    cert, key = pki.leaf("serve", dns_names=[SERVE_NAME], ip_addresses=["127.0.0.1"])
    queries = os.path.join(work, "queries.txt")
    run.write_query_file(queries)
    ctx0 = {}
    binaries = run.snapshot_binaries(args, peer_names, work, ctx0)
    want = "dnsdist" if args.upstream == "auto" else args.upstream
    if not which(want):
        log(f"upstream {want} not installed")
        return 1
    try:
        up = run.UPSTREAMS[want](work, up_cert, up_key, pki.ca_file).start()
    except (RuntimeError, OSError) as e:
        log(f"upstream {want} failed to start: {e}")
        run.stop_all()
        return 1
    results, ctx = run_serve(args, work, cert, key, pki.ca_file, up, queries, binaries,
                             peer_names)
    run.stop_all()
    run.write_table_report(args, work, ": serving DoT and DoH", render_serve(args, ctx, results),
                           [n for n in peer_names if n in SERVE_CLASSES],
                           ctx0.get("binary_id", {}),
                           lambda versions: save_json(work, args, ctx, results, versions))
    return 0


def save_json(work, args, ctx, results, versions=None):
    with open(os.path.join(work, "serve", "results.json"), "w") as f:
        json.dump({"args": vars(args), "machine": run.machine_line(),
                   "upstream": ctx["upstream"].name, "versions": versions,
                   "missing": {n: p.missing for n, p in ctx["servers"].items()},
                   "unavailable": {n: p.unavailable for n, p in ctx["servers"].items()},
                   "elapsed_s": ctx["elapsed"], "loadavg": ctx["loadavg"],
                   "loadavg_end": ctx["loadavg_end"], "results": results},
                  f, indent=1, default=str)
