#!/usr/bin/env python3
"""Output names of two inputs in flight at once never meet: cat-1.png (max_images 1: cat-1.jpeg,
cat-1.json) is still generating (a slow answer) when a reload makes max_images 3 and cat.png
arrives, which as cat would write cat-1.jpeg .. cat-3.jpeg and, with its sidecar written only
with the last, leave cat-1.jpeg unclaimed in between. The loop reserves the names of jobs in
flight, so cat.png picks cat-2 (cat-2-1.jpeg .. cat-2-3.jpeg, cat-2.json) up front: both results
kept, distinct names, each sidecar naming its own source and listing outputs made from it."""

import os
import signal
import sys
import time

import harness as h


def test(ctx):
    c = ctx.checks
    # cat-1.png's answer comes 7 s late; cat.png's second image downloads 8 s late, so the
    # first is written long before its sidecar.
    api = ctx.start_api(faults=["slow:ms=7000", "ok"])
    root, hot, out, state = ctx.folder("race")
    path = os.path.join(root, "seedreamd.yaml")

    def config(n, prompt):
        return ctx.write_config(path, api=api, state_dir=state,
                                folders=[{"path": hot, "prompt": prompt, "max_images": n}])

    config(1, h.PROMPT)
    daemon = ctx.start_daemon(path)
    try:
        c.require(daemon.wait_for(r"ready", 10), "the daemon is ready")
        images = {"cat-1.png": h.png_image(40, 30, 21), "cat.png": h.png_image(42, 32, 22)}
        h.rename_in(hot, "cat-1.png", images["cat-1.png"])
        # Sent (its fault token taken): its name is chosen, its answer 7 s away.
        c.require(h.wait_until(lambda: len(api.queued_faults()) == 1, 10), "cat-1.png is sent")
        config(3, h.PROMPT + " [stall-image:1:8000]")
        daemon.proc.send_signal(signal.SIGHUP)
        c.require(daemon.wait_for(r"reloading", 10), "the daemon reloads")
        time.sleep(1.0)  # the new configuration is read on a worker, then applied
        h.rename_in(hot, "cat.png", images["cat.png"])

        def sidecars():
            return sorted(n for n in os.listdir(out) if n.endswith(".json") and not n.startswith("."))

        ok = h.wait_until(lambda: os.path.isdir(out) and len(sidecars()) >= 2 and
                          not any(n.startswith(".") for n in os.listdir(out)), 40)
        c.require(ok, "two sidecars are written", daemon.stderr_text()[-1500:])
    finally:
        daemon.terminate()

    gens = api.generations()
    c.eq(len(gens), 2, "two calls, one per input")
    c.eq(sidecars(), ["cat-1.json", "cat-2.json"],
         "cat-1.png keeps its name; cat.png, in flight beside it, gets cat-2")
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
            path_n = os.path.join(out, n or "")
            if not n or not os.path.isfile(path_n):
                problems.append("%s lists %r, which does not exist" % (sc_name, n))
                continue
            prov = h.output_provenance(h.read_bytes(path_n))
            if not prov or prov[0] != h.sha256_bytes(images[src]):
                problems.append("%s lists %s, which was not generated from %s" % (sc_name, n, src))
    c.problems(problems, "each sidecar names its own source and lists only outputs made from it")
    c.eq(listed.get("cat-1.png"), ["cat-1.jpeg"], "cat-1.png: cat-1.jpeg")
    c.eq(listed.get("cat.png"), ["cat-2-1.jpeg", "cat-2-2.jpeg", "cat-2-3.jpeg"],
         "cat.png: its three outputs under cat-2, none beside another's name (no ~2 fallback)")
    c.eq(sorted(n for n in os.listdir(out) if n.endswith(".jpeg")),
         ["cat-1.jpeg", "cat-2-1.jpeg", "cat-2-2.jpeg", "cat-2-3.jpeg"], "no other output")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
