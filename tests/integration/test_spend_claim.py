#!/usr/bin/env python3
"""A server that claims absurdly many images (usage.generated_images 614891469123652, which times
a price of 0.03 wraps uint64 to 0.008384) cannot wrap the spend: each answer counts as the images
its request asked for (here 1), max_spend_per_day 0.05 still stops the second generation, also
after a restart the same day; the sidecar keeps the server's usage verbatim; the claim is logged
once; --check refuses a price above 1000000 per image at file:line:column."""

import json
import os
import re
import sys

import harness as h

CLAIM = 614891469123652


def test_claim(ctx):
    c = ctx.checks
    root, hot, out, state = ctx.folder("claim")
    api = ctx.start_hostile_api(script={"generation": [
        {"status": 200, "headers": {"x-request-id": "{rid}"},
         "json": {"model": h.MODEL, "created": "{created}",
                  "data": [{"url": "{image_url}", "size": "2048x2048"}],
                  "usage": {"generated_images": CLAIM, "output_tokens": 16384}}}]})
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot, "output": out}], retries=1,
                              max_in_flight=1)
    with open(config, "a", encoding="utf-8") as f:
        f.write("price_per_image:\n  %s: 0.03\ncurrency: EUR\nmax_spend_per_day: 0.05\n"
                % h.MODEL)
    for i in range(3):
        h.write_bytes(os.path.join(hot, "p%d.png" % i), h.png_image(40 + i, 30 + i, 300 + i))
    res = ctx.run_once(config, timeout=40)
    c.check(not res.timed_out, "--once ends", res.describe())
    c.eq(len(api.generations()), 1, "0.03 counted for the claimed answer: 0.06 would pass 0.05, "
         "so no second generation")
    c.eq(res.rc, 1, "--once held back by the spend limit exits 1")
    c.check(re.search(r"daily spend limit reached \(0\.030000 of max_spend_per_day 0\.050000 EUR\)",
                      res.stderr), "the spend counted is one image, 0.03", res.stderr[-800:])
    c.eq(len(re.findall(r"claims %d generated images" % CLAIM, res.stderr)), 1,
         "the claim is logged once")
    sidecars = [n for n in h.listing(out) if n.endswith(".json")]
    c.require(len(sidecars) == 1, "one sidecar", sidecars)
    with open(os.path.join(out, sidecars[0]), encoding="utf-8") as f:
        doc = json.load(f)
    usage = json.dumps(doc)
    c.check('"generated_images": %d' % CLAIM in usage, "the sidecar keeps the server's "
            "generated_images verbatim", usage[:600])

    res = ctx.run_once(config, timeout=40)
    c.eq(len(api.generations()), 1, "a restart the same day still counts 0.03 and makes no call")
    c.check("daily spend limit reached (0.030000" in res.stderr, "the rebuilt cost is 0.03",
            res.stderr[-600:])


def test_check(ctx):
    c = ctx.checks
    api = ctx.start_api("claim-check")
    root, hot, _, state = ctx.folder("claim-check")
    path = os.path.join(root, "bad.yaml")
    for price, ok in (("1000000.000001", False), ("99999999999", False), ("1000000", True)):
        ctx.write_config(path, api=api, state_dir=state, folders=[{"path": hot}])
        with open(path, "a", encoding="utf-8") as f:
            f.write("price_per_image:\n  %s: %s\n" % (h.MODEL, price))
        with open(path, encoding="utf-8") as f:
            line = next(i for i, l in enumerate(f, 1) if l.startswith("  %s:" % h.MODEL)
                        and "price" not in l and price in l)
        res = ctx.run(["-c", path, "--check"], timeout=15)
        if ok:
            c.eq(res.rc, 0, "--check accepts a price of %s" % price)
            continue
        m = re.search(r"bad\.yaml:(\d+):(\d+): (.*)", res.stderr)
        c.check(res.rc == 1 and m and int(m.group(1)) == line and "price_per_image" in m.group(3)
                and "1000000" in m.group(3),
                "--check refuses a price of %s at line %d" % (price, line), res.describe())


def test(ctx):
    test_claim(ctx)
    test_check(ctx)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
