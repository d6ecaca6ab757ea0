#!/usr/bin/env python3
"""A watched share that stops answering (a FUSE passthrough whose server is stopped with SIGSTOP,
as a hard NFS mount does when its server goes away) is looked at by the watch's worker threads
only: the loop keeps feeding the watchdog (no gap between WATCHDOG=1 reaches WATCHDOG_USEC),
STATUS= names the folder as "not answering for N s" once its look has made no progress for 10 s,
a file dropped into another folder meanwhile is processed, and once the share answers again the
status clears and a file dropped into it is processed; a reload that drops it while it hangs
answers at once, and the folder taken back later works.

Needs /dev/fuse, fusermount and Debian's python3-fusepy (scripts/install-deps.sh installs them)."""

import os
import signal
import subprocess
import sys
import time

import harness as h
from test_shares import drop_by_rename, write_config
from test_systemd import NotifySocket, describe, has, status_counts

WATCHDOG_USEC = 2000000
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's fusepy is for the system interpreter

# A read-only passthrough: what the daemon does to a watched folder (stat, statx, readdir,
# statfs, open and read of inputs). Single-threaded: stopped, it answers nothing.
LOOPBACK = r'''
import errno, os, sys, fusepy
class Loopback(fusepy.Operations):
    def __init__(self, root):
        self.root = root
    def _p(self, path):
        return self.root + path
    def getattr(self, path, fh=None):
        try:
            st = os.lstat(self._p(path))
        except OSError as e:
            raise fusepy.FuseOSError(e.errno)
        return {k: getattr(st, k) for k in ("st_atime", "st_ctime", "st_gid", "st_mode",
                "st_mtime", "st_nlink", "st_size", "st_uid", "st_ino")}
    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._p(path))
    def statfs(self, path):
        v = os.statvfs(self._p(path))
        return {k: getattr(v, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize",
                "f_favail", "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}
    def open(self, path, flags):
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise fusepy.FuseOSError(errno.EROFS)
        return os.open(self._p(path), os.O_RDONLY)
    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)
    def release(self, path, fh):
        os.close(fh)
        return 0
fusepy.FUSE(Loopback(sys.argv[1]), sys.argv[2], foreground=True, nothreads=True, ro=True)
'''


def fuse_usable():
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if subprocess.run(["sh", "-c", "command -v fusermount"], capture_output=True).returncode:
        return "no fusermount (Debian package fuse)"
    if subprocess.run([SYSTEM_PYTHON, "-c", "import fusepy"], capture_output=True).returncode:
        return "%s cannot import fusepy (Debian package python3-fusepy)" % SYSTEM_PYTHON
    return None


def is_mounted(path):
    with open("/proc/self/mounts", encoding="utf-8") as f:
        return any(line.split()[1] == path for line in f)


def status_text(m):
    return m["fields"].get("STATUS", "")


def test(ctx):
    c = ctx.checks
    why = fuse_usable()
    c.require(why is None, "FUSE is usable for this test", why or "")
    root, hot, out, state = ctx.folder("stall")
    backing = os.path.join(root, "backing")
    share = os.path.join(root, "share")
    os.makedirs(backing)
    os.makedirs(share)
    script = os.path.join(ctx.tmp, "loopback.py")
    with open(script, "w", encoding="utf-8") as f:
        f.write(LOOPBACK)
    log = open(os.path.join(ctx.logdir, "fuse.log"), "wb")
    server = subprocess.Popen([SYSTEM_PYTHON, script, backing, share], stdout=log, stderr=log)
    ctx.processes.append(server)
    notify = NotifySocket(ctx.tmp)
    d = None
    try:
        c.require(h.wait_until(lambda: is_mounted(share), 10), "the FUSE share is mounted",
                  h.tail(os.path.join(ctx.logdir, "fuse.log")))
        run(ctx, c, notify, server, hot, out, state, backing, share)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGCONT)  # a stopped server would hang the unmount
        subprocess.run(["fusermount", "-u", "-z", share], capture_output=True)
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        notify.close()


