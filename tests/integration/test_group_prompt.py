#!/usr/bin/env python3
"""Groups and per-file prompts (issue 13): with group: subfolder and prompt_file, a group's prompt
file is prompt.txt inside its subfolder. The stand-in receives the folder's prompt and the file's
(append) or the file's alone (replace); prompt.txt is never sent as an image; a group without one
gets the folder's prompt; a marker file is never read as a prompt (and --check refuses a marker
named prompt.txt at its file:line:column); prompt_file: required leaves a group without its
prompt.txt unsent."""

import os
import re
import sys

import harness as h

FOLDER_PROMPT = "Make a catalogue sheet"


def write_group(d, n, seed):
    os.makedirs(d)
    for i in range(n):
        h.write_bytes(os.path.join(d, "i%d.png" % i), h.png_image(20 + i, 20, seed + i))


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root = os.path.join(ctx.tmp, "gp")
    hot_a, hot_r, hot_q, state = (os.path.join(root, n) for n in ("append", "replace", "required", "state"))
    for d in (hot_a, hot_r, hot_q, state):
        os.makedirs(d)
    write_group(os.path.join(hot_a, "g1"), 2, 100)
    h.write_bytes(os.path.join(hot_a, "g1", "prompt.txt"), b"with a red hat\n")
    write_group(os.path.join(hot_a, "g2"), 2, 200)  # no prompt.txt: the folder's prompt
    write_group(os.path.join(hot_r, "g3"), 3, 300)
    h.write_bytes(os.path.join(hot_r, "g3", "prompt.txt"), b"Only the file's words\n")
    h.write_bytes(os.path.join(hot_r, "g3", "_READY.txt"), b"a marker, never a prompt\n")
    write_group(os.path.join(hot_q, "g4"), 2, 400)  # required, no prompt.txt: not sent
    config = ctx.write_config(
        os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
        folders=[{"path": hot_a, "prompt": FOLDER_PROMPT, "group": "subfolder", "prompt_file": "append"},
                 {"path": hot_r, "prompt": FOLDER_PROMPT, "group": "subfolder", "prompt_file": "replace",
                  "group_ready": "marker", "group_marker": "_READY.txt"},
                 {"path": hot_q, "prompt": FOLDER_PROMPT, "group": "subfolder", "prompt_file": "required"}])
    res = ctx.run_once(config, timeout=60)
    c.check(not res.timed_out and res.rc in (0, 1), "--once ends", res.describe())
    gens = api.generations()
    c.eq(len(api.rejected()), 0, "the API refused no request")
    by_first = {r.get("image_sha256"): r for r in gens}

    def sent(folder, group):
        return by_first.get(h.sha256_file(os.path.join(folder, group, "i0.png")))

    expect = (("g1", hot_a, 2, FOLDER_PROMPT + "\nwith a red hat", "folder+file", "g1/prompt.txt"),
              ("g2", hot_a, 2, FOLDER_PROMPT, "folder", None),
              ("g3", hot_r, 3, "Only the file's words", "file", "g3/prompt.txt"))
    for group, folder, n, prompt, source, pfile in expect:
        rec = sent(folder, group)
        if not c.check(rec is not None, "%s was sent" % group, repr([r.get("fields") for r in gens])):
            continue
        c.eq(rec["fields"].get("prompt"), prompt, "%s: the stand-in received the prompt" % group)
        c.eq(len(rec.get("images") or []), n, "%s: only its %d images were sent (prompt.txt never)" % (group, n))
        sc_path = os.path.join(folder + "-out", group + ".json")
        if c.check(os.path.exists(sc_path), "%s.json written" % group):
            sc = h.read_json(sc_path)
            c.eq(sc.get("prompt"), prompt, "%s.json: prompt" % group)
            c.eq(sc.get("prompt_source"), source, "%s.json: prompt_source" % group)
            c.eq(sc.get("prompt_file"), pfile, "%s.json: prompt_file" % group)
            c.eq([s.get("name") for s in sc.get("sources") or []], ["i%d.png" % i for i in range(n)],
                 "%s.json: sources are the images only" % group)
    c.check(sent(hot_q, "g4") is None, "required: g4 without prompt.txt is not sent")
    c.eq(len(gens), 3, "three calls in all")

    # --check: a marker named like the prompt file
    bad = os.path.join(root, "bad.yaml")
    with open(bad, "w", encoding="utf-8") as fh:
        fh.write("\n".join(["api:", "  base_url: http://127.0.0.1:9/v1", "  model: %s" % h.MODEL,
                            "state_dir: %s" % state, "folders:", "  - path: %s" % hot_a,
                            "    prompt: \"x\"", "    group: subfolder", "    prompt_file: replace",
                            "    group_ready: marker", "    group_marker: prompt.txt"]) + "\n")
    res = ctx.run(["-c", bad, "--check"], timeout=15)
    c.eq(res.rc, 1, "--check refuses group_marker: prompt.txt with prompt_file")
    c.check(re.search(r"seedreamd: error: %s:11:19: group_marker: prompt.txt is the prompt file"
                      % re.escape(bad), res.stderr), "the refusal gives file:line:column", res.stderr[-300:])


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
