#!/usr/bin/env python3
"""A group's image swapped for a symbolic link to a file outside the watched folder, after the
subfolder was listed and before the image is read (follow_symlinks: false): its bytes are never
sent. faultfs stalls the read of the group's first image while the second is swapped."""

import os
import sys

import harness as h
from test_groups import add_folder_lines


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    fs = ctx.faultfs()
    root, hot, out, state = ctx.folder("group-link")
    secret_dir = os.path.join(root, "outside")
    os.makedirs(secret_dir)
    secret = os.path.join(secret_dir, "secret.png")
    h.write_bytes(secret, h.png_image(31, 29, 77))
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}])
    add_folder_lines(config, ["group: subfolder", "follow_symlinks: false"])
    g = os.path.join(hot, "g")
    first = os.path.join(g, "a.png")
    fs.set("stall read %s" % first)
    daemon = ctx.start_daemon(config, faultfs=fs)
    c.require(daemon.wait_for(r"ready", 10), "daemon: ready")
    os.makedirs(g)
    h.write_bytes(first, h.png_image(30, 30, 1))
    h.write_bytes(os.path.join(g, "b.png"), h.png_image(32, 32, 2))
    stalled = h.wait_until(lambda: any("stall read" in l for l in fs.applied()), 20)
    c.check(stalled, "the group's first image is read after the subfolder was listed",
            daemon.stderr_text()[-1500:])
    os.unlink(os.path.join(g, "b.png"))
    os.symlink(secret, os.path.join(g, "b.png"))
    fs.clear()
    finished = h.wait_until(lambda: os.path.exists(os.path.join(out, "g.json")) or
                            os.path.exists(os.path.join(out, "g.error.json")), 20)
    c.check(finished, "the group is judged", daemon.stderr_text()[-1500:])
    rc, _ = daemon.terminate()
    c.eq(rc, 0, "daemon: exits 0 on SIGTERM")
    want = h.sha256_bytes(h.read_bytes(secret))
    leaked = [g for g in api.generations(valid_only=False)
              if want in [i.get("sha256") for i in g.get("images") or []]]
    c.eq(leaked, [], "no request carries the bytes of the file outside the folder")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
