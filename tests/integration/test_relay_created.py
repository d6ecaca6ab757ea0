#!/usr/bin/env python3
"""A relay that sends "created" in milliseconds (1757321139000, out of XMP's range of four-digit
years): the output still carries its XMP provenance, with the time it was written as the creation
time, and the sidecar says "provenance": "xmp"."""

import os
import re
import sys
import time

import harness as h

CREATED_MS = 1757321139000


def test(ctx):
    c = ctx.checks
    api = ctx.start_hostile_api()
    answer = ({"status": 200,
                            "json": {"model": "doubao-seedream-4-5-251128", "created": CREATED_MS,
                                     "data": [{"url": "{image_url}", "size": "64x48"}],
                                     "usage": {"generated_images": 1, "output_tokens": 16384,
                                               "total_tokens": 16384}},
                            "headers": {"x-request-id": "{rid}"}})
    api.set_script({"generation": [answer], "routes": {}})
    root, hot, out, state = ctx.folder("created-ms")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}])
    h.write_bytes(os.path.join(hot, "photo.jpg"), h.jpeg_image(64, 48, 3))
    before = int(time.time())
    res = ctx.run_once(config)
    c.check(res.rc == 0 and not res.timed_out, "--once exits 0", res.describe())
    c.eq(len(api.generations(valid_only=False)), 1, "one generation")
    path = os.path.join(out, "photo.jpeg")
    if not c.check(os.path.exists(path), "photo.jpeg written", str(h.listing(out))):
        return
    xmp = h.jpeg_xmp(h.read_bytes(path))
    c.check(xmp is not None and b"compositeWithTrainedAlgorithmicMedia" in xmp,
            "the output carries its XMP although created is out of range", res.stderr[-500:])
    m = re.search(rb"CreateDate[^0-9]*(\d{4})-", xmp or b"")
    c.check(m and int(m.group(1)) == time.gmtime(before).tm_year,
            "xmp:CreateDate is the time it was written", str((xmp or b"")[:600]))
    sc = h.read_json(os.path.join(out, "photo.json"))
    c.eq(sc.get("provenance"), "xmp", "the sidecar says provenance xmp")
    c.eq(sc.get("created"), CREATED_MS, "the sidecar keeps created as the API sent it")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
