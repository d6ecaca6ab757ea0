#!/usr/bin/env python3
"""What state_dir/events.pending says is not trusted blindly (review of the durable
notifications):
- a summarised day still to come (the clock was ahead when it was recorded) is ignored and
  logged: the next daily summary goes out (it used to be silenced until that day), and the file
  then records the real day;
- a damaged events.pending that cannot be renamed aside (events.pending.bad is a directory that
  is not empty) is left byte for byte as it is, also after the daemon stops (it used to be
  replaced by the first write);
- a daily summary that falls due while events.pending is still being read (its open stalled by
  faultfs) waits for it: the file says that day was summarised, so none goes out (one went out
  twice before);
- a stop while a partly damaged events.pending is being read (its rename aside stalled by
  faultfs until the daemon is stopping): the event that did read is written back to
  events.pending (it was left only in events.pending.bad);
- a symlink or an empty directory planted as events.pending.tmp is removed and events.pending
  written (every write failed before); the symlink's target is not touched.
Summaries are timed with a POSIX TZ offset as test_notify_summary.py does."""

import json
import os
import signal
import sys
import time

import harness as h
import test_notify as tn
from test_notify_restart import pending, read_or_none
from test_notify_summary import tz_for


def test_summarised_ahead(ctx):
    """events.pending says the summary for 9999-12-31 was sent; the summary due at the next
    local minute is sent all the same, and recorded."""
    c = ctx.checks
    api = ctx.start_api("ahead")
    root, hot, _, state = ctx.folder("ahead")
    rx = tn.Receiver()
    try:
        tz, _, due = tz_for(20, 60)
        if time.strftime("%H:%M", time.gmtime(due)) == "00:00":  # the midnight one: the next
            tz, _, due = tz_for(80, 60)
        hhmm = time.strftime("%H:%M", time.gmtime(due))
        today = time.strftime("%Y-%m-%d", time.gmtime(due))
        config = tn.write_config(ctx, root, api, state, hot, [
            "notify:", "  webhook: %s" % json.dumps(rx.url), "  events: [daily_summary]",
            "  daily_summary_at: \"%s\"" % hhmm])
        h.write_bytes(os.path.join(state, "events.pending"), json.dumps(
            {"version": 1, "summarised": "9999-12-31", "events": []}).encode())
        d = ctx.start_daemon(config, name="ahead", env_extra={"TZ": tz})
        c.check(d.wait_for(r"9999-12-31, a day still to come .*ignored", 10),
                "the day still to come is logged and ignored", d.stderr_text()[-600:])
        got = h.wait_until(lambda: rx.accepted(), 30)
        c.check(got, "the summary due at %s local time is sent" % hhmm, d.stderr_text()[-600:])
        c.eq([(e.get("event"), e.get("date")) for e in rx.accepted()],
             [("daily_summary", today)], "one summary, for the day so far")
        h.wait_until(lambda: (pending(state) or {}).get("summarised") == today, 5)
        c.eq((pending(state) or {}).get("summarised"), today, "events.pending records that day")
        rc, _ = d.terminate()
        c.eq(rc, 0, "the daemon stops cleanly")
    finally:
        rx.stop()


def test_aside_fails(ctx):
    """A damaged events.pending whose rename to events.pending.bad fails stays as it is."""
    c = ctx.checks
    api = ctx.start_api("aside")
    root, hot, _, state = ctx.folder("aside")
    rx = tn.Receiver()
    try:
        config = tn.write_config(ctx, root, api, state, hot, [
            "notify:", "  webhook: %s" % json.dumps(rx.url)])
        damaged = b'{"version":1,"summarised":"2026-01-01","events":[{"kind":"paused",'
        path = os.path.join(state, "events.pending")
        h.write_bytes(path, damaged)
        os.makedirs(os.path.join(state, "events.pending.bad"))
        h.write_bytes(os.path.join(state, "events.pending.bad", "keep"), b"x")
        d = ctx.start_daemon(config, name="aside")
        c.check(d.wait_for(r"cannot rename .*events\.pending to events\.pending\.bad.*left as "
                           r"it is", 10), "the failed rename is logged", d.stderr_text()[-600:])
        c.check(d.wait_for(r"ready: watching", 10), "the daemon starts")
        time.sleep(1.5)  # the write after the load would be done by now
        c.eq(h.read_bytes(path), damaged, "events.pending is not written while running")
        rc, _ = d.terminate()
        c.eq(rc, 0, "the daemon stops cleanly")
        c.eq(h.read_bytes(path), damaged, "nor at the stop")
        c.eq(sorted(os.listdir(state)).count("events.pending.tmp"), 0, "no temp file is left")
    finally:
        rx.stop()


