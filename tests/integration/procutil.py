"""Child-process hygiene for the daemons the tests start.

Fixtures stop what they start, but a test run can also end without any
teardown (the runner is SIGKILLed, a script crashes before its finally).
Commands wrapped with die_with_parent() get SIGTERM from the kernel when
the test process dies, so no unbound or dotproxy outlives the run holding
a port.
"""

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
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


def terminate(proc, timeout=5.0):
    """SIGTERM a child we started (a subprocess.Popen), wait, SIGKILL if it
    will not go; its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


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


# -- TCP_NODELAY, read from the live sockets of another process ---------------

_libc = ctypes.CDLL(None, use_errno=True)
SYS_pidfd_getfd = 438


def _tcp_inodes(local_port=None, remote_port=None):
    """Inodes of established IPv4 TCP sockets matching the given ports."""
    out = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            lport = int(p[1].split(":")[1], 16)
            rport = int(p[2].split(":")[1], 16)
            if p[3] != "01":  # ESTABLISHED
                continue
            if local_port is not None and lport != local_port:
                continue
            if remote_port is not None and rport != remote_port:
                continue
            out.add(p[9])
    return out


def tcp_nodelay(pid, local_port=None, remote_port=None):
    """TCP_NODELAY of each of pid's established sockets matching the ports.

    The fd is copied out of the process with pidfd_getfd(2) (Linux >= 5.6,
    needs ptrace rights: we are its parent, and root) and asked directly, so
    this sees what the socket really has, whether set on it or inherited
    from the listening socket. Returns a list of bools; [] if none or unsupported.
    """
    inodes = _tcp_inodes(local_port, remote_port)
    if not inodes:
        return []
    values = []
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return []
    try:
        fddir = f"/proc/{pid}/fd"
        for fd in os.listdir(fddir):
            try:
                target = os.readlink(os.path.join(fddir, fd))
            except OSError:
                continue
            m = re.fullmatch(r"socket:\[(\d+)\]", target)
            if not m or m.group(1) not in inodes:
                continue
            ours = _libc.syscall(SYS_pidfd_getfd, pidfd, int(fd), 0)
            if ours < 0:
                continue
            s = socket.socket(fileno=ours)
            try:
                values.append(bool(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
            finally:
                s.close()
    finally:
        os.close(pidfd)
    return values
