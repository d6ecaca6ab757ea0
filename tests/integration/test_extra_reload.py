#!/usr/bin/env python3
"""The sidecar records the extra: fields a request sent, not the folder's extra: at the time the
result is written: a reload (SIGHUP) that changes extra: while a result is being downloaded
leaves that result's sidecar with the fields sent."""

import os
import signal
import sys

import harness as h


def write(ctx, path, api, hot, state, user):
    ctx.write_config(path, api=api, state_dir=state, folders=[{"path": hot, "extra": {"user": user}}])


def test(ctx):
    c = ctx.checks
    api = ctx.start_hostile_api()
    api.set_script({"generation": [], "routes": {}, "image_delay_ms": 3000})
    root, hot, out, state = ctx.folder("extra-reload")
    config = os.path.join(root, "seedreamd.yaml")
    write(ctx, config, api, hot, state, "sent")
    daemon = ctx.start_daemon(config)
    c.require(daemon.wait_for(r"ready", 10), "daemon: ready")
    h.write_bytes(os.path.join(hot, "photo.jpg"), h.jpeg_image(64, 48, 5))
    c.require(h.wait_until(lambda: len(api.generations(valid_only=False)) == 1, 20),
              "the request is sent")
    write(ctx, config, api, hot, state, "after-reload")
    daemon.proc.send_signal(signal.SIGHUP)
    c.check(daemon.wait_for(r"reloading", 10), "the daemon reloads while the result downloads")
    sidecar = os.path.join(out, "photo.json")
    ok = h.wait_until(lambda: os.path.exists(sidecar), 30)
    c.check(ok, "photo.json written", daemon.stderr_text()[-1500:])
    rc, _ = daemon.terminate()
    c.eq(rc, 0, "daemon: exits 0 on SIGTERM")
    gens = api.generations(valid_only=False)
    c.eq(len(gens), 1, "one generation")
    if ok:
        c.eq(h.read_json(sidecar).get("extra"), {"user": "sent"},
             "the sidecar records the extra the request sent")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
