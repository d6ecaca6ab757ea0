#!/usr/bin/env python3
"""The control socket and seedreamctl (issue 12, item 1): the real daemon and the real client
against tests/fake_api.py. Every command, with --json parsed and as tables; a failed file retried
twice at once (and again while in flight) is submitted exactly once; pause and resume per folder
and for all; rescan of a polled folder; another user refused (as root: run as nobody); a stale
socket of a killed daemon replaced, a live daemon's or a non-socket refused. The flood of
control clients is test_control_flood.py."""

import json
import re
import os
import shutil
import signal
import socket
import subprocess
import time

import harness as h

KEY = "sk-control-test-7f3a9c1e5b"  # must never appear in a reply
SENSITIVE = "InputImageSensitiveContentDetected"


def write_config(ctx, path, api, state, folders, sock):
    """folders: [(path, extra YAML lines)]."""
    lines = ["api:",
             "  base_url: %s" % json.dumps(api.base_url),
             "  model: %s" % json.dumps(h.MODEL),
             "  timeout: 20s",
             "  max_in_flight: 4",
             "  retries: 2",
             "defaults:",
             "  size: 2K",
             "  watermark: false",
             "  settle: 300ms",
             "state_dir: %s" % json.dumps(state),
             "control_socket: %s" % json.dumps(sock),
             "price_per_image:", "  %s: 0.035" % json.dumps(h.MODEL), "currency: EUR",
             "max_spend_per_day: 25",
             "folders:"]
    for p, extra in folders:
        lines.append("  - path: %s" % json.dumps(p))
        lines.append("    prompt: %s" % json.dumps(h.PROMPT))
        lines += ["    " + x for x in extra]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


class Ctl:
    def __init__(self, ctx, sock):
        self.ctx = ctx
        self.sock = sock
        self.binary = os.path.join(os.path.dirname(ctx.binary), "seedreamctl")
        self.replies = []

    def argv(self, args, json_out=True):
        return [self.binary, "-s", self.sock] + (["--json"] if json_out else []) + list(args)

    def run(self, *args, json_out=True, prefix=(), timeout=20):
        p = subprocess.run(list(prefix) + self.argv(args, json_out), capture_output=True,
                           timeout=timeout, cwd=self.ctx.tmp, check=False)
        out = p.stdout.decode("utf-8", "replace")
        self.replies.append(out + p.stderr.decode("utf-8", "replace"))
        reply = None
        if json_out and out.strip():
            try:
                reply = json.loads(out)
            except ValueError:
                reply = {"unparsable": out}
        return p.returncode, reply, out, p.stderr.decode("utf-8", "replace")


def gens_of(api, sha):
    return [r for r in api.generations() if r.get("image_sha256") == sha]


def folder_of(status, path):
    for f in (status or {}).get("folders", []):
        if f.get("path") == path:
            return f
    return {}


def drop(hot, name, data):
    """Renamed in, as a scanner or a copy tool finishing would."""
    tmp = os.path.join(os.path.dirname(hot), ".tmp-" + name)
    h.write_bytes(tmp, data)
    os.rename(tmp, os.path.join(hot, name))
    return time.time()


def status_lines(notify):
    return [m["fields"]["STATUS"] for m in notify.snapshot() if "STATUS" in m["fields"]]


