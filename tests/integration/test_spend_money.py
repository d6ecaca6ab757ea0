#!/usr/bin/env python3
"""Spend in money (issue 12, item 5): price_per_image 0.03 and max_spend_per_day 0.10 let
exactly 3 images through (0.09 + 0.03 would pass 0.10), the rest are held with the reason in the
log and --once exits 1; a restart the same day is still held (the cost is rebuilt from today's
sidecars); --check refuses bad prices, limits, currencies and a limit without a price, naming
file:line:column."""

import json
import os
import re
import sys

import harness as h


def write_config(path, api, state, hot, top_lines):
    q = json.dumps
    lines = ["api:", "  base_url: %s" % q(api.base_url), "  model: %s" % q(h.MODEL),
             "  timeout: 20s", "  max_in_flight: 4", "  retries: 1",
             "defaults:", "  settle: 200ms", "state_dir: %s" % q(state)]
    lines += top_lines
    lines += ["folders:", "  - path: %s" % q(hot), "    prompt: %s" % q(h.PROMPT)]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def test_limit(ctx):
    c = ctx.checks
    api = ctx.start_api("money")
    root, hot, out, state = ctx.folder("money")
    config = write_config(os.path.join(root, "seedreamd.yaml"), api, state, hot, [
        "price_per_image:", "  %s: 0.03" % h.MODEL, "  some-other-model: 1.5",
        "currency: EUR", "max_spend_per_day: 0.10"])
    for i in range(6):
        h.write_bytes(os.path.join(hot, "p%d.png" % i), h.png_image(40 + i, 30 + i, 300 + i))
    res = ctx.run_once(config, timeout=40)
    c.check(not res.timed_out, "--once ends", res.describe())
    c.eq(res.rc, 1, "--once held back by the spend limit exits 1")
    c.eq(len(api.generations()), 3, "0.03 an image under 0.10 a day: exactly 3 generation calls")
    done = [n for n in h.listing(out) if n.endswith(".json")]
    c.eq(len(done), 3, "3 results")
    c.check(re.search(r"daily spend limit reached \(0\.090000 of max_spend_per_day 0\.100000 EUR\)",
                      res.stderr), "the log says the spend limit holds files back, in EUR",
            res.stderr[-500:])
    left = [n for n in os.listdir(hot) if n.endswith(".png")]
    c.eq(len(left), 6, "the held files stay for later (originals kept)")

    res = ctx.run_once(config, timeout=40)
    c.eq(len(api.generations()), 3, "a restart the same day makes no call: the cost comes from "
         "today's sidecars")
    c.eq(res.rc, 1, "and still exits 1 with files held back")
    c.check("daily spend limit reached (0.090000" in res.stderr,
            "the rebuilt cost is 0.09", res.stderr[-400:])

    # A higher limit the same day lets exactly the difference through: 0.15 -> 2 more.
    write_config(config, api, state, hot, [
        "price_per_image:", "  %s: 0.03" % h.MODEL, "max_spend_per_day: 0.15"])
    res = ctx.run_once(config, timeout=40)
    c.eq(len(api.generations()), 5, "raised to 0.15: two more images (0.09 + 0.06)")


def test_check(ctx):
    c = ctx.checks
    api = ctx.start_api("money-check")
    root, hot, _, state = ctx.folder("money-check")
    path = os.path.join(root, "bad.yaml")
    cases = [
        ("a negative price", ["price_per_image:", "  %s: -1" % h.MODEL], 11, "price_per_image"),
        ("too many decimals", ["price_per_image:", "  %s: 0.0000001" % h.MODEL], 11,
         "price_per_image"),
        ("a price that is text", ["price_per_image:", "  %s: cheap" % h.MODEL], 11,
         "price_per_image"),
        ("prices not a mapping", ["price_per_image: 0.03"], 10, "price_per_image"),
        ("a model priced twice", ["price_per_image:", "  m: 1", "  m: 2"], 12, "duplicate"),
        ("a bad max_spend_per_day", ["max_spend_per_day: 1,5"], 10, "max_spend_per_day"),
        ("a limit without a price for the model",
         ["price_per_image:", "  other: 0.03", "max_spend_per_day: 1"], 12, "no price"),
        ("a currency that is a list", ["currency: [EUR]"], 10, "currency"),
    ]
    for what, top, line, word in cases:
        write_config(path, api, state, hot, top)
        res = ctx.run(["-c", path, "--check"], timeout=15)
        m = re.search(r"bad\.yaml:(\d+):(\d+): (.*)", res.stderr)
        c.check(res.rc == 1 and m and int(m.group(1)) == line and word in m.group(3),
                "--check refuses %s at line %d, naming %s" % (what, line, word), res.describe())
    write_config(path, api, state, hot, ["price_per_image:", "  %s: 0.035" % h.MODEL,
                                         "currency: USD", "max_spend_per_day: 25"])
    res = ctx.run(["-c", path, "--check"], timeout=15)
    c.eq(res.rc, 0, "--check accepts price_per_image, currency and max_spend_per_day")


def test(ctx):
    test_limit(ctx)
    test_check(ctx)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
