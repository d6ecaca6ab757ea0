#!/usr/bin/env python3
"""Photos to fit are converted only as they come near a generation slot: with a slow API and
max_in_flight 1, 30 rotated JPEGs do not become 30 fitted files waiting in state_dir (hidden
disk use and one open descriptor each). At most max_in_flight + max_fits wait fitted in the
queue, plus the ones being sent. Every photo is still sent once, upright."""

import os
import subprocess
import sys
import time

import harness as h

N = 30


def fitted_open(pid):
    """The fitted files the daemon holds open (unlinked O_TMPFILEs in state_dir, or memfds), by
    inode: the upload may hold a second descriptor of the same file."""
    fd_dir = "/proc/%d/fd" % pid
    out = set()
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
            if "(deleted)" in target or target.startswith("/memfd:"):
                out.add(os.stat(os.path.join(fd_dir, fd)).st_ino)
        except OSError:
            continue
    return out


def test(ctx):
    c = ctx.checks
    root, hot, out, state = ctx.folder("backlog")
    api = ctx.start_api(latency_ms=1500)
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}], max_in_flight=1)
    stage = os.path.join(root, "stage")
    os.makedirs(stage)
    noise = os.path.join(stage, "n.v")
    subprocess.run(["vips", "gaussnoise", noise, "600", "450"], check=True)
    for i in range(N):
        p = os.path.join(stage, "r%02d.jpg" % i)
        subprocess.run(["vips", "linear", noise, p + "[Q=90]", "1", str(i), "--uchar"], check=True)
        subprocess.run(["exiftool", "-q", "-overwrite_original", "-Orientation=6", "-n", p], check=True)
    daemon = ctx.start_daemon(config)
    c.require(daemon.wait_for(r"ready", 20), "the daemon is ready")
    for i in range(N):
        os.rename(os.path.join(stage, "r%02d.jpg" % i), os.path.join(hot, "r%02d.jpg" % i))
    peak = 0
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        peak = max(peak, len(fitted_open(daemon.proc.pid)))
        time.sleep(0.1)
    bound = 1 + 1 + 1  # max_in_flight + max_fits waiting, plus the one being sent
    c.check(peak <= bound, "at most %d fitted files held at once while the API is slow (peak %d of %d "
            "photos)" % (bound, peak, N))
    done = h.wait_until(lambda: len([n for n in os.listdir(out) if n.endswith(".json")]) == N
                        if os.path.isdir(out) else False, 120)
    c.check(done, "every photo is processed in the end")
    daemon.terminate()
    c.eq(len(api.generations()), N, "each photo paid once")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