def test_due_while_loading(ctx):
    """The summary for today was sent (says events.pending); the daemon restarts with the file's
    open stalled, and the summary time passes meanwhile: nothing is sent, then or after."""
    c = ctx.checks
    api = ctx.start_api("loading")
    root, hot, _, state = ctx.folder("loading")
    rx = tn.Receiver()
    fs = h.FaultFS(ctx, "loading-fs")
    try:
        tz, moment, due = tz_for(12, 60)
        if time.strftime("%H:%M", time.gmtime(due)) == "00:00":
            tz, moment, due = tz_for(72, 60)
        hhmm = time.strftime("%H:%M", time.gmtime(due))
        today = time.strftime("%Y-%m-%d", time.gmtime(due))
        config = tn.write_config(ctx, root, api, state, hot, [
            "notify:", "  webhook: %s" % json.dumps(rx.url), "  events: [daily_summary]",
            "  daily_summary_at: \"%s\"" % hhmm])
        path = os.path.join(state, "events.pending")
        h.write_bytes(path, json.dumps(
            {"version": 1, "summarised": today, "events": []}).encode())
        fs.set("stall open %s" % path)
        d = ctx.start_daemon(config, name="loading", env_extra={"TZ": tz}, faultfs=fs)
        c.check(d.wait_for(r"ready: watching", 10), "the daemon starts")
        c.check(time.time() < moment - 1, "it started before the summary was due (else this "
                "test checks nothing)", "%.1f s late" % (time.time() - moment + 1))
        time.sleep(max(0.0, moment + 3 - time.time()))
        c.check(any("stall open" in line for line in fs.applied()),
                "the open of events.pending was stalled", str(fs.applied()))
        c.eq(rx.accepted(), [], "nothing arrives while events.pending is being read "
             "(deliveries wait for it in any case)")
        fs.clear()
        c.check(d.wait_for(r"summary for %s was sent already" % today, 10),
                "once it is read: the summary for that day was sent already",
                d.stderr_text()[-600:])
        time.sleep(1)
        c.eq(rx.accepted(), [], "no summary after")
        rc, _ = d.terminate()
        c.eq(rc, 0, "the daemon stops cleanly")
    finally:
        fs.clear()
        rx.stop()


def test_stop_while_aside(ctx):
    """A partly damaged events.pending (a paused event that reads, one that does not); the
    daemon stops while the load's rename aside is stalled, and the rename then goes through:
    events.pending holds the paused event again, events.pending.bad the file as it was."""
    c = ctx.checks
    api = ctx.start_api("stop-aside")
    root, hot, _, state = ctx.folder("stop-aside")
    rx = tn.Receiver()
    fs = h.FaultFS(ctx, "stop-aside-fs")
    try:
        config = tn.write_config(ctx, root, api, state, hot, [
            "notify:", "  webhook: %s" % json.dumps(rx.url)])
        good = {"kind": "paused", "time": int(time.time()) - 60, "webhook": True,
                "command": False, "fields": [{"name": "message", "text": "kept"}]}
        damaged = json.dumps({"version": 1, "summarised": "", "events": [
            good, {"kind": "paused", "time": "soon"}]}).encode()
        path = os.path.join(state, "events.pending")
        h.write_bytes(path, damaged)
        fs.set("stall rename %s" % path)
        d = ctx.start_daemon(config, name="stop-aside", faultfs=fs)
        c.check(d.wait_for(r"ready: watching", 10), "the daemon starts")
        c.check(h.wait_until(lambda: any("stall rename" in line for line in fs.applied()), 5),
                "the rename aside is stalled", str(fs.applied()))
        d.proc.send_signal(signal.SIGTERM)
        c.check(d.wait_for(r"stopped: ", 10), "the daemon stops", d.stderr_text()[-600:])
        time.sleep(0.3)
        fs.clear()
        rc, _ = d.terminate(timeout=10)
        c.eq(rc, 0, "the daemon stops cleanly")
        c.eq(read_or_none(os.path.join(state, "events.pending.bad")), damaged,
             "events.pending.bad is the file as it was")
        doc = pending(state) or {}
        c.eq([(e.get("kind"), e.get("time"), e.get("fields")) for e in doc.get("events", [])],
             [("paused", good["time"], good["fields"])],
             "events.pending holds the event that did read")
        c.eq(rx.accepted(), [], "nothing was delivered (the load ended with the stop)")
    finally:
        fs.clear()
        rx.stop()


def test_planted_tmp(ctx):
    """events.pending.tmp is a symlink (run 1) or an empty directory (run 2): events.pending is
    written all the same, through neither."""
    c = ctx.checks
    api = ctx.start_api("planted")
    root, hot, _, state = ctx.folder("planted")
    rx = tn.Receiver()
    try:
        config = tn.write_config(ctx, root, api, state, hot, [
            "notify:", "  webhook: %s" % json.dumps(rx.url)])
        path, tmp = os.path.join(state, "events.pending"), os.path.join(state, "events.pending.tmp")
        target = os.path.join(root, "target")
        h.write_bytes(target, b"precious")
        for what in ("symlink", "directory"):
            if what == "symlink":
                os.symlink(target, tmp)
            else:
                os.mkdir(tmp)
            d = ctx.start_daemon(config, name="planted-" + what)
            c.check(d.wait_for(r"ready: watching", 10), "the daemon starts")
            written = h.wait_until(lambda: pending(state) is not None, 5)
            c.check(written, "a %s as events.pending.tmp: events.pending is written" % what,
                    d.stderr_text()[-600:])
            c.check(not os.path.lexists(tmp), "the %s is gone" % what)
            c.eq(h.read_bytes(target), b"precious", "the symlink's target is untouched")
            rc, _ = d.terminate()
            c.eq(rc, 0, "the daemon stops cleanly")
            for leftover in (path, tmp):
                if os.path.isdir(leftover) and not os.path.islink(leftover):
                    os.rmdir(leftover)
                elif os.path.lexists(leftover):
                    os.unlink(leftover)
    finally:
        rx.stop()


def test(ctx):
    test_summarised_ahead(ctx)
    test_aside_fails(ctx)
    test_due_while_loading(ctx)
    test_stop_while_aside(ctx)
    test_planted_tmp(ctx)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
