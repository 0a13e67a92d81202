"""--busy-poll: after queries go to a near upstream, dotproxy polls for the
answer instead of sleeping, within a bounded window.

What the tests observe is the mechanism, not speed (speed is for
`make bench`): a thread that sleeps for each answer makes one voluntary
context switch for it, a thread that polls for it does not. And polling
must stop when the window is over, even if the answer never comes.
"""

import os
import signal
import socket
import time

from netutil import make_query
from procutil import cpu_seconds, proc_status

NO_CACHE = ["--cache-size", "0"]
QUERIES = 200


def voluntary_switches(pid):
    return int(proc_status(pid)["voluntary_ctxt_switches"])


def switches_per_query(p):
    """Voluntary context switches of dotproxy per sequential UDP query."""
    for i in range(20):  # connection open, RTT measured (loopback: near)
        p.udp(f"n{i}.example.")
    before = voluntary_switches(p.proc.pid)
    for i in range(QUERIES):
        assert p.udp(f"n{i % 200}.example.").answer
    return (voluntary_switches(p.proc.pid) - before) / QUERIES


def test_answers_from_a_near_upstream_are_polled_for_not_slept_for(unbound, dotproxy):
    sleeping = dotproxy([unbound], extra_args=NO_CACHE + ["--busy-poll", "0"])
    polling = dotproxy([unbound], extra_args=NO_CACHE + ["--busy-poll", "1000"])
    slept = switches_per_query(sleeping)
    polled = switches_per_query(polling)
    # Sleeping: one sleep waiting for the client's query and, unless the
    # answer is back before the loop goes to sleep, one for the answer
    # (measured 1.4-1.7 per query).  Polling: only the first, since unbound
    # on loopback answers well within 1 ms (measured 0.8-1.0).
    print(f"voluntary context switches per query: sleeping {slept:.2f}, polling {polled:.2f}")
    assert polled <= slept - 0.25, (slept, polled)


def test_polling_stops_when_a_near_upstream_goes_quiet(unbound, dotproxy):
    p = dotproxy([unbound], extra_args=NO_CACHE + ["--busy-poll", "1000"])
    assert switches_per_query(p) <= 1.25  # it does poll for this upstream
    os.kill(unbound.proc.pid, signal.SIGSTOP)  # connected, silent
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(make_query("www.example.").to_wire(), (p.addr, p.port))
            cpu0, t0 = cpu_seconds(p.proc.pid), time.monotonic()
            time.sleep(0.8)  # the query waits; well before the 1 s silence check
            busy = (cpu_seconds(p.proc.pid) - cpu0) / (time.monotonic() - t0)
    finally:
        os.kill(unbound.proc.pid, signal.SIGCONT)
    # Polled for 1 ms, then slept: a small fraction of a CPU.  Polling for as
    # long as the query is in flight would be a whole one.
    assert busy < 0.3, busy


def cpu_for_queries(p, prefix):
    """dotproxy's CPU seconds for QUERIES sequential UDP queries."""
    for i in range(10):  # connection open, RTT measured
        p.udp(f"warm{i}.{prefix}.example.")
    cpu0 = cpu_seconds(p.proc.pid)
    for i in range(QUERIES):
        assert p.udp(f"q{i}.{prefix}.example.").answer
    return cpu_seconds(p.proc.pid) - cpu0


def test_far_upstream_is_never_polled_for(fake_upstream, dotproxy):
    up = fake_upstream(delay=0.005)  # 5 ms: an upstream across the internet
    sleeping = dotproxy([up], extra_args=NO_CACHE + ["--busy-poll", "0"])
    polling = dotproxy([up], extra_args=NO_CACHE + ["--busy-poll", "1000"])
    slept = cpu_for_queries(sleeping, "a")
    polled = cpu_for_queries(polling, "b")
    # Polling 1 ms after each write would add QUERIES ms of CPU; allow half
    # of that for noise (CPU time is counted in 10 ms ticks).
    print(f"CPU for {QUERIES} queries to a far upstream: {polled:.3f} s "
          f"(--busy-poll 0: {slept:.3f} s)")
    assert polled < slept + 0.5 * QUERIES / 1000, (slept, polled)
