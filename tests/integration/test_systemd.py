#!/usr/bin/env python3
"""seedreamd under a stand-in for systemd: the test binds the NOTIFY_SOCKET (an AF_UNIX datagram
socket, SO_PASSCRED on) and sets WATCHDOG_USEC, as systemd does for a Type=notify unit with
WatchdogSec=, and checks what the daemon says and when:

  - READY=1 at start-up, without waiting for the scans (they run on the watch's worker threads:
    a share that hangs must not hold READY=1 until systemd gives up); a STATUS= soon after it
    counts the files already there, and no generation request reached the API before it;
  - STATUS= lines with counts; WATCHDOG=1 at about half of WATCHDOG_USEC;
  - SIGHUP: RELOADING=1 with MONOTONIC_USEC=, then READY=1; a folder added by the reload is watched;
  - SIGHUP with a broken configuration: logged with file:line:column, RELOADING=1 then READY=1,
    and the running configuration keeps working;
  - SIGTERM with a generation in flight: STOPPING=1 (and EXTEND_TIMEOUT_USEC=), the generation
    finishes (output and sidecar written), exit status 0 within stop_timeout;
  - every message comes from the main process (NotifyAccess=main);
  - sd_watchdog_enabled()'s WATCHDOG_PID rule: pings when it is the daemon's pid, none when it is
    another process's;
  - a restart with a paid-for result in the journal: no STATUS= says a folder is missing while the
    restored job is set up.
"""

import os
import re
import signal
import socket
import struct
import sys
import threading
import time

import harness as h

WATCHDOG_USEC = 400000
STOP_TIMEOUT_S = 10
STATUS_RX = re.compile(r"^(stopping: )?(\d+) queued, (\d+) in flight, (\d+) waiting to retry, "
                       r"(\d+) done, (\d+) failed")


