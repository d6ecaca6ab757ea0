#!/usr/bin/env python3
"""Notifications (issue 12, item 4): a local webhook receiver gets file_failed (code and message,
never the key the stand-in echoes), paused and resumed (401, then an answer again) and
spend_limit, each exactly once, the first after two answers of 500 (retried with backoff), never
with an Authorization header; a command hook gets the event in SEEDREAMD_* variables without the
API key's variable, and its output is logged; a hook that sleeps forever is killed after
command_timeout (SIGTERM to its process group) and logged, while files keep flowing."""

import http.server
import json
import os
import stat
import sys
import threading
import time

import harness as h

KEY = "sk-sdr-Notify8vK3xLmN5pR7tW9yB2dF4hJ6-f00d"

OK = {"status": 200, "headers": {"x-request-id": "{rid}"},
      "json": {"model": h.MODEL, "created": "{created}",
               "data": [{"url": "{image_url}", "size": "2048x2048"}],
               "usage": {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}}}
FAIL = {"status": 400, "headers": {"x-request-id": "{rid}"},
        "json": {"error": {"code": "InvalidParameter", "message": "bad input for key {key}!"}}}
PAUSE = {"status": 401, "headers": {"x-request-id": "{rid}"},
         "json": {"error": {"code": "AuthenticationError", "message": "account {key} suspended"}}}


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers 500 to its first fail_first posts."""

    def __init__(self, fail_first=0):
        self.lock = threading.Lock()
        self.posts = []
        self.fail_left = fail_first
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # pylint: disable=invalid-name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    status = 500 if outer.fail_left > 0 else 200
                    outer.fail_left -= 1 if outer.fail_left > 0 else 0
                    outer.posts.append({"status": status, "path": self.path,
                                        "headers": {k.lower(): v for k, v in self.headers.items()},
                                        "body": body.decode("utf-8", "replace"), "time": time.time()})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]

    def accepted(self):
        with self.lock:
            return [json.loads(p["body"]) for p in self.posts if p["status"] == 200]

    def all_posts(self):
        with self.lock:
            return list(self.posts)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def write_config(ctx, root, api, state, hot, extra_lines, pause_retry="1s"):
    path = os.path.join(root, "seedreamd.yaml")
    ctx.write_config(path, api=api, state_dir=state, folders=[{"path": hot}], retries=0,
                     max_in_flight=1, extra_api={"pause_retry": pause_retry})
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n".join(extra_lines) + "\n")
    return path


def write_script(path, text):
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, stat.S_IRWXU)
    return path


def kinds(events):
    return sorted(e.get("event") for e in events)


def test_events(ctx):
    c = ctx.checks
    # The 1st answer is a success, the 2nd a failure, the 3rd pauses the account; the probe
    # (that file again) and one more pass; then the spend limit (3 images at 1.00 of 3.00)
    # holds the 5th file.
    api = ctx.start_hostile_api(name="events", script={"generation": [OK, FAIL, PAUSE, OK]})
    root, hot, out, state = ctx.folder("events")
    envdir = os.path.join(root, "env")
    os.makedirs(envdir)
    hook = write_script(os.path.join(root, "hook.sh"),
                        "#!/bin/sh\nenv > %s/$SEEDREAMD_EVENT.$$.env\n"
                        "echo \"hook saw $SEEDREAMD_EVENT\"\necho to-stderr >&2\n" % envdir)
    rx = Receiver(fail_first=2)
    try:
        config = write_config(ctx, root, api, state, hot, [
            "price_per_image:", "  %s: 1" % h.MODEL, "currency: EUR", "max_spend_per_day: 3",
            "notify:", "  webhook: %s" % json.dumps(rx.url), "  command: %s" % json.dumps(hook),
            "  command_timeout: 10s", "  daily_summary_at: \"23:59\""])
        names = ["n1.png", "n2.png", "n3.png", "n4.png", "n5.png"]
        for i, name in enumerate(names):
            h.write_bytes(os.path.join(hot, name), h.png_image(40 + i, 30 + i, 500 + i))
        d = ctx.start_daemon(config, key=KEY)
        want = ["file_failed", "paused", "resumed", "spend_limit"]
        h.wait_until(lambda: kinds(rx.accepted()) == want, 40)
        time.sleep(1.5)  # anything sent twice would come by now
        got = rx.accepted()
        c.eq(kinds(got), want, "the webhook got file_failed, paused, resumed and spend_limit, "
             "each exactly once")
        posts = rx.all_posts()
        c.eq([p["status"] for p in posts[:3]], [500, 500, 200],
             "the first event was answered 500 twice, then taken on the third attempt")
        if len(posts) >= 3:
            c.check(posts[1]["time"] - posts[0]["time"] >= 0.9 and
                    posts[2]["time"] - posts[1]["time"] >= 1.8,
                    "with backoff between attempts (1 s, then 2 s)",
                    "%.2f s, %.2f s" % (posts[1]["time"] - posts[0]["time"],
                                        posts[2]["time"] - posts[1]["time"]))
        c.eq(len(posts), len(want) + 2, "no other post: each event was taken once")
        c.check(all("authorization" not in p["headers"] for p in posts),
                "no webhook request carries an Authorization header")
        c.check(all(KEY not in json.dumps(p) and KEY[:20] not in json.dumps(p) for p in posts),
                "no webhook request carries the API key, echoed or not")
        c.check(all(p["headers"].get("content-type") == "application/json" for p in posts),
                "the body is JSON")
        by_kind = {e["event"]: e for e in got}
        # Files found at start go in scan order: the failed one is the one with an error record.
        errs = [n for n in h.listing(out) if n.endswith(".error.json")]
        bad = errs[0].replace(".error.json", ".png") if len(errs) == 1 else "?"
        failed = by_kind.get("file_failed", {})
        c.eq((failed.get("version"), failed.get("file"), failed.get("folder"),
              failed.get("code"), failed.get("http_status")),
             (1, bad, hot, "InvalidParameter", 400),
             "file_failed says which file, its folder, the code and the HTTP status (version 1)")
        c.check("[redacted]" in failed.get("message", ""),
                "the message came through with the echoed key redacted", failed.get("message"))
        c.check("suspended" in by_kind.get("paused", {}).get("message", ""),
                "paused says why", by_kind.get("paused"))
        spend = by_kind.get("spend_limit", {})
        c.check(spend.get("limit") == "max_spend_per_day" and "3.000000 EUR" in spend.get("message", ""),
                "spend_limit names max_spend_per_day and the amount", spend)
        c.check(all(isinstance(e.get("time"), str) and e["time"].endswith("Z") for e in got),
                "every event has its time (UTC)")

        # The command hook, once per event, with the details in its environment.
        h.wait_until(lambda: len(os.listdir(envdir)) >= len(want), 10)
        envs = {}
        for name in os.listdir(envdir):
            with open(os.path.join(envdir, name), encoding="utf-8") as fh:
                envs[name.split(".")[0]] = dict(line.split("=", 1) for line in fh.read().splitlines()
                                                if "=" in line)
        c.eq(sorted(envs), want, "the command ran once per event")
        fe = envs.get("file_failed", {})
        c.eq((fe.get("SEEDREAMD_EVENT"), fe.get("SEEDREAMD_FILE"), fe.get("SEEDREAMD_FOLDER"),
              fe.get("SEEDREAMD_CODE"), fe.get("SEEDREAMD_HTTP_STATUS")),
             ("file_failed", bad, hot, "InvalidParameter", "400"),
             "the command gets SEEDREAMD_EVENT, _FILE, _FOLDER, _CODE and _HTTP_STATUS")
        c.check("[redacted]" in fe.get("SEEDREAMD_MESSAGE", ""), "and SEEDREAMD_MESSAGE, redacted",
                fe.get("SEEDREAMD_MESSAGE"))
        c.check(all("SEEDREAM_API_KEY" not in e for e in envs.values()),
                "the API key's variable is not in the command's environment")
        c.check(all(KEY not in json.dumps(e) for e in envs.values()),
                "the key is nowhere in the command's environment")
        err = d.stderr_text()
        c.check("hook saw file_failed" in err and "to-stderr" in err,
                "the command's stdout and stderr are logged line by line", err[-600:])
        c.check(KEY not in err and KEY not in d.stdout_text(), "the key is not in the log")
        c.eq(len(api.generations(valid_only=False)), 5,
             "5 generation calls: ok, failed, paused, the probe, one more; then the limit")
        rc, _ = d.terminate()
        c.eq(rc, 0, "the daemon stops cleanly")
    finally:
        rx.stop()


def test_stuck_hook(ctx):
    c = ctx.checks
    api = ctx.start_hostile_api(name="stuck", script={"generation": [FAIL, FAIL, OK]})
    root, hot, out, state = ctx.folder("stuck")
    pids = os.path.join(root, "pids")
    hook = write_script(os.path.join(root, "hook.sh"),
                        "#!/bin/sh\necho $$ >> %s\nsleep 1000\n" % pids)
    config = write_config(ctx, root, api, state, hot, [
        "notify:", "  command: %s" % json.dumps(hook), "  command_timeout: 8s",
        "  events: [file_failed]"])
    names = ["s%d.png" % i for i in range(6)]
    for i, name in enumerate(names):
        h.write_bytes(os.path.join(hot, name), h.png_image(40 + i, 30 + i, 700 + i))
    d = ctx.start_daemon(config, key=KEY)
    flowing = h.wait_until(lambda: sum(n.endswith(".json") for n in h.listing(out)) == 6, 30)
    c.check(flowing, "every file gets its result or error record while the hooks hang",
            str(h.listing(out)))
    with open(pids, encoding="utf-8") as fh:
        started = [int(x) for x in fh.read().split()]
    c.eq(len(started), 2, "two hooks for the two failures")
    c.check(any(os.path.exists("/proc/%d" % p) for p in started) and
            "sending SIGTERM" not in d.stderr_text(),
            "the files went on while the hooks were still running (before their timeout)")
    killed = d.wait_for(r"ended by signal 15 after its timeout", 20)
    err = d.stderr_text()
    c.check(killed and "still running after 8000 ms: sending SIGTERM" in err,
            "a hook that runs past command_timeout gets SIGTERM, and that is logged", err[-800:])
    h.wait_until(lambda: not any(os.path.exists("/proc/%d" % p) for p in started), 5)
    c.check(not any(os.path.exists("/proc/%d" % p) for p in started),
            "the hooks are gone (reaped, not left as zombies)")
    rc, secs = d.terminate()
    c.eq(rc, 0, "the daemon stops cleanly")
    c.check(secs < 5, "and promptly", "%.1f s" % secs)


def test_daily_summary(ctx):
    """The default summary comes at local midnight for the day that ended: the daemon runs in a
    time zone (a POSIX TZ offset with seconds) where midnight is 12 s away."""
    c = ctx.checks
    api = ctx.start_api("summary")
    root, hot, out, state = ctx.folder("summary")
    rx = Receiver()
    try:
        config = write_config(ctx, root, api, state, hot, [
            "price_per_image:", "  %s: 0.5" % h.MODEL, "currency: EUR",
            "notify:", "  webhook: %s" % json.dumps(rx.url),
            "  events: [daily_summary, file_failed]"])
        for i in range(2):
            h.write_bytes(os.path.join(hot, "d%d.png" % i), h.png_image(40 + i, 30 + i, 900 + i))
        # local = UTC + east; local time of day 23:59:48 now.
        now = int(time.time())
        east = (86400 - 12 - now % 86400) % 86400
        tz = "XYZ-%d:%02d:%02d" % (east // 3600, east // 60 % 60, east % 60)
        ended = time.strftime("%Y-%m-%d", time.gmtime(now + east))
        d = ctx.start_daemon(config, env_extra={"TZ": tz})
        got = h.wait_until(lambda: any(e["event"] == "daily_summary" for e in rx.accepted()), 30)
        c.check(got, "the daily summary came at local midnight", str(rx.all_posts()))
        summaries = [e for e in rx.accepted() if e["event"] == "daily_summary"]
        if summaries:
            s = summaries[0]
            c.eq((s.get("date"), s.get("done"), s.get("failed"), s.get("images"), s.get("cost"),
                  s.get("currency")), (ended, 2, 0, 2, 1.0, "EUR"),
                 "it counts the day that ended: 2 done, 0 failed, 2 images, 1.00 EUR")
        c.eq(len(summaries), 1, "one summary")
        d.terminate()
    finally:
        rx.stop()


def test_check(ctx):
    c = ctx.checks
    api = ctx.start_api("notify-check")
    root, hot, _, state = ctx.folder("notify-check")
    script = write_script(os.path.join(root, "ok.sh"), "#!/bin/sh\n")
    plain = os.path.join(root, "plain.txt")
    with open(plain, "w", encoding="utf-8") as fh:
        fh.write("not a program\n")
    cases = [
        ("a webhook with plain http beyond this machine",
         ["notify:", "  webhook: http://example.com/hook"], "plain http"),
        ("a webhook that is not http(s)", ["notify:", "  webhook: ftp://127.0.0.1/x"],
         "notify.webhook"),
        ("an unknown event", ["notify:", "  webhook: https://example.com/h",
                              "  events: [file_failed, exploded]"], "exploded"),
        ("a relative command", ["notify:", "  command: hook.sh"], "absolute"),
        ("a command that is not executable", ["notify:", "  command: %s" % json.dumps(plain)],
         "not an executable"),
        ("a bad command_timeout", ["notify:", "  command: %s" % json.dumps(script),
                                   "  command_timeout: soon"], "command_timeout"),
        ("a bad daily_summary_at", ["notify:", "  command: %s" % json.dumps(script),
                                    "  daily_summary_at: \"25:00\""], "daily_summary_at"),
        ("notify without a target", ["notify:", "  events: [paused]"], "webhook or a command"),
        ("an unknown notify key", ["notify:", "  webhok: https://example.com/h"], "did you mean"),
    ]
    for what, lines, word in cases:
        path = write_config(ctx, root, api, state, hot, lines)
        res = ctx.run(["-c", path, "--check"], timeout=15)
        c.check(res.rc == 1 and ("seedreamd.yaml:" in res.stderr) and word in res.stderr,
                "--check refuses %s (file:line:column, naming %r)" % (what, word), res.describe())
    path = write_config(ctx, root, api, state, hot, [
        "notify:", "  webhook: https://example.com/hook", "  command: %s" % json.dumps(script),
        "  events: [file_failed, daily_summary]", "  command_timeout: 5s",
        "  daily_summary_at: \"07:30\""])
    res = ctx.run(["-c", path, "--check"], timeout=15)
    c.eq(res.rc, 0, "--check accepts a full notify: section")


def test_once(ctx):
    """A --once run delivers its events before it exits, even one answered 500 at first."""
    c = ctx.checks
    api = ctx.start_hostile_api(name="once", script={"generation": [FAIL]})
    root, hot, out, state = ctx.folder("once")
    rx = Receiver(fail_first=1)
    try:
        config = write_config(ctx, root, api, state, hot, [
            "notify:", "  webhook: %s" % json.dumps(rx.url), "  events: [file_failed]"])
        h.write_bytes(os.path.join(hot, "bad.png"), h.png_image(40, 30, 7))
        res = ctx.run(["-c", config, "--once"], timeout=60, name="once", key=KEY)
        c.check(res.rc == 1, "--once exits 1 after a failed file", res.describe())
        got = rx.accepted()
        c.eq(kinds(got), ["file_failed"],
             "the file_failed event reached the webhook (after one 500) before --once exited")
        c.eq([p["status"] for p in rx.all_posts()], [500, 200], "one retry, no more")
    finally:
        rx.stop()


def test(ctx):
    test_check(ctx)
    test_once(ctx)
    test_events(ctx)
    test_stuck_hook(ctx)
    test_daily_summary(ctx)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
