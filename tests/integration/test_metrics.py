#!/usr/bin/env python3
"""Prometheus metrics: GET /metrics on metrics_listen and the metrics_textfile, against the honest
stand-in: counters match what happened (N files -> files_total N, a failure with its code),
promtool accepts both, the API key never appears; idle, slow and non-reading clients do not stop
the daemon and are dropped; 404, 405, 431; --check refuses bad values."""

import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request

import harness as h

KEY = "sk-metrics-SECRET-7f3a9c1e5b"
FAIL_CODE = "InputImageSensitiveContentDetected"
SAMPLE_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def parse(text):
    """{(name, frozenset(labels.items())): value} of every sample line."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_LINE.match(line)
        if not m:
            samples[("UNPARSEABLE", frozenset({("line", line)}))] = 0
            continue
        labels = frozenset(LABEL.findall(m.group(3) or ""))
        samples[(m.group(1), labels)] = float(m.group(4))
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def promtool(text):
    p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30, check=False)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace").strip()


def http(port, method="GET", path="/metrics", timeout=5):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode("utf-8", "replace")


def raw(port, data, timeout=5):
    """Sends data, returns what comes back until the daemon closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.close()
    return got


def write_config(ctx, root, api, hot, state, extra):
    path = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                            folders=[{"path": hot}], retries=1)
    with open(path, "a", encoding="utf-8") as f:
        f.write(extra)
    return path


def check_refusals(ctx, root, api, hot, state):
    c = ctx.checks
    for text in ('metrics_listen: "[::1]:9464"\n', 'metrics_listen: "0.0.0.0:9464"\n'):
        cfg = write_config(ctx, root, api, hot, state, text)
        res = ctx.run(["-c", cfg, "--check"], timeout=10, name="check")
        c.check(res.rc == 0, "--check accepts %s" % text.strip(), res.describe())
    for text, what in (('metrics_listen: "localhost:9464"\n', "a host name"),
                       ('metrics_listen: "127.0.0.1:99999"\n', "a port over 65535"),
                       ('metrics_listen: "127.0.0.1"\n', "no port"),
                       ('metrics_listen: "[::1:9464"\n', "an unclosed IPv6 bracket"),
                       ('metrics_textfile: "relative/seedreamd.prom"\n', "a relative textfile")):
        cfg = write_config(ctx, root, api, hot, state, text)
        lines = open(cfg, encoding="utf-8").read().count("\n")
        res = ctx.run(["-c", cfg, "--check"], timeout=10, name="check")
        key = text.split(":")[0]
        c.check(res.rc == 1 and re.search(r"seedreamd\.yaml:%d:\d+: %s: expected" % (lines, key), res.stderr),
                "--check refuses %s for %s with file:line:column" % (what, key), res.describe())


