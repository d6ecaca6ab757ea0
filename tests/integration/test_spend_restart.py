#!/usr/bin/env python3
"""Spend that survives a restart (issue 12, item 5, follow-up). A paid answer whose image is
unusable (an HTML page at the result URL) fails with an .error.json that keeps what was paid
(images_paid, usage verbatim, model); a restart the same day with max_images_per_day: 1 counts it:
no new request reaches the stand-in, and seedreamctl status shows the image paid and its cost. An
unpaid failure (HTTP 400) keeps no images_paid and does not hold the next file back. A model
changed between runs: the results of the first run are priced at their own model's price in
seedreamctl status, not at the new api.model's; a copy whose result is reused counts nothing, in
the run and after a restart. A result journalled from an answer naming no model, recovered after a
SIGKILL with another api.model, keeps the model it was sent with."""

import json
import os
import signal
import subprocess
import sys

import harness as h

HTML = "<!doctype html><html><body>Bad gateway</body></html>"
PRICES = {"model-a": "0.03", "model-b": "0.05"}


def write_config(path, api, state, hot, sock, model, top_lines):
    q = json.dumps
    lines = ["api:", "  base_url: %s" % q(api.base_url), "  model: %s" % q(model),
             "  timeout: 20s", "  max_in_flight: 1", "  retries: 1",
             "defaults:", "  settle: 200ms", "state_dir: %s" % q(state),
             "control_socket: %s" % q(sock),
             "price_per_image:"] + ["  %s: %s" % (m, p) for m, p in PRICES.items()]
    lines += ["currency: EUR"] + top_lines
    lines += ["folders:", "  - path: %s" % q(hot), "    prompt: %s" % q(h.PROMPT)]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def answer(model, url="{image_url}", usage=True):
    body = {"created": "{created}", "data": [{"url": url, "size": "2048x2048"}]}
    if model:
        body["model"] = model
    if usage:
        body["usage"] = {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}
    return {"status": 200, "headers": {"x-request-id": "{rid}"}, "json": body}


def ctl_status(ctx, sock):
    binary = os.path.join(os.path.dirname(ctx.binary), "seedreamctl")
    p = subprocess.run([binary, "-s", sock, "--json", "status"], capture_output=True, timeout=20,
                       cwd=ctx.tmp, check=False)
    try:
        return json.loads(p.stdout.decode("utf-8", "replace"))
    except ValueError:
        return {"unparsable": p.stdout.decode("utf-8", "replace"), "rc": p.returncode}


def test_paid_failure(ctx, api):
    c = ctx.checks
    root, hot, out, state = ctx.folder("paid-failure")
    sock = os.path.join(root, "control")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api, state, hot, sock, "model-a",
                          ["max_images_per_day: 1"])
    api.set_script({"generation": [answer("model-a", url="http://{host}/r/html")],
                    "routes": {"/r/html": {"status": 200, "body": HTML}}})
    gens0 = len(api.generations(valid_only=False))
    h.write_bytes(os.path.join(hot, "a.png"), h.png_image(40, 30, 1))
    res = ctx.run_once(config, timeout=40)
    c.check(not res.timed_out, "paid failure: --once ends", res.describe())
    c.eq(len(api.generations(valid_only=False)) - gens0, 1, "paid failure: one generation")
    err_path = os.path.join(out, "a.error.json")
    err = h.read_json(err_path) if os.path.exists(err_path) else {}
    c.eq((err.get("error") or {}).get("code"), "Result.NotAnImage",
         "paid failure: an .error.json with Result.NotAnImage")
    c.eq(err.get("images_paid"), 1, "paid failure: the .error.json keeps images_paid 1")
    c.eq((err.get("usage") or {}).get("generated_images"), 1,
         "paid failure: the .error.json keeps usage verbatim")
    c.eq(err.get("model"), "model-a", "paid failure: the .error.json names the model")

    # The restart the same day: the paid failure used up max_images_per_day: 1.
    api.set_script({"generation": [], "routes": {}})
    h.write_bytes(os.path.join(hot, "b.png"), h.png_image(41, 31, 2))
    daemon = ctx.start_daemon(config, name="paid-failure-daemon")
    c.require(daemon.wait_for(r"ready", 15), "paid failure: the daemon is ready")
    held = "daily limit reached (1 of max_images_per_day 1)"
    c.check(h.wait_until(lambda: held in (ctl_status(ctx, sock).get("limit_reason") or ""), 15),
            "restart: the paid failure counts against max_images_per_day (b.png held back)")
    st = ctl_status(ctx, sock)
    c.eq(st.get("images_paid"), {"today": 1, "this_month": 1},
         "restart: status counts the paid failure as an image paid today and this month")
    spend = st.get("spend") or {}
    c.eq((spend.get("today"), spend.get("this_month")), (0.03, 0.03),
         "restart: status prices it at model-a's 0.03")
    rc, _ = daemon.terminate()
    c.eq(rc, 0, "restart: exits 0 on SIGTERM")
    c.eq(len(api.generations(valid_only=False)) - gens0, 1,
         "restart: no new request reached the API (b.png held back)")
    c.check(not os.path.exists(os.path.join(out, "b.json")), "restart: b.png not done")


