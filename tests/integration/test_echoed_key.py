#!/usr/bin/env python3
"""Issue 9.11: a server that echoes the API key (in an error message and code, the x-request-id
header, usage, model, size; in a pause answer) never makes the daemon repeat it: not on stdout or
stderr, not in sidecars, error sidecars or the state directory. A key cut off by the request-id
cap is caught too."""

import os
import sys

import harness as h

KEY = "sk-sdr-Zq8vK3xLmN5pR7tW9yB2dF4hJ6-cafe1234beef"
FRAGMENTS = [KEY, KEY[:20], KEY[6:26], KEY[-16:]]
PAD = "r" * 100  # the request id is kept to 127 bytes: this cuts the key inside it


def scan(items):
    return ["%s contains %r" % (where, frag) for where, text in items for frag in FRAGMENTS
            if frag in text]



def test(ctx):
    c = ctx.checks
    ok = {"status": 200, "headers": {"x-request-id": PAD + "{key}"},
          "json": {"model": "m-{key}", "created": "{created}",
                   "data": [{"url": "{image_url}", "size": "{key}"}],
                   "usage": {"generated_images": 1, "note": "echo {key}",
                             "nested": {"{key}": ["{key}", 1]}}}}
    fail = {"status": 400, "headers": {"x-request-id": "{key}"},
            "json": {"error": {"code": "InvalidParameter.{key}", "message": "bad key {key}!"}}}
    pause = {"status": 401, "headers": {"x-request-id": "rid-{key}"},
             "json": {"error": {"code": "AuthenticationError", "message": "{key} is not valid"}}}
    api = ctx.start_hostile_api(name="echo", script={"generation": [ok, fail, pause]})
    root, hot, out, state = ctx.folder("echo")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}], retries=0, max_in_flight=1)
    for name in ("bubbles.png", "rings.png", "truchet.png"):
        h.write_bytes(os.path.join(hot, name), h.sample(name))

    res = ctx.run_once(config, extra=["-v"], key=KEY, timeout=40)
    c.check(not res.timed_out, "--once -v ends", res.describe())
    c.eq(len(api.generations(valid_only=False)), 3, "three generation calls (success, error, pause)")
    names = h.listing(out)
    c.eq((sum(n.endswith(".error.json") for n in names),
          sum(n.endswith(".json") and not n.endswith(".error.json") for n in names)), (1, 1),
         "one success sidecar and one error sidecar")
    texts = list(h.tree_texts(out))
    # the echoed strings really went through (else this test could not fail)
    c.check(any("[redacted]" in t for w, t in texts if w.endswith(".error.json")),
            "the error sidecar keeps the message, with the key redacted")
    c.check(any("m-[redacted]" in t for w, t in texts if not w.endswith(".error.json")),
            "the success sidecar keeps the model, with the key redacted")
    c.check("is not valid" in res.stderr, "the pause reason is logged",
            res.stderr[-300:])
    c.problems(scan([("stdout", res.stdout), ("stderr", res.stderr)]),
               "the echoed key is not on stdout or stderr")
    c.problems(scan(texts), "the echoed key is not in the output folder")
    c.problems(scan(h.tree_texts(state)), "the echoed key is not in the state directory")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
