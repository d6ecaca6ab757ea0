#!/usr/bin/env python3
"""--once progress: in a real terminal (tmux, fixed width; capture-pane) one line redrawn in place
shows done/total, failed, in flight, rate, ETA and images paid, changes as files finish, is not
garbled by log lines and ends with the final state; with stderr a pipe, a periodic progress log
line instead and no terminal control characters."""

import os
import re
import shlex
import subprocess
import time

import harness as h

PROGRESS = re.compile(r"(\d+)/(\d+) done, (\d+) failed, (\d+) in flight, ([\d.]+) images/min, "
                      r"ETA (\S+), (\d+) images paid")


def tmux(sock, *args):
    return subprocess.run(["tmux", "-S", sock] + list(args), capture_output=True, timeout=10,
                          check=False).stdout.decode("utf-8", "replace")


def test(ctx):
    c = ctx.checks
    api = ctx.start_api(latency_ms=700, faults=["ok", "400:InputImageSensitiveContentDetected"])
    root, hot, out, state = ctx.folder("progress")
    n = 8
    for i in range(n):
        h.write_bytes(os.path.join(hot, "p-%d.png" % i), h.png_image(30 + i, 30, i))
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}], max_in_flight=2, retries=0)

    # ---- on a terminal -----------------------------------------------------------------------
    sock = os.path.join(ctx.tmp, "tmux.sock")
    done_file = os.path.join(ctx.tmp, "tmux.rc")
    cmd = "env -u JOURNAL_STREAM SEEDREAM_API_KEY=%s %s -c %s --once; echo $? > %s; sleep 60" % (
        shlex.quote(h.DEFAULT_KEY), shlex.quote(ctx.binary), shlex.quote(config), shlex.quote(done_file))
    subprocess.run(["tmux", "-S", sock, "-f", "/dev/null", "new-session", "-d", "-x", "160", "-y", "40",
                    "-s", "p", cmd], check=True, timeout=10)
    seen, panes = [], []
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not os.path.exists(done_file):
            pane = tmux(sock, "capture-pane", "-p", "-t", "p")
            panes.append(pane)
            for m in PROGRESS.finditer(pane):
                if not seen or seen[-1] != m.groups():
                    seen.append(m.groups())
            time.sleep(0.15)
        time.sleep(0.3)
        final = tmux(sock, "capture-pane", "-p", "-J", "-t", "p")
    finally:
        tmux(sock, "kill-server")
    rc = open(done_file).read().strip() if os.path.exists(done_file) else None
    c.eq(rc, "1", "--once in tmux ends (exit 1: one file failed)")
    c.check(len(seen) >= 3, "the progress line changes as files finish (%d states seen)" % len(seen),
            repr(seen[:5]))
    c.check(any(int(s[3]) > 0 for s in seen), "it shows files in flight while they are", repr(seen[:5]))
    c.check(any(s[5] not in ("0s", "unknown") for s in seen), "it shows an ETA once a rate is known",
            repr(seen[:8]))
    c.check(all(int(s[1]) <= n for s in seen), "the total never exceeds the files found")
    lines = [ln for ln in final.splitlines() if ln.strip()]
    progress_lines = [ln for ln in lines if PROGRESS.search(ln)]
    c.eq(len(progress_lines), 1, "exactly one progress line on the terminal at the end (redrawn in place)")
    last = PROGRESS.search(progress_lines[-1]).groups() if progress_lines else None
    c.check(last is not None and last[0] == str(n - 1) and last[1] == str(n) and last[2] == "1"
            and last[3] == "0" and last[6] == str(n - 1),
            "the final line: %d/%d done, 1 failed, 0 in flight, %d images paid" % (n - 1, n, n - 1),
            repr(progress_lines))
    garbled = [ln for ln in lines if PROGRESS.search(ln) and not PROGRESS.match(ln)]
    c.eq(garbled, [], "no log line shares a line with the progress line")
    logs = [ln for ln in lines if ln.startswith("seedreamd: ")]
    c.check(any("failed " in ln for ln in logs) and any(ln.startswith("seedreamd: info: finished") for ln in logs),
            "log lines (the failure, the summary) are printed whole beside it")

    # ---- not a terminal ---------------------------------------------------------------------
    api2 = ctx.start_api(name="api2", latency_ms=2200)
    root2, hot2, out2, state2 = ctx.folder("piped")
    for i in range(6):
        h.write_bytes(os.path.join(hot2, "q-%d.png" % i), h.png_image(30 + i, 31, i))
    config2 = ctx.write_config(os.path.join(root2, "seedreamd.yaml"), api=api2, state_dir=state2,
                               folders=[{"path": hot2}], max_in_flight=1)
    res = ctx.run_once(config2, timeout=50)
    c.check(res.rc == 0 and not res.timed_out, "--once with stderr a pipe exits 0", res.describe())
    lines = [ln for ln in res.stderr.splitlines() if "progress: " in ln]
    c.check(lines and all(re.match(r"seedreamd: info: progress: ", ln) and PROGRESS.search(ln) for ln in lines),
            "a periodic 'progress:' log line every 10 s (%d seen)" % len(lines), res.describe())
    c.check("\r" not in res.stderr and "\x1b" not in res.stderr, "no terminal control characters in a pipe")


if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