def test_unpaid_failure(ctx, api):
    c = ctx.checks
    root, hot, out, state = ctx.folder("unpaid-failure")
    sock = os.path.join(root, "control")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api, state, hot, sock, "model-a",
                          ["max_images_per_day: 1"])
    api.set_script({"generation": [{"status": 400, "json": {"error": {
        "code": "InputImageSensitiveContentDetected", "message": "refused", "param": "",
        "type": "BadRequest"}}}], "routes": {}})
    gens0 = len(api.generations(valid_only=False))
    h.write_bytes(os.path.join(hot, "a.png"), h.png_image(42, 32, 3))
    res = ctx.run_once(config, timeout=40)
    c.check(not res.timed_out, "unpaid failure: --once ends", res.describe())
    err_path = os.path.join(out, "a.error.json")
    err = h.read_json(err_path) if os.path.exists(err_path) else {}
    c.eq((err.get("error") or {}).get("code"), "InputImageSensitiveContentDetected",
         "unpaid failure: an .error.json")
    c.check("images_paid" not in err and "usage" not in err,
            "unpaid failure: no images_paid, no usage", json.dumps(err)[:400])
    api.set_script({"generation": [answer("model-a")], "routes": {}})
    h.write_bytes(os.path.join(hot, "b.png"), h.png_image(43, 33, 4))
    res = ctx.run_once(config, timeout=40)
    c.eq(res.rc, 0, "unpaid failure: the restart is not held back (exit 0)")
    c.eq(len(api.generations(valid_only=False)) - gens0, 2,
         "unpaid failure: the restart sends b.png")
    c.check(os.path.exists(os.path.join(out, "b.json")), "unpaid failure: b.png done")