def control(sock, request):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(sock)
    s.sendall(json.dumps(dict(request, v=1)).encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return json.loads(data)


def check_user_pause(c, port, sock, hot):
    """A seedreamctl pause shows: the folder's in seedreamd_folder_paused, every folder's as
    seedreamd_paused{reason="user"}."""
    s = parse(http(port)[2])
    c.eq((value(s, "seedreamd_paused", reason="user"), value(s, "seedreamd_folder_paused", folder=hot)),
         (0.0, 0.0), "not paused: paused{reason=user} 0, folder_paused 0")
    c.check(control(sock, {"cmd": "pause", "folder": hot}).get("ok") is True, "pause the folder")
    s = parse(http(port)[2])
    c.eq((value(s, "seedreamd_paused", reason="user"), value(s, "seedreamd_folder_paused", folder=hot)),
         (0.0, 1.0), "folder paused by seedreamctl: folder_paused 1, paused{reason=user} 0")
    c.check(control(sock, {"cmd": "pause"}).get("ok") is True, "pause every folder")
    s = parse(http(port)[2])
    c.eq(value(s, "seedreamd_paused", reason="user"), 1.0, "every folder paused: paused{reason=user} 1")
    c.check(control(sock, {"cmd": "resume"}).get("ok") is True, "resume")
    text = http(port)[2]
    s = parse(text)
    c.eq((value(s, "seedreamd_paused", reason="user"), value(s, "seedreamd_folder_paused", folder=hot)),
         (0.0, 0.0), "resumed: both 0 again")
    rc, msg = promtool(text)
    c.check(rc == 0, "promtool check metrics accepts the scrape with reason=user", msg)


def test(ctx):
    c = ctx.checks
    api = ctx.start_api(key=KEY, faults=["400:" + FAIL_CODE])
    root, hot, out, state = ctx.folder("metrics")
    check_refusals(ctx, root, api, hot, state)

    port = free_port()
    textfile = os.path.join(root, "textfile", "seedreamd.prom")
    os.makedirs(os.path.dirname(textfile))
    control = os.path.join(root, "control")
    config = write_config(ctx, root, api, hot, state,
                          'metrics_listen: "127.0.0.1:%d"\nmetrics_textfile: "%s"\n' % (port, textfile) +
                          'price_per_image:\n  "%s": 0.035\ncurrency: EUR\n' % h.MODEL +
                          'control_socket: "%s"\n' % control)
    res = ctx.run(["-c", config, "--check"], timeout=10, name="check-ok")
    c.check(res.rc == 0, "--check accepts metrics_listen and metrics_textfile", res.describe())

    n = 5
    names = ["img-%d.png" % i for i in range(n)]
    for i, name in enumerate(names):
        h.write_bytes(os.path.join(hot, name), h.png_image(40 + i, 32, i))
    d = ctx.start_daemon(config, key=KEY)
    c.require(d.wait_for(r"serving metrics on http://127\.0\.0\.1:%d/metrics" % port, 10),
              "the daemon says where it serves metrics")
    c.check(h.wait_until(lambda: os.path.exists(textfile), 5),
            "the textfile is written at start (on a worker)")

    def finished():
        listing = h.listing(out)
        return sum(1 for x in listing if x.endswith(".error.json")) + \
            sum(1 for x in listing if x.endswith((".jpg", ".jpeg"))) >= n
    c.require(h.wait_until(finished, 40), "all %d files finished" % n)
    time.sleep(0.3)

    status, ctype, text = http(port)
    c.eq(status, 200, "GET /metrics answers 200")
    c.eq(ctype, "text/plain; version=0.0.4; charset=utf-8", "the content type of the text format 0.0.4")
    rc, msg = promtool(text)
    c.check(rc == 0, "promtool check metrics accepts the scraped text", msg)
    s = parse(text)
    c.check(not any(k[0] == "UNPARSEABLE" for k in s), "every sample line parses")
    c.eq(value(s, "seedreamd_files_total", folder=hot, result="done"), float(n - 1),
         "files_total{result=done} counts the %d files done" % (n - 1))
    c.eq(value(s, "seedreamd_files_total", folder=hot, result="failed"), 1.0,
         "files_total{result=failed} counts the failed file")
    c.eq(value(s, "seedreamd_file_failures_total", code=FAIL_CODE), 1.0,
         "file_failures_total shows the failure with its code")
    c.eq(value(s, "seedreamd_api_requests_total", status="400", code=FAIL_CODE), 1.0,
         "api_requests_total{status=400,code=%s} is 1" % FAIL_CODE)
    c.eq(value(s, "seedreamd_api_requests_total", status="200", code=""), float(n - 1),
         "api_requests_total{status=200} counts the generations")
    c.eq(value(s, "seedreamd_generated_images_total"), float(n - 1), "generated_images_total from usage")
    cost = value(s, "seedreamd_estimated_cost_total", currency="EUR")
    c.check(cost is not None and abs(cost - 0.035 * (n - 1)) < 1e-9,
            "estimated_cost_total{currency=EUR} is %d images at 0.035" % (n - 1), repr(cost))
    c.eq(value(s, "seedreamd_output_tokens_total"), float((n - 1) * h.FAKE_USAGE["output_tokens"]),
         "output_tokens_total from usage")
    c.eq(value(s, "seedreamd_generation_duration_seconds_count"), float(n),
         "the generation latency histogram saw every answer")
    c.eq(value(s, "seedreamd_generation_duration_seconds_bucket", le="+Inf"), float(n),
         "its +Inf bucket equals its count")
    c.eq(value(s, "seedreamd_download_duration_seconds_count"), float(n - 1),
         "the download latency histogram saw every download")
    sizes = sum(os.path.getsize(os.path.join(hot, x)) for x in names)
    up = value(s, "seedreamd_upload_bytes_total") or 0
    c.check(up > sizes, "upload_bytes_total (%d) is more than the inputs' bytes (%d, sent as base64)" % (up, sizes))
    c.check((value(s, "seedreamd_download_bytes_total") or 0) > 0, "download_bytes_total counts bytes")
    c.eq(value(s, "seedreamd_queued"), 0.0, "nothing queued")
    c.eq(value(s, "seedreamd_folder_pending", folder=hot), 0.0, "the folder has nothing pending")
    c.eq(value(s, "seedreamd_paused", reason="api_refused"), 0.0, "not paused")
    c.check(KEY not in text, "the API key is not in the scraped text")

    # A file that arrives while clients misbehave still goes through, and scrapes still answer.
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    partial = socket.create_connection(("127.0.0.1", port))
    partial.sendall(b"GET /metr")
    noread = socket.socket()
    noread.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    noread.connect(("127.0.0.1", port))
    noread.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
    for _ in range(3):
        noread.sendall(b"")
    t0 = time.monotonic()
    status, _, _ = http(port, timeout=3)
    c.check(status == 200 and time.monotonic() - t0 < 2,
            "a scrape answers while idle, half-sent and non-reading clients are connected")
    h.write_bytes(os.path.join(hot, "late.png"), h.png_image(50, 50, 99))
    c.check(h.wait_until(lambda: "late.jpeg" in h.listing(out), 20),
            "a new file is processed meanwhile (the loop is not blocked)")
    c.eq(raw(port, b"GET /other HTTP/1.0\r\n\r\n")[:12], b"HTTP/1.0 404", "another path: 404")
    c.eq(raw(port, b"POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n")[:12], b"HTTP/1.0 405",
         "POST: 405")
    c.eq(raw(port, b"GET /metrics HTTP/1.0\r\nX-Pad: " + b"a" * 8000)[:12], b"HTTP/1.0 431",
         "a request over 4 KiB: 431")
    head = raw(port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
    c.check(head.startswith(b"HTTP/1.0 200") and head.endswith(b"\r\n\r\n"), "HEAD: 200, headers only")

    def closed(sock):
        sock.settimeout(13)
        try:
            while sock.recv(65536):
                pass
            return True
        except OSError:
            return False
    c.check(closed(idle[0]) and all(closed(x) for x in idle[1:] + [partial]),
            "idle and half-sent clients are dropped by the timeout")
    for sock in idle + [partial, noread]:
        sock.close()
    s = parse(http(port)[2])
    c.eq(value(s, "seedreamd_files_total", folder=hot, result="done"), float(n),
         "files_total{result=done} went up by the late file")

    check_user_pause(c, port, control, hot)

    rc, took = d.terminate(timeout=20)
    c.eq(rc, 0, "SIGTERM: exit 0")
    text = open(textfile, encoding="utf-8").read()
    rc, msg = promtool(text)
    c.check(rc == 0, "promtool check metrics accepts the textfile", msg)
    s = parse(text)
    c.eq(value(s, "seedreamd_files_total", folder=hot, result="done"), float(n),
         "the textfile written at exit has files_total{result=done} = %d" % n)
    c.eq(value(s, "seedreamd_files_total", folder=hot, result="failed"), 1.0,
         "the textfile has the failed file")
    c.check(KEY not in text, "the API key is not in the textfile")
    c.eq(sorted(os.listdir(os.path.dirname(textfile))), ["seedreamd.prom"],
         "no temporary file left beside the textfile")


if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
