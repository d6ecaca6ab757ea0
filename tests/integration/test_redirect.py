#!/usr/bin/env python3
"""A generation answered with a redirect (finding 7): the paid POST is never followed. A 307 or
308 would send the paid request again (billed twice), a 301/302/303 would turn it into a GET
elsewhere. For each, the server sees exactly one generation POST and nothing at the Location;
the answer is not a success (no output, no result download) and not a retry: the run pauses with
a clear HTTP3xx reason and leaves the file for later (no .error.json)."""

import os

import harness as h


def one_case(ctx, status):
    name = "r%d" % status
    # The Location is both another generation path (a 307/308 re-POST lands there and is counted
    # as a generation) and, for 301-303, a route that records the GET.
    target = "/v2/images/generations" if status in (307, 308) else "/elsewhere"
    api = ctx.start_hostile_api(name=name, script={
        "generation": [{"status": status, "headers": {"Location": "http://{host}" + target},
                        "json": {"data": [{"url": "{image_url}"}]}}],
        "routes": {"/elsewhere": {"status": 200, "json": {"data": [{"url": "http://{host}/x"}]}}}})
    _, hot, out, state = ctx.folder(name)
    h.write_bytes(os.path.join(hot, "a.png"), h.png_image(64, 64, status))
    cfg = ctx.write_config(os.path.join(ctx.tmp, name + ".yaml"), api=api, state_dir=state,
                           folders=[{"path": hot}], settle="100ms")
    res = ctx.run_once(cfg, timeout=30)
    c = ctx.checks
    c.check(not res.timed_out, "%d: the run ends" % status, res.describe())
    recs = api.records()
    posts = [r for r in recs if r.get("method") == "POST"]
    c.eq(len(posts), 1, "%d: exactly one POST reached the server (not re-sent to the Location)"
         % status)
    c.eq([r["path"] for r in recs if r.get("path") == "/elsewhere"], [],
         "%d: nothing was requested at the Location" % status)
    c.eq(api.images(), [], "%d: no result was downloaded" % status)
    produced = sorted(os.listdir(out)) if os.path.isdir(out) else []
    c.eq([n for n in produced if not n.startswith(".")], [],
         "%d: no output, no .error.json (the file waits for a fixed base_url)" % status)
    c.check("HTTP%d" % status in res.stderr and "redirect" in res.stderr,
            "%d: the log says the API redirected (HTTP%d)" % (status, status), res.describe())


def test(ctx):
    for status in (307, 308, 302, 301, 303):
        one_case(ctx, status)


if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
