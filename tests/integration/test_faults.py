#!/usr/bin/env python3
"""One check group per API fault, each with api.retries: 3 and a one-file folder: 429 with
Retry-After (the retry waits for it), 500, 503, a dropped connection, a malformed 200, an error
object in a 200, a truncated download (one generation, the download retried), a reply slower than
api.timeout; 401/403/404/QuotaExceeded pause (no sidecar, --once exits 1; in watch mode the
files complete by themselves once the API accepts again); a content rejection fails the file
after one call; 4 x 500 with retries: 3 gives an .error.json with attempts 4."""

import os
import socket
import sys
import time

import harness as h

# fault, generation calls expected, billed expected, what it is
RETRIED = [
    ("429:ra=2", 2, 1, "HTTP 429 ServerOverloaded with Retry-After: 2"),
    ("500", 2, 1, "HTTP 500 InternalServiceError"),
    ("503", 2, 1, "HTTP 503 ServiceUnavailable"),
    ("drop", 2, 1, "connection closed without a response"),
    ("malformed", 2, 1, "200 with a truncated JSON body"),
    ("error200", 2, 1, "200 with a top-level error object"),
    ("truncdl", 1, 1, "image download cut off halfway"),
    # the slow call is generated (and billed) by the API after the client gave up on it
    ("slow:ms=3000", 2, 2, "a reply slower than api.timeout (1 s)"),
]

PAUSES = [
    ("401", "AuthenticationError"),
    ("403", "AccountOverdueError"),
    ("404", "InvalidEndpointOrModel.NotFound"),
    ("quota", "QuotaExceeded"),
]



