#!/usr/bin/env python3
"""Issue 9.15: raw invalid UTF-8 from the server (in a message, a code, model, size, usage values
and member names) never makes a file the daemon writes invalid: every .json in the output folder
and every record in the journal (state_dir/journal.log) decodes as strict UTF-8 and parses as JSON; bad bytes become U+FFFD. A source
name that is not UTF-8 is kept exactly (as hex) in the journal as in sidecars."""

import base64
import json
import os
import sys
import time

import harness as h

BAD = b"\xff\xfe\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80\xe2\x82"  # stray, overlong, surrogate, > U+10FFFF, cut


def raw_json_body(parts):
    """JSON text with BAD spliced in raw wherever a part is None."""
    return base64.b64encode(b"".join(BAD if p is None else p.encode() for p in parts)).decode()


def json_files(folder):
    for root, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".json") and not name.startswith("."):
                yield os.path.join(root, name)


def test(ctx):
    c = ctx.checks
    api = ctx.start_hostile_api(name="utf8")
    b64_image = base64.b64encode(h.sample("rings.png")).decode()
    ok = {"status": 200, "body_b64": raw_json_body([
        '{"model":"m-', None, '","created":1700000000,"data":[{"b64_json":"', b64_image,
        '","size":"', None, '"}],"usage":{"generated_images":1,"note":"', None, '","',
        None, '":{"deep":["', None, '"]}}}'])}
    fail = {"status": 400, "body_b64": raw_json_body([
        '{"error":{"code":"InvalidParameter', None, '","message":"bad ', None, ' bytes"}}'])}
    slow = {"status": 200, "body_b64": raw_json_body([
        '{"model":"', None, '","created":1700000000,"data":[{"url":"http://127.0.0.1:%d/slow.png",'
        % api.port, '"size":"', None, '"}],"usage":{"generated_images":1,"', None, '":"', None,
        '"}}'])}
    api.set_script({"generation": [ok, fail, slow],
                    "routes": {"/slow.png": {"delay_ms": 60000, "status": 500}}})
    root, hot, out, state = ctx.folder("utf8")
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot}], retries=0, max_in_flight=1,
                              response_format="b64_json")
    h.write_bytes(os.path.join(hot, "bubbles.png"), h.sample("bubbles.png"))
    h.write_bytes(os.path.join(hot, "rings.png"), h.sample("rings.png"))
    h.write_bytes(os.path.join(hot.encode(), b"\xff-truchet.png"), h.sample("truchet.png"))

    d = ctx.start_daemon(config, name="utf8-daemon")
    def journal_writes():
        return [payload for kind, payload in h.journal_lines(state) if kind == "W"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and d.proc.poll() is None:
        names = h.listing(out)
        if (any(n.endswith(".error.json") for n in names)
                and any(n.endswith(".json") and not n.endswith(".error.json") for n in names)
                and journal_writes()):
            break
        time.sleep(0.1)
    files = list(json_files(out))
    texts_raw = [h.read_bytes(p) for p in files]
    records = journal_writes()
    c.eq(len(api.generations(valid_only=False)), 3, "three generation calls")
    c.eq((len(files), len(records)), (2, 1),
         "a success sidecar, an error sidecar and a journal record (the slow download) exist")
    c.eq([kind for kind, _ in h.journal_lines(state) if kind == "?"], [],
         "every journal line has its frame and checksum")
    bad = []
    for name, data in list(zip(files, texts_raw)) + [("journal.log record", r) for r in records]:
        try:
            json.loads(data.decode("utf-8", "strict"))
        except ValueError as e:
            bad.append("%s: %s" % (os.path.relpath(name, ctx.tmp) if name.startswith("/") else name, e))
    c.problems(bad, "every sidecar, error sidecar and journal record is strict UTF-8 JSON")
    texts = [data.decode("utf-8", "replace") for data in texts_raw + records]
    c.check(all("\ufffd" in t for t in texts), "the bad bytes are kept as U+FFFD in each file")
    sources = {b"\xff-truchet.png", b"bubbles.png", b"rings.png"}
    for data in records:
        rec = json.loads(data.decode("utf-8", "replace"))
        exact = (bytes.fromhex(rec["source_hex"]) if "source_hex" in rec
                 else rec.get("source", "").encode())
        c.check(exact in sources, "the journal keeps the exact source name", repr(rec)[:200])
    d.terminate()


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
