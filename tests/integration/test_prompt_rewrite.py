#!/usr/bin/env python3
"""prompt_file: required: a <stem>.txt rewritten in place more often than a settle does not hold
its image for ever: it waits for the file to settle only up to incomplete_timeout (3 s here),
then is sent with the text the file has then (a warning says so)."""

import os
import sys
import threading
import time

import harness as h


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("rewrite")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              settle="1s",
                              folders=[{"path": hot, "prompt_file": "required",
                                        "incomplete_timeout": "3s"}])
    daemon = ctx.start_daemon(config)
    stop = threading.Event()
    texts = []

    def rewrite():
        # In place, every 0.3 s: never a settle (1 s) old.
        i = 0
        while not stop.is_set():
            text = "prompt version %d" % i
            texts.append(text)
            h.write_bytes(os.path.join(hot, "r.txt"), (text + "\n").encode("utf-8"))
            i += 1
            stop.wait(0.3)

    writer = threading.Thread(target=rewrite, daemon=True)
    try:
        c.require(daemon.wait_for(r"ready", 10), "the daemon is ready")
        t0 = time.monotonic()
        h.rename_in(hot, "r.png", h.png_image(40, 30, 41))
        writer.start()
        ok = h.wait_until(lambda: api.generations(), 20)
        waited = time.monotonic() - t0
        c.check(ok and waited < 9.0,
                "r.png is sent within incomplete_timeout (3 s) and a settle or two, though r.txt "
                "keeps changing", "%.1f s" % waited)
        stop.set()
        writer.join()
        gens = api.generations()
        c.check(bool(gens) and gens[0].get("prompt") in texts,
                "with a text r.txt had", gens[0].get("prompt") if gens else None)
        c.check(daemon.wait_for(r"r\.txt still changes after incomplete_timeout", 5),
                "a warning says it was sent while its prompt file changed")
        ok = h.wait_until(lambda: os.path.exists(os.path.join(out, "r.json")), 20)
        c.check(ok, "r.json is written")
    finally:
        stop.set()
        daemon.terminate()


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
