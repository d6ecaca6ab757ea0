#!/usr/bin/env python3
"""Notifications that survive restarts and reloads (follow-up of issue 12, item 4):
- the webhook is down when a file fails; the daemon is stopped (SIGTERM), and in a second case
  killed (SIGKILL), while the event waits; the webhook comes back; at the next start the
  file_failed event (the same one: same time, file and code) arrives exactly once, and
  state_dir/events.pending is empty after;
- a damaged events.pending: the start goes on, the damage is logged, the file is kept as
  events.pending.bad; a readable event in a partly damaged file is delivered, one older than
  24 h is dropped with a log line;
- a command still running when the daemon stops runs again at the next start.
The daily summary across reloads and restarts: test_notify_summary.py."""

import json
import os
import signal
import sys
import time

import harness as h
import test_notify as tn

KEY = "sk-sdr-Restart5tG7hJ9kL2mN4pQ6rS8uV1wX-a11e"


def pending(state):
    try:
        with open(os.path.join(state, "events.pending"), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def pending_kinds(state):
    doc = pending(state)
    return sorted(e.get("kind") for e in doc.get("events", [])) if doc else None


def read_or_none(path):
    try:
        return h.read_bytes(path)
    except OSError:
        return None


def set_down(rx, down):
    with rx.lock:
        rx.fail_left = 10 ** 6 if down else 0


def failed_of(rx):
    return [e for e in rx.accepted() if e.get("event") == "file_failed"]


def restart_case(ctx, name, how):
    """how: "term" or "kill"."""
    c = ctx.checks
    api = ctx.start_hostile_api(name="restart-" + name, script={"generation": [tn.FAIL]})
    root, hot, out, state = ctx.folder("restart-" + name)
    rx = tn.Receiver(fail_first=10 ** 6)  # down: every post answered 500
    try:
        config = tn.write_config(ctx, root, api, state, hot, [
            "notify:", "  webhook: %s" % json.dumps(rx.url), "  events: [file_failed]"])
        h.write_bytes(os.path.join(hot, "bad.png"), h.png_image(40, 30, 11))
        d = ctx.start_daemon(config, key=KEY, name="%s-1" % name)
        # The error record too: a kill before it would rightly fail the file again.
        tried = h.wait_until(lambda: len(rx.all_posts()) >= 1 and
                             pending_kinds(state) == ["file_failed"] and
                             "bad.error.json" in h.listing(out), 20)
        c.check(tried, "%s: the file failed, the webhook (down) was tried, and the event is in "
                "state_dir/events.pending" % name, "%s %s" % (rx.all_posts(), pending(state)))
        first = json.loads(rx.all_posts()[0]["body"]) if rx.all_posts() else {}
        # The API's message echoes the key: state_dir keeps the scrubbed text only.
        raw = read_or_none(os.path.join(state, "events.pending")) or b""
        c.check(KEY.encode() not in raw and KEY[:20].encode() not in raw,
                "%s: events.pending holds neither the key nor its first 20 characters" % name,
                raw[:400])
        mode = os.stat(os.path.join(state, "events.pending")).st_mode & 0o777
        c.eq(oct(mode), oct(0o600), "%s: events.pending is private (0600)" % name)
        if how == "kill":
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait(10)
            d.terminate()
        else:
            rc, _ = d.terminate()
            c.eq(rc, 0, "%s: the daemon stops cleanly with the event undelivered" % name)
        c.eq(pending_kinds(state), ["file_failed"], "%s: the event is still kept after the %s"
             % (name, "SIGKILL" if how == "kill" else "stop"))
        tries_before = len(rx.all_posts())
        set_down(rx, False)
        d = ctx.start_daemon(config, key=KEY, name="%s-2" % name)
        h.wait_until(lambda: failed_of(rx), 20)
        time.sleep(2.5)  # a second delivery would come by now
        got = failed_of(rx)
        c.eq(len(got), 1, "%s: after the restart the file_failed event arrived exactly once" % name)
        if got:
            g = got[0]
            c.eq((g.get("file"), g.get("code"), g.get("time"), g.get("http_status")),
                 ("bad.png", "InvalidParameter", first.get("time"), 400),
                 "%s: the same event: its file, code, status and the time it happened" % name)
            msg = g.get("message") or ""
            c.check(KEY not in msg and KEY[:20] not in msg and msg == first.get("message") and
                    "bad input for key [redacted]" in msg,
                    "%s: its message as first sent, scrubbed of the key" % name,
                    "%r, first %r" % (msg, first.get("message")))
        c.eq(len(rx.all_posts()) - tries_before, 1, "%s: one post after the restart" % name)
        h.wait_until(lambda: pending_kinds(state) == [], 10)
        c.eq(pending_kinds(state), [], "%s: delivered, it is gone from events.pending" % name)
        c.eq(len(api.generations(valid_only=False)), 1,
             "%s: the failed file was not submitted again" % name)
        err = d.stderr_text()
        c.check("1 event(s) kept from before the restart are delivered now" in err,
                "%s: the restart says it delivers the kept event" % name, err[-800:])
        rc, _ = d.terminate()
        c.eq(rc, 0, "%s: the daemon stops cleanly" % name)
    finally:
        rx.stop()


def test_damaged(ctx):
    c = ctx.checks
    api = ctx.start_api("damaged")
    root, hot, out, state = ctx.folder("damaged")
    rx = tn.Receiver()
    try:
        config = tn.write_config(ctx, root, api, state, hot, [
            "notify:", "  webhook: %s" % json.dumps(rx.url)])
        # Not a document at all.
        garbage = b'{"version":1,"summarised":"","events":[{"kind":"file_fa\x00\xff'
        h.write_bytes(os.path.join(state, "events.pending"), garbage)
        d = ctx.start_daemon(config, name="damaged-1")
        c.check(d.wait_for(r"ready: watching", 15), "a damaged events.pending does not stop the "
                "start", d.stderr_text()[-600:])
        c.check(d.wait_for(r"events\.pending does not read .*kept as events\.pending\.bad", 5),
                "the damage is logged, and the file kept aside", d.stderr_text()[-600:])
        c.eq(read_or_none(os.path.join(state, "events.pending.bad")), garbage,
             "events.pending.bad holds the damaged file as it was")
        h.wait_until(lambda: pending(state) is not None, 5)
        c.eq(pending(state), {"version": 1, "summarised": "", "events": []},
             "a fresh events.pending is written in its place")
        h.write_bytes(os.path.join(hot, "ok.png"), h.png_image(40, 30, 21))
        c.check(h.wait_until(lambda: any(n.endswith(".json") for n in h.listing(out)), 20),
                "files still flow", str(h.listing(out)))
        rc, _ = d.terminate()
        c.eq(rc, 0, "the daemon stops cleanly")

        # Partly damaged: one event reads, one does not, one is older than 24 h.
        now = int(time.time())
        good = {"kind": "file_failed", "time": now - 60, "webhook": True, "command": False,
                "fields": [{"name": "folder", "text": hot}, {"name": "file", "text": "kept.png"},
                           {"name": "code", "text": "InvalidParameter"},
                           {"name": "http_status", "text": "400", "number": True}]}
        old = dict(good, time=now - 90000,
                   fields=[{"name": "file", "text": "old.png"}])
        broken = {"kind": "file_failed", "time": "yesterday", "webhook": True, "command": False,
                  "fields": []}
        doc = {"version": 1, "summarised": "", "events": [old, broken, good]}
        text = json.dumps(doc).encode()
        h.write_bytes(os.path.join(state, "events.pending"), text)
        d = ctx.start_daemon(config, name="damaged-2")
        got = h.wait_until(lambda: any(e.get("file") == "kept.png" for e in rx.accepted()), 15)
        c.check(got, "the event that reads is delivered", str(rx.all_posts()))
        time.sleep(1)
        kept = [e for e in rx.accepted() if e.get("event") == "file_failed"]
        c.eq([(e.get("file"), e.get("code"), e.get("http_status")) for e in kept],
             [("kept.png", "InvalidParameter", 400)],
             "only it: not the unreadable one, not the one older than 24 h")
        err = d.stderr_text()
        c.check("2 event(s) read, 1 not" in err and "kept as events.pending.bad" in err,
                "the partly damaged file is logged and kept aside", err[-800:])
        c.check("older than 24 h: dropped" in err, "the old event's drop is logged", err[-800:])
        c.eq(read_or_none(os.path.join(state, "events.pending.bad")), text,
             "events.pending.bad holds it as it was")
        h.wait_until(lambda: pending_kinds(state) == [], 5)
        c.eq(pending_kinds(state), [], "events.pending is empty once delivered")
        rc, _ = d.terminate()
        c.eq(rc, 0, "the daemon stops cleanly")
    finally:
        rx.stop()


def test_command_cut_short(ctx):
    """A command still running at the stop (killed with it) runs again at the next start."""
    c = ctx.checks
    api = ctx.start_hostile_api(name="cut-short", script={"generation": [tn.FAIL]})
    root, hot, out, state = ctx.folder("cut-short")
    runs = os.path.join(root, "runs")
    hang = os.path.join(root, "hang")
    hook = tn.write_script(os.path.join(root, "hook.sh"),
                           "#!/bin/sh\necho \"$SEEDREAMD_EVENT $SEEDREAMD_FILE\" >> %s\n"
                           "if [ -e %s ]; then exec sleep 1000; fi\n" % (runs, hang))
    with open(hang, "w", encoding="utf-8"):
        pass
    config = tn.write_config(ctx, root, api, state, hot, [
        "notify:", "  command: %s" % json.dumps(hook), "  command_timeout: 60s",
        "  events: [file_failed]"])
    h.write_bytes(os.path.join(hot, "bad.png"), h.png_image(40, 30, 31))
    d = ctx.start_daemon(config, key=KEY, name="cut-short-1")
    started = h.wait_until(lambda: os.path.exists(runs) and "bad.error.json" in h.listing(out) and
                           pending_kinds(state) == ["file_failed"], 20)
    c.check(started, "the command started for file_failed, and the event is kept meanwhile",
            str(pending(state)))
    rc, _ = d.terminate()
    c.eq(rc, 0, "the daemon stops cleanly, killing the command")
    c.eq(pending_kinds(state), ["file_failed"], "the event cut short is still kept")
    os.unlink(hang)
    d = ctx.start_daemon(config, key=KEY, name="cut-short-2")
    h.wait_until(lambda: pending_kinds(state) == [], 15)
    with open(runs, encoding="utf-8") as fh:
        lines = fh.read().split("\n")[:-1]
    c.eq(lines, ["file_failed bad.png"] * 2, "it ran again after the restart, once")
    c.eq(pending_kinds(state), [], "and is gone from events.pending after it ended")
    rc, _ = d.terminate()
    c.eq(rc, 0, "the daemon stops cleanly")


def test(ctx):
    restart_case(ctx, "stop", "term")
    restart_case(ctx, "crash", "kill")
    test_damaged(ctx)
    test_command_cut_short(ctx)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
