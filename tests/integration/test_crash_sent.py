#!/usr/bin/env python3
"""A paid result recovered from the journal after SIGKILL says what was paid for (issue 13): the
download stalls, the daemon is killed, then the prompt file, the folder's prompt, the reference's
bytes and the extra: fields all change before the restart. The sidecar written by the restart must
record the prompt, prompt_source, prompt_file, references (path + sha256) and extra the stand-in
received, and the output's XMP the sha256 of the prompt sent, never what the folder holds now."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import harness as h

FOLDER_PROMPT = "Folder prompt before the crash"
FILE_PROMPT = "with a red hat"


def xmp_prompt_sha(path):
    try:
        out = subprocess.run(["exiftool", "-json", "-G1", "-XMP:all", path], capture_output=True,
                             timeout=30, check=False)
        return (json.loads(out.stdout or b"[{}]")[0] or {}).get("XMP-seedreamd:PromptSHA256")
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("sent")
    refdir = os.path.join(root, "refs")
    os.makedirs(refdir)
    style = os.path.join(refdir, "style.png")
    h.write_bytes(style, h.png_image(40, 30, 7))
    src = os.path.join(hot, "in.png")
    h.write_bytes(src, h.png_image(48, 40, 11))
    h.write_bytes(os.path.join(hot, "in.txt"), (FILE_PROMPT + "\n").encode("utf-8"))
    config = os.path.join(root, "seedreamd.yaml")

    def write(prompt, seed):
        ctx.write_config(config, api=api, state_dir=state,
                         folders=[{"path": hot, "prompt": prompt, "prompt_file": "append",
                                   "references": [style], "extra": {"seed": seed}}])

    write(FOLDER_PROMPT, 7)
    api.add_faults(["slowdl:ms=5000"], replace=True)
    d = ctx.start_daemon(config, name="daemon-sent")
    cue = h.wait_until(lambda: any(r.get("stalled") for r in api.downloads()), 15)
    time.sleep(0.3)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(5)
    c.require(cue, "the download started and stalls when the daemon is killed",
              "downloads %s" % api.downloads())
    gens = api.generations()
    c.require(len(gens) == 1, "one generation before the kill", repr(gens))
    sent = gens[0]
    sent_prompt = sent["fields"].get("prompt")
    c.eq(sent_prompt, FOLDER_PROMPT + "\n" + FILE_PROMPT, "the stand-in received folder + file prompt")
    recs = h.journal_records(state)
    c.check(len(recs) == 1 and recs[0].get("prompt") == sent_prompt,
            "the journal record holds the prompt sent", str(recs)[:600])
    c.check(not os.path.exists(os.path.join(out, "in.json")), "no sidecar at the kill")

    # Everything the sidecar could be taken from changes before the restart.
    h.write_bytes(os.path.join(hot, "in.txt"), b"a prompt written after the payment\n")
    h.write_bytes(style, h.png_image(44, 30, 8))
    write("Another folder prompt", 8)
    res = ctx.run_once(config, name="sent-restart", timeout=60)
    c.check(res.rc == 0 and not res.timed_out, "the restart with --once exits 0", res.describe())
    gens = api.generations()
    c.eq(len(gens), 1, "the restart did not generate again")
    sc_path = os.path.join(out, "in.json")
    if not c.check(os.path.exists(sc_path), "in.json written by the restart", repr(h.listing(out))):
        return
    sc = h.read_json(sc_path)
    c.eq(sc.get("prompt"), sent_prompt, "in.json: the prompt sent, not the one on disk now")
    c.eq(sc.get("prompt_source"), "folder+file", "in.json: prompt_source of the prompt sent")
    c.eq(sc.get("prompt_file"), "in.txt", "in.json: prompt_file")
    images = sent.get("images") or []
    c.eq(sc.get("references"),
         [{"path": style, "sha256": images[1].get("sha256") if len(images) > 1 else None}],
         "in.json: the reference with the sha256 of the bytes the stand-in received")
    c.eq(sc.get("extra"), {"seed": 7}, "in.json: the extra fields sent")
    c.eq(sent["fields"].get("seed"), 7, "the stand-in received seed 7")
    c.eq(xmp_prompt_sha(os.path.join(out, "in.jpeg")),
         hashlib.sha256(sent_prompt.encode("utf-8")).hexdigest(),
         "in.jpeg's XMP hashes the prompt sent")
    c.eq(h.journal_records(state), [], "the journal holds no live record afterwards")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
