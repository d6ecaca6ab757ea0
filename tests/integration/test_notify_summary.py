#!/usr/bin/env python3
"""The daily summary across reloads and restarts (follow-up of issue 12, item 4):
- notifications first enabled by a reload: the day-so-far summary counts the files done and
  failed (and their images and cost) before the reload;
- the midnight summary missed while the daemon was down is sent at the next start, for the day
  that ended, with that day's counts from its records; a start after it sends none again.
Summaries are timed with a POSIX TZ offset (seconds included) that puts local midnight or a
minute boundary a few seconds away, as test_notify.py does."""

import json
import os
import signal
import sys
import time

import harness as h
import test_notify as tn
from test_notify_restart import KEY, pending


def tz_for(seconds_to_boundary, boundary=86400):
    """A POSIX TZ whose local clock reaches a multiple of boundary (86400: midnight, 60: a minute)
    in seconds_to_boundary s; that moment (epoch s), and its local time as an epoch (its UTC
    fields are the local ones)."""
    now = int(time.time())
    east = (boundary - seconds_to_boundary - now % boundary) % 86400
    tz = "XYZ-%d:%02d:%02d" % (east // 3600, east // 60 % 60, east % 60)
    return tz, now + seconds_to_boundary, now + east + seconds_to_boundary


def test_reload_summary(ctx):
    """Notifications enabled by a reload at local hh:mm:35: the summary at hh:(mm+1) (the day so
    far) counts the 2 files done and 1 failed before the reload."""
    c = ctx.checks
    api = ctx.start_hostile_api(name="reload-summary",
                                script={"generation": [tn.OK, tn.FAIL, tn.OK]})
    root, hot, out, state = ctx.folder("reload-summary")
    rx = tn.Receiver()
    try:
        base = ["price_per_image:", "  %s: 0.25" % h.MODEL, "currency: EUR"]
        config = tn.write_config(ctx, root, api, state, hot, base)
        tz, _, due = tz_for(25, 60)
        hhmm = time.strftime("%H:%M", time.gmtime(due))
        if hhmm == "00:00":  # that is the midnight summary: take the minute after
            tz, _, due = tz_for(85, 60)
            hhmm = time.strftime("%H:%M", time.gmtime(due))
        for i in range(3):
            h.write_bytes(os.path.join(hot, "r%d.png" % i), h.png_image(40 + i, 30 + i, 300 + i))
        d = ctx.start_daemon(config, key=KEY, name="reload-summary", env_extra={"TZ": tz})
        done = h.wait_until(lambda: sum(n.endswith(".json") for n in h.listing(out)) == 3, 15)
        c.check(done, "3 files finished before the reload", str(h.listing(out)))
        tn.write_config(ctx, root, api, state, hot, base + [
            "notify:", "  webhook: %s" % json.dumps(rx.url),
            "  events: [daily_summary]", "  daily_summary_at: \"%s\"" % hhmm])
        d.proc.send_signal(signal.SIGHUP)
        c.check(d.wait_for(r"reloading", 5), "SIGHUP: the daemon reloads")
        got = h.wait_until(lambda: rx.accepted(), 40)
        c.check(got, "the summary came at %s local time" % hhmm, str(rx.all_posts()))
        sums = [e for e in rx.accepted() if e.get("event") == "daily_summary"]
        if sums:
            s = sums[0]
            c.eq((s.get("done"), s.get("failed"), s.get("images"), s.get("cost"),
                  s.get("currency")), (2, 1, 2, 0.5, "EUR"),
                 "it counts what was done before the reload: 2 done, 1 failed, 2 images, "
                 "0.50 EUR")
        c.eq(len(sums), 1, "one summary")
        rc, _ = d.terminate()
        c.eq(rc, 0, "the daemon stops cleanly")
    finally:
        rx.stop()


def test_missed_summary(ctx):
    """Run 1 ends before local midnight (day D) with 2 files done; run 2 starts after it: the
    summary for D goes out at once with D's counts; run 3 sends none. On a loaded machine run 1
    may end after that midnight: the case is then tried again with more time, and skipped (not
    failed) if it misses again."""
    for window in (20, 45):
        if missed_summary_case(ctx, window, last=window == 45):
            return
    print("skip - the missed summary: run 1 never ended before local midnight (a loaded "
          "machine?)", flush=True)


def missed_summary_case(ctx, window, last):
    """One try with local midnight window s away; False when run 1 did not end before it (or,
    unless last, did not finish its 2 files before it)."""
    c = ctx.checks
    api = ctx.start_api("missed-summary-%d" % window)
    root, hot, out, state = ctx.folder("missed-summary-%d" % window)
    rx = tn.Receiver()
    try:
        config = tn.write_config(ctx, root, api, state, hot, [
            "price_per_image:", "  %s: 0.5" % h.MODEL, "currency: EUR",
            "notify:", "  webhook: %s" % json.dumps(rx.url), "  events: [daily_summary]"])
        tz, midnight, local = tz_for(window)
        day = time.strftime("%Y-%m-%d", time.gmtime(local - 43200))
        before = time.strftime("%Y-%m-%d", time.gmtime(local - 43200 - 86400))
        # The summary for the day before D was sent (by an earlier run).
        h.write_bytes(os.path.join(state, "events.pending"), json.dumps(
            {"version": 1, "summarised": before, "events": []}).encode())
        for i in range(2):
            h.write_bytes(os.path.join(hot, "m%d.png" % i), h.png_image(40 + i, 30 + i, 600 + i))
        d = ctx.start_daemon(config, name="missed-%d-1" % window, env_extra={"TZ": tz})
        done = h.wait_until(lambda: sum(n.endswith(".json") for n in h.listing(out)) == 2,
                            max(0.0, midnight - 3 - time.time()))
        d.terminate()
        late = time.time() >= midnight - 1
        if late or (not done and not last):
            print("skip - run 1 %s before local midnight (%d s away at its start): this try "
                  "checks nothing" % ("did not end" if late else "did not finish its files",
                                      window), flush=True)
            return False
        c.check(done, "run 1: 2 files done", str(h.listing(out)))
        c.eq(rx.accepted(), [], "run 1 sent no summary")
        time.sleep(max(0.0, midnight + 1 - time.time()))
        d = ctx.start_daemon(config, name="missed-%d-2" % window, env_extra={"TZ": tz})
        got = h.wait_until(lambda: rx.accepted(), 10)
        c.check(got, "run 2 (after midnight) sends the summary it missed", d.stderr_text()[-600:])
        sums = rx.accepted()
        if sums:
            s = sums[0]
            c.eq((s.get("event"), s.get("date"), s.get("done"), s.get("failed"), s.get("images"),
                  s.get("cost")), ("daily_summary", day, 2, 0, 2, 1.0),
                 "for the day that ended, with its counts from its records")
        h.wait_until(lambda: (pending(state) or {}).get("summarised") == day, 5)
        c.eq((pending(state) or {}).get("summarised"), day, "events.pending records that day")
        d.terminate()
        d = ctx.start_daemon(config, name="missed-%d-3" % window, env_extra={"TZ": tz})
        c.check(d.wait_for(r"ready: watching", 10), "run 3 starts")
        time.sleep(2)
        c.eq(len(rx.accepted()), 1, "run 3 sends no second summary for that day")
        rc, _ = d.terminate()
        c.eq(rc, 0, "the daemon stops cleanly")
    finally:
        rx.stop()
    return True


def test(ctx):
    test_reload_summary(ctx)
    test_missed_summary(ctx)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