def test_commands(ctx, c, api, ctl, hot_a, hot_b, hot_c, daemon, notify):
    out_a = hot_a + "-out"
    rc, st, _, _ = ctl.run("status")
    c.eq(rc, 0, "status: exit 0")
    c.eq(st.get("v") if st else None, 1, "status: a version-1 reply")
    c.eq(sorted(f.get("path") for f in st.get("folders", [])), sorted([hot_a, hot_b, hot_c]),
         "status: every folder listed")
    c.eq(st.get("images_paid"), {"today": 0, "this_month": 0}, "status: nothing paid yet")
    c.eq(st.get("oldest_pending"), None, "status: nothing pending")

    # One success.
    a1 = h.png_image(40, 30, 1)
    drop(hot_a, "a1.png", a1)
    c.require(h.wait_until(lambda: os.path.exists(os.path.join(out_a, "a1.json")), 20),
              "a1.png is done", h.listing(out_a))
    # The sidecar is on disk a moment before the loop counts the job done.
    seen = {}

    def status_says(pred):
        _, seen["st"], _, _ = ctl.run("status")
        return pred(seen["st"] or {})
    h.wait_until(lambda: status_says(lambda st: folder_of(st, hot_a).get("done") == 1), 5, 0.1)
    st = seen["st"]
    c.eq(folder_of(st, hot_a).get("done"), 1, "status: folder A has 1 done this run")
    c.eq(st.get("images_paid"), {"today": 1, "this_month": 1}, "status: 1 image paid today and this month")
    c.eq(st.get("spend"), {"currency": "EUR", "price_per_image": 0.035, "today": 0.035,
                           "this_month": 0.035, "max_per_day": 25},
         "status: the estimated cost of that image today and this month, and the daily limit")
    rc, _, out, _ = ctl.run("status", json_out=False)
    c.check(rc == 0 and re.search(r"estimated cost\s+0\.035 EUR today, 0\.035 EUR this month "
                                  r"\(limit 25 EUR a day\)", out or ""),
            "status as a table shows the estimated cost", out)
    rc, hist, _, _ = ctl.run("history", "-n", "5")
    items = (hist or {}).get("items", [])
    c.check(rc == 0 and items and items[0].get("file") == "a1.png" and items[0].get("result") == "done",
            "history: the newest result is a1.png, done", h._short(hist))

    # One failure (the API refuses the content for good).
    api.add_faults(["400:" + SENSITIVE], replace=True)
    a2 = h.png_image(40, 30, 2)
    sha2 = h.sha256_bytes(a2)
    drop(hot_a, "a2.png", a2)
    err = os.path.join(out_a, "a2.error.json")
    c.require(h.wait_until(lambda: os.path.exists(err), 20), "a2.png fails with an error record",
              h.listing(out_a))
    # The record is on disk a moment before the loop notes it.
    h.wait_until(lambda: ctl.run("failed")[1].get("items"), 5, 0.1)
    rc, failed, _, _ = ctl.run("failed")
    items = (failed or {}).get("items", [])
    c.check(rc == 0 and len(items) == 1 and items[0].get("file") == "a2.png"
            and items[0].get("code") == SENSITIVE and items[0].get("message"),
            "failed: a2.png with its code and message", h._short(failed))
    rc, _, text, _ = ctl.run("failed", json_out=False)
    c.check(rc == 0 and "a2.png" in text and SENSITIVE in text and "CODE" in text,
            "failed (table): a header and a2.png's code", text)
    h.wait_until(lambda: status_says(lambda st: folder_of(st, hot_a).get("failed") == 1), 5, 0.1)
    c.eq(folder_of(seen["st"], hot_a).get("failed"), 1, "status: folder A has 1 failed this run")

    # Retry: twice at once, then again while its generation is in flight: one submission.
    n_before = len(gens_of(api, sha2))
    api.add_faults(["slow:ms=4000"], replace=True)
    procs = [subprocess.Popen(ctl.argv(["retry", os.path.join(hot_a, "a2.png")]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ctx.tmp)
             for _ in range(2)]
    outs = [p.communicate(timeout=20) for p in procs]
    c.eq([p.returncode for p in procs], [0, 0], "retry sent twice at once: both exit 0")
    c.check(all(json.loads(o[0]).get("retried") == 1 for o in outs),
            "retry: each reply says the file was requeued", h._short(outs))
    # The stand-in records a generation only when it answers (after its 4 s), so
    # "in flight" is watched through the queue itself, inside that window.
    seen_q = {}

    def a2_in_flight():
        rc_q, q, _, _ = ctl.run("queue")
        seen_q["q"] = q
        return rc_q == 0 and any(i.get("file") == "a2.png" and i.get("kind") == "in_flight"
                                 for i in (q or {}).get("items", []))
    c.check(h.wait_until(a2_in_flight, 10, 0.1), "queue: a2.png is listed, in flight",
            h._short(seen_q.get("q")))
    rc, _, _, _ = ctl.run("retry", os.path.join(hot_a, "a2.png"))
    c.check(rc in (0, 1), "retry while in flight: answered", "exit %d" % rc)
    c.check(h.wait_until(lambda: len(gens_of(api, sha2)) > n_before, 10),
            "the retried file is sent to the API")
    c.require(h.wait_until(lambda: os.path.exists(os.path.join(out_a, "a2.json")), 20),
              "the retried a2.png succeeds", h.listing(out_a))
    time.sleep(1.5)  # a second submission, if any, would have come by now
    c.eq(len(gens_of(api, sha2)) - n_before, 1, "retried twice at once and once in flight: exactly 1 submission")
    c.check(not os.path.exists(err), "the error record is gone after the retry")
    c.check(h.wait_until(lambda: not ctl.run("failed")[1].get("items"), 5, 0.1),
            "failed: nothing listed once the retry succeeded")
    rc, _, _, stderr = ctl.run("retry", os.path.join(hot_a, "a2.png"), json_out=False)
    c.check(rc == 1 and "not failed" in stderr + "".join(ctl.replies[-1:]),
            "retry of a file that has not failed: refused, exit 1", "exit %d %s" % (rc, stderr))
    rc, _, _, _ = ctl.run("retry", "--all-failed", "--folder", hot_b)
    c.eq(rc, 0, "retry --all-failed --folder B (nothing failed): exit 0")

    # Pause folder A only: its new file waits, folder B's goes on.
    rc, st, _, _ = ctl.run("pause", hot_a)
    fa = folder_of(st, hot_a)
    c.check(rc == 0 and fa.get("paused") is True and fa.get("user_paused") is True
            and "paused by seedreamctl" in fa.get("pause_reasons", []),
            "pause A: status says A is paused by seedreamctl", h._short(fa))
    c.check(folder_of(st, hot_b).get("paused") is False, "pause A: B is not paused")
    c.check(h.wait_until(lambda: any("folder %s paused by seedreamctl" % hot_a in x
                                     for x in status_lines(notify)), 5),
            "pause A: STATUS= says so", h._short(status_lines(notify)[-1:]))
    a3, b1 = h.png_image(40, 30, 3), h.png_image(40, 30, 4)
    drop(hot_a, "a3.png", a3)
    drop(hot_b, "b1.png", b1)
    c.check(h.wait_until(lambda: os.path.exists(os.path.join(hot_b + "-out", "b1.json")), 20),
            "while A is paused, B's file is done")
    time.sleep(1.0)
    c.eq(len(gens_of(api, h.sha256_bytes(a3))), 0, "while A is paused, A's new file is not sent")
    rc, q, _, _ = ctl.run("queue", hot_a)
    c.check(any(i.get("file") == "a3.png" and i.get("kind") == "queued" for i in (q or {}).get("items", [])),
            "queue A: a3.png waits, queued", h._short(q))
    rc, _, text, _ = ctl.run("status", json_out=False)
    c.check(rc == 0 and "paused by seedreamctl" in text and "FOLDER" in text, "status (table): the pause shown", text)
    rc, st, _, _ = ctl.run("status")
    old = (st or {}).get("oldest_pending") or {}
    c.check(old.get("file") == "a3.png" and isinstance(old.get("age_s"), (int, float)),
            "status: the oldest pending file is a3.png, with its age", h._short(old))
    rc, _, _, _ = ctl.run("resume", hot_a)
    c.eq(rc, 0, "resume A: exit 0")
    c.check(h.wait_until(lambda: os.path.exists(os.path.join(out_a, "a3.json")), 20),
            "after resume, A's waiting file is done")

    # Pause everything.
    rc, st, _, _ = ctl.run("pause")
    c.check(rc == 0 and st.get("paused") is True, "pause (all): status says every folder is paused")
    c.check(h.wait_until(lambda: "every folder paused by seedreamctl" in (status_lines(notify) or [""])[-1], 5),
            "pause (all): STATUS= says so", h._short(status_lines(notify)[-1:]))
    b2 = h.png_image(40, 30, 5)
    drop(hot_b, "b2.png", b2)
    time.sleep(1.5)
    c.eq(len(gens_of(api, h.sha256_bytes(b2))), 0, "while all is paused, nothing is sent")
    ctl.run("resume")
    c.check(h.wait_until(lambda: os.path.exists(os.path.join(hot_b + "-out", "b2.json")), 20),
            "after resume (all), the file is done")
    c.check(h.wait_until(lambda: "paused by seedreamctl" not in (status_lines(notify) or [""])[-1], 5),
            "after resume (all): STATUS= no longer says paused", h._short(status_lines(notify)[-1:]))

    # Rescan: folder C is polled once an hour; a new file is found only by a rescan.
    c1 = h.png_image(40, 30, 6)
    drop(hot_c, "c1.png", c1)
    time.sleep(1.5)
    c.eq(len(gens_of(api, h.sha256_bytes(c1))), 0, "folder C (polled hourly): a new file is not seen by itself")
    rc, _, _, _ = ctl.run("rescan", hot_c)
    c.eq(rc, 0, "rescan C: exit 0")
    c.check(h.wait_until(lambda: os.path.exists(os.path.join(hot_c + "-out", "c1.json")), 20),
            "after rescan C, its file is done")

    # Errors and usage.
    rc, r, _, _ = ctl.run("pause", "/nowhere")
    c.check(rc == 1 and (r or {}).get("error", {}).get("code") == "no_such_folder",
            "pause of a folder not watched: no_such_folder, exit 1", h._short(r))
    rc, _, _, _ = ctl.run("frobnicate")
    c.eq(rc, 2, "an unknown command: exit 2")
    rc, _, _, _ = subprocess.run([ctl.binary, "-s", os.path.join(ctx.tmp, "no-such.sock"), "status"],
                                 capture_output=True, check=False).returncode, None, None, None
    c.eq(rc, 3, "no daemon at the socket: exit 3")
    for cmd in (["status"], ["queue"], ["history"], ["failed"]):
        rc, _, text, _ = ctl.run(*cmd, json_out=False)
        c.check(rc == 0 and text.strip(), "%s (table): printed" % cmd[0], text)
    c.check(not any(KEY in r for r in ctl.replies), "no reply carries the API key")
    c.check(daemon.proc.poll() is None, "the daemon still runs")


def raw_request(path, payload, read=True, timeout=5):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(payload)
    data = b""
    if read:
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    s.close()
    return data


def test_protocol(c, sock):
    r = json.loads(raw_request(sock, b'{"v":2,"cmd":"status"}\n'))
    c.eq(r.get("error", {}).get("code"), "unsupported_version", "protocol: another version is refused")
    r = json.loads(raw_request(sock, b'not json\n'))
    c.eq(r.get("error", {}).get("code"), "bad_request", "protocol: not JSON is refused")
    r = raw_request(sock, b"x" * (70 * 1024))
    c.check(b"request_too_long" in r, "protocol: a line over 64 KiB is refused", h._short(r))
    r = raw_request(sock, b'{"v":1,"cmd":"status"}\n{"v":1,"cmd":"queue"}\n')
    c.check(r.count(b"\n") >= 1 and json.loads(r.split(b"\n")[0]).get("ok") is True,
            "protocol: pipelined requests are answered in order", h._short(r))


def test_permission(ctx, c, ctl, sock):
    if os.geteuid() != 0:
        print("     skipped: the permission check runs the client as nobody, which needs root")
        return
    if not shutil.which("setpriv"):
        print("     skipped: setpriv (util-linux) is missing")
        return
    # nobody must reach the socket and the client: open the directories on the way.
    for d in (ctx.tmp, os.path.dirname(sock)):
        os.chmod(d, 0o755)
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    probe = subprocess.run(nobody + [ctl.binary, "--version"], capture_output=True, check=False)
    if probe.returncode != 0:
        print("     skipped: nobody cannot run %s (%s)" % (ctl.binary, probe.stderr.decode().strip()))
        return
    rc, _, _, err = ctl.run("status", prefix=nobody, json_out=False)
    c.check(rc == 3 and "Permission denied" in err, "nobody: the socket (0660) cannot be opened, exit 3",
            "exit %d: %s" % (rc, err))
    mode = os.stat(sock).st_mode & 0o777
    c.eq(oct(mode), oct(0o660), "the socket is mode 0660")
    os.chmod(sock, 0o666)  # past the file mode: the daemon's own check of the peer
    rc, r, _, _ = ctl.run("status", prefix=nobody)
    c.check(rc == 1 and (r or {}).get("error", {}).get("code") == "permission_denied",
            "nobody past the file mode: refused by the daemon (permission_denied), exit 1", h._short(r))
    rc, r, _, _ = ctl.run("pause", prefix=nobody)
    rc2, st, _, _ = ctl.run("status")
    c.check(rc == 1 and st.get("paused") is False, "nobody's pause did nothing")
    os.chmod(sock, 0o660)


def test_socket_life(ctx, c, api, ctl, config, sock, root):
    # A second daemon (another state_dir) on the same socket: refused while the first lives.
    _, hot2, _, state2 = ctx.folder("second")
    config2 = write_config(ctx, os.path.join(root, "second.yaml"), api, state2, [(hot2, [])], sock)
    res = ctx.run(["-c", config2], key=KEY, timeout=15, name="second")
    c.check(res.rc == 1 and "another seedreamd answers on it" in res.stderr,
            "a second daemon on a live socket exits 1, saying why", res.describe())
    rc, _, _, _ = ctl.run("status")
    c.eq(rc, 0, "the first daemon's socket still works")
    # Not a socket: refused, never unlinked.
    _, hot3, _, state3 = ctx.folder("third")
    plain = os.path.join(root, "plain-file")
    h.write_bytes(plain, b"keep me")
    config3 = write_config(ctx, os.path.join(root, "third.yaml"), api, state3, [(hot3, [])], plain)
    res = ctx.run(["-c", config3], key=KEY, timeout=15, name="third")
    c.check(res.rc == 1 and "not a socket" in res.stderr and h.read_bytes(plain) == b"keep me",
            "a control_socket path that is a plain file: exit 1, the file kept", res.describe())


def test_config(ctx, c, api, root, state):
    for value, what in (('"relative/control"', "a relative path"), ('"/' + "x" * 120 + '"', "a path too long")):
        path = os.path.join(root, "bad.yaml")
        write_config(ctx, path, api, state, [(os.path.join(root, "hot"), [])], "/tmp/x")
        with open(path, encoding="utf-8") as f:
            text = f.read().replace('control_socket: "/tmp/x"', "control_socket: " + value)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        res = ctx.run(["-c", path, "--check"], key=KEY, timeout=10, name="check-bad")
        c.check(res.rc == 1 and "bad.yaml:12:" in res.stderr and "control_socket" in res.stderr,
                "--check refuses control_socket %s with file:line:column" % what, res.describe())
    path = os.path.join(root, "off.yaml")
    write_config(ctx, path, api, state, [(os.path.join(root, "hot"), [])], "/tmp/x")
    with open(path, encoding="utf-8") as f:
        text = f.read().replace('control_socket: "/tmp/x"', "control_socket: off")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    res = ctx.run(["-c", path, "--check"], key=KEY, timeout=10, name="check-off")
    c.eq(res.rc, 0, "--check accepts control_socket: off")


def test(ctx):
    c = ctx.checks
    api = ctx.start_api(key=KEY)
    root, hot_a, _, state = ctx.folder("ctl")
    hot_b = os.path.join(root, "hotb")
    hot_c = os.path.join(root, "hotc")
    os.makedirs(hot_b)
    os.makedirs(hot_c)
    sockdir = os.path.join(root, "run")
    os.makedirs(sockdir)
    sock = os.path.join(sockdir, "control")
    config = write_config(ctx, os.path.join(root, "seedreamd.yaml"), api, state,
                          [(hot_a, []), (hot_b, []), (hot_c, ["mode: poll", "poll_interval: 1h"])], sock)
    test_config(ctx, c, api, root, state)
    ctl = Ctl(ctx, sock)
    notify = h.notify_socket(ctx)
    daemon = ctx.start_daemon(config, key=KEY, notify=notify)
    c.require(daemon.wait_for(r"ready", 15), "the daemon starts", daemon.stderr_text()[-2000:])
    c.check(os.path.exists(sock), "the control socket exists")
    test_commands(ctx, c, api, ctl, hot_a, hot_b, hot_c, daemon, notify)
    test_protocol(c, sock)
    test_permission(ctx, c, ctl, sock)
    test_socket_life(ctx, c, api, ctl, config, sock, root)

    # A pause is kept across a restart (state_dir/paused.json), even a kill.
    rc, _, _, _ = ctl.run("pause", hot_a)
    kept = os.path.join(state, "paused.json")
    c.check(h.wait_until(lambda: os.path.exists(kept) and hot_a in h.read_json(kept).get("folders", []), 5),
            "pause A: kept in state_dir/paused.json")
    # Killed: the socket file stays behind; the next start replaces it.
    daemon.proc.kill()
    daemon.proc.wait()
    c.check(os.path.exists(sock), "after SIGKILL the socket file is left behind")
    daemon = ctx.start_daemon(config, key=KEY, name="daemon2")
    c.require(daemon.wait_for(r"ready", 15), "the daemon starts again over the stale socket",
              daemon.stderr_text()[-2000:])
    rc, st, _, _ = ctl.run("status")
    c.check(rc == 0 and st.get("ok") is True, "status answers on the replaced socket")
    c.check(folder_of(st, hot_a).get("user_paused") is True and folder_of(st, hot_b).get("user_paused") is False,
            "after the restart folder A is still paused, B is not", h._short(folder_of(st, hot_a)))
    c.check("stays paused" in daemon.stderr_text(), "the restart logs that A stays paused")
    a4 = h.png_image(40, 30, 7)
    drop(hot_a, "a4.png", a4)
    time.sleep(1.5)
    c.eq(len(gens_of(api, h.sha256_bytes(a4))), 0, "after the restart, A's new file waits")
    rc, _, _, _ = ctl.run("resume", hot_a)
    c.check(rc == 0 and h.wait_until(lambda: os.path.exists(os.path.join(hot_a + "-out", "a4.json")), 20),
            "resume A after the restart: its file is done")
    c.check(h.wait_until(lambda: h.read_json(kept).get("folders") == [], 5), "resume A: paused.json updated")
    # After a reload the old configuration is freed: a pause must still be kept in state_dir
    # (the socket once held a pointer into the old configuration: a use-after-free under ASan).
    daemon.proc.send_signal(signal.SIGHUP)
    c.check(daemon.wait_for(r"reloading", 10), "SIGHUP: the daemon reloads")
    time.sleep(1.5)
    rc, _, _, _ = ctl.run("pause", hot_b)
    c.check(rc == 0 and h.wait_until(lambda: hot_b in h.read_json(kept).get("folders", []), 5),
            "pause B after a reload: kept in state_dir/paused.json")
    rc, _, _, _ = ctl.run("resume", hot_b)
    c.check(rc == 0 and h.wait_until(lambda: h.read_json(kept).get("folders") == [], 5),
            "resume B after the reload: paused.json updated")
    rc_term, _ = daemon.terminate(timeout=15)
    c.eq(rc_term, 0, "SIGTERM: exit 0")
    c.check(not os.path.exists(sock), "a clean stop removes the socket")


if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
