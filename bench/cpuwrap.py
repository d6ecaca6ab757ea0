#!/usr/bin/env python3
"""Runs a command and reports the CPU time and peak RSS of its whole process tree.

    cpuwrap.py RESULT.json STDOUT STDERR -- COMMAND [ARGS...]

Prints "PID <n>" (the command's pid) on its own stdout once started. It becomes a child
subreaper (prctl PR_SET_CHILD_SUBREAPER), so processes orphaned inside the tree (e.g. jobs of a
killed shell) are re-parented to it and reaped here rather than by init: their CPU time is not
lost. When the command and every orphan have been reaped it writes RESULT.json with
getrusage(RUSAGE_CHILDREN): utime/stime of everything in the tree (this wrapper's own CPU is not
included), maxrss_kb (the largest single process), and the command's exit status.
SIGTERM/SIGINT received here are forwarded to the command.
"""

import ctypes
import json
import os
import resource
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


def main():
    if len(sys.argv) < 6 or sys.argv[4] != "--":
        sys.stderr.write(__doc__)
        return 2
    result, out, err = sys.argv[1:4]
    argv = sys.argv[5:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.stderr.write("cpuwrap: prctl(PR_SET_CHILD_SUBREAPER) failed\n")
    pid = os.fork()
    if pid == 0:
        try:
            fo = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            fe = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fo, 1)
            os.dup2(fe, 2)
            os.close(fo)
            os.close(fe)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    sys.stdout.write("PID %d\n" % pid)
    sys.stdout.flush()

    def forward(sig, _frame):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = None
    while True:
        try:
            p, st = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if p == pid:
            status = st
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    code = os.waitstatus_to_exitcode(status) if status is not None else None
    with open(result, "w") as f:
        json.dump({"utime": ru.ru_utime, "stime": ru.ru_stime, "maxrss_kb": ru.ru_maxrss,
                   "nvcsw": ru.ru_nvcsw, "nivcsw": ru.ru_nivcsw, "exit": code}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
