"""The upstream-transport table of `make bench`: DoH upstreams against DoT
upstreams (issue 12, "Speed"; bench/README.md, "DoH against DoT upstreams").

ONE upstream server, dnsdist answering the synthetic zone from memory (the
main table's spoof rule), listens for DoT and for DoH with the bench CA's
certificate for AUTH_NAME. Four forwarders, each with its cache off, take
plain DNS over UDP from dnsperf and the latency probe exactly as in the main
table, and forward to it:

  dotproxy -> DoT   --upstream 127.0.0.1@P#AUTH_NAME (the main table's row)
  dotproxy -> DoH   --upstream https://127.0.0.1:Q/dns-query#AUTH_NAME (POST,
                    dotproxy's default method)
  dnsdist  -> DoH   newServer{..., tls="openssl", dohPath="/dns-query"}
  dnsdist  -> DoT   newServer{..., tls="openssl"} (the main table's row)

Per round, each forwarder in turn (the order rotates each round): the light
warm-up, the latency probe at LATENCY_RATE over UDP, the dnsperf throughput
run over UDP (CPU of the forwarder and of the upstream around it, the
upstream's query counter around it), peak RSS. Then two reference runs
straight to the upstream, no forwarder: DoT with the main table's limit
load (`dnsperf -m dot`), DoH with `tlsload -k` (dnsperf 2.10's DoH client
loses answers from dnsdist 1.7; bench/serve.py), and the probe on one
DoT or DoH connection. They show how much the upstream can answer over each
transport in this run, i.e. that it is not what limits the forwarders.

This module uses run.py's and serve.py's helpers and is started by run.py
(--upstream-transport, --upstream-transport-only); it is not a program.
"""

import json
import os
import shutil
import statistics
import time

import latency_probe
import run
import serve
from run import (AUTH_NAME, LATENCY_RATE, THROUGHPUT_CLIENTS, THROUGHPUT_OUTSTANDING, ZONE,
                 cell, fmt, free_port, get, log, which)

DOH_PATH = "/dns-query"
DOT_ROW = "dotproxy → DoT"
DOH_ROW = "dotproxy → DoH"
DNSDIST_DOH = "dnsdist → DoH"
DNSDIST_DOT = "dnsdist → DoT"
ROWS = (DOT_ROW, DOH_ROW, DNSDIST_DOH, DNSDIST_DOT)
# Issue 12's goals, judged on the median of the per-round ratios.
GOAL_DOH_OVER_DOT = 0.8       # dotproxy DoH qps at least 80% of its DoT qps
GOAL_OVER_DNSDIST = 2.0       # at least 2x dnsdist's DoH-backend qps ...
GOAL_CPU_RATIO = 0.5          # ... at no more than half its CPU per query


# ----------------------------------------------------------------------------
# The upstream: DoT and DoH from one dnsdist

class DualUpstream(run.DnsdistUpstream):
    """The main table's dnsdist upstream (spoof rule, no backend, query
    counter) with a DoH listener too: addDOHLocal on doh_port, DOH_PATH, the
    same certificate. DoT stays on .port."""
    name = "dnsdist"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.doh_port = free_port()

    def argv(self):
        argv = super().argv()
        with open(os.path.join(self.workdir, "upstream-dnsdist.conf"), "a") as f:
            f.write(f'addDOHLocal("127.0.0.1:{self.doh_port}", "{self.cert}", "{self.key}", '
                    f'"{DOH_PATH}")\n')
        return argv

    def measured_doh_nodelay(self):
        """TCP_NODELAY on the upstream's side of a fresh DoH connection."""
        stream = latency_probe.TlsStream("127.0.0.1", self.doh_port, self.ca_file, AUTH_NAME,
                                         alpn=["h2"])
        try:
            return run.nodelay_word(run.tcp_nodelay(self.daemon.pid, local_port=self.doh_port,
                                                    remote_port=stream.sock.getsockname()[1]))
        finally:
            stream.close()

    def ready(self):
        return super().ready() and serve.stream_query(self.doh_port, "doh", self.ca_file,
                                                      name=AUTH_NAME, timeout=1.0) == 0