def test_model_change(ctx, api):
    c = ctx.checks
    root, hot, out, state = ctx.folder("model-change")
    sock = os.path.join(root, "control")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api, state, hot, sock, "model-a",
                          ["max_spend_per_day: 10"])
    api.set_script({"generation": [answer("model-a")], "routes": {}})
    for i in range(2):
        h.write_bytes(os.path.join(hot, "a%d.png" % i), h.png_image(44 + i, 34, 5 + i))
    res = ctx.run_once(config, timeout=40)
    c.eq(res.rc, 0, "model a: --once exits 0")
    c.eq(sorted(n for n in h.listing(out) if n.endswith(".json")), ["a0.json", "a1.json"],
         "model a: two results")

    # Then model-b, a relay that names no model in its answer: priced as the model sent.
    write_config(config, api, state, hot, sock, "model-b", ["max_spend_per_day: 10"])
    api.set_script({"generation": [answer(None)], "routes": {}})
    daemon = ctx.start_daemon(config, name="model-change-daemon")
    c.require(daemon.wait_for(r"ready", 15), "model b: the daemon is ready")
    h.write_bytes(os.path.join(hot, "b0.png"), h.png_image(46, 36, 7))
    c.check(h.wait_until(lambda: os.path.exists(os.path.join(out, "b0.json")), 20),
            "model b: b0.png done")
    side = h.read_json(os.path.join(out, "b0.json")) if os.path.exists(
        os.path.join(out, "b0.json")) else {}
    c.eq(side.get("model"), "model-b", "model b: the sidecar names the model sent")
    # A copy of a done image reuses its result: no call, nothing paid.
    gens = len(api.generations(valid_only=False))
    h.write_bytes(os.path.join(hot, "b0-copy.png"), h.read_bytes(os.path.join(hot, "b0.png")))
    c.check(h.wait_until(lambda: os.path.exists(os.path.join(out, "b0-copy.json")), 20),
            "model b: the copy is done")
    copy = h.read_json(os.path.join(out, "b0-copy.json")) if os.path.exists(
        os.path.join(out, "b0-copy.json")) else {}
    c.eq((copy.get("reused_from"), len(api.generations(valid_only=False)) - gens), ("b0.png", 0),
         "model b: the copy reused b0.png's result, no call")
    st = ctl_status(ctx, sock)
    spend = st.get("spend") or {}
    c.eq(st.get("images_paid"), {"today": 3, "this_month": 3},
         "status: 3 images paid (the reused copy is not one)")
    c.eq(round(spend.get("today", -1), 6), 0.11,
         "status: today 2 x 0.03 (model-a, recorded) + 0.05 (model-b), not 3 x 0.05")
    c.eq(round(spend.get("this_month", -1), 6), 0.11, "status: this month priced the same way")
    c.eq(spend.get("price_per_image"), 0.05, "status: the price of api.model now is model-b's")
    rc, _ = daemon.terminate()
    c.eq(rc, 0, "model b: exits 0 on SIGTERM")

    # A third start rebuilds all three from the records (and the cache written at the stop).
    daemon = ctx.start_daemon(config, name="model-change-again")
    c.require(daemon.wait_for(r"ready", 15), "again: the daemon is ready")
    st = ctl_status(ctx, sock)
    spend = st.get("spend") or {}
    c.eq((round(spend.get("today", -1), 6), round(spend.get("this_month", -1), 6)), (0.11, 0.11),
         "again: today and this month rebuilt at each record's model (0.11), the copy free")
    c.eq(st.get("images_paid"), {"today": 3, "this_month": 3}, "again: 3 images paid")
    rc, _ = daemon.terminate()
    c.eq(rc, 0, "again: exits 0 on SIGTERM")


def test_crash_model(ctx, api):
    """An answer naming no model, journalled, then a SIGKILL and a restart with another
    api.model: the result keeps the model it was sent with, and its price."""
    c = ctx.checks
    root, hot, out, state = ctx.folder("crash-model")
    sock = os.path.join(root, "control")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api, state, hot, sock, "model-a",
                          [])
    api.set_script({"generation": [answer(None)], "routes": {}, "image_delay_ms": 20000})
    h.write_bytes(os.path.join(hot, "c.png"), h.png_image(47, 37, 8))
    d = ctx.start_daemon(config, name="crash-model-daemon")
    cue = h.wait_until(lambda: len(h.journal_records(state)) == 1, 15)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(5)
    c.require(cue, "crash: the paid result is in the journal when the daemon is killed")
    api.set_script({"generation": [answer(None)], "routes": {}})
    write_config(config, api, state, hot, sock, "model-b", [])
    d = ctx.start_daemon(config, name="crash-model-restart")
    c.require(d.wait_for(r"ready", 15), "crash: the restart is ready")
    c.check(h.wait_until(lambda: os.path.exists(os.path.join(out, "c.json")), 20),
            "crash: the journalled result is written after the restart")
    side = h.read_json(os.path.join(out, "c.json")) if os.path.exists(
        os.path.join(out, "c.json")) else {}
    c.eq(side.get("model"), "model-a", "crash: its sidecar names the model it was sent with")
    st = ctl_status(ctx, sock)
    c.eq(round((st.get("spend") or {}).get("this_month", -1), 6), 0.03,
         "crash: this month prices it at model-a's 0.03, not model-b's 0.05")
    rc, _ = d.terminate()
    c.eq(rc, 0, "crash: exits 0 on SIGTERM")


def test(ctx):
    api = ctx.start_hostile_api()
    test_paid_failure(ctx, api)
    test_unpaid_failure(ctx, api)
    test_model_change(ctx, api)
    test_crash_model(ctx, api)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
