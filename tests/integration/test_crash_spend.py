"""A result paid today before a SIGKILL counts against today's limits after the restart (review
of issues 12/13): price 0.03 and max_spend_per_day 0.06 allow two images a day. One is paid and its
download stalls when the daemon is killed; the restart recovers it from the journal and may pay for
one more image only, not two (its done record does not exist yet, so only the journal can say it
was paid today)."""

import os
import signal
import time

import harness as h


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("crashspend")
    config = os.path.join(root, "seedreamd.yaml")
    ctx.write_config(config, api=api, state_dir=state, folders=[{"path": hot}], max_in_flight=1)
    with open(config, "a", encoding="utf-8") as fh:
        fh.write('price_per_image:\n  "%s": 0.03\ncurrency: EUR\nmax_spend_per_day: 0.06\n' % h.MODEL)
    h.write_bytes(os.path.join(hot, "first.png"), h.png_image(48, 40, 1))
    api.add_faults(["slowdl:ms=5000"], replace=True)
    d = ctx.start_daemon(config, name="daemon-crashspend")
    cue = h.wait_until(lambda: any(r.get("stalled") for r in api.downloads()), 15)
    time.sleep(0.3)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(5)
    c.require(cue, "the download started and stalls when the daemon is killed",
              "downloads %s" % api.downloads())
    c.require(len(api.generations()) == 1, "one generation before the kill")
    c.require(len(h.journal_records(state)) == 1, "its paid result is in the journal")

    for i in range(3):
        h.write_bytes(os.path.join(hot, "more-%d.png" % i), h.png_image(50 + i, 40, 10 + i))
    res = ctx.run_once(config, name="crashspend-restart", timeout=60)
    c.check(res.rc == 1, "the restart with --once exits 1 (files left by the spend limit)", res.describe())
    gens = api.generations()
    c.eq(len(gens), 2, "the restart paid for one more image only: 0.03 recovered + 0.03 new = 0.06")
    c.check(os.path.exists(os.path.join(out, "first.json")), "the recovered result was written",
            repr(h.listing(out)))
    c.check("daily spend limit" in res.stderr, "the log says the spend limit holds the rest",
            res.stderr[-1500:])


if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
