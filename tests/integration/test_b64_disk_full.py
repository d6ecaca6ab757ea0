#!/usr/bin/env python3
"""A b64_json image is decoded into the output folder as it arrives; when that folder is full (a
1 MiB tmpfs, a 3 MB image), the paid image is not lost and not paid again: the write is retried
and succeeds once there is room (the tmpfs grown by a remount), with exactly one generation and
the image byte for byte. Needs root for the mount: skipped otherwise."""

import base64
import hashlib
import os
import subprocess
import sys
import time

import harness as h

IMAGE_BYTES = 3_000_000



def test(ctx):
    c = ctx.checks
    if os.geteuid() != 0:
        print("skip - needs root to mount a small tmpfs as the output folder", flush=True)
        return
    root, hot, _, state = ctx.folder("full")
    with h.tmpfs(os.path.join(root, "out"), "size=1m") as out:
        run(ctx, c, root, hot, out, state)


def run(ctx, c, root, hot, out, state):
    image = h.big_png(IMAGE_BYTES, os.urandom)
    answer = os.path.join(ctx.tmp, "answer.json")
    with open(answer, "wb") as f:
        f.write(b'{"model": "%s", "created": %d, "data": [{"b64_json": "%s", "size": "2048x2048"}],'
                b' "usage": {"generated_images": 1}}'
                % (h.MODEL.encode(), int(time.time()), base64.b64encode(image)))
    api = ctx.start_hostile_api(script={"generation": [
        {"status": 200, "headers": {"x-request-id": "{rid}"}, "body_file": answer}]})
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot, "output": out}], response_format="b64_json",
                              retries=3)
    with open(config, "a", encoding="utf-8") as f:
        f.write("min_free_space: 0\n")
    daemon = ctx.start_daemon(config)
    c.require(daemon.wait_for(r"ready", 10), "the daemon is ready")
    h.write_bytes(os.path.join(hot, "photo.png"), h.sample("rings.png"))
    c.check(daemon.wait_for(r"fetching the result of .*photo\.png failed", 20),
            "the full output folder makes the write fail (and it is kept for another try)")
    subprocess.run(["mount", "-o", "remount,size=16m", out], check=True)
    c.check(daemon.wait_for(r"done .*photo\.png", 30), "written once there is room")
    rc, _ = daemon.terminate()
    c.eq(rc, 0, "the daemon exits 0 on SIGTERM")
    c.eq(len(api.generations(valid_only=False)), 1, "exactly one generation")
    got = os.path.join(out, "photo.png")
    c.check(os.path.exists(got) and h.sha256_file(got) == hashlib.sha256(image).hexdigest(),
            "the output is the paid image, byte for byte")
    c.check(os.path.exists(os.path.join(out, "photo.json")) and
            not os.path.exists(os.path.join(out, "photo.error.json")),
            "a success sidecar, no .error.json")
    c.problems(h.leftovers(out), "no temporary file left")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
