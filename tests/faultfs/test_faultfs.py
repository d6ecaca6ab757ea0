#!/usr/bin/env python3
"""tests/faultfs/faultfs.so on a plain program: each rule does what it says, only under its prefix.

    test_faultfs.py --shim build/faultfs.so

A child python3 runs with the shim preloaded and executes one file-system call per command it
reads on stdin (a JSON line), answering with the call's duration and errno; the test rewrites the
control file between commands, as the integration tests do while the daemon runs.
"""

import argparse
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

CHILD = r'''
import json, os, sys, time
def do(c):
    op, p = c["op"], c.get("path")
    if op == "fsync" or op == "fdatasync":
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            (os.fsync if op == "fsync" else os.fdatasync)(fd)
        finally:
            os.close(fd)
    elif op == "open":
        os.close(os.open(p, os.O_RDONLY | os.O_CREAT, 0o644))
    elif op == "openat":
        d = os.open(c["dir"], os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.close(os.open(p, os.O_RDONLY | os.O_CREAT, 0o644, dir_fd=d))
        finally:
            os.close(d)
    elif op == "read":
        fd = os.open(p, os.O_RDONLY)
        try:
            os.read(fd, 10)
        finally:
            os.close(fd)
    elif op == "pread":
        fd = os.open(p, os.O_RDONLY)
        try:
            os.pread(fd, 10, 0)
        finally:
            os.close(fd)
    elif op == "write":
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"data")
        finally:
            os.close(fd)
    elif op == "rename":
        os.rename(p, c["to"])
    elif op == "renameat":
        d = os.open(c["dir"], os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.rename(p, c["to"], src_dir_fd=d, dst_dir_fd=d)
        finally:
            os.close(d)
    elif op == "unlink":
        os.unlink(p)
    elif op == "mkdir":
        os.mkdir(p)
    elif op == "statvfs":
        os.statvfs(p)
    elif op == "cwd":
        os.chdir(p)
for line in sys.stdin:
    c = json.loads(line)
    t = time.monotonic()
    err = 0
    try:
        do(c)
    except OSError as e:
        err = e.errno
    print(json.dumps({"ms": (time.monotonic() - t) * 1000, "errno": err}), flush=True)
'''


