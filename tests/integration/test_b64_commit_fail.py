#!/usr/bin/env python3
"""A b64_json image is decoded straight into its temporary file in the output folder, so that file
is its only copy. When committing it fails (here: the sidecar cannot be created, the output tmpfs
has no inode left), the bytes must be kept and written once the disk takes them again: exactly
one generation, a success sidecar, no .error.json. Needs root (mount); skipped otherwise."""

import os
import sys

import harness as h


def test(ctx):
    c = ctx.checks
    if os.geteuid() != 0:
        print("skip - needs root to mount a tmpfs with few inodes as the output folder", flush=True)
        return
    root, hot, _, state = ctx.folder("inode")
    with h.tmpfs(os.path.join(root, "out"), "size=16m,nr_inodes=40") as out:
        run(ctx, c, root, hot, out, state)


def run(ctx, c, root, hot, out, state):
    api = ctx.start_hostile_api(script={"generation": [
        {"status": 200, "delay_ms": 2000, "headers": {"x-request-id": "{rid}"},
         "json": {"model": h.MODEL, "created": "{created}", "data": [{"b64_json": "{b64}"}],
                  "usage": {"generated_images": 1}}}]})
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot, "output": out}], response_format="b64_json",
                              retries=2)
    with open(config, "a", encoding="utf-8") as f:
        f.write("min_free_space: 0\n")
    daemon = ctx.start_daemon(config)
    c.require(daemon.wait_for(r"ready", 10), "the daemon is ready")
    src = os.path.join(hot, "photo.png")
    h.write_bytes(src, h.sample("rings.png"))
    c.require(h.wait_until(lambda: len(api.generations(valid_only=False)) >= 1, 15),
              "the generation request arrives")
    fillers = []
    while True:  # use up every inode while the API is still answering
        path = os.path.join(out, "fill%03d" % len(fillers))
        try:
            open(path, "w").close()
        except OSError:
            break
        fillers.append(path)
    c.check(daemon.wait_for(r"fetching the result of .*photo\.png failed", 20),
            "writing the result fails, and it is kept for another try")
    for path in fillers:
        os.unlink(path)
    c.check(daemon.wait_for(r"done .*photo\.png", 40), "once there are inodes again it is written",
            daemon.stderr_text()[-600:])
    daemon.terminate()
    c.eq(len(api.generations(valid_only=False)), 1, "exactly one generation")
    c.check(os.path.exists(os.path.join(out, "photo.json")), "a success sidecar", str(os.listdir(out)))
    c.check(not os.path.exists(os.path.join(out, "photo.error.json")), "no .error.json")
    got = os.path.join(out, "photo.png")
    c.check(os.path.exists(got) and h.sha256_file(got) == h.sha256_file(src),
            "the output is the paid image (the stand-in echoes the upload), byte for byte")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
