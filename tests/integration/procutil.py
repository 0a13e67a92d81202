"""Child-process hygiene for the daemons the tests start.

Fixtures stop what they start, but a test run can also end without any
teardown (the runner is SIGKILLed, a script crashes before its finally).
Commands wrapped with die_with_parent() get SIGTERM from the kernel when
the test process dies, so no unbound or dotproxy outlives the run holding
a port.
"""

import os
import shutil
import time

_SETPRIV = shutil.which("setpriv")


def die_with_parent(argv):
    """Prefix argv so the child gets SIGTERM when its parent dies (PR_SET_PDEATHSIG).

    setpriv (util-linux) sets the flag and then execs the command in place,
    so the child's PID is the daemon's PID. We do not use Popen's preexec_fn
    for this: it is unsafe once threads run, and the fake upstream's thread
    always does. Without setpriv the command runs unwrapped.
    """
    argv = [str(a) for a in argv]
    if _SETPRIV is None:
        return argv
    return [_SETPRIV, "--pdeathsig", "TERM", "--"] + argv


def proc_status(pid):
    """/proc/PID/status as a dict of strings (values stripped)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def cpu_seconds(pid):
    """utime + stime of the process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(predicate, timeout, interval=0.01):
    """Poll until predicate() is truthy or @timeout seconds pass; return its
    last value (so a test can assert on it and show it)."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)
