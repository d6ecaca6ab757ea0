#!/usr/bin/env python3
"""Command hooks are bounded and keep the key out (review of issue 12, item 4):
- a hook that exits leaving `sleep 1000 &` in its process group: the group gets SIGTERM when the
  hook ends, and SIGKILL 2 s later for what ignores SIGTERM; a group left at daemon stop is killed;
- the hook's environment holds the API key nowhere: not under SEEDREAM_API_KEY while api_key_file
  is used, not under any other name, not under the api_key_env a reload renamed, and no
  CREDENTIALS_DIRECTORY;
- a hook that writes without end (`yes`) is killed at command_timeout while files keep flowing,
  with its logged lines capped at 100."""

import json
import os
import signal
import stat
import sys
import time

import harness as h

KEY = "sk-sdr-HookEnv7qW2eR4tY6uI8oP1aS3dF5gH-beef"
KEY_B = "sk-sdr-HookEnvOther9zX8cV7bN6mM5lK4jH3-cafe"

OK = {"status": 200, "headers": {"x-request-id": "{rid}"},
      "json": {"model": h.MODEL, "created": "{created}",
               "data": [{"url": "{image_url}", "size": "2048x2048"}],
               "usage": {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}}}
FAIL = {"status": 400, "headers": {"x-request-id": "{rid}"},
        "json": {"error": {"code": "InvalidParameter", "message": "bad input"}}}


# A background sleep that ignores SIGTERM; the hook goes on once bg has that many lines.
IGNORING = ("sh -c 'trap \"\" TERM; echo $$ >> %s; exec sleep 1001' &\n"
            "while [ $(wc -l < %s) -lt %d ]; do sleep 0.05; done\n")


def write_config(ctx, root, api, state, hot, extra_lines, extra_api=None):
    path = os.path.join(root, "seedreamd.yaml")
    ctx.write_config(path, api=api, state_dir=state, folders=[{"path": hot}], retries=0,
                     max_in_flight=1, extra_api=extra_api)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n".join(extra_lines) + "\n")
    return path


def write_script(path, text):
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, stat.S_IRWXU)
    return path


