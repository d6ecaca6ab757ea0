#!/usr/bin/env python3
"""A stem held through a retry is reserved for what the retry asks: cat.png (max_images 1) holds
the stem cat when its first call is refused (429, Retry-After 5 s); a reload makes max_images 3
and cat-2.png, sent meanwhile, holds cat-2 (a slow answer). cat.png's retry asks for 3 images,
which as cat would be cat-1.jpeg .. cat-3.jpeg: cat-2.jpeg beside cat-2.png's sidecar cat-2.json,
which claims it. The retry sees the wider names meet cat-2 and chooses its stem again."""

import os
import signal
import sys
import time

import harness as h
from test_prompt_wake import rename_in


def test(ctx):
    c = ctx.checks
    # cat.png: 429 then (after cat-2.png's slow call is sent) ok.
    api = ctx.start_api(faults=["429:ra=5", "slow:ms=9000", "ok"])
    root, hot, out, state = ctx.folder("stemretry")
    path = os.path.join(root, "seedreamd.yaml")

    def config(n):
        return ctx.write_config(path, api=api, state_dir=state,
                                folders=[{"path": hot, "max_images": n}])

    config(1)
    daemon = ctx.start_daemon(path)
    images = {"cat.png": h.png_image(40, 30, 31), "cat-2.png": h.png_image(42, 32, 32)}
    try:
        c.require(daemon.wait_for(r"ready", 10), "the daemon is ready")
        rename_in(hot, "cat.png", images["cat.png"])
        c.require(daemon.wait_for(r"retrying .*cat\.png", 10), "cat.png's first call is refused")
        config(3)
        daemon.proc.send_signal(signal.SIGHUP)
        c.require(daemon.wait_for(r"reloading", 10), "the daemon reloads")
        time.sleep(1.0)  # the new configuration is read on a worker, then applied
        rename_in(hot, "cat-2.png", images["cat-2.png"])
        c.require(h.wait_until(lambda: len(api.queued_faults()) == 1, 10),
                  "cat-2.png is sent before cat.png's retry")

        def sidecars():
            return sorted(n for n in os.listdir(out) if n.endswith(".json") and not n.startswith("."))

        ok = h.wait_until(lambda: os.path.isdir(out) and len(sidecars()) >= 2 and
                          not any(n.startswith(".") for n in os.listdir(out)), 40)
        c.require(ok, "two sidecars are written", daemon.stderr_text()[-1500:])
    finally:
        daemon.terminate()

    gens = api.generations()
    c.eq(len(gens), 3, "three calls: cat.png twice, cat-2.png once")
    listed, problems = {}, []
    for sc_name in sidecars():
        sc = h.read_json(os.path.join(out, sc_name))
        src = sc.get("source")
        if src not in images:
            problems.append("%s names source %r" % (sc_name, src))
            continue
        names = [o.get("output") for o in sc.get("outputs") or [] if o.get("output")] or [sc.get("output")]
        listed[src] = names
        for n in names:
            if not n or not os.path.isfile(os.path.join(out, n)):
                problems.append("%s lists %r, which does not exist" % (sc_name, n))
                continue
            prov = h.output_provenance(h.read_bytes(os.path.join(out, n)))
            if not prov or prov[0] != h.sha256_bytes(images[src]):
                problems.append("%s lists %s, which was not generated from %s" % (sc_name, n, src))
    c.problems(problems, "each sidecar names its own source and lists only outputs made from it")
    c.eq([len(listed.get(s) or []) for s in ("cat.png", "cat-2.png")], [3, 3],
         "three outputs each")
    # An image <B>.jpeg beside a sidecar <B>.json that does not list it is claimed by the wrong one.
    claimed = []
    for n in sorted(os.listdir(out)):
        base, ext = os.path.splitext(n)
        if ext != ".jpeg" or not os.path.exists(os.path.join(out, base + ".json")):
            continue
        sc = h.read_json(os.path.join(out, base + ".json"))
        names = [o.get("output") for o in sc.get("outputs") or []] or [sc.get("output")]
        if n not in names:
            claimed.append("%s beside %s.json (%s), which does not list it" % (n, base, sc.get("source")))
    c.problems(claimed, "no output of one input beside another's sidecar of its name")
    c.eq(len([n for n in os.listdir(out) if n.endswith(".jpeg")]), 6, "six outputs in all")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
