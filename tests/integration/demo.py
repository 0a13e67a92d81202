#!/usr/bin/python3
"""Show dotproxy working end to end, offline, in a few seconds (`make demo`).

    /usr/bin/python3 tests/integration/demo.py [path/to/dotproxy]

Makes a throwaway CA and a certificate for dns.example.test, starts a
private unbound serving DNS-over-TLS from local data (it cannot reach the
internet), puts dotproxy in front of it and asks dig a few questions,
printing each step and what dotproxy logged about it. Every process it
starts is stopped again; the exit status is 0 only if every step worked.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from dotproxy_proc import AUTH_NAME, DotProxy, binary_path, check_binary  # noqa: E402
from netutil import free_port  # noqa: E402
from pki import PKI  # noqa: E402
from unbound_dot import UnboundDoT  # noqa: E402


def say(text):
    print(f"\n==> {text}", flush=True)


def indent(text, prefix="    "):
    return "\n".join(prefix + line for line in text.rstrip("\n").splitlines())


def condense(text, keep_head=3, keep_tail=2):
    # A 100-record answer is noise for a reader: keep both ends of any long
    # run of answer lines and say how many were left out.
    out, run = [], []

    def flush():
        if len(run) > keep_head + keep_tail + 1:
            out.extend(run[:keep_head])
            out.append(f"... ({len(run) - keep_head - keep_tail} more records) ...")
            out.extend(run[-keep_tail:])
        else:
            out.extend(run)
        run.clear()

    for line in text.splitlines():
        if line and not line.startswith(";"):
            run.append(line)
        else:
            flush()
            out.append(line)
    flush()
    return "\n".join(out)


def dig(port, *args):
    # +time/+tries keep a broken proxy from making the demo hang for long.
    cmd = ["dig", "@127.0.0.1", "-p", str(port), "+time=3", "+tries=1", *args]
    print(f"    $ {' '.join(cmd)}", flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    print(indent(condense(r.stdout + r.stderr)), flush=True)
    return r


# Each step: what it shows, dig's arguments, and patterns its output must match.
STEPS = [
    ("an A query over UDP",
     ["www.example.", "A"],
     [r"status: NOERROR", r"www\.example\.\s+\d+\s+IN\s+A\s+192\.0\.2\.10"]),
    ("the same over TCP (dig +tcp)",
     ["+tcp", "www.example.", "A"],
     [r"status: NOERROR", r"192\.0\.2\.10", r"\(TCP\)"]),
    ("a large answer over UDP without retry (+ignore): ~1.6 kB does not fit in "
     "dig's 1232-byte EDNS buffer, so the reply must be truncated (tc flag)",
     ["+ignore", "big.example.", "A"],
     [r"flags:[^;]*\btc\b"]),
    ("the same large answer the normal way: dig sees TC and retries over TCP",
     ["big.example.", "A"],
     [r"Truncated, retrying in TCP mode", r"ANSWER: 100\b"]),
]


def main(argv):
    binary = os.path.abspath(argv[1]) if len(argv) > 1 else binary_path()
    try:
        check_binary(binary)
    except FileNotFoundError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    if not shutil.which("dig"):
        print("demo: dig not found (Debian package bind9-dnsutils)", file=sys.stderr)
        return 1

    failures = []
    tmp = tempfile.mkdtemp(prefix="dotproxy-demo-")
    unbound = proxy = None
    try:
        pki = PKI(os.path.join(tmp, "pki"), name="dotproxy demo CA (throwaway)")
        cert, key = pki.leaf(AUTH_NAME, dns_names=[AUTH_NAME], ip_addresses=["127.0.0.1"])
        say(f"made a throwaway CA ({pki.ca_file}) and a certificate for {AUTH_NAME}")

        unbound = UnboundDoT(os.path.join(tmp, "unbound"), cert, key).start()
        say(f"started unbound DoT on 127.0.0.1:{unbound.port} with a certificate for "
            f"{AUTH_NAME} signed by a throwaway CA; it serves only local data "
            "(www.example., big.example., ...) and never recurses")

        port = free_port()
        args = ["--listen", f"127.0.0.1:{port}",
                "--upstream", f"127.0.0.1@{unbound.port}#{AUTH_NAME}",
                "--ca-file", pki.ca_file, "--log-queries", "-v"]
        proxy = DotProxy(args, workdir=tmp, listen=f"127.0.0.1:{port}", binary=binary)
        proxy.start(timeout=5.0)
        say(f"started dotproxy on 127.0.0.1:{port} (UDP and TCP), forwarding over TLS "
            f"to unbound, checking its certificate against the throwaway CA:\n"
            f"    $ {' '.join(proxy.argv)}")
        startup = proxy.log()
        if startup.strip():
            print("    dotproxy logged at start-up:\n" + indent(startup, "      | "))

        for i, (what, dig_args, expect) in enumerate(STEPS, 1):
            say(f"step {i}: {what}")
            mark = proxy.log_offset()
            r = dig(port, *dig_args)
            time.sleep(0.2)  # lets log lines written after the answer arrive
            logged = proxy.log_since(mark)
            print("    dotproxy logged:\n" + (indent(logged, "      | ") if logged.strip()
                                               else "      (nothing)"))
            missing = [p for p in expect if not re.search(p, r.stdout + r.stderr)]
            if r.returncode != 0 or missing:
                failures.append(f"step {i} ({what}): dig exit status {r.returncode}"
                                + (f", output lacks {missing}" if missing else ""))
                print(f"    FAILED: {failures[-1]}")
            else:
                print("    ok")
            if not proxy.running:
                failures.append(f"dotproxy exited (status {proxy.returncode}) during step {i}")
                break
    except Exception as e:
        failures.append(f"{type(e).__name__}: {e}")
        print(f"\n    FAILED: {failures[-1]}")
    finally:
        if proxy is not None and proxy.proc is not None:
            rc = proxy.stop()
            say(f"stopped dotproxy with SIGTERM: exit status {rc}")
            failures += [f"dotproxy {p}" for p in proxy.problems()]
        if unbound is not None:
            unbound.stop()
            say("stopped unbound")
        shutil.rmtree(tmp, ignore_errors=True)

    if failures:
        print("\ndemo FAILED:\n" + "\n".join(f"  - {f}" for f in failures))
        return 1
    print("\ndemo passed: every step worked")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