class NotifySocket:
    """What systemd's end of NOTIFY_SOCKET sees: each datagram with its arrival time (monotonic
    and wall clock) and the sender's pid from SCM_CREDENTIALS."""

    def __init__(self, directory, name="notify"):
        self.path = os.path.join(directory, "%s.sock" % name)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.msgs = []  # dicts: mono, wall, pid, fields {key: value}, raw
        self.lock = threading.Lock()
        self.closing = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        space = socket.CMSG_SPACE(struct.calcsize("3i"))
        while not self.closing:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(65536, space)
            except socket.timeout:
                continue
            except OSError:
                return
            mono, wall = time.monotonic(), time.time()
            pid = None
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", cdata[:struct.calcsize("3i")])[0]
            text = data.decode("utf-8", "replace")
            fields = {}
            for line in text.split("\n"):
                if "=" in line:
                    k, v = line.split("=", 1)
                    fields[k] = v
            with self.lock:
                self.msgs.append({"mono": mono, "wall": wall, "pid": pid, "fields": fields,
                                  "raw": text})

    def snapshot(self):
        with self.lock:
            return list(self.msgs)

    def count(self):
        with self.lock:
            return len(self.msgs)

    def wait(self, pred, start=0, timeout=10.0):
        """Index of the first message at or after `start` for which pred(msg) holds, or None."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.snapshot()
            for i in range(start, len(msgs)):
                if pred(msgs[i]):
                    return i
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def close(self):
        self.closing = True
        self.thread.join(2)
        self.sock.close()


def has(key, value=None):
    return lambda m: key in m["fields"] and (value is None or m["fields"][key] == value)


def status_counts(m):
    """(queued, in_flight, waiting, done, failed) from a STATUS= message, or None."""
    s = m["fields"].get("STATUS")
    mm = STATUS_RX.match(s) if s is not None else None
    return tuple(int(g) for g in mm.groups()[1:]) if mm else None


def describe(msgs, limit=12):
    return " | ".join(m["raw"].replace("\n", "\\n") for m in msgs[-limit:]) or "(nothing)"


def drop_by_rename(folder, name, data):
    tmp = os.path.join(folder, ".%s.incoming" % name)
    h.write_bytes(tmp, data)
    os.rename(tmp, os.path.join(folder, name))



def write_config(ctx, path, api, state, folders, broken=False):
    ctx.write_config(path, api=api, state_dir=state, folders=[{"path": f} for f in folders])
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("stop_timeout: %ds\n" % STOP_TIMEOUT_S)
        if broken:
            fh.write("no_such_key: 1\n")
    with open(path, encoding="utf-8") as fh:
        return len(fh.read().splitlines())  # the last line's number


def daemon_env(ctx, notify, **extra):
    env = ctx.env()
    env["NOTIFY_SOCKET"] = notify.path
    env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
    env.update(extra)
    return env


def processed(out, stem):
    return (os.path.exists(os.path.join(out, stem + ".json")) and
            os.path.exists(os.path.join(out, stem + ".jpeg")))


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("one")
    _root2, hot2, out2, _state2 = ctx.folder("two")
    config = os.path.join(root, "seedreamd.yaml")
    write_config(ctx, config, api, state, [hot])

    pre = {"pre-%d.png" % i: h.png_image(40 + 4 * i, 36, 10 + i) for i in range(3)}
    for name, data in pre.items():
        h.write_bytes(os.path.join(hot, name), data)

    notify = NotifySocket(ctx.tmp)
    try:
        run_main(ctx, c, api, notify, config, state, hot, out, hot2, out2, pre)
    finally:
        notify.close()
    run_watchdog_pid(ctx, c, config)
    run_restored(ctx, c)


def run_main(ctx, c, api, notify, config, state, hot, out, hot2, out2, pre):
    d = h.Daemon(ctx, [ctx.binary, "-c", config], daemon_env(ctx, notify), "systemd")
    pid = d.proc.pid

    # ---- start-up: READY=1, then the scan's files ---------------------------------------------
    i_ready = notify.wait(has("READY", "1"), 0, 15)
    c.require(i_ready is not None, "READY=1 arrives within 15 s",
              "messages: %s; exit status %s; stderr: %s"
              % (describe(notify.snapshot()), d.proc.poll(), d.stderr_text()[-500:]))
    ready = notify.snapshot()[i_ready]
    i_st = notify.wait(lambda m: sum(status_counts(m) or ()) == len(pre), i_ready + 1, 5)
    c.check(i_st is not None,
            "a STATUS= within 5 s after READY=1 accounts for the %d files present at start "
            "(queued + in flight + waiting + done + failed)" % len(pre),
            "STATUS lines: %s" % describe([m for m in notify.snapshot()[i_ready:] if "STATUS" in m["fields"]]))

    done = h.wait_until(lambda: all(processed(out, n[:-4]) for n in pre), 20)
    c.check(done, "the %d files present at start are processed" % len(pre), "output: %s" % h.listing(out))
    gens = api.generations()
    c.check(len(gens) == len(pre) and all(r["time"] > ready["wall"] for r in gens),
            "READY=1 came before the first of their %d generation requests reached the API" % len(pre),
            "READY at %.3f, requests at %s" % (ready["wall"], [r["time"] for r in gens]))
    i_done = notify.wait(lambda m: (status_counts(m) or (0,) * 5)[3] == len(pre), i_ready, 5)
    c.check(i_done is not None, "a STATUS= reports '%d done'" % len(pre),
            "STATUS lines: %s" % describe([m for m in notify.snapshot() if "STATUS" in m["fields"]]))

    # ---- the watchdog ----------------------------------------------------------------------------
    t0 = time.monotonic()
    time.sleep(2.0)
    t1 = time.monotonic()
    pings = [m["mono"] for m in notify.snapshot() if has("WATCHDOG", "1")(m) and t0 <= m["mono"] <= t1]
    expect = (t1 - t0) / (WATCHDOG_USEC / 2e6)
    c.check(0.6 * expect <= len(pings) <= 1.4 * expect,
            "WATCHDOG=1 about every %d ms: %d pings in %.1f s (expected about %.0f)"
            % (WATCHDOG_USEC // 2000, len(pings), t1 - t0, expect), "")
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    c.check(gaps and max(gaps) < WATCHDOG_USEC / 1e6,
            "no gap between pings reaches WATCHDOG_USEC (%d ms)" % (WATCHDOG_USEC // 1000),
            "largest gap %.0f ms" % (1000 * max(gaps)) if gaps else "fewer than 2 pings")

    # ---- reload with a second folder -------------------------------------------------------------
    write_config(ctx, config, api, state, [hot, hot2])
    mark = notify.count()
    t_hup = time.monotonic_ns() // 1000
    os.kill(pid, signal.SIGHUP)
    i_rl = notify.wait(has("RELOADING", "1"), mark, 10)
    c.require(i_rl is not None, "SIGHUP: RELOADING=1", "messages: %s" % describe(notify.snapshot()[mark:]))
    rl = notify.snapshot()[i_rl]
    mono = rl["fields"].get("MONOTONIC_USEC", "")
    c.check(mono.isdigit() and t_hup - 100000 <= int(mono) <= t_hup + 5000000,
            "RELOADING=1 carries MONOTONIC_USEC= (CLOCK_MONOTONIC at the reload)",
            "found %r, SIGHUP sent at %d" % (mono, t_hup))
    i_rr = notify.wait(has("READY", "1"), i_rl + 1, 10)
    c.require(i_rr is not None, "after RELOADING=1: READY=1",
              "messages: %s" % describe(notify.snapshot()[i_rl:]))
    c.check(d.wait_for(r"folder %s is now watched" % re.escape(hot2), 2),
            "the log says the added folder is now watched", d.stderr_text()[-400:])
    drop_by_rename(hot2, "added.png", h.png_image(44, 40, 70))
    c.check(h.wait_until(lambda: processed(out2, "added"), 15),
            "a file dropped into the folder added by the reload is processed", "output: %s" % h.listing(out2))

    # ---- reload with a broken configuration -------------------------------------------------------
    bad_line = write_config(ctx, config, api, state, [hot, hot2], broken=True)
    mark = notify.count()
    os.kill(pid, signal.SIGHUP)
    i_rl = notify.wait(has("RELOADING", "1"), mark, 10)
    c.check(i_rl is not None, "SIGHUP with a broken configuration: RELOADING=1",
            "messages: %s" % describe(notify.snapshot()[mark:]))
    i_rr = notify.wait(has("READY", "1"), (i_rl if i_rl is not None else mark) + 1, 10)
    c.check(i_rr is not None, "... then READY=1 all the same", "messages: %s" % describe(notify.snapshot()[mark:]))
    logged = d.wait_for(r"reload failed.*%s:%d:\d+:" % (re.escape(config), bad_line), 5)
    c.check(logged, "the daemon logs the failure with %s:%d:column" % (os.path.basename(config), bad_line),
            "stderr ends: %s" % d.stderr_text()[-400:])
    c.check(d.proc.poll() is None, "the daemon keeps running", "exit status %s" % d.proc.poll())
    drop_by_rename(hot, "after-bad-1.png", h.png_image(48, 36, 71))
    drop_by_rename(hot2, "after-bad-2.png", h.png_image(48, 40, 72))
    c.check(h.wait_until(lambda: processed(out, "after-bad-1") and processed(out2, "after-bad-2"), 15),
            "both folders of the running configuration are still processed",
            "outputs: %s / %s" % (h.listing(out), h.listing(out2)))
    write_config(ctx, config, api, state, [hot, hot2])

    # ---- SIGTERM with a generation in flight -------------------------------------------------------
    api.add_faults(["slow:ms=1500"])
    slow = h.png_image(56, 40, 73)
    mark = notify.count()
    drop_by_rename(hot, "inflight.png", slow)
    i_fl = notify.wait(lambda m: (status_counts(m) or (0,) * 5)[1] >= 1, mark, 10)
    c.require(i_fl is not None, "STATUS= shows the slow generation in flight",
              "messages: %s" % describe(notify.snapshot()[mark:]))
    time.sleep(0.4)  # the request reaches the API, which holds it for 1.5 s
    mark = notify.count()
    t_term = time.monotonic()
    t_term_wall = time.time()
    d.proc.send_signal(signal.SIGTERM)
    try:
        rc = d.proc.wait(STOP_TIMEOUT_S + 5)
    except h.subprocess.TimeoutExpired:
        d.proc.kill()
        rc = None
    took = time.monotonic() - t_term
    d.out.close()
    d.err.close()
    time.sleep(0.2)  # the last datagrams
    after = notify.snapshot()[mark:]
    i_stop = next((i for i, m in enumerate(after) if has("STOPPING", "1")(m)), None)
    c.check(i_stop is not None, "SIGTERM: STOPPING=1", "messages: %s" % describe(after))
    ext = [m["fields"]["EXTEND_TIMEOUT_USEC"] for m in after if "EXTEND_TIMEOUT_USEC" in m["fields"]]
    c.check(ext and ext[0].isdigit() and int(ext[0]) >= STOP_TIMEOUT_S * 1000000,
            "with work in flight, EXTEND_TIMEOUT_USEC= covers stop_timeout", "found %s" % ext)
    c.check(any((status_counts(m) is not None and m["fields"]["STATUS"].startswith("stopping: "))
                for m in after), "STATUS= says 'stopping: ...'", "messages: %s" % describe(after))
    c.check(rc == 0, "exit status 0 after SIGTERM", "exit status %s; stderr: %s" % (rc, d.stderr_text()[-400:]))
    c.check(took < STOP_TIMEOUT_S, "it exits within stop_timeout (%d s): %.1f s" % (STOP_TIMEOUT_S, took), "")
    rec = next((r for r in api.generations() if r.get("image_sha256") == h.sha256_bytes(slow)), None)
    c.check(rec is not None and rec.get("fault") == "slow:ms=1500" and rec["time"] < t_term_wall,
            "the slow generation had reached the API before SIGTERM",
            "record %s, SIGTERM at %.3f" % (rec and {k: rec.get(k) for k in ("time", "fault")}, t_term_wall))
    problems = h.output_problems(os.path.join(out, "inflight.jpeg"), h.sha256_bytes(slow))
    sc = os.path.join(out, "inflight.json")
    if os.path.exists(sc):
        problems += h.success_sidecar_problems(h.read_json(sc), src_path=os.path.join(hot, "inflight.png"),
                                               source="inflight.png", output="inflight.jpeg", record=rec)
    else:
        problems.append("inflight.json does not exist")
    c.problems(problems, "the generation in flight at SIGTERM was finished: output and sidecar written")
    c.problems(h.leftovers(out), "no temporary file left in the output folder")

    # ---- the whole conversation ---------------------------------------------------------------------
    msgs = notify.snapshot()
    life = [k for m in msgs for k in ("READY", "RELOADING", "STOPPING") if k in m["fields"]]
    c.eq(life, ["READY", "RELOADING", "READY", "RELOADING", "READY", "STOPPING"],
         "the lifecycle messages in order")
    c.eq(sorted({m["pid"] for m in msgs}), [pid], "every message comes from the main process (its pid)")
    known = {"READY", "RELOADING", "MONOTONIC_USEC", "STOPPING", "STATUS", "WATCHDOG",
             "EXTEND_TIMEOUT_USEC"}
    c.problems(sorted({k for m in msgs for k in m["fields"] if k not in known}),
               "no other kind of message")
    bad_status = [m["fields"]["STATUS"] for m in msgs if "STATUS" in m["fields"] and status_counts(m) is None]
    c.problems(bad_status, "every STATUS= has the counts")


def run_watchdog_pid(ctx, c, config):
    """sd_watchdog_enabled(): WATCHDOG_PID must be the daemon's own pid, or unset."""
    for label, value, want_pings in (("the daemon's own pid", "$$", True),
                                      ("another process's pid", "1", False)):
        notify = NotifySocket(ctx.tmp, "notify-%s" % ("own" if want_pings else "other"))
        try:
            argv = ["/bin/sh", "-c", 'WATCHDOG_PID=%s exec "$0" -c "$1"' % value, ctx.binary, config]
            d = h.Daemon(ctx, argv, daemon_env(ctx, notify), "wdpid-%s" % ("own" if want_pings else "other"))
            i_ready = notify.wait(has("READY", "1"), 0, 15)
            if not c.check(i_ready is not None, "WATCHDOG_PID = %s: READY=1" % label,
                           "stderr: %s" % d.stderr_text()[-300:]):
                d.terminate()
                continue
            time.sleep(1.2)
            pings = sum(1 for m in notify.snapshot() if has("WATCHDOG", "1")(m))
            if want_pings:
                c.check(pings >= 3, "WATCHDOG_PID = %s: WATCHDOG=1 pings (%d in 1.2 s)" % (label, pings), "")
            else:
                c.eq(pings, 0, "WATCHDOG_PID = %s: no WATCHDOG=1 ping" % label)
            rc, _ = d.terminate(timeout=8)
            c.eq(rc, 0, "WATCHDOG_PID = %s: exit status 0 on SIGTERM" % label)
        finally:
            notify.close()


