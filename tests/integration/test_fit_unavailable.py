#!/usr/bin/env python3
"""libvips starts on the loop thread (vips_init may change the environment). When it cannot start
(vips_init_fails.so makes vips_init fail with a known reason): the cause is logged once, at error
level, with libvips's own text; an image that needs converting gets no error record and is not
sent (it waits, as for a storage fault, and is looked at again without a second error line); an
image sent as it is still goes through; SIGTERM exits 0; --once leaves the file for a later run
(exit 1) instead of waiting for ever."""

import os
import subprocess
import sys
import time

import harness as h

REASON = "made to fail by the test shim"


def test(ctx):
    c = ctx.checks
    shim = os.path.join(os.path.dirname(ctx.binary), "vips_init_fails.so")
    c.require(os.path.exists(shim), "vips_init_fails.so is built next to the binary", shim)
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("novips")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}])
    # A sanitizer runtime checks it comes first in the library list: the shim only forwards to
    # libvips. The shim starts libvips before it reports failure, and nothing shuts that down.
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = {"LD_PRELOAD": shim,
           "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0:detect_leaks=0"}
    d = ctx.start_daemon(config, name="novips", env_extra=env)
    c.require(d.wait_for(r"\bready\b", 15), "the daemon logs 'ready' within 15 s",
              "exit status %s; stderr: %s" % (d.proc.poll(), d.stderr_text()[-600:]))

    rotated = os.path.join(ctx.tmp, "rot6.jpg")
    h.write_bytes(rotated, h.jpeg_image(48, 40, 6))
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-Orientation#=6", "-n", rotated],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.rename(rotated, os.path.join(hot, "rot6.jpg"))
    c.check(d.wait_for(r"libvips cannot start \(.*" + REASON, 20),
            "libvips's reason is logged when an image first needs converting",
            d.stderr_text()[-800:])

    c.check(d.wait_for(r"vips_init_fails: vips_init on the main thread", 5),
            "vips_init ran on the loop thread (not on a fit worker)", d.stderr_text()[-800:])

    h.write_bytes(os.path.join(hot, "plain.png"), h.png_image(40, 36, 5))
    done = h.wait_until(lambda: os.path.exists(os.path.join(out, "plain.json")), 20)
    c.check(done, "plain.png (sent as it is) still gets its sidecar", "present: %s" % h.listing(out))

    # The held job is looked at again after JOBS_STORAGE_RETRY_MS (10 s): still no record.
    time.sleep(12)
    names = os.listdir(out)
    c.check(not any(n.startswith("rot6") for n in names),
            "rot6.jpg gets no error record and no result while libvips cannot start",
            "present: %s" % names)
    c.eq(len(api.generations()), 1, "only plain.png was sent")
    text = d.stderr_text()
    c.eq(text.count("libvips cannot start"), 1, "the cause is logged once")
    c.check("FitUnavailable" not in text, "no per-image FitUnavailable failure", text[-1200:])

    rc, took = d.terminate(timeout=8)
    c.check(rc == 0, "SIGTERM: exits 0", "exit status %s after %.1f s" % (rc, took))

    # --once cannot wait for a libvips that never starts: the file is left for a later run.
    once_env = ctx.env()
    once_env.update(env)
    try:
        res = subprocess.run([ctx.binary, "-c", config, "--once"], env=once_env, cwd=ctx.tmp,
                             stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False)
        rc, err = res.returncode, res.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as e:
        rc, err = "timeout", (e.stderr or b"").decode("utf-8", "replace")
    h.write_bytes(os.path.join(ctx.logdir, "once.stderr"), err.encode())
    c.eq(rc, 1, "--once ends (exit 1: a file was left) instead of waiting for libvips")
    c.check(not any(n.startswith("rot6") for n in os.listdir(out)),
            "--once writes no error record for rot6.jpg", "present: %s" % os.listdir(out))


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
