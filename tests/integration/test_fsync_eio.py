#!/usr/bin/env python3
"""EIO while a paid result is made durable (issue 10): the result is kept and written again later,
the API is paid once per file, and no partial or empty file ever shows under a final name.

Two variants, each with its own tree and daemon: the next fsync under the output folder fails with
EIO (faultfs `fail fsync <output> EIO 1`), and the next rename there fails with EIO (`fail rename
<output> EIO 1`). Meanwhile a thread scans the output folder every few milliseconds and reads every
file under a final name (not hidden, not .tmp/.part): a .jpeg must be a whole JPEG (SOI ... EOI),
a .json must parse. At the end: every source has its output (the stand-in's picture of that very
source) and a valid success sidecar, each source was sent exactly once, no temporary file is left,
and the shim's log shows the failure was injected.
"""

import hashlib
import json
import os
import sys
import threading
import time

import harness as h

N = 4


class Scanner(threading.Thread):
    """Reads every final-named file of a folder over and over; keeps what was wrong with it."""

    def __init__(self, folder):
        super().__init__(daemon=True)
        self.folder = folder
        self.stop = False
        self.problems = []
        self.scans = 0

    def look(self):
        for name in h.listing(self.folder):
            if name.startswith(".") or name.endswith((".tmp", ".part")):
                continue
            try:
                data = h.read_bytes(os.path.join(self.folder, name))
            except (FileNotFoundError, IsADirectoryError):
                continue
            bad = None
            if not data:
                bad = "empty"
            elif name.endswith(".jpeg") and not (data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"):
                bad = "not a whole JPEG (%d bytes, ends %r)" % (len(data), data[-2:])
            elif name.endswith(".json"):
                try:
                    json.loads(data.decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as e:
                    bad = "not valid JSON (%d bytes: %s)" % (len(data), e)
            if bad:
                msg = "%s: %s" % (name, bad)
                if msg not in self.problems:
                    self.problems.append(msg)

    def run(self):
        while not self.stop:
            self.look()
            self.scans += 1
            time.sleep(0.003)


def variant(ctx, api, op):
    c = ctx.checks
    label = "fail %s EIO" % op
    root, hot, out, state = ctx.folder("eio-" + op)
    os.makedirs(out)
    config = ctx.write_config(os.path.join(root, "config.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}], max_in_flight=4)
    ffs = ctx.faultfs("faultfs-" + op)
    d = ctx.start_daemon(config, faultfs=ffs, name="daemon-" + op)
    c.require(d.wait_for(r"\bready\b", 30), "%s: the daemon is ready" % label, d.stderr_text()[-400:])
    ffs.set("fail %s %s EIO 1" % (op, out))
    scanner = Scanner(out)
    scanner.start()
    sha = {}
    for i in range(N):
        name = "%s%d.png" % (op, i)
        data = h.png_image(24, 24, 300 + i + (0 if op == "fsync" else 50))
        sha[name] = hashlib.sha256(data).hexdigest()
        tmp = os.path.join(hot, ".%s.part" % name)
        h.write_bytes(tmp, data)
        os.rename(tmp, os.path.join(hot, name))

    def all_done():
        return all(os.path.exists(os.path.join(out, n[:-4] + ".json")) and
                   os.path.exists(os.path.join(out, n[:-4] + ".jpeg")) for n in sha)
    finished = h.wait_until(all_done, 120)
    scanner.look()
    scanner.stop = True
    scanner.join(5)
    fired = [line for line in ffs.applied() if line.startswith("fail %s %s" % (op, out))]
    c.check(fired, "%s: the shim failed a %s under the output folder" % (label, op),
            "nothing injected (the shim's log: %s)" % ffs.applied()[-5:])
    print("     %s: injected: %s" % (label, "; ".join(fired)), flush=True)
    c.check(finished, "%s: every source has its output and sidecar within 120 s (the result "
            "kept and written again)" % label,
            "the output folder holds %s" % h.listing(out))
    c.problems(scanner.problems, "%s: no partial, empty or unparsable file under a final name "
               "(%d scans while it ran)" % (label, scanner.scans))
    problems = []
    for name, digest in sha.items():
        stem = name[:-4]
        jpeg, side = os.path.join(out, stem + ".jpeg"), os.path.join(out, stem + ".json")
        if not (os.path.exists(jpeg) and os.path.exists(side)):
            continue
        prov = h.output_provenance(h.read_bytes(jpeg))
        if not prov or prov[0] != digest:
            problems.append("%s: not the stand-in's result for %s (%s)" % (stem + ".jpeg", name, prov))
        try:
            sc = h.read_json(side)
        except ValueError as e:
            problems.append("%s: %s" % (stem + ".json", e))
            continue
        if not isinstance(sc, dict) or sc.get("source_sha256") != digest or \
                sc.get("output") != stem + ".jpeg" or "error" in sc:
            problems.append("%s: not the success sidecar of %s: %s" % (stem + ".json", name,
                                                                       h._short(sc)))
    c.problems(problems, "%s: each output is its source's result, each sidecar valid JSON "
               "describing it" % label)
    c.eq(h.leftovers(out), [], "%s: no temporary file left in the output folder" % label)
    by_sha = {}
    for r in api.generations():
        by_sha[r.get("image_sha256")] = by_sha.get(r.get("image_sha256"), 0) + 1
    paid = {n: by_sha.get(s, 0) for n, s in sha.items()}
    c.check(all(k == 1 for k in paid.values()), "%s: the API was paid exactly once per file" % label,
            "generations per file: %s" % paid)
    rc, took = d.terminate(30)
    c.eq(rc, 0, "%s: the daemon stops cleanly on SIGTERM (took %.1f s)" % (label, took))


def test(ctx):
    api = ctx.start_api(latency_ms=100)
    variant(ctx, api, "fsync")
    variant(ctx, api, "rename")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