def alive(pid):
    """True while pid runs (a zombie counts as gone: it is no longer running)."""
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def read_pids(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def leaks(env, words):
    """Only the lines of env that hold one of words (never the whole environment in a log)."""
    return "\n".join(l for l in env.splitlines() if any(w in l for w in words))


def kill_all(pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def test_group(ctx):
    c = ctx.checks
    api = ctx.start_hostile_api(name="group", script={"generation": [FAIL]})
    root, hot, _, state = ctx.folder("group")
    bg = os.path.join(root, "bg")
    # One background sleep that takes SIGTERM, one that ignores it (set before its pid is
    # written); the hook itself exits 0 once both are there.
    hook = write_script(os.path.join(root, "hook.sh"),
                        "#!/bin/sh\nsleep 1000 &\necho $! >> %s\n%s"
                        "echo started\nexit 0\n" % (bg, IGNORING % (bg, bg, 2)))
    config = write_config(ctx, root, api, state, hot, [
        "notify:", "  command: %s" % json.dumps(hook), "  command_timeout: 30s",
        "  events: [file_failed]"])
    d = ctx.start_daemon(config, key=KEY)
    seen = []  # every background pid, killed at the end whatever happened
    try:
        c.require(d.wait_for(r"ready", 10), "the daemon is ready")
        h.write_bytes(os.path.join(hot, "a.png"), h.png_image(40, 30, 11))
        c.require(h.wait_until(lambda: len(read_pids(bg)) == 2, 20),
                  "the hook ran and started two background sleeps")
        pids = read_pids(bg)
        seen += pids
        gone = h.wait_until(lambda: not any(alive(p) for p in pids), 6)
        err = d.stderr_text()
        c.check(gone, "no background process of the hook remains a few seconds after it exited",
                str([p for p in pids if alive(p)]))
        c.check("left processes running: sending SIGTERM to its process group" in err,
                "the SIGTERM to what the hook left is logged", err[-800:])
        c.check("ignored SIGTERM: sending SIGKILL" in err,
                "what ignored SIGTERM got SIGKILL after the grace", err[-800:])

        # A group still in its grace when the daemon stops is killed at the stop.
        open(bg, "w", encoding="utf-8").close()
        write_script(hook, "#!/bin/sh\n%sexit 0\n" % (IGNORING % (bg, bg, 1)))
        h.write_bytes(os.path.join(hot, "b.png"), h.png_image(41, 31, 12))
        c.require(h.wait_until(lambda: len(read_pids(bg)) == 1, 20), "the hook ran again")
        pids = read_pids(bg)
        seen += pids
        c.require(h.wait_until(lambda: d.stderr_text().count("left processes running") == 2, 5),
                  "the hook ended, leaving its sleep in its grace")
        rc, secs = d.terminate()
        c.eq(rc, 0, "the daemon stops cleanly")
        c.check(h.wait_until(lambda: not any(alive(p) for p in pids), 2),
                "what a hook left is killed when the daemon stops", str(pids))
    finally:
        kill_all(seen + read_pids(bg))


def test_env(ctx):
    c = ctx.checks
    api = ctx.start_hostile_api(name="env", script={"generation": [FAIL]})
    root, hot, _, state = ctx.folder("env")
    envdir = os.path.join(root, "env")
    os.makedirs(envdir)
    keyfile = os.path.join(root, "api_key")
    with open(keyfile, "w", encoding="utf-8") as fh:
        fh.write(KEY + "\n")
    os.chmod(keyfile, 0o600)
    hook = write_script(os.path.join(root, "hook.sh"),
                        "#!/bin/sh\nenv > %s/$SEEDREAMD_FILE.env\n" % envdir)
    lines = ["notify:", "  command: %s" % json.dumps(hook), "  events: [file_failed]"]
    config = write_config(ctx, root, api, state, hot, lines,
                          extra_api={"api_key_file": json.dumps(keyfile)})
    extra = {"SEEDREAM_API_KEY": KEY, "OTHER_VAR": KEY, "WRAPPED_VAR": "x-%s-y" % KEY,
             "CREDENTIALS_DIRECTORY": root, "OLD_KEY_VAR": KEY_B, "NEW_KEY_VAR": KEY,
             "PLAIN_HOOK_VAR": "plain-value"}
    d = ctx.start_daemon(config, key=None, env_extra=extra)
    c.require(d.wait_for(r"ready", 10), "the daemon is ready", d.stderr_text()[-400:])
    h.write_bytes(os.path.join(hot, "one.png"), h.png_image(40, 30, 21))
    envfile = os.path.join(envdir, "one.png.env")
    c.require(h.wait_until(lambda: os.path.exists(envfile) and os.path.getsize(envfile) > 0, 20),
              "the hook wrote its environment")
    time.sleep(0.3)
    with open(envfile, encoding="utf-8") as fh:
        env = fh.read()
    c.check(KEY not in env, "with api_key_file, the key is in no variable of the hook "
            "(SEEDREAM_API_KEY, OTHER_VAR, WRAPPED_VAR, NEW_KEY_VAR)", leaks(env, [KEY]))
    c.check("CREDENTIALS_DIRECTORY=" not in env, "CREDENTIALS_DIRECTORY is not passed")
    c.check("PLAIN_HOOK_VAR=plain-value" in env and "SEEDREAMD_EVENT=file_failed" in env,
            "other variables and the event's are passed")

    # A reload to api_key_env OLD_KEY_VAR, then back to NEW_KEY_VAR: the old name (holding a
    # key no longer in use) stays out too.
    for n, (name, fname) in enumerate((("OLD_KEY_VAR", "two.png"), ("NEW_KEY_VAR", "three.png"))):
        write_config(ctx, root, api, state, hot, lines, extra_api={"api_key_env": name})
        d.proc.send_signal(signal.SIGHUP)
        c.require(h.wait_until(lambda n=n: d.stderr_text().count("reloading") == n + 1, 10),
                  "the reload to api_key_env %s is taken" % name)
        time.sleep(0.5)
        c.check("reload failed" not in d.stderr_text(), "and succeeds", d.stderr_text()[-400:])
        h.write_bytes(os.path.join(hot, fname), h.png_image(42, 32, 22 + len(fname)))
        envfile = os.path.join(envdir, fname + ".env")
        c.require(h.wait_until(lambda: os.path.exists(envfile) and
                               os.path.getsize(envfile) > 0, 20),
                  "the hook ran after the reload to %s" % name, d.stderr_text()[-800:])
        time.sleep(0.3)
        with open(envfile, encoding="utf-8") as fh:
            env = fh.read()
        c.check(KEY not in env and KEY_B not in env and "OLD_KEY_VAR" not in env and
                "NEW_KEY_VAR" not in env and "SEEDREAM_API_KEY" not in env,
                "after a reload to api_key_env %s no key (old or new) reaches the hook" % name,
                leaks(env, [KEY, KEY_B, "KEY_VAR", "SEEDREAM_API_KEY"]))
    rc, _ = d.terminate()
    c.eq(rc, 0, "the daemon stops cleanly")


def test_endless_output(ctx):
    c = ctx.checks
    api = ctx.start_hostile_api(name="yes", script={"generation": [FAIL, OK]})
    root, hot, out, state = ctx.folder("yes")
    hook = write_script(os.path.join(root, "hook.sh"), "#!/bin/sh\nexec yes\n")
    config = write_config(ctx, root, api, state, hot, [
        "notify:", "  command: %s" % json.dumps(hook), "  command_timeout: 10s",
        "  events: [file_failed]"])
    d = ctx.start_daemon(config, key=KEY)
    c.require(d.wait_for(r"ready", 10), "the daemon is ready")
    h.write_bytes(os.path.join(hot, "f0.png"), h.png_image(40, 30, 31))
    c.require(d.wait_for(r"notify: command \(event file_failed, pid \d+\): y", 15),
              "the endless hook runs and its output is logged")
    names = ["f%d.png" % i for i in range(1, 5)]
    for i, name in enumerate(names):
        h.write_bytes(os.path.join(hot, name), h.png_image(41 + i, 31 + i, 40 + i))
    flowing = h.wait_until(lambda: all(os.path.exists(os.path.join(out, n[:-4] + ".json"))
                                       for n in names), 20)
    c.check(flowing and "sending SIGTERM" not in d.stderr_text(),
            "files keep flowing while the hook writes without end (before its timeout)",
            str(h.listing(out)))
    killed = d.wait_for(r"ended by signal 15 after its timeout", 15)
    err = d.stderr_text()
    c.check(killed and "still running after 10000 ms: sending SIGTERM" in err,
            "the hook is killed at command_timeout", err[-600:])
    logged = [l for l in err.splitlines() if "notify: command (event file_failed" in l and
              l.endswith("): y")]
    c.eq(len(logged), 100, "its logged lines are capped at 100")
    c.eq(err.count("more output, not logged"), 1, "the cap is said once")
    rc, secs = d.terminate()
    c.eq(rc, 0, "the daemon stops cleanly")
    c.check(secs < 5, "and promptly", "%.1f s" % secs)


def test(ctx):
    test_group(ctx)
    test_env(ctx)
    test_endless_output(ctx)


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