class UpstreamView:
    """The upstream as one forwarder sees it: .port is the port it forwards
    to (DoT or DoH), so that run.throughput() counts the forwarder's
    connections to that listener; everything else is the upstream's."""

    def __init__(self, upstream, transport):
        self._up = upstream
        self.transport = transport
        self.port = upstream.doh_port if transport == "doh" else upstream.port

    def __getattr__(self, attr):
        return getattr(self._up, attr)


# ----------------------------------------------------------------------------
# The forwarders: run.py's dotproxy and dnsdist, with a DoT or DoH upstream

class UtDotproxy(run.Dotproxy):
    """run.Dotproxy (cache off, the same options), with the upstream given
    as https://127.0.0.1:Q/dns-query#AUTH_NAME for DoH."""

    def argv(self):
        argv = super().argv()
        if self.upstream.transport == "doh":
            i = argv.index("--upstream") + 1
            argv[i] = f"https://127.0.0.1:{self.upstream.port}{DOH_PATH}#{AUTH_NAME}"
        return argv

    def lacks(self):
        if self.upstream.transport == "doh" and \
                "https://" not in serve.tool_help([self.dotproxy, "--help"]):
            return "this dotproxy has no DoH upstreams (no https:// in --help)"
        return None


class UtDnsdist(run.DnsdistForwarder):
    """run.DnsdistForwarder's configuration (no packet cache, dnsdist's
    defaults otherwise), with dohPath for the DoH backend."""

    def argv(self):
        doh = f', dohPath="{DOH_PATH}"' if self.upstream.transport == "doh" else ""
        conf = self.write("dnsdist.conf", f"""\
setSecurityPollSuffix("")
setLocal("127.0.0.1:{self.port}")
newServer({{address="127.0.0.1:{self.upstream.port}", tls="openssl"{doh},
  subjectName="{AUTH_NAME}", caStore="{self.ca_file}", validateCertificates=true,
  checkName="n0.{ZONE}"}})
""")
        return [which("dnsdist"), "--supervised", "--disable-syslog", "-C", conf]

    def lacks(self):
        if self.upstream.transport == "doh" and "outgoing-dns-over-https" not in \
                serve.tool_help([which("dnsdist") or "dnsdist", "--version"]):
            return "this dnsdist has no outgoing DoH (no outgoing-dns-over-https in --version)"
        return None


def forwarder_class(row):
    base = UtDotproxy if row.startswith("dotproxy") else UtDnsdist
    # A class per row: the row is its name (the report's, and the slug of
    # its work directory).
    return type(base.__name__, (base,), {"name": row})


def transport_of(row):
    return "doh" if row.endswith("DoH") else "dot"


# ----------------------------------------------------------------------------
# Measurements

def measure(p, up, queries, seconds):
    """The main table's measurements of one forwarder, with the upstream's
    CPU around the throughput run."""
    run.warmup(p.port, queries)
    lat = run.latency(p.port, queries, seconds, pids=[p.pid, up.daemon.pid])
    thr = run.throughput(p.port, queries, seconds, pid=p.pid, upstream=p.upstream)
    if thr.get("runtime") and thr.get("upstream_cpu_s") is not None:
        thr["upstream_cpu_pct"] = 100.0 * thr["upstream_cpu_s"] / thr["runtime"]
    return {"lat": lat, "thr": thr, "rss_mib": run.peak_rss_mib(p.pid),
            "threads": serve.threads_of(p.pid)}


