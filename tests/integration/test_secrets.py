#!/usr/bin/env python3
"""The API key never shows: not on stdout/stderr (even with -v), not in sidecars, error sidecars
or anything else the daemon writes."""

import os
import sys
import time

import harness as h

KEY = "sk-sdr-Zq8vK3xLmN5pR7tW9yB2dF4hJ6-cafe1234beef"
FRAGMENTS = [KEY, KEY[6:30], KEY[-16:]]  # the key, its middle, its tail


def scan(paths_or_texts):
    """[(where, fragment)] for every fragment found."""
    hits = []
    for where, text in paths_or_texts:
        for frag in FRAGMENTS:
            if frag in text:
                hits.append("%s contains %r" % (where, frag))
    return hits



def test(ctx):
    c = ctx.checks
    api = ctx.start_api(key=KEY, faults=["400:InputImageSensitiveContentDetected"])
    root, hot, out, state = ctx.folder("secrets")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}])
    h.write_bytes(os.path.join(hot, "one.png"), h.sample("bubbles.png"))
    h.write_bytes(os.path.join(hot, "two.png"), h.sample("rings.png"))

    res = ctx.run_once(config, extra=["-v"], key=KEY)
    c.check(res.rc == 1 and not res.timed_out, "--once -v with one API error exits 1", res.describe())
    c.eq(len(api.rejected()), 0, "the API accepted the key on every call (the daemon really sent it)")
    c.eq(len(api.generations()), 2, "2 generation calls")
    names = h.listing(out)
    c.eq((sum(n.endswith(".error.json") for n in names), sum(n.endswith(".json") and not n.endswith(".error.json")
                                                              for n in names)), (1, 1),
         "one success sidecar and one error sidecar")
    c.check(len(res.stderr) > 0, "-v produced log output on stderr", "stderr is empty")
    c.problems(scan([("stdout", res.stdout), ("stderr", res.stderr)]), "the key is not on stdout or stderr")
    c.problems(scan(h.tree_texts(out)), "the key is not in the output folder (sidecars, error sidecars, images)")
    c.problems(scan(h.tree_texts(state)), "the key is not in the state directory")

    # a background run with -v too: startup and shutdown logging
    h.write_bytes(os.path.join(hot, "three.png"), h.sample("truchet.png"))
    d = ctx.start_daemon(config, extra=["-v"], key=KEY, name="secrets-watch")
    c.check(d.wait_for(r"\bready\b", 15), "background -v run reaches 'ready'", d.stderr_text()[-300:])
    deadline = time.monotonic() + 15
    while (time.monotonic() < deadline and d.proc.poll() is None
           and not os.path.exists(os.path.join(out, "three.json"))):
        time.sleep(0.1)
    rc, _ = d.terminate()
    c.check(os.path.exists(os.path.join(out, "three.json")), "background run processed three.png")
    c.problems(scan([("stdout", d.stdout_text()), ("stderr", d.stderr_text())]),
               "background run: the key is not on stdout or stderr")
    c.problems(scan(h.tree_texts(out)) + scan(h.tree_texts(state)),
               "background run: the key is not in anything the daemon wrote")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
