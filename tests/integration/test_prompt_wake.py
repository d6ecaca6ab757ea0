#!/usr/bin/env python3
"""prompt_file: required wakes on the prompt file: an image renamed in waits for its <stem>.txt;
the .txt renamed in 1 s later sends the image at once, not at the next look a settle (30 s) later;
so does a .txt renamed in just after its image or just before it. A stray .txt (no image of its stem) is never an input and wakes nothing."""

import os
import sys
import time

import harness as h

TEXT = "a prompt that came after its image"


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("wake")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              settle="30s",
                              folders=[{"path": hot, "prompt_file": "required",
                                        "incomplete_timeout": "5m"}])
    daemon = ctx.start_daemon(config)
    try:
        c.require(daemon.wait_for(r"ready", 10), "the daemon is ready")
        image = h.png_image(40, 30, 11)
        h.rename_in(hot, "w.png", image)
        h.rename_in(hot, "stray.txt", b"no image of this name\n")
        time.sleep(1.0)
        c.eq(len(api.generations()), 0, "nothing is sent before w.txt exists")
        t0 = time.monotonic()
        h.rename_in(hot, "w.txt", (TEXT + "\n").encode("utf-8"))
        ok = h.wait_until(lambda: api.generations(), 20)
        waited = time.monotonic() - t0
        c.check(ok and waited < 3.0, "w.png is sent within 3 s of w.txt renamed in (settle is 30 s)",
                "%.1f s" % waited)
        ok = h.wait_until(lambda: os.path.exists(os.path.join(out, "w.json")), 20)
        c.require(ok, "w.json is written")
        gens = api.generations()
        c.eq(len(gens), 1, "one call")
        c.eq(gens[0].get("image_sha256") if gens else None, h.sha256_bytes(image), "the call is w.png's")
        c.eq(gens[0].get("prompt") if gens else None, TEXT, "with the prompt file's text")
        sc = h.read_json(os.path.join(out, "w.json"))
        c.eq((sc.get("prompt_source"), sc.get("prompt_file")), ("file", "w.txt"),
             "the sidecar says the prompt came from w.txt")
        c.eq(sorted(n for n in os.listdir(out) if not n.startswith(".")), ["w.jpeg", "w.json"],
             "the stray .txt is no input")

        # A pipeline that renames the image in and its prompt file right after (while the image
        # is looked at), and one that renames the prompt file in first: neither waits a settle.
        for first, second in (("b.png", "b.txt"), ("c.txt", "c.png")):
            stem = first[0]
            image = h.png_image(40, 30, ord(stem))
            t0 = time.monotonic()
            for name in (first, second):
                h.rename_in(hot, name, image if name.endswith(".png") else b"the prompt of " + stem.encode())
            ok = h.wait_until(lambda: os.path.exists(os.path.join(out, stem + ".json")), 20)
            waited = time.monotonic() - t0
            c.check(ok and waited < 4.0, "%s then %s renamed in: done within 4 s (settle is 30 s)"
                    % (first, second), "%.1f s" % waited)
    finally:
        daemon.terminate()


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
