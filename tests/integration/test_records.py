#!/usr/bin/env python3
"""Issue 9.2: whatever size a server makes its answer, the sidecar or error sidecar written for it
is read back on the next run: a success whose usage is a 2 MiB object, and an error whose message
is 2 MiB, are each generated (paid) once, not again after a restart."""

import json
import os
import sys

import harness as h

BIG = 2 * 1024 * 1024
RECORD_MAX = 1024 * 1024  # SIDECAR_RECORD_MAX: what the daemon reads back


def big_usage():
    usage = {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}
    for i in range(BIG // 24):
        usage["field_%07d" % i] = "v%014d" % i
    return usage


def scenario(ctx, name, step, want_error):
    c = ctx.checks
    api = ctx.start_hostile_api(name=name, script={"generation": [step]})
    root, hot, out, state = ctx.folder(name)
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}], retries=0)
    h.write_bytes(os.path.join(hot, "one.png"), h.sample("bubbles.png"))

    first = ctx.run_once(config, timeout=40)
    c.check(not first.timed_out, "%s: first --once run ends" % name, first.describe())
    c.eq(len(api.generations(valid_only=False)), 1, "%s: one generation in the first run" % name)
    sidecar = os.path.join(out, "one.error.json" if want_error else "one.json")
    c.require(os.path.exists(sidecar), "%s: %s written" % (name, os.path.basename(sidecar)),
              " ".join(h.listing(out)))
    size = os.path.getsize(sidecar)
    c.check(size < RECORD_MAX, "%s: the sidecar stays under the 1 MiB read limit" % name,
            "%d bytes" % size)
    with open(sidecar, "rb") as f:
        doc = json.loads(f.read().decode("utf-8"))

    second = ctx.run_once(config, timeout=40)
    c.check(not second.timed_out, "%s: second --once run ends" % name, second.describe())
    c.eq(len(api.generations(valid_only=False)), 1,
         "%s: the restart reads the sidecar back and pays nothing again" % name)
    return doc


def test(ctx):
    c = ctx.checks
    ok = {"status": 200, "headers": {"x-request-id": "{rid}"},
          "json": {"model": h.MODEL, "created": "{created}",
                   "data": [{"url": "{image_url}", "size": "2048x2048"}], "usage": big_usage()}}
    doc = scenario(ctx, "big-usage", ok, want_error=False)
    usage = doc.get("usage") or {}
    c.check(usage.get("truncated") is True and usage.get("total_tokens") == 16384,
            "the oversized usage is kept as its top-level numbers, marked truncated", repr(usage)[:200])

    err = {"status": 400, "headers": {"x-request-id": "{rid}"},
           "json": {"error": {"code": "InvalidParameter", "message": "m" * BIG}}}
    doc = scenario(ctx, "big-message", err, want_error=True)
    msg = (doc.get("error") or {}).get("message") or ""
    c.check(0 < len(msg) <= 4096 and msg.startswith("mmm"),
            "the 2 MiB message is kept capped (4 KiB)", "%d characters" % len(msg))


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
