"""Child-process hygiene for the daemons the tests start.

Fixtures stop what they start, but a test run can also end without any
teardown (the runner is SIGKILLed, a script crashes before its finally).
Commands wrapped with die_with_parent() get SIGTERM from the kernel when
the test process dies, so no unbound or dotproxy outlives the run holding
a port.
"""

import shutil

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
