#!/usr/bin/env python3
"""The network boundary (findings 12 and 13), inside a private network namespace: only `lo` is
up, the "remote" addresses 203.0.113.5 (public) and 10.1.2.3 (private) are assigned to it, and a
private /etc/hosts names them, so nothing here can send a packet off this machine.

- Plain http only to this machine, by the host curl really connects to: base_url
  http://127.attacker.example:P/v1 and http://127.0.0.1@203.0.113.5:P/v1 are refused by --check
  and by the daemon, and the sink behind them sees nothing.
- A loopback API whose result URL is plain http off the machine (the same two tricks): refused
  with UnsafeResultURL, nothing fetched, the generation paid once.
- An API beyond this machine (203.0.113.5, allow_insecure_http) whose result URLs lead into this
  machine or its network (127.0.0.1, 10.1.2.3, a name that resolves to 10.1.2.3, a redirect from
  an allowed URL to 10.1.2.3): each refused, the sinks see no request, each file gets an
  UnsafeResultURL .error.json, each generation paid exactly once. An honest result URL on the
  API itself still works; with api.allow_private_result_urls: true the private URL is fetched.

Re-executes itself under `unshare -n -m` (or `unshare -rnm` when not root); skips, saying so,
when namespaces are not available."""

import os
import shutil
import subprocess
import sys

import harness as h

REMOTE = "203.0.113.5"
PRIVATE = "10.1.2.3"
HOSTS = ("127.0.0.1 localhost\n::1 localhost\n"
         "%s 127.attacker.example api.example\n"
         "%s internal.example relay.example\n" % (REMOTE, PRIVATE))
MARK = "SEEDREAMD_TEST_NETNS"


def enter_namespace():
    """Re-runs this script in a private network and mount namespace; returns only inside it."""
    if os.environ.get(MARK) == "1":
        return
    unshare = shutil.which("unshare")
    ip = shutil.which("ip") or "/usr/sbin/ip"
    argv = ["-n", "-m"] if os.geteuid() == 0 else ["-r", "-n", "-m"]
    if not unshare or not os.path.exists(ip) or subprocess.run(
            [unshare] + argv + ["true"], stderr=subprocess.DEVNULL).returncode != 0:
        print("SKIP: cannot make a private network namespace here (unshare -n -m failed, or no "
              "unshare/ip); this test needs one so that nothing leaves the machine")
        print("0 passed, 0 failed")
        raise SystemExit(0)
    env = dict(os.environ, **{MARK: "1"})
    os.execve(unshare, [unshare] + argv + ["--", sys.executable] + sys.argv, env)


def setup_namespace(tmp):
    ip = shutil.which("ip") or "/usr/sbin/ip"
    for cmd in (["link", "set", "lo", "up"], ["addr", "add", REMOTE + "/32", "dev", "lo"],
                ["addr", "add", PRIVATE + "/32", "dev", "lo"]):
        subprocess.run([ip] + cmd, check=True)
    hosts = os.path.join(tmp, "hosts")
    with open(hosts, "w", encoding="utf-8") as f:
        f.write(HOSTS)
    subprocess.run(["mount", "--bind", hosts, "/etc/hosts"], check=True)
    # Proof that we are alone: no interface but lo.
    links = subprocess.run([ip, "-o", "link"], capture_output=True, text=True).stdout
    return [l.split(":")[1].strip() for l in links.splitlines()]


PNG = h.png_image(64, 64, 7)


def sink(ctx, name, host):
    """A server that answers anything with an image, and records every request."""
    import base64
    img = {"status": 200, "body_b64": base64.b64encode(PNG).decode()}
    return ctx.start_hostile_api(name=name, host=host, script={
        "generation": [img], "routes": {"/secret": img, "/x": img}})


def run_folder(ctx, name, api_url, files, extra_api=None, check_only=False):
    _, hot, out, state = ctx.folder(name)
    for i, f in enumerate(files):
        h.write_bytes(os.path.join(hot, f), h.png_image(64, 64, i + 1))
    cfg = ctx.write_config(os.path.join(ctx.tmp, name + ".yaml"), api=api_url, state_dir=state,
                           folders=[{"path": hot}], settle="100ms", retries=1,
                           max_in_flight=1, extra_api=extra_api)
    if check_only:
        return ctx.run(["-c", cfg, "--check"], timeout=20), out
    return ctx.run_once(cfg, timeout=40), out


def error_codes(out):
    codes = {}
    if os.path.isdir(out):
        for n in os.listdir(out):
            if n.endswith(".error.json"):
                codes[n[:-len(".error.json")]] = (h.read_json(os.path.join(out, n)).get("error") or {}).get("code")
    return codes


def outputs(out):
    return sorted(n for n in os.listdir(out) if not n.endswith(".json") and not n.startswith(".")) \
        if os.path.isdir(out) else []


