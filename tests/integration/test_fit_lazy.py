#!/usr/bin/env python3
"""libvips starts on the first image that needs fitting, not at start-up: a daemon that only sends
images as they are never loads vips's loader modules (about 10 MB of RSS); the first rotated JPEG
loads them, is converted and sent upright, a command hook started after it does not inherit the
VIPSHOME libvips sets, and the daemon still stops cleanly."""

import glob
import json
import os
import shutil
import subprocess
import sys

import harness as h


def vips_modules_loaded(pid):
    """Whether a vips loader module (vips-modules-X.Y/vips-*.so, loaded by vips_init) is mapped."""
    with open("/proc/%d/maps" % pid) as f:
        return any("vips-modules" in line for line in f)


def test(ctx):
    c = ctx.checks
    c.require(shutil.which("exiftool"), "exiftool is installed (scripts/install-deps.sh)")
    modules = glob.glob("/usr/lib/*/vips-modules-*/*.so") + glob.glob("/usr/lib/vips-modules-*/*.so")
    c.require(modules, "libvips's loader modules are installed (what vips_init loads)")
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("lazy")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}])
    # A command hook that keeps its environment: libvips's start must not leak into it.
    envfile = os.path.join(root, "hook.env")
    hook = os.path.join(root, "hook.sh")
    with open(hook, "w", encoding="utf-8") as fh:
        fh.write("#!/bin/sh\nenv > %s.tmp && mv %s.tmp %s\n" % (envfile, envfile, envfile))
    os.chmod(hook, 0o700)
    with open(config, "a", encoding="utf-8") as fh:
        fh.write("notify:\n  command: %s\n  events: [file_failed]\n" % json.dumps(hook))
    d = ctx.start_daemon(config, name="lazy")
    c.require(d.wait_for(r"\bready\b", 15), "the daemon logs 'ready' within 15 s",
              "exit status %s; stderr: %s" % (d.proc.poll(), d.stderr_text()[-600:]))
    c.check(not vips_modules_loaded(d.proc.pid), "no vips module is loaded at start-up")

    h.write_bytes(os.path.join(hot, "plain.png"), h.png_image(40, 36, 5))
    done = h.wait_until(lambda: os.path.exists(os.path.join(out, "plain.json")), 20)
    c.check(done, "plain.png gets its sidecar", "present: %s" % h.listing(out))
    c.check(not vips_modules_loaded(d.proc.pid), "sending a PNG as it is loads no vips module")

    rotated = os.path.join(ctx.tmp, "rot6.jpg")
    h.write_bytes(rotated, h.jpeg_image(48, 40, 6))
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-Orientation#=6", "-n", rotated],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.rename(rotated, os.path.join(hot, "rot6.jpg"))
    sc = os.path.join(out, "rot6.json")
    done = h.wait_until(lambda: os.path.exists(sc), 30)
    c.check(done, "rot6.jpg (EXIF orientation 6) gets its sidecar", "present: %s" % h.listing(out))
    fitted = (h.read_json(sc) if done else {}).get("fitted") or {}
    c.eq(fitted.get("reasons"), ["orientation"], "rot6.jpg was fitted for its orientation")
    c.check(fitted.get("to", "").startswith("JPEG 40x48"), "rot6.jpg was sent upright (40x48)", fitted)
    c.check(vips_modules_loaded(d.proc.pid), "the first fit loaded libvips's modules")
    c.eq(len(api.generations()), 2, "two generation calls")

    # vips_init sets VIPSHOME when it is unset; the daemon takes it away again, so a hook started
    # after the first fit gets the environment the daemon was given.
    h.write_bytes(os.path.join(hot, "junk.png"), b"not an image at all" * 10)
    done = h.wait_until(lambda: os.path.exists(envfile), 20)
    c.check(done, "junk.png fails and the command hook runs", "present: %s" % h.listing(out))
    if done:
        with open(envfile, encoding="utf-8") as fh:
            env = dict(line.split("=", 1) for line in fh.read().splitlines() if "=" in line)
        c.eq(env.get("VIPSHOME"), os.environ.get("VIPSHOME"),
             "the hook's VIPSHOME is the daemon's own (unset here), not what libvips set")

    rc, took = d.terminate(timeout=8)
    c.check(rc == 0, "SIGTERM: exits 0", "exit status %s after %.1f s" % (rc, took))


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