class NotifyListener:
    """A NOTIFY_SOCKET for the daemon's sd_notify() messages (READY=1, STATUS=...)."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.messages = []

    def drain(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            self.messages.append(data.decode("utf-8", "replace"))
        return self.messages

    def statuses(self):
        out = []
        for m in self.drain():
            for line in m.splitlines():
                if line.startswith("STATUS="):
                    out.append(line[len("STATUS="):])
        return out

    def close(self):
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def one_file_case(ctx, api, tag, seed, *, retries=3, timeout="20s", extra_api=None, max_in_flight=4):
    root, hot, out, state = ctx.folder("faults-%s" % tag)
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}], retries=retries, timeout=timeout,
                              extra_api=extra_api, max_in_flight=max_in_flight)
    data = h.png_image(48, 32, seed)
    src = os.path.join(hot, "in.png")
    h.write_bytes(src, data)
    return root, hot, out, state, config, src, h.sha256_bytes(data)


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    version = ctx.version()

    # ---- retryable faults: one extra call (or one extra download), then success ----------
    for i, (fault, calls, billed, what) in enumerate(RETRIED):
        tag = fault.split(":")[0]
        slow = fault.startswith("slow")
        _, hot, out, _, config, src, sha = one_file_case(ctx, api, tag, 300 + i,
                                                         timeout="1s" if slow else "20s")
        n_gen, n_dl = len(api.generations()), len(api.downloads())
        api.add_faults([fault], replace=True)
        res = ctx.run_once(config, name="fault-%s" % tag)
        c.check(res.rc == 0 and not res.timed_out, "%s (%s): --once exits 0" % (fault, what), res.describe())
        if slow:
            # the timed-out call is recorded by the fake only when its sleep ends
            h.wait_until(lambda: len(api.generations()) - n_gen >= calls, 5)
        gens = api.generations()[n_gen:]
        dls = api.downloads()[n_dl:]
        c.eq(len(gens), calls, "%s: %d generation call(s)" % (fault, calls))
        c.eq([r.get("fault") for r in sorted(gens, key=lambda r: r["time"])[:1]], [fault],
             "%s: the first call met the fault" % fault)
        c.problems(["call %d sent %s..." % (k + 1, (r.get("image_sha256") or "")[:12])
                    for k, r in enumerate(gens) if r.get("image_sha256") != sha],
                   "%s: every call sent in.png" % fault)
        c.eq(sum(1 for r in gens if r.get("billed")), billed, "%s: billed %d time(s)" % (fault, billed))
        ok = [r for r in gens if r.get("status") == 200 and r.get("billed") and not r.get("fault")]
        sc_path = os.path.join(out, "in.json")
        if c.check(os.path.exists(sc_path), "%s: in.json written" % fault, "found %s" % h.listing(out)):
            c.problems(h.success_sidecar_problems(h.read_json(sc_path), src_path=src, source="in.png",
                                                  output="in.jpeg", attempts=calls, version=version,
                                                  record=ok[-1] if ok else None),
                       "%s: sidecar complete, attempts %d, request_id of the successful call" % (fault, calls))
        c.check(not os.path.exists(os.path.join(out, "in.error.json")), "%s: no in.error.json" % fault)
        c.problems(h.output_problems(os.path.join(out, "in.jpeg"), sha), "%s: in.jpeg complete and right" % fault)
        if fault.startswith("429") and len(gens) >= 2:
            gap = gens[1]["time"] - gens[0]["time"]
            c.check(gap >= 1.95, "%s: the retry waited for Retry-After (>= 2 s)" % fault,
                    "the second call came %.2f s after the first" % gap)
        if fault == "truncdl":
            fid = gens[0].get("file_id") if gens else None
            c.eq([(d.get("file_id"), d.get("truncated")) for d in dls], [(fid, True), (fid, False)],
                 "truncdl: the download was retried (2 downloads of the one image, the first cut short)")
            if gens and os.path.exists(os.path.join(out, "in.jpeg")):
                c.eq(h.sha256_output(os.path.join(out, "in.jpeg")), gens[0].get("output_sha256"),
                     "truncdl: in.jpeg is the whole image the API generated")
        if slow and len(gens) >= 2:
            first = min(gens, key=lambda r: r["time"])
            second = max(gens, key=lambda r: r["time"])
            gap = second["time"] - first["time"]
            c.check(gap >= 0.95, "slow: the retry came after the 1 s timeout",
                    "the second call came %.2f s after the first" % gap)
        c.problems(h.leftovers(out), "%s: no hidden or temporary file left" % fault)

    # ---- a content rejection: one call, an .error.json, no retry ---------------------------
    fault = "400:InputImageSensitiveContentDetected"
    _, hot, out, _, config, src, sha = one_file_case(ctx, api, "400", 350)
    n_gen = len(api.generations())
    api.add_faults([fault], replace=True)
    res = ctx.run_once(config, name="fault-400")
    c.check(res.rc == 1 and not res.timed_out, "400 content rejection: --once exits 1", res.describe())
    gens = api.generations()[n_gen:]
    c.eq(len(gens), 1, "400: exactly one call (not retried)")
    path = os.path.join(out, "in.error.json")
    if c.check(os.path.exists(path), "400: in.error.json written", "found %s" % h.listing(out)):
        c.problems(h.error_sidecar_problems(h.read_json(path), src_path=src, source="in.png", http_status=400,
                                            code="InputImageSensitiveContentDetected", attempts=1,
                                            version=version, record=gens[0] if gens else None),
                   "400: error sidecar with http_status 400, the code, attempts 1, request_id")
    c.same_names(h.listing(out), ["in.error.json"], "400: nothing else in the output folder")

    # ---- retries exhausted: 4 x 500 with retries: 3 ----------------------------------------
    _, hot, out, _, config, src, sha = one_file_case(ctx, api, "exhausted", 360)
    n_gen = len(api.generations())
    api.add_faults(["500"] * 4, replace=True)
    res = ctx.run_once(config, name="fault-exhausted", timeout=60)
    c.check(res.rc == 1 and not res.timed_out, "4 x 500 with retries 3: --once exits 1", res.describe())
    gens = api.generations()[n_gen:]
    c.eq(len(gens), 4, "4 x 500: exactly 4 calls (1 + 3 retries)")
    c.eq(api.queued_faults(), [], "4 x 500: every queued fault was consumed")
    path = os.path.join(out, "in.error.json")
    if c.check(os.path.exists(path), "4 x 500: in.error.json written", "found %s" % h.listing(out)):
        c.problems(h.error_sidecar_problems(h.read_json(path), src_path=src, source="in.png", http_status=500,
                                            code="InternalServiceError", attempts=4, version=version,
                                            record=gens[-1] if gens else None),
                   "4 x 500: error sidecar with http_status 500, InternalServiceError, attempts 4")
    c.check(not os.path.exists(os.path.join(out, "in.json")), "4 x 500: no success sidecar")
    api.add_faults([], replace=True)

    # ---- pausing faults with --once: no sidecar, the log says paused, exit 1 ---------------
    for i, (fault, code) in enumerate(PAUSES):
        _, hot, out, _, config, src, sha = one_file_case(ctx, api, "pause-%s" % fault, 370 + i)
        n_gen = len(api.generations())
        api.add_faults([fault], replace=True)
        res = ctx.run_once(config, name="pause-%s" % fault)
        c.check(res.rc == 1 and not res.timed_out, "%s (%s) with --once: exits 1" % (fault, code), res.describe())
        c.eq(len(api.generations()) - n_gen, 1, "%s --once: exactly one call" % fault)
        c.eq(h.listing(out), [], "%s --once: no sidecar (.json or .error.json), no output" % fault)
        c.check("paused" in res.stderr and code in res.stderr, "%s --once: the log says paused, with %s" % (fault, code),
                "stderr: %s" % res.stderr.strip()[-400:])
    api.add_faults([], replace=True)

    # ---- 401 in watch mode: paused, then resumes on its own (pause_retry: 1s) --------------
    root, hot, out, state = ctx.folder("faults-pause-daemon")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}], retries=3, max_in_flight=1,
                              extra_api={"pause_retry": "1s"})
    files = {"a.png": h.png_image(40, 30, 380), "b.png": h.png_image(40, 30, 381)}
    for n, data in files.items():
        h.write_bytes(os.path.join(hot, n), data)
    shas = {h.sha256_bytes(d): n for n, d in files.items()}
    api.add_faults(["401", "ok"], replace=True)
    n_gen = len(api.generations())
    notify = NotifyListener(os.path.join(ctx.tmp, "notify.sock"))
    try:
        env = ctx.env()
        env["NOTIFY_SOCKET"] = notify.path
        d = h.Daemon(ctx, [ctx.binary, "-c", config], env, "pause-daemon")
        c.require(d.wait_for(r"\bready\b", 15), "401 watch mode: the daemon logs 'ready'",
                  "exit status %s; stderr: %s" % (d.proc.poll(), d.stderr_text()[-600:]))
        paused_status = []
        t0 = time.monotonic()

        def progress():
            paused_status.extend(s for s in notify.statuses() if "paused" in s)
            return all(os.path.exists(os.path.join(out, n.rsplit(".", 1)[0] + ".json")) for n in files)

        done = h.wait_until(progress, 20)
        took = time.monotonic() - t0
        c.check(done, "401 watch mode: both files complete by themselves once the API accepts again",
                "after %.1f s the output holds %s" % (took, h.listing(out)))
        c.check(paused_status, "401 watch mode: STATUS= said paused meanwhile",
                "statuses seen: %s" % notify.statuses()[-5:])
        err = d.stderr_text()
        c.check("paused" in err and "AuthenticationError" in err, "401 watch mode: the log says paused (AuthenticationError)",
                "stderr: %s" % err.strip()[-400:])
        gens = api.generations()[n_gen:]
        c.eq([r.get("fault") for r in gens], ["401", "ok", None],
             "401 watch mode: 3 calls: one refused, the probe, the other file")
        c.eq(sorted(shas.get(r.get("image_sha256"), "?") for r in gens[1:]), ["a.png", "b.png"],
             "401 watch mode: after the pause each file was sent once")
        if len(gens) >= 2:
            gap = gens[1]["time"] - gens[0]["time"]
            c.check(gap >= 0.9, "401 watch mode: the probe came after pause_retry (1 s)",
                    "it came %.2f s after the refused call" % gap)
        c.eq([n for n in h.listing(out) if n.endswith(".error.json")], [],
             "401 watch mode: no file marked failed (no .error.json)")
        c.check(d.proc.poll() is None, "401 watch mode: the daemon is still running", "exit status %s" % d.proc.poll())
        rc, _ = d.terminate(timeout=8)
        c.eq(rc, 0, "401 watch mode: exits 0 on SIGTERM")
    finally:
        notify.close()


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
