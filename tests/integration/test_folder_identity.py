#!/usr/bin/env python3
"""Folders are compared by identity, not spelling (issue 9, finding 1): an output reached through a
symbolic link into a recursive watched folder, and one folder listed twice under two spellings, are
refused by --check (file:line:column, exit 1), at start and on reload (the old configuration keeps
running). As a second line of defence, a scan never enters a directory that is some folder's output:
an output bind-mounted inside a recursive watched folder after start is not taken as input (root)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import harness as h


def config_lines(api_url, state, folders, extra=()):
    """folders: list of dicts with path, optional output, recursive. Returns (lines, line of each
    folder's path, line of each folder's output)."""
    q = json.dumps
    lines = ["api:",
             "  base_url: %s" % q(api_url),
             "  model: %s" % q(h.MODEL),
             "  timeout: 20s",
             "  retries: 2",
             "defaults:",
             "  size: 2K",
             "  settle: 300ms",
             "state_dir: %s" % q(state)]
    lines += list(extra)
    lines.append("folders:")
    path_lines, out_lines = [], []
    for f in folders:
        lines.append("  - path: %s" % q(f["path"]))
        path_lines.append(len(lines))
        lines.append("    prompt: %s" % q(h.PROMPT))
        if f.get("recursive"):
            lines.append("    recursive: true")
        if "output" in f:
            lines.append("    output: %s" % q(f["output"]))
            out_lines.append(len(lines))
        else:
            out_lines.append(None)
    return lines, path_lines, out_lines


def write(path, lines):
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def refused_at(res, path, line, column):
    """seedreamd: error: <path>:<line>:<column>: ..."""
    m = re.search(r"%s:(\d+):(\d+): (.*)" % re.escape(path), res.stderr)
    return bool(m and int(m.group(1)) == line and int(m.group(2)) == column), (m.group(3) if m else "")


def check_refusals(ctx, c, api_url, root):
    hot = os.path.join(root, "hot")
    sub = os.path.join(hot, "sub")
    os.makedirs(sub)
    state = os.path.join(root, "state")
    os.makedirs(state)
    out_link = os.path.join(root, "out-link")
    os.symlink(sub, out_link)            # the output, spelt outside, lands inside the recursive folder
    hot_link = os.path.join(root, "hot-link")
    os.symlink(hot, hot_link)            # the same folder under a second name

    lines, pl, ol = config_lines(api_url, state, [{"path": hot, "recursive": True, "output": out_link}])
    loop_cfg = write(os.path.join(root, "loop.yaml"), lines)
    res = ctx.run(["-c", loop_cfg, "--check"], timeout=15)
    ok, what = refused_at(res, loop_cfg, ol[0], 13)
    c.check(res.rc == 1 and ok, "--check refuses an output that is a symlink into the recursive watched "
            "folder, at its line and column", res.describe())
    c.check("inside" in what and "link" in what, "the message says the output is inside the watched "
            "folder, through a link or mount", what)

    lines, pl, _ = config_lines(api_url, state, [{"path": hot, "output": os.path.join(root, "o1")},
                                                 {"path": hot_link, "output": os.path.join(root, "o2")}])
    twice_cfg = write(os.path.join(root, "twice.yaml"), lines)
    res = ctx.run(["-c", twice_cfg, "--check"], timeout=15)
    ok, what = refused_at(res, twice_cfg, pl[1], 11)
    c.check(res.rc == 1 and ok and "listed twice" in what,
            "--check refuses the same folder listed twice through a symlink, at the second entry",
            res.describe())

    for name, cfg in (("loop", loop_cfg), ("twice", twice_cfg)):
        res = ctx.run(["-c", cfg], timeout=15, name="start-" + name)
        c.check(res.rc == 1 and not res.timed_out and "ready" not in res.stderr,
                "the daemon refuses to start with the %s config" % name, res.describe())
    return hot, sub, state, out_link


def check_reload(ctx, c, api, root, hot, sub, state, out_link):
    out = os.path.join(root, "out")
    lines, _, _ = config_lines(api.base_url, state, [{"path": hot, "recursive": True, "output": out}])
    cfg = write(os.path.join(root, "live.yaml"), lines)
    d = ctx.start_daemon(cfg, name="reload")
    c.require(d.wait_for(r"\bready\b", 15), "the daemon starts with a valid config", d.stderr_text()[-600:])
    lines, _, _ = config_lines(api.base_url, state, [{"path": hot, "recursive": True, "output": out_link}])
    write(cfg, lines)
    d.proc.send_signal(signal.SIGHUP)
    c.check(d.wait_for(r"reload failed.*inside", 10),
            "a reload that puts the output (through a symlink) inside the watched folder is refused",
            d.stderr_text()[-800:])
    data = h.png_image(40, 40, 7)
    h.write_bytes(os.path.join(hot, "one.png"), data)
    done = h.wait_until(lambda: os.path.exists(os.path.join(out, "one.json")), 15)
    c.check(done, "the old configuration keeps running: the result lands in the old output",
            h.listing(out) if os.path.isdir(out) else "no output")
    time.sleep(3)
    c.eq(len(api.generations()), 1, "one image, one generation (no loop)")
    c.eq(sorted(os.listdir(sub)), [], "nothing was written inside the watched folder")
    d.terminate()


def check_bind_mount(ctx, c, api, root):
    if os.geteuid() != 0:
        print("skip - the bind-mount defence needs root (mount --bind)")
        return
    hot = os.path.join(root, "bhot")
    out = os.path.join(root, "bout")
    state = os.path.join(root, "bstate")
    for p in (hot, out, state):
        os.makedirs(p)
    lines, _, _ = config_lines(api.base_url, state, [{"path": hot, "recursive": True, "output": out}],
                               extra=["rescan_interval: 1s"])
    cfg = write(os.path.join(root, "bind.yaml"), lines)
    d = ctx.start_daemon(cfg, name="bind")
    c.require(d.wait_for(r"\bready\b", 15), "the daemon starts", d.stderr_text()[-600:])
    inside = os.path.join(hot, "mirror")
    os.makedirs(inside)
    time.sleep(0.3)
    subprocess.run(["mount", "--bind", out, inside], check=True)
    try:
        before = len(api.generations())
        h.write_bytes(os.path.join(hot, "pic.png"), h.png_image(48, 40, 11))
        done = h.wait_until(lambda: os.path.exists(os.path.join(out, "pic.json")), 15)
        c.check(done, "the image is processed", h.listing(out))
        time.sleep(4)  # several rescans, each of which would take the result for a new input
        gens = api.generations()[before:]
        c.eq(len(gens), 1, "exactly one generation for one image while the output is bind-mounted "
             "inside the recursive watched folder")
        c.check(d.proc.poll() is None, "the daemon is still running", str(d.proc.poll()))
    finally:
        subprocess.run(["umount", "-l", inside], check=False)
        d.terminate()


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root = os.path.join(ctx.tmp, "ident")
    os.makedirs(root)
    hot, sub, state, out_link = check_refusals(ctx, c, api.base_url, root)
    check_reload(ctx, c, api, root, hot, sub, state, out_link)
    check_bind_mount(ctx, c, api, root)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
