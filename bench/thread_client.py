#!/usr/bin/env python3
"""The second baseline of the slow-storage scenario: a plain thread-per-job Python client.

    thread_client.py HOT OUT   (env: SEEDREAM_API_KEY, API_BASE, MODEL, PROMPT, JOBS)

What a competent Python user would write: poll the folder every 50 ms; one thread per new file,
at most JOBS at a time. Each thread reads its file, POSTs it (a base64 data URL) to
API_BASE/images/generations, downloads the result URL, and writes the output and a small sidecar
durably: temporary file, fsync, rename, then fsync of the folder. No journal, no retries, no
restart safety; errors are written as <stem>.error.json so the harness can count them. Prints
"watching" on stderr once polling.
"""

import base64
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

EXTS = (".png", ".jpg", ".jpeg", ".webp")


def write_durably(folder, name, data):
    tmp = os.path.join(folder, ".%s.tmp" % name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, os.path.join(folder, name))
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def request(url, method="GET", body=None, headers=None):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=180)
    try:
        conn.request(method, u.path + ("?" + u.query if u.query else ""), body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def job(path, out, env, slots):
    name = os.path.basename(path)
    stem = os.path.splitext(name)[0]
    try:
        with open(path, "rb") as f:
            data = f.read()
        mime = "image/png" if name.endswith(".png") else "image/jpeg"
        body = json.dumps({"model": env["MODEL"], "prompt": env["PROMPT"],
                           "image": "data:%s;base64,%s" % (mime, base64.b64encode(data).decode()),
                           "size": "2K", "response_format": "url", "watermark": False}).encode()
        status, answer = request(env["API_BASE"] + "/images/generations", "POST", body,
                                 {"Authorization": "Bearer " + env["SEEDREAM_API_KEY"],
                                  "Content-Type": "application/json"})
        if status != 200:
            raise RuntimeError("HTTP %d: %r" % (status, answer[:200]))
        doc = json.loads(answer)
        status, image = request(doc["data"][0]["url"])
        if status != 200:
            raise RuntimeError("download HTTP %d" % status)
        write_durably(out, stem + ".jpeg", image)
        side = {"source": name, "output": stem + ".jpeg", "created": doc.get("created"),
                "usage": doc.get("usage")}
        write_durably(out, stem + ".json", json.dumps(side).encode())
    except Exception as e:  # noqa: BLE001 - the harness counts error sidecars
        try:
            write_durably(out, stem + ".error.json", json.dumps({"error": str(e)}).encode())
        except OSError:
            pass
    finally:
        slots.release()


def main():
    hot, out = sys.argv[1], sys.argv[2]
    env = {k: os.environ[k] for k in ("SEEDREAM_API_KEY", "API_BASE", "MODEL", "PROMPT")}
    slots = threading.Semaphore(int(os.environ.get("JOBS", "16")))
    os.makedirs(out, exist_ok=True)
    seen = set()
    sys.stderr.write("watching %s\n" % hot)
    sys.stderr.flush()
    stop = threading.Event()
    import signal  # pylint: disable=import-outside-toplevel
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = []
    while not stop.is_set():
        for entry in sorted(os.scandir(hot), key=lambda e: e.name):
            if entry.name in seen or entry.name.startswith(".") or not entry.name.endswith(EXTS):
                continue
            seen.add(entry.name)
            slots.acquire()
            t = threading.Thread(target=job, args=(entry.path, out, env, slots))
            t.start()
            threads.append(t)
        threads = [t for t in threads if t.is_alive()]
        time.sleep(0.05)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