def run_restored(ctx, c):
    """A restart with a paid-for result in the journal: the restored job updates STATUS= while
    its folder is being set up, and no STATUS= may say a watched folder is missing."""
    api = ctx.start_api(name="restored")
    root, hot, out, state = ctx.folder("restored")
    config = os.path.join(root, "seedreamd.yaml")
    write_config(ctx, config, api, state, [hot])
    h.write_bytes(os.path.join(hot, "in.png"), h.png_image(48, 40, 7001))
    api.add_faults(["slowdl:ms=8000"], replace=True)
    notify = NotifySocket(ctx.tmp, "notify-before-kill")
    try:
        d = h.Daemon(ctx, [ctx.binary, "-c", config], daemon_env(ctx, notify), "restored-1")
        stalled = h.wait_until(lambda: any(r.get("stalled") for r in api.downloads()), 15)
        time.sleep(0.3)
        if d.proc.poll() is None:
            d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
    finally:
        notify.close()
    if not c.check(stalled, "restored: the paid result's download stalls when the daemon is killed",
                   "downloads %s" % api.downloads()):
        return
    notify = NotifySocket(ctx.tmp, "notify-restored")
    try:
        d = h.Daemon(ctx, [ctx.binary, "-c", config], daemon_env(ctx, notify), "restored-2")
        done = h.wait_until(lambda: processed(out, "in"), 20)
        c.check(done, "restored: the paid-for result is written after the restart",
                "stderr: %s" % d.stderr_text()[-300:])
        statuses = [m["fields"]["STATUS"] for m in notify.snapshot() if "STATUS" in m["fields"]]
        c.check(statuses, "restored: STATUS= sent after the restart", describe(notify.snapshot()))
        c.eq([st for st in statuses if "missing" in st], [],
             "restored: no STATUS= says a watched folder is missing")
        c.eq(len(api.generations()), 1, "restored: generated once, not again after the restart")
        rc, _ = d.terminate(timeout=8)
        c.eq(rc, 0, "restored: exit status 0 on SIGTERM")
    finally:
        notify.close()
        api.stop()


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