def measure_reference(up, transport, queries, seconds, tlsload):
    """Straight to the upstream, no forwarder: qps on ten connections (DoT:
    dnsperf -m dot, the main table's limit load; DoH: tlsload -k) and the
    probe on one connection."""
    port = up.doh_port if transport == "doh" else up.port
    if transport == "dot":
        thr = run.throughput(port, queries, seconds, mode="dot", upstream=up, count=False)
    else:
        thr = serve.stream_throughput(port, "doh", queries, seconds, None, up, tlsload,
                                      count=False)
    if thr.get("upstream_cpu_s") is not None:
        secs = thr.get("runtime") or thr.get("wall_s") or seconds
        thr["upstream_cpu_pct"] = 100.0 * thr["upstream_cpu_s"] / secs
    lat = serve.stream_latency(port, transport, queries, seconds, pids=[up.daemon.pid],
                               ca_file=up.ca_file, name=AUTH_NAME)
    return {"thr": thr, "lat": lat}


def run_table(args, work, cert, key, ca, queries, binaries):
    """Start the upstream and the four forwarders, measure them for
    args.rounds rounds; (results, ctx) for render(). Stops what it started."""
    serve.CA[0] = ca
    udir = os.path.join(work, "upstream-transport")
    os.makedirs(udir, exist_ok=True)
    tlsload = args.tlsload if args.tlsload and os.access(args.tlsload, os.X_OK) else None
    ctx = {"rows": {}, "tlsload": tlsload, "loadavg": open("/proc/loadavg").read().split()[:3]}
    results = {"rows": {r: [] for r in ROWS}, "reference": {"dot": [], "doh": []}}
    if not which("dnsdist"):
        ctx["error"] = "dnsdist is not installed: no upstream for this table"
        return results, ctx
    log(f"upstream transports: dnsdist serving DoT and DoH for {AUTH_NAME}")
    try:
        up = DualUpstream(udir, cert, key, ca).start()
    except (RuntimeError, OSError) as e:
        ctx["error"] = f"the DoT+DoH upstream failed to start: {e}"
        return results, ctx
    ctx["upstream"] = up
    ctx["upstream_nodelay"] = {"DoT": up.measured_nodelay(), "DoH": up.measured_doh_nodelay()}
    ctx["upstream_threads"] = serve.threads_of(up.daemon.pid)
    for row in ROWS:
        cls = forwarder_class(row)
        p = cls(udir, UpstreamView(up, transport_of(row)), ca, dotproxy=binaries.get("dotproxy"))
        if cls.binary and not which(cls.binary):
            p.unavailable = f"{run.PACKAGES[cls.binary]} not installed"
        elif row.startswith("dotproxy") and not p.dotproxy:
            p.unavailable = "no dotproxy binary"
        else:
            p.unavailable = p.lacks()
        if not p.unavailable:
            log(f"starting {row} (127.0.0.1:{p.port} → upstream port {p.upstream.port})")
            p.start()
        if p.unavailable:
            log(f"  {row} unavailable: {p.unavailable}")
        ctx["rows"][row] = p

    live = [r for r in ROWS if not ctx["rows"][r].unavailable]
    t0 = time.monotonic()
    for rnd in range(args.rounds):
        for row, p in run.round_order(live, rnd, ctx["rows"],
                                      f"upstream transports round {rnd + 1}/{args.rounds}:"):
            rec = measure(p, up, queries, args.seconds)
            rec["round"] = rnd
            results["rows"][row].append(rec)
            thr, lat = rec["thr"], rec["lat"]
            log(f"  {row}: {get(thr, 'qps') or 0:,.0f} qps, fail {get(thr, 'fail_pct') or 0:.2f}%, "
                f"{get(thr, 'cpu_per_100k') or 0:.2f} CPU-s/100k, p50 {lat.get('p50_ms')} ms, "
                f"p99 {lat.get('p99_ms')} ms, upstream q/answer "
                f"{fmt(get(thr, 'upstream_per_answer'), 'ratio')}"
                + (f" [{thr['error']}]" if "error" in thr else ""))
        for t in ("dot", "doh"):
            if t == "doh" and not tlsload:
                continue
            rec = measure_reference(up, t, queries, args.seconds, tlsload)
            rec["round"] = rnd
            results["reference"][t].append(rec)
            log(f"  reference {t}: {get(rec, 'thr', 'qps') or 0:,.0f} qps, upstream CPU "
                f"{get(rec, 'thr', 'upstream_cpu_pct') or 0:.0f}% of a core, p50 "
                f"{get(rec, 'lat', 'p50_ms')} ms")
    ctx["elapsed"] = time.monotonic() - t0
    ctx["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    for p in ctx["rows"].values():
        if p.daemon:
            p.daemon.stop()
    up.daemon.stop()
    return results, ctx


# ----------------------------------------------------------------------------
# Report

def round_ratios(results, a, b, keys):
    """Per-round ratios @a / @b of the value at @keys, both measured in the
    same round."""
    by = {row: {r["round"]: r for r in results["rows"].get(row, [])} for row in (a, b)}
    out = []
    for rnd in sorted(set(by[a]) & set(by[b])):
        x, y = get(by[a][rnd], *keys), get(by[b][rnd], *keys)
        if x is not None and y:
            out.append(x / y)
    return out


def goals(results):
    """{goal: (per-round ratios, goal, higher is better)}."""
    return {
        "dotproxy DoH ÷ dotproxy DoT, qps": (
            round_ratios(results, DOH_ROW, DOT_ROW, ("thr", "qps")), GOAL_DOH_OVER_DOT, True),
        "dotproxy DoH ÷ dnsdist DoH, qps": (
            round_ratios(results, DOH_ROW, DNSDIST_DOH, ("thr", "qps")), GOAL_OVER_DNSDIST, True),
        "dotproxy DoH ÷ dnsdist DoH, CPU-s per query": (
            round_ratios(results, DOH_ROW, DNSDIST_DOH, ("thr", "cpu_per_100k")),
            GOAL_CPU_RATIO, False),
    }


def goal_verdict(ratios, goal, higher):
    if not ratios:
        return "not measured"
    med = statistics.median(ratios)
    met = med >= goal if higher else med <= goal
    return f"{'met' if met else 'NOT met'} ({'at least' if higher else 'at most'} {goal:g})"


def render(args, ctx, results):
    lines = [f"### DoH against DoT upstreams ({ctx.get('elapsed', 0) / 60:.1f} min)", ""]
    if ctx.get("error"):
        return lines + [f"Not run: {ctx['error']}.", ""]
    lines.append(
        f"One upstream for every row: dnsdist answering the {run.ZONE_NAMES:,}-name zone from "
        f"memory over DoT and over DoH ({DOH_PATH}, HTTP/2), with one certificate for "
        f"{AUTH_NAME} (TCP_NODELAY on its side, read from live sockets: "
        + ", ".join(f"{k} {v}" for k, v in ctx["upstream_nodelay"].items()) + "; "
        f"{ctx['upstream_threads']} threads). Each forwarder has its cache off and takes plain "
        f"DNS over UDP exactly as in the main table: qps `dnsperf -c {THROUGHPUT_CLIENTS} -q "
        f"{THROUGHPUT_OUTSTANDING} -l {args.seconds:g}` (NOERROR answers/s), p50/p99 "
        f"`bench/latency_probe.py` at {LATENCY_RATE} qps; CPU-s/100k: the forwarder's own "
        f"utime+stime per 100k NOERROR answers; upstream q/answer: the upstream's query "
        f"counter over the answers (1.00: no cache); upstream CPU: its share of one core during "
        f"the qps run. dotproxy asks DoH with POST (its default). Reference rows: no forwarder, "
        f"straight to the upstream on {THROUGHPUT_CLIENTS} connections (DoT `dnsperf -m dot`, "
        f"DoH `tlsload -k {THROUGHPUT_OUTSTANDING // THROUGHPUT_CLIENTS}` with GET: dnsperf "
        f"2.10's DoH client loses answers from dnsdist 1.7), probe on one connection. Cells: "
        f"median (min–max) over {args.rounds} rounds.")
    lines.append("")
    lines.append("| path | qps | fail % | CPU-s/100k | p50 ms | p99 ms | peak RSS MiB | "
                 "upstream q/answer | upstream CPU % |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for t, label in (("dot", "DoT: dnsperf -m dot"), ("doh", "DoH: tlsload -k")):
        ref = results["reference"][t]
        if not ref:
            lines.append(f"| reference {label} → upstream | not run (no tlsload) "
                         + "| " * 7 + "|")
            continue
        lines.append(f"| reference {label} → upstream | "
                     f"{cell([get(r, 'thr', 'qps') for r in ref], 'qps')} | "
                     f"{cell([get(r, 'thr', 'fail_pct') for r in ref], 'fail')} | – | "
                     f"{cell([get(r, 'lat', 'p50_ms') for r in ref], 'ms')} | "
                     f"{cell([get(r, 'lat', 'p99_ms') for r in ref], 'ms')} | – | – | "
                     f"{cell([get(r, 'thr', 'upstream_cpu_pct') for r in ref], 'pct')} |")
    for row in ROWS:
        p = ctx["rows"][row]
        if p.unavailable:
            lines.append(f"| {row} | not run: {p.unavailable[:160]} " + "| " * 7 + "|")
            continue
        rs = results["rows"][row]
        cells = [row, cell([get(r, "thr", "qps") for r in rs], "qps"),
                 cell([get(r, "thr", "fail_pct") for r in rs], "fail"),
                 cell([get(r, "thr", "cpu_per_100k") for r in rs], "cpu"),
                 cell([get(r, "lat", "p50_ms") for r in rs], "ms"),
                 cell([get(r, "lat", "p99_ms") for r in rs], "ms"),
                 cell([r.get("rss_mib") for r in rs], "mib"),
                 cell([get(r, "thr", "upstream_per_answer") for r in rs], "ratio"),
                 cell([get(r, "thr", "upstream_cpu_pct") for r in rs], "pct")]
        if row.startswith("dotproxy"):
            cells = [f"**{c}**" if i == 0 else c for i, c in enumerate(cells)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")

    g = goals(results)
    lines.append("| ratio, same round | median (min–max) | issue 12's goal |")
    lines.append("|---|---|---|")
    for what, (ratios, goal, higher) in g.items():
        lines.append(f"| {what} | {cell(ratios, 'ratio')} | "
                     f"{goal_verdict(ratios, goal, higher)} |")
    for what, a, b, keys in (("dotproxy DoH ÷ dotproxy DoT, CPU-s per query", DOH_ROW, DOT_ROW,
                              ("thr", "cpu_per_100k")),
                             ("dnsdist DoH ÷ dnsdist DoT, qps", DNSDIST_DOH, DNSDIST_DOT,
                              ("thr", "qps"))):
        lines.append(f"| {what} | {cell(round_ratios(results, a, b, keys), 'ratio')} | – |")
    lines.append("")

    diag = []
    for row in ROWS:
        rs = results["rows"].get(row, [])
        if not rs:
            continue
        parts = []
        threads = sorted({r.get("threads") for r in rs} - {None})
        if threads:
            parts.append(f"threads {'/'.join(map(str, threads))}")
        conns = [get(r, "thr", "upstream_connections") for r in rs]
        run.part_if_known(parts, "connections to the upstream under load", conns, "raw")
        nd = sorted({get(r, "thr", "upstream_nodelay") for r in rs} - {None})
        if nd:
            parts.append(f"TCP_NODELAY on them: {', '.join(nd)}")
        lost = [get(r, "thr", "lost") for r in rs]
        if any(lost):
            parts.append(f"queries lost {cell(lost, 'raw')}")
        sf = [get(r, "thr", "rcodes", "SERVFAIL") for r in rs]
        if any(sf):
            parts.append(f"SERVFAIL {cell(sf, 'raw')}")
        drops = [get(r, "thr", "listener_drops") for r in rs]
        if any(drops):
            parts.append(f"UDP drops at its listening socket {cell(drops, 'raw')}")
        errors = sorted({get(r, k, "error") for r in rs for k in ("lat", "thr")} - {None})
        if errors:
            parts.append("errors: " + "; ".join(errors))
        busy = [get(r, "thr", "machine_busy_pct") for r in rs]
        other = [get(r, "thr", "other_pct") for r in rs]
        parts.append(f"machine CPU busy {cell(busy, 'pct')}%, of which other processes "
                     f"{cell(other, 'pct')}%")
        lag = [get(r, "lat", "max_send_lag_ms") for r in rs]
        parts.append(f"probe max send lag {cell(lag, 'ms')} ms")
        diag.append(f"- {row}: " + "; ".join(parts))
    for t in ("dot", "doh"):
        ref = results["reference"][t]
        if not ref:
            continue
        parts = []
        rc = [get(r, "thr", "reconnections") for r in ref]
        run.part_if_known(parts, "reconnections", rc, "raw")
        client = [get(r, "thr", "dnsperf_cpu_s") if t == "dot" else get(r, "thr", "client_cpu_s")
                  for r in ref]
        run.part_if_known(parts, "load generator CPU-s", client, "cpu", f" in {args.seconds:g} s")
        other = [get(r, "thr", "other_pct") for r in ref]
        parts.append(f"other processes {cell(other, 'pct')}% of the machine")
        errors = sorted({get(r, k, "error") for r in ref for k in ("lat", "thr")} - {None})
        if errors:
            parts.append("errors: " + "; ".join(errors))
        diag.append(f"- reference {t}: " + "; ".join(parts))
    lines.append("Details (qps runs unless noted):")
    lines += diag
    lines.append("")
    lines.append(f"Load average: {' '.join(ctx['loadavg'])} when these rounds started, "
                 f"{' '.join(ctx['loadavg_end'])} when they ended.")
    lines.append("")
    return lines


def save_json(work, args, ctx, results, versions=None):
    d = os.path.join(work, "upstream-transport")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "results.json"), "w") as f:
        json.dump({"args": vars(args), "machine": run.machine_line(), "versions": versions,
                   "error": ctx.get("error"),
                   "unavailable": {r: p.unavailable for r, p in ctx.get("rows", {}).items()},
                   "goals": {k: {"ratios": v[0], "goal": v[1]} for k, v in goals(results).items()},
                   "elapsed_s": ctx.get("elapsed"), "loadavg": ctx.get("loadavg"),
                   "loadavg_end": ctx.get("loadavg_end"), "results": results},
                  f, indent=1, default=str)


# ----------------------------------------------------------------------------
# --upstream-transport-only: this table and nothing else

def main_only(args):
    work = os.path.abspath(args.workdir)
    if os.path.isdir(work):
        shutil.rmtree(work)
    os.makedirs(work)
    log(f"upstream-transport table only, in {work}: CA, certificate for {AUTH_NAME}")
    pki = run.PKI(os.path.join(work, "pki"), name="dotproxy bench CA")
    cert, key = pki.leaf("server", dns_names=[AUTH_NAME], ip_addresses=["127.0.0.1"])
    queries = os.path.join(work, "queries.txt")
    run.write_query_file(queries)
    ctx0 = {}
    binaries = run.snapshot_binaries(args, ["dotproxy"], work, ctx0)
    results, ctx = run_table(args, work, cert, key, pki.ca_file, queries, binaries)
    run.stop_all()
    run.write_table_report(args, work, ": DoH against DoT upstreams", render(args, ctx, results),
                           ["dotproxy", "dnsdist"], ctx0.get("binary_id", {}),
                           lambda versions: save_json(work, args, ctx, results, versions))
    return 0 if not ctx.get("error") else 1