def run(ctx, c, notify, server, hot, out, state, backing, share):
    api = ctx.start_api()
    config = os.path.join(ctx.tmp, "stall.yaml")
    share_folder = {"path": share, "output": os.path.join(os.path.dirname(share), "share-out"),
                    "poll_interval": "1s", "settle": "300ms"}
    hot_folder = {"path": hot, "settle": "300ms"}
    write_config(config, api=api, state_dir=state, folders=[share_folder, hot_folder])
    h.write_bytes(os.path.join(backing, "before.png"), h.png_image(64, 64, 1))
    env = ctx.env()
    env["NOTIFY_SOCKET"] = notify.path
    env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
    d = h.Daemon(ctx, [ctx.binary, "-c", config], env, "stall")
    try:
        c.require(notify.wait(has("READY", "1"), 0, 15) is not None, "READY=1",
                  "stderr: %s" % d.stderr_text()[-600:])
        c.require(d.wait_for(r"polling every", 10), "the FUSE share is polled (a remote filesystem)",
                  d.stderr_text()[-600:])
        done = lambda n: lambda m: (status_counts(m) or (0,) * 5)[3] >= n
        c.require(notify.wait(done(1), 0, 20) is not None,
                  "a file on the share is processed while it answers",
                  describe(notify.snapshot()))

        c.check(not any("not answering" in status_text(m) for m in notify.snapshot())
                and "has not answered" not in d.stderr_text(),
                "no folder is called 'not answering' while every one answers",
                describe(notify.snapshot()))

        # The share stops answering.
        server.send_signal(signal.SIGSTOP)
        t_stop = time.monotonic()
        time.sleep(3)  # past the kernel's attribute cache: every look now blocks
        drop_by_rename(hot, "during.png", h.png_image(64, 64, 2))
        i_done = notify.wait(done(2), 0, 20)
        c.check(i_done is not None, "a file in another folder is processed while the share hangs",
                describe(notify.snapshot()))
        i_stall = notify.wait(lambda m: "folder %s not answering for" % share in status_text(m), 0, 25)
        c.check(i_stall is not None, "STATUS= names the share as not answering",
                describe([m for m in notify.snapshot() if "STATUS" in m["fields"]]))
        if i_stall is not None:
            m = notify.snapshot()[i_stall]
            secs = int(status_text(m).split("not answering for ")[1].split(" ")[0])
            c.check(secs >= 10 and m["mono"] - t_stop >= 10,
                    "only after 10 s without an answer", "%s, %.1f s after the stop"
                    % (status_text(m), m["mono"] - t_stop))
        time.sleep(6)  # a few more health periods and poll ticks: none may pile up or block
        t_end = time.monotonic()
        pings = [m["mono"] for m in notify.snapshot() if has("WATCHDOG", "1")(m) and m["mono"] >= t_stop - 1]
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        c.check(pings and pings[-1] >= t_end - WATCHDOG_USEC / 1e6 and gaps and max(gaps) < WATCHDOG_USEC / 1e6,
                "the watchdog is fed all through the hang (no gap reaches WATCHDOG_USEC)",
                "%d pings, largest gap %.2f s, last %.1f s before the end"
                % (len(pings), max(gaps) if gaps else -1, t_end - pings[-1] if pings else -1))
        c.check(d.proc.poll() is None, "the daemon is still running", "exit status %s" % d.proc.poll())
        c.check(api.generations() and len(api.generations()) == 2, "nothing is generated twice",
                "%d generations" % len(api.generations()))

        # It answers again.
        mark = notify.count()
        server.send_signal(signal.SIGCONT)
        c.check(d.wait_for(r"folder %s: its storage answers again" % share, 15),
                "the log says the share answers again", d.stderr_text()[-600:])
        i_clear = notify.wait(lambda m: "STATUS" in m["fields"] and "not answering" not in status_text(m),
                              mark, 15)
        c.check(i_clear is not None, "STATUS= no longer names it",
                describe(notify.snapshot()[mark:]))
        h.write_bytes(os.path.join(backing, "after.png"), h.png_image(64, 64, 3))
        c.check(notify.wait(done(3), 0, 20) is not None,
                "a file dropped into the share afterwards is processed",
                describe(notify.snapshot()))
        c.eq(len(api.generations()), 3, "one generation per file")

        # It hangs again, and a reload drops it meanwhile: the folder is freed while its look
        # is under way, which then completes for nobody. (A reload that names a hanging share
        # still blocks: the configuration's identity checks stat the folders on the loop.)
        server.send_signal(signal.SIGSTOP)
        time.sleep(3)
        t_drop = time.monotonic()
        write_config(config, api=api, state_dir=state, folders=[hot_folder])
        d.proc.send_signal(signal.SIGHUP)
        c.check(d.wait_for(r"folder %s is no longer watched" % share, 5),
                "a reload drops the hanging share at once", d.stderr_text()[-600:])
        time.sleep(3)
        pings = [m["mono"] for m in notify.snapshot() if has("WATCHDOG", "1")(m) and m["mono"] >= t_drop - 1]
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        c.check(gaps and max(gaps) < WATCHDOG_USEC / 1e6 and pings[-1] >= time.monotonic() - WATCHDOG_USEC / 1e6,
                "the watchdog is fed across that reload", "pings %s" % pings)
        server.send_signal(signal.SIGCONT)
        time.sleep(1)  # the abandoned look completes now
        write_config(config, api=api, state_dir=state, folders=[share_folder, hot_folder])
        d.proc.send_signal(signal.SIGHUP)
        c.check(d.wait_for(r"folder %s is (now )?watched( again)?" % share, 10),
                "the next reload takes it back", d.stderr_text()[-600:])
        h.write_bytes(os.path.join(backing, "last.png"), h.png_image(64, 64, 4))
        c.check(notify.wait(done(4), 0, 20) is not None,
                "a file dropped into the share taken back is processed",
                describe(notify.snapshot()))
        c.eq(len(api.generations()), 4, "one generation per file, also after the reloads")
        c.check("folder %s: its storage has not answered" % hot not in d.stderr_text()
                and not any("folder %s not answering" % hot in status_text(m) for m in notify.snapshot()),
                "the folder that answered all along is never called 'not answering'",
                d.stderr_text()[-600:])
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGCONT)
        rc, took = d.terminate(timeout=10)
        c.check(rc == 0, "exits 0 on SIGTERM", "exit status %s after %.1f s" % (rc, took))


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
