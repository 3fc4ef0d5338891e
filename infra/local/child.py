"""`python -m infra.local.child PARENT_PID MODULE [ARG...]`: run MODULE as `python -m MODULE` would, in a
process Linux kills (SIGKILL) the moment its parent dies, so a kill -9 of the supervisor leaves no moto or
model server behind holding ports and the journal.

PR_SET_PDEATHSIG is set here, at the child's start, rather than in a Popen preexec_fn (unsafe in the threaded
supervisor); the parent check afterwards closes the window in which the parent died first. Linux sends it when
the parent *thread* that started the child ends, so children are started from threads that live as long as
the stack (the main thread, the health check).
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    parent, module = int(sys.argv[1]), sys.argv[2]
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        sys.exit(f"{module}: the local stack's supervisor ({parent}) is gone")
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
