#!/usr/bin/env python3
"""A stem held through a retry is reserved for what the retry asks. cat.png and dog.png
(max_images 1) hold the stems cat and dog when their first calls are refused (429, Retry-After
5 s); dog-2.png was done before (dog-2.jpeg, dog-2.json). A reload makes max_images 3 and
cat-2.png, sent meanwhile, holds cat-2 (a slow answer). The retries ask for 3 images, which as cat
would be cat-1.jpeg .. cat-3.jpeg: cat-2.jpeg beside cat-2.png's sidecar cat-2.json, which claims
it; as dog, dog-2.jpeg over dog-2.png's. The stems are chosen again for 3 images instead."""

import os
import signal
import sys
import time

import harness as h


def test(ctx):
    c = ctx.checks
    # dog-2.png ok; cat.png and dog.png 429, then (after cat-2.png's slow call is sent) ok.
    api = ctx.start_api(faults=["ok", "429:ra=5", "429:ra=5", "slow:ms=9000", "ok", "ok"])
    root, hot, out, state = ctx.folder("stemretry")
    path = os.path.join(root, "seedreamd.yaml")

    def config(n):
        return ctx.write_config(path, api=api, state_dir=state,
                                folders=[{"path": hot, "max_images": n}])

    config(1)
    daemon = ctx.start_daemon(path)
    images = {"cat.png": h.png_image(40, 30, 31), "cat-2.png": h.png_image(42, 32, 32),
              "dog.png": h.png_image(44, 34, 33), "dog-2.png": h.png_image(46, 36, 34)}

    def sidecars():
        return sorted(n for n in os.listdir(out) if n.endswith(".json") and not n.startswith("."))

    try:
        c.require(daemon.wait_for(r"ready", 10), "the daemon is ready")
        h.rename_in(hot, "dog-2.png", images["dog-2.png"])
        c.require(h.wait_until(lambda: os.path.isdir(out) and sidecars() == ["dog-2.json"], 20),
                  "dog-2.png is done first")
        h.rename_in(hot, "cat.png", images["cat.png"])
        h.rename_in(hot, "dog.png", images["dog.png"])
        c.require(daemon.wait_for(r"retrying .*cat\.png", 10), "cat.png's first call is refused")
        c.require(daemon.wait_for(r"retrying .*dog\.png", 10), "dog.png's first call is refused")
        config(3)
        daemon.proc.send_signal(signal.SIGHUP)
        c.require(daemon.wait_for(r"reloading", 10), "the daemon reloads")
        time.sleep(1.0)  # the new configuration is read on a worker, then applied
        h.rename_in(hot, "cat-2.png", images["cat-2.png"])
        c.require(h.wait_until(lambda: len(api.queued_faults()) == 2, 10),
                  "cat-2.png is sent before the retries")

        ok = h.wait_until(lambda: len(sidecars()) >= 4 and
                          not any(n.startswith(".") for n in os.listdir(out)), 40)
        c.require(ok, "four sidecars are written", daemon.stderr_text()[-1500:])
    finally:
        daemon.terminate()

    gens = api.generations()
    c.eq(len(gens), 6, "six calls: cat.png and dog.png twice, cat-2.png and dog-2.png once")
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
    c.eq([len(listed.get(s) or []) for s in ("cat.png", "cat-2.png", "dog.png")], [3, 3, 3],
         "three outputs each for the inputs sent with max_images 3")
    c.eq(listed.get("dog-2.png"), ["dog-2.jpeg"], "dog-2.png keeps dog-2.jpeg (made from it: above)")
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
    c.eq(len([n for n in os.listdir(out) if n.endswith(".jpeg")]), 10, "ten outputs in all")
    c.eq([n for n in os.listdir(out) if "~" in n], [], "no fallback name for an output in the way")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
