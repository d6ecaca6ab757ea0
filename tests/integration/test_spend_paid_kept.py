#!/usr/bin/env python3
"""Paid answers that keep counting (the spend review's follow-up). A 200 answer too large to keep
(ResponseTooLarge) was generated and paid: it counts against max_images_per_day in the run and
after a restart (its .error.json keeps images_paid and the model sent), so a relay answering too
large cannot make every file a paid generation the limits never see. A paid record counts on the
day it was paid (its paid_at), not the day it failed: a fetch retried for up to a day fails on the
next, and a restart then must not count it against that day."""

import json
import os
import subprocess
import sys
import time

import harness as h

PRICES = {"model-a": "0.03"}
HELD = "daily limit reached (1 of max_images_per_day 1)"


def write_config(path, api, state, hot, sock, top_lines):
    q = json.dumps
    lines = ["api:", "  base_url: %s" % q(api.base_url), "  model: model-a",
             "  timeout: 20s", "  max_in_flight: 1", "  retries: 2",
             "defaults:", "  settle: 200ms", "state_dir: %s" % q(state),
             "control_socket: %s" % q(sock),
             "price_per_image:"] + ["  %s: %s" % (m, p) for m, p in PRICES.items()]
    lines += ["currency: EUR"] + top_lines
    lines += ["folders:", "  - path: %s" % q(hot), "    prompt: %s" % q(h.PROMPT)]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def ctl(ctx, sock, *args):
    binary = os.path.join(os.path.dirname(ctx.binary), "seedreamctl")
    p = subprocess.run([binary, "-s", sock, "--json"] + list(args), capture_output=True,
                       timeout=20, cwd=ctx.tmp, check=False)
    try:
        return json.loads(p.stdout.decode("utf-8", "replace"))
    except ValueError:
        return {"unparsable": p.stdout.decode("utf-8", "replace"), "rc": p.returncode}


def held(ctx, sock):
    return HELD in (ctl(ctx, sock, "status").get("limit_reason") or "")


