#!/usr/bin/env python3
"""A b64_json answer of ~62 MB (a 46.5 MB PNG) is decoded into the output as it arrives (issue 9,
finding 20): the output is that PNG byte for byte, with its sidecar, and the daemon's peak RSS for
the whole job stays far below the answer's size (< 80 MB; it was ~196 MB when the whole
answer, its parsed copy and the decoded image were all held in memory). Measured as VmHWM of the running daemon. The RSS bound is skipped
for a sanitizer build, whose shadow memory makes RSS meaningless."""

import base64
import hashlib
import json
import os
import sys
import time

import harness as h

IMAGE_BYTES = 46_500_000  # base64: 62,000,000 characters
RSS_LIMIT_KB = 80 * 1024



def sanitized(binary):
    if os.environ.get("ASAN_OPTIONS"):
        return True
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def vm_hwm_kb(pid):
    """The peak RSS of a running process (VmHWM), in KiB. Taken from /proc rather than from
    getrusage: the spawning Python process, big with the answer, would count in ru_maxrss
    (vfork shares its memory until exec)."""
    with open("/proc/%d/status" % pid, encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def test(ctx):
    c = ctx.checks
    root, hot, out, state = ctx.folder("big")
    image = h.big_png(IMAGE_BYTES)
    answer = os.path.join(ctx.tmp, "answer.json")
    with open(answer, "wb") as f:
        f.write(b'{"model": "%s", "created": %d, "data": [{"b64_json": "'
                % (h.MODEL.encode(), int(time.time())))
        f.write(base64.b64encode(image))
        f.write(b'", "size": "2048x2048"}], "usage": {"generated_images": 1, "output_tokens": 16384,'
                b' "total_tokens": 16384}}')
    print("the answer is %d bytes" % os.path.getsize(answer), flush=True)
    api = ctx.start_hostile_api(script={"generation": [
        {"status": 200, "headers": {"x-request-id": "{rid}"}, "body_file": answer}]})
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}], response_format="b64_json", timeout="50s")
    h.write_bytes(os.path.join(hot, "photo.png"), h.sample("rings.png"))

    daemon = ctx.start_daemon(config)
    done = daemon.wait_for(r"done .*photo\.png", 50)
    c.check(done, "the daemon writes the result")
    peak_kb = vm_hwm_kb(daemon.proc.pid) if daemon.proc.poll() is None else 0
    rc, _ = daemon.terminate()
    c.eq(rc, 0, "the daemon exits 0 on SIGTERM")
    print("peak RSS of the daemon: %.1f MB" % (peak_kb / 1024), flush=True)
    c.eq(len(api.generations(valid_only=False)), 1, "one generation")
    got = os.path.join(out, "photo.png")
    c.check(os.path.exists(got) and os.path.getsize(got) == len(image) and
            h.sha256_file(got) == hashlib.sha256(image).hexdigest(),
            "the output is the 46.5 MB PNG of the answer, byte for byte")
    side = os.path.join(out, "photo.json")
    sidecar = h.read_json(side) if os.path.exists(side) else {}
    c.check(sidecar.get("output") == "photo.png" and sidecar.get("response_format") == "b64_json"
            and sidecar.get("usage", {}).get("generated_images") == 1,
            "the sidecar names the output and keeps the answer's usage", json.dumps(sidecar)[:300])
    c.problems(h.leftovers(out), "no temporary file left")
    if sanitized(ctx.binary):
        print("skip - the peak RSS bound: a sanitizer build (ASAN_OPTIONS set or __asan_init in "
              "the binary)", flush=True)
    else:
        c.check(0 < peak_kb < RSS_LIMIT_KB, "peak RSS %.1f MB < %d MB for a %.0f MB answer"
                % (peak_kb / 1024, RSS_LIMIT_KB // 1024, os.path.getsize(answer) / 1e6))


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