class Child:
    def __init__(self, shim, control, log):
        env = dict(os.environ, LD_PRELOAD=shim, FAULTFS_CONTROL=control, FAULTFS_LOG=log)
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, text=True)

    def send(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def answer(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the child died (exit %s)" % self.proc.poll())
        return json.loads(line)

    def call(self, **cmd):
        self.send(**cmd)
        return self.answer()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shim", required=True)
    args = ap.parse_args()
    failed = passed = 0

    def check(cond, what, detail=""):
        nonlocal failed, passed
        if cond:
            passed += 1
            print("ok   - %s" % what, flush=True)
        else:
            failed += 1
            print("FAIL - %s%s" % (what, ": " + detail if detail else ""), flush=True)

    tmp = tempfile.mkdtemp(prefix="faultfs-test-")
    inside, outside = os.path.join(tmp, "slow"), os.path.join(tmp, "fast")
    # "slow-not" shares the prefix's leading characters but is not below it
    sibling = os.path.join(tmp, "slow-not")
    for d in (inside, outside, sibling):
        os.makedirs(d)
    control, log = os.path.join(tmp, "control"), os.path.join(tmp, "log")

    def rules(*lines):
        t = control + ".tmp"
        with open(t, "w") as f:
            f.write("".join(line + "\n" for line in lines))
        os.rename(t, control)

    rules()
    child = Child(os.path.abspath(args.shim), control, log)
    try:
        a, b = os.path.join(inside, "a"), os.path.join(outside, "a")
        s = os.path.join(sibling, "a")
        base = child.call(op="fsync", path=a)
        check(base["errno"] == 0, "no rules: fsync works", str(base))

        rules("delay fsync %s 150" % inside)
        r_in, r_out, r_sib = (child.call(op="fsync", path=p) for p in (a, b, s))
        check(r_in["ms"] >= 150 and r_in["errno"] == 0, "delay fsync: >= 150 ms under the prefix",
              "%.1f ms" % r_in["ms"])
        check(r_out["ms"] < 100, "delay fsync: another folder untouched", "%.1f ms" % r_out["ms"])
        check(r_sib["ms"] < 100, "delay fsync: a sibling sharing the prefix's letters untouched",
              "%.1f ms" % r_sib["ms"])
        r = child.call(op="fdatasync", path=a)
        check(r["ms"] >= 150, "delay fsync covers fdatasync", "%.1f ms" % r["ms"])

        for op, kw in (("open", {}), ("read", {}), ("pread", {}), ("write", {}),
                       ("openat", {"dir": inside, "path": "a"}), ("statvfs", {}), ("mkdir", {})):
            rule_op = {"openat": "open", "pread": "read", "statvfs": "statfs"}.get(op, op)
            path = os.path.join(inside, "newdir") if op == "mkdir" else a
            rules("delay %s %s 120" % (rule_op, inside))
            r = child.call(op=op, **dict({"path": path}, **kw))
            check(r["ms"] >= 120 and r["errno"] == 0, "delay %s: %s >= 120 ms" % (rule_op, op),
                  str(r))
        rules("delay rename %s 120" % inside)
        r = child.call(op="rename", path=os.path.join(outside, "a"), to=os.path.join(inside, "moved"))
        check(r["ms"] >= 120, "delay rename: matches on the new name", str(r))
        r = child.call(op="renameat", dir=inside, path="moved", to="moved2")
        check(r["ms"] >= 120 and os.path.exists(os.path.join(inside, "moved2")),
              "delay rename: renameat relative to a dirfd", str(r))

        rules("fail fsync %s EIO 1" % inside)
        r1, r2 = child.call(op="fsync", path=a), child.call(op="fsync", path=a)
        check(r1["errno"] == 5, "fail fsync EIO 1: the first fsync fails with EIO", str(r1))
        check(r2["errno"] == 0, "fail fsync EIO 1: the second one works", str(r2))

        rules("fail write %s ENOSPC" % inside)
        r = child.call(op="write", path=os.path.join(inside, "w"))
        check(r["errno"] == 28, "fail write ENOSPC", str(r))
        check(os.path.getsize(os.path.join(inside, "w")) == 0, "a failed write writes nothing")
        r = child.call(op="write", path=os.path.join(outside, "w"))
        check(r["errno"] == 0, "fail write: another folder untouched", str(r))

        rules("fail rename %s EIO" % inside)
        src = os.path.join(inside, "r")
        open(src, "w").close()
        r = child.call(op="rename", path=src, to=os.path.join(inside, "r2"))
        check(r["errno"] == 5 and os.path.exists(src) and not os.path.exists(src + "2"),
              "fail rename EIO: fails, nothing renamed", str(r))
        rules("fail unlink %s EACCES" % inside)
        r = child.call(op="unlink", path=src)
        check(r["errno"] == 13 and os.path.exists(src), "fail unlink EACCES", str(r))

        # relative paths resolve against the working directory
        child.call(op="cwd", path=inside)
        rules("fail open %s EIO" % inside)
        r = child.call(op="open", path="relative")
        check(r["errno"] == 5, "a relative path resolves against the working directory", str(r))
        child.call(op="cwd", path=tmp)

        # stall: blocks until the rule goes, then the call completes
        rules("stall all %s" % inside)
        child.send(op="fsync", path=a)
        time.sleep(1.0)
        ready, _, _ = select.select([child.proc.stdout], [], [], 0)
        check(not ready, "stall all: the call is still blocked after 1 s")
        t_release = time.monotonic()
        rules()
        r = child.answer()
        waited = time.monotonic() - t_release
        check(r["errno"] == 0 and r["ms"] >= 1000, "stall all: the call completes once released",
              str(r))
        check(waited < 0.5, "stall all: released within 0.5 s of the rule's removal",
              "%.2f s" % waited)

        # a stall on one prefix blocks nothing outside it (a second process shares the rules)
        rules("stall all %s" % inside)
        other = Child(os.path.abspath(args.shim), control, log)
        child.send(op="fsync", path=a)
        time.sleep(0.3)
        r = other.call(op="fsync", path=b)
        check(r["errno"] == 0 and r["ms"] < 100, "stall all: another folder goes on meanwhile", str(r))
        rules()
        child.answer()
        other.close()

        with open(log) as f:
            logged = f.read()
        check("fail fsync %s 5" % a in logged and "stall open %s" % a in logged,
              "FAULTFS_LOG records the rules applied", logged[-300:])
    except Exception as e:  # noqa: BLE001 - report it as a failure
        check(False, "the test ran to the end", repr(e))
    finally:
        child.proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