def test_too_large(ctx):
    c = ctx.checks
    big = os.path.join(ctx.tmp, "big.json")
    with open(big, "w", encoding="utf-8") as f:
        json.dump({"created": 1, "padding": "x" * (5 << 20),
                   "data": [{"url": "http://127.0.0.1:1/files/none", "size": "2048x2048"}]}, f)
    api = ctx.start_hostile_api("big", script={"generation": [{"status": 200, "body_file": big}]})
    root, hot, out, state = ctx.folder("too-large")
    sock = os.path.join(root, "control")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api, state, hot, sock,
                          ["max_images_per_day: 1"])
    h.write_bytes(os.path.join(hot, "a.png"), h.png_image(40, 30, 1))
    h.write_bytes(os.path.join(hot, "b.png"), h.png_image(41, 31, 2))
    daemon = ctx.start_daemon(config, name="too-large-daemon")
    c.require(daemon.wait_for(r"ready", 15), "too large: the daemon is ready")
    errs = lambda: [n for n in h.listing(out) if n.endswith(".error.json")]
    c.check(h.wait_until(lambda: errs() and held(ctx, sock), 30),
            "too large: the oversized answer uses up max_images_per_day 1 in the run",
            str(h.listing(out)) + json.dumps(ctl(ctx, sock, "status"))[:600])
    st = ctl(ctx, sock, "status")
    c.eq(st.get("images_paid"), {"today": 1, "this_month": 1},
         "too large: status counts the oversized answer as an image paid")
    rc, _ = daemon.terminate()
    c.eq(rc, 0, "too large: exits 0 on SIGTERM")
    c.eq(len(api.generations(valid_only=False)), 1, "too large: one generation, the other held")
    err = h.read_json(os.path.join(out, errs()[0])) if errs() else {}
    c.eq((err.get("error") or {}).get("code"), "ResponseTooLarge", "too large: ResponseTooLarge")
    c.eq(err.get("images_paid"), 1, "too large: the .error.json keeps images_paid 1")
    c.eq(err.get("model"), "model-a", "too large: priced as the model sent")
    paid_at = err.get("paid_at") or ""
    c.check(paid_at[:10] in (time.strftime("%Y-%m-%d"), time.strftime("%Y-%m-%d", time.gmtime())),
            "too large: the .error.json says when it was paid (paid_at today)", paid_at)

    daemon = ctx.start_daemon(config, name="too-large-again")
    c.require(daemon.wait_for(r"ready", 15), "too large: the daemon is ready again")
    c.check(h.wait_until(lambda: held(ctx, sock), 15),
            "too large: after a restart the paid failure still holds the other file back")
    st = ctl(ctx, sock, "status")
    c.eq((st.get("spend") or {}).get("today"), 0.03, "too large: restart prices it at 0.03")
    rc, _ = daemon.terminate()
    c.eq(len(api.generations(valid_only=False)), 1, "too large: nothing more sent after restart")

    # Paid three days ago, failed today (a fetch retried for long): today's limit is not used up.
    # Without a ledger (an install of an older version) the records say when it was paid.
    os.unlink(os.path.join(state, "paid.log"))
    name = errs()[0] if errs() else "a.error.json"
    path = os.path.join(out, name)
    doc = h.read_json(path) if os.path.exists(path) else {}
    doc["paid_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3 * 86400))
    doc["failed_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
    daemon = ctx.start_daemon(config, name="paid-earlier")
    c.require(daemon.wait_for(r"ready", 15), "paid earlier: the daemon is ready")
    c.check(h.wait_until(lambda: len(api.generations(valid_only=False)) == 2, 20),
            "paid earlier: a payment three days ago does not hold today's file back",
            json.dumps(ctl(ctx, sock, "status"))[:600])
    rc, _ = daemon.terminate()


HTML = "<!doctype html><html><body>Bad gateway</body></html>"


def answer(url="{image_url}"):
    return {"status": 200, "headers": {"x-request-id": "{rid}"},
            "json": {"model": "model-a", "created": "{created}",
                     "data": [{"url": url, "size": "2048x2048"}],
                     "usage": {"generated_images": 1, "output_tokens": 16384}}}


def test_retried(ctx):
    """A paid failure retried (its .error.json deleted, as seedreamctl retry and the README do),
    the retry paid and done, then a restart with max_images_per_day 2: both payments count
    (the ledger), nothing more is sent. Deleting every record by hand changes nothing."""
    c = ctx.checks
    api = ctx.start_hostile_api("retried")
    root, hot, out, state = ctx.folder("retried")
    sock = os.path.join(root, "control")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api, state, hot, sock,
                          ["max_images_per_day: 2"])
    api.set_script({"generation": [answer(url="http://{host}/r/html")],
                    "routes": {"/r/html": {"status": 200, "body": HTML}}})
    h.write_bytes(os.path.join(hot, "a.png"), h.png_image(50, 30, 7))
    r = ctx.run_once(config, timeout=40)
    c.check(not r.timed_out, "retried: the first run ends", r.describe())
    err = os.path.join(out, "a.error.json")
    c.eq(h.read_json(err).get("images_paid") if os.path.exists(err) else None, 1,
         "retried: a paid failure (images_paid 1)")
    if os.path.exists(err):
        os.unlink(err)
    api.set_script({"generation": [answer()], "routes": {}})
    r = ctx.run_once(config, timeout=40)
    c.check(r.rc == 0, "retried: the retry succeeds", r.describe())
    c.check(os.path.exists(os.path.join(out, "a.json")), "retried: a.json written")
    c.eq(len(api.generations(valid_only=False)), 2, "retried: two generations paid")

    h.write_bytes(os.path.join(hot, "b.png"), h.png_image(51, 31, 8))
    daemon = ctx.start_daemon(config, name="retried-daemon")
    c.require(daemon.wait_for(r"ready", 15), "retried: the daemon is ready")
    c.check(h.wait_until(lambda: HELD.replace("1 of", "2 of").replace("day 1", "day 2") in
                         (ctl(ctx, sock, "status").get("limit_reason") or ""), 15),
            "retried: after a restart both payments count: b.png held back",
            json.dumps(ctl(ctx, sock, "status"))[:500])
    st = ctl(ctx, sock, "status")
    c.eq(st.get("images_paid"), {"today": 2, "this_month": 2},
         "retried: status counts the retried failure and its retry")
    daemon.terminate()
    c.eq(len(api.generations(valid_only=False)), 2, "retried: nothing more sent")

    # Every record deleted by hand: a.png is done again and paid; the count still holds it.
    for n in h.listing(out):
        if n.endswith(".json"):
            os.unlink(os.path.join(out, n))
    daemon = ctx.start_daemon(config, name="retried-bare")
    c.require(daemon.wait_for(r"ready", 15), "retried: the daemon is ready again")
    c.check(h.wait_until(lambda: (ctl(ctx, sock, "status").get("images_paid") or {}).get("today")
                         == 2 and (ctl(ctx, sock, "status").get("limit_reason") or ""), 15),
            "retried: records deleted by hand: still 2 paid today, held",
            json.dumps(ctl(ctx, sock, "status"))[:500])
    daemon.terminate()
    c.eq(len(api.generations(valid_only=False)), 2, "retried: still nothing more sent")


def test(ctx):
    test_too_large(ctx)
    test_retried(ctx)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