def test(ctx):
    c = ctx.checks
    links = setup_namespace(ctx.tmp)
    c.require(links == ["lo"], "inside a network namespace with only lo", repr(links))

    # ---- base_url: plain http to a host that only looks like this machine -------------------
    remote_sink = sink(ctx, "remote-sink", REMOTE)
    for label, url in (("127.attacker.example", "http://127.attacker.example:%d/v1"),
                       ("userinfo", "http://127.0.0.1@" + REMOTE + ":%d/v1")):
        url = url % remote_sink.port
        res, _ = run_folder(ctx, "check-" + label.replace(".", "-"), url, [], check_only=True)
        c.check(res.rc == 1 and "allow_insecure_http" in res.stderr,
                "--check refuses base_url %s" % url, res.describe())
        res, out = run_folder(ctx, "run-" + label.replace(".", "-"), url, ["a.png"])
        c.check(res.rc != 0 and "allow_insecure_http" in res.stderr,
                "the daemon refuses base_url %s" % url, res.describe())
    c.eq(remote_sink.records(), [], "the remote sink saw no request for a refused base_url")

    # ---- a loopback API, result URLs plain http off the machine -----------------------------
    local_api = ctx.start_hostile_api(name="local-api", script={"generation": [
        {"status": 200, "json": {"data": [{"url": "http://127.0.0.1@%s:%d/x" % (REMOTE, remote_sink.port)}]}},
        {"status": 200, "json": {"data": [{"url": "http://127.attacker.example:%d/x" % remote_sink.port}]}},
    ]})
    res, out = run_folder(ctx, "local", local_api.base_url, ["a.png", "b.png"])
    c.eq(error_codes(out), {"a": "UnsafeResultURL", "b": "UnsafeResultURL"},
         "plain-http result URLs off this machine fail with UnsafeResultURL")
    c.eq(len(local_api.generations()), 2, "each of the two generations was paid exactly once")
    c.eq(remote_sink.records(), [], "the remote sink saw no request for those result URLs")

    # ---- an API beyond this machine, result URLs into it or its network ---------------------
    local_sink = sink(ctx, "local-sink", "127.0.0.1")
    private_sink = sink(ctx, "private-sink", PRIVATE)
    steps = [
        "http://127.0.0.1:%d/secret" % local_sink.port,
        "http://%s:%d/secret" % (PRIVATE, private_sink.port),
        "http://internal.example:%d/secret" % private_sink.port,  # a name: checked on connect
        "http://api.example:{port}/redir",                          # allowed, then redirected
    ]
    remote_api = ctx.start_hostile_api(name="remote-api", host=REMOTE, script={
        "generation": [{"status": 200, "json": {"data": [{"url": u}]}} for u in steps],
        "routes": {"/redir": {"status": 302, "headers": {
            "Location": "http://%s:%d/secret" % (PRIVATE, private_sink.port)}}}})
    insecure = {"allow_insecure_http": "true"}
    files = ["a.png", "b.png", "c.png", "d.png"]
    res, out = run_folder(ctx, "ssrf", remote_api.base_url, files, extra_api=insecure)
    c.eq(error_codes(out), {f[0]: "UnsafeResultURL" for f in files},
         "result URLs into this machine or its network fail with UnsafeResultURL")
    c.eq(outputs(out), [], "no output was written from them")
    c.eq(len(remote_api.generations()), 4, "each of the four generations was paid exactly once")
    c.eq([r["path"] for r in remote_api.records("route")], ["/redir"],
         "the allowed URL was fetched, and its redirect was not followed")
    c.eq(local_sink.records(), [], "the loopback sink saw no request")
    c.eq(private_sink.records(), [], "the private-network sink saw no request")

    # ---- a relay on the local network, named: its own result URLs ---------------------------
    # The download may reuse the generation's connection (no new socket to check): the address
    # in use is checked again before the request.
    relay = ctx.start_hostile_api(name="relay", host=PRIVATE)
    relay_url = "http://relay.example:%d/v1" % relay.port
    res, out = run_folder(ctx, "relay", relay_url, ["a.png"], extra_api=insecure)
    c.eq(error_codes(out), {"a": "UnsafeResultURL"},
         "a relay on the local network: its result URL is refused without the opt-in")
    c.eq((len(relay.generations()), relay.images()), (1, []),
         "the relay was paid once and its result not fetched")
    res, out = run_folder(ctx, "relay-optin", relay_url, ["a.png"],
                          extra_api=dict(insecure, allow_private_result_urls="true"))
    c.eq((outputs(out), error_codes(out)), (["a.png"], {}),
         "with allow_private_result_urls: true the relay's result is fetched")

    # ---- the same API with honest results, and with the opt-in ------------------------------
    remote_api.set_script({"generation": []})
    res, out = run_folder(ctx, "honest", remote_api.base_url, ["a.png"], extra_api=insecure)
    c.eq((outputs(out), error_codes(out)), (["a.png"], {}),
         "an honest result URL on the remote API is still fetched")
    remote_api.set_script({"generation": [{"status": 200, "json": {"data": [{"url": steps[1]}]}}]})
    res, out = run_folder(ctx, "optin", remote_api.base_url, ["a.png"],
                          extra_api=dict(insecure, allow_private_result_urls="true"))
    c.eq((outputs(out), error_codes(out)), (["a.png"], {}),
         "with allow_private_result_urls: true the private result URL is fetched")
    c.eq(len(private_sink.records()), 1, "the private sink saw that one request")


if __name__ == "__main__":
    enter_namespace()
    raise SystemExit(h.main(test, __doc__))
