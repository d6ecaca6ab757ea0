#!/usr/bin/env python3
"""Results that are not images (issue 9, finding 14). A result URL that serves an HTML page, a zip,
an empty body or a PNG cut short, and a b64_json answer holding an HTML page, are no success: no
output file, no success sidecar, an .error.json with Result.NotAnImage (Result.Incomplete for the
cut PNG), and the original kept although on_success is delete. A download is tried again (the
generation is paid) but never generated again; a b64_json answer fails at once. An honest result
in the same setup does delete the original, so the setup can tell. The daemon gives up too, after
api.retries downloads."""

import base64
import os
import sys

import harness as h

RETRIES = 1
HTML = "<!doctype html><html><head><title>502</title></head><body>Bad gateway</body></html>"
# A zip with one stored empty file "a" (local header, central directory, end record).
ZIP = (b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
       b"\x00\x00\x00\x00\x01\x00\x00\x00a"
       b"PK\x01\x02\x14\x03\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
       b"\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xa4\x81\x00\x00\x00\x00a"
       b"PK\x05\x06\x00\x00\x00\x00\x01\x00\x01\x00/\x00\x00\x00\x1f\x00\x00\x00\x00\x00")


def answer_url(path):
    return {"status": 200, "headers": {"x-request-id": "{rid}"},
            "json": {"model": h.MODEL, "created": "{created}",
                     "data": [{"url": "http://{host}%s" % path, "size": "2048x2048"}],
                     "usage": {"generated_images": 1}}}


def answer_b64(data):
    return {"status": 200, "headers": {"x-request-id": "{rid}"},
            "json": {"model": h.MODEL, "created": "{created}",
                     "data": [{"b64_json": base64.b64encode(data).decode("ascii"),
                               "size": "2048x2048"}],
                     "usage": {"generated_images": 1}}}


def run_case(ctx, api, name, script, response_format, expect_code, expect_route_gets):
    c = ctx.checks
    api.set_script(script)
    before_gens = len(api.generations(valid_only=False))
    before_routes = len(api.records("route"))
    root, hot, out, state = ctx.folder(name)
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}], response_format=response_format,
                              retries=RETRIES)
    with open(config, "a", encoding="utf-8") as f:
        f.write("    on_success: delete\n")
    src = os.path.join(hot, "photo.png")
    data = h.sample("plasma.png")
    h.write_bytes(src, data)

    res = ctx.run_once(config, timeout=40)
    c.check(not res.timed_out, "%s: --once finishes" % name, res.describe())
    gens = len(api.generations(valid_only=False)) - before_gens
    routes = len(api.records("route")) - before_routes
    c.eq(gens, 1, "%s: exactly one generation (never paid again)" % name)
    names = h.listing(out) if os.path.isdir(out) else []
    if expect_code is None:
        c.check("photo.json" in names and not os.path.exists(src),
                "%s: honest result: output and sidecar, original deleted (on_success works)" % name,
                "out: %r, original there: %s" % (names, os.path.exists(src)))
        return
    c.eq(sorted(names), ["photo.error.json"], "%s: no output, no success sidecar, one .error.json" % name)
    err = os.path.join(out, "photo.error.json")
    code = h.read_json(err).get("error", {}).get("code") if os.path.exists(err) else None
    c.eq(code, expect_code, "%s: the .error.json says %s" % (name, expect_code))
    c.check(os.path.exists(src) and h.read_bytes(src) == data,
            "%s: the original is kept (on_success: delete)" % name)
    c.eq(routes, expect_route_gets, "%s: result URL fetched %d times" % (name, expect_route_gets))
    c.problems(h.leftovers(out), "%s: no temporary file left" % name)


def daemon_case(ctx, api, routes):
    """Not only --once: the daemon gives up too (after api.retries downloads, not after the 24 h a
    result URL lives), and keeps the original."""
    c = ctx.checks
    api.set_script({"generation": [answer_url("/r/html")], "routes": routes})
    before_gens = len(api.generations(valid_only=False))
    before_routes = len(api.records("route"))
    root, hot, out, state = ctx.folder("daemon-html")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}], retries=RETRIES)
    with open(config, "a", encoding="utf-8") as f:
        f.write("    on_success: delete\n")
    daemon = ctx.start_daemon(config)
    c.require(daemon.wait_for(r"ready", 10), "daemon: ready")
    src = os.path.join(hot, "photo.png")
    h.write_bytes(src, h.sample("plasma.png"))
    c.check(daemon.wait_for(r"failed .*photo\.png: Result\.NotAnImage", 20),
            "daemon: fails the file with Result.NotAnImage")
    rc, _ = daemon.terminate()
    c.eq(rc, 0, "daemon: exits 0 on SIGTERM")
    c.eq(len(api.generations(valid_only=False)) - before_gens, 1, "daemon: exactly one generation")
    c.eq(len(api.records("route")) - before_routes, RETRIES + 1, "daemon: %d downloads" % (RETRIES + 1))
    c.eq(sorted(h.listing(out)), ["photo.error.json"], "daemon: only the .error.json")
    c.check(os.path.exists(src), "daemon: the original is kept (on_success: delete)")


def test(ctx):
    api = ctx.start_hostile_api()
    png = h.sample("plasma.png")
    routes = {"/r/html": {"status": 200, "body": HTML},
              "/r/zip": {"status": 200, "body_b64": base64.b64encode(ZIP).decode("ascii")},
              "/r/empty": {"status": 200, "body": ""},
              "/r/cut": {"status": 200,
                         "body_b64": base64.b64encode(png[:len(png) // 2]).decode("ascii")}}
    tries = RETRIES + 1
    run_case(ctx, api, "honest", {"generation": [], "routes": {}}, "url", None, 0)
    for kind in ("html", "zip", "empty"):
        run_case(ctx, api, "url-" + kind,
                 {"generation": [answer_url("/r/" + kind)], "routes": routes}, "url",
                 "Result.NotAnImage", tries)
    run_case(ctx, api, "url-cut", {"generation": [answer_url("/r/cut")], "routes": routes}, "url",
             "Result.Incomplete", tries)
    run_case(ctx, api, "b64-html", {"generation": [answer_b64(HTML.encode())], "routes": routes},
             "b64_json", "Result.NotAnImage", 0)
    run_case(ctx, api, "b64-zip", {"generation": [answer_b64(ZIP)], "routes": routes},
             "b64_json", "Result.NotAnImage", 0)
    daemon_case(ctx, api, routes)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
