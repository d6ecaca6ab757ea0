#!/usr/bin/env python3
"""Per-file prompts (issue 13 item 1): prompt_file replace / append / required. The prompt sent and
recorded, prompt_source and prompt_file in the sidecar, refusals of a too large or non-UTF-8 prompt
file without an API call, an image that waits for its prompt file (and one that times out), .txt
files never inputs, and a prompt file changed after the image is done does not reprocess it."""

import os
import sys
import time

import harness as h

FOLDER_PROMPT = "Turn it into a watercolour"


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("pf")
    hot_a, hot_q, hot_t = hot + "-append", hot + "-required", hot + "-timeout"
    for d in (hot_a, hot_q, hot_t):
        os.makedirs(d)
    config = ctx.write_config(os.path.join(root, "seedreamd.yaml"), api=api, state_dir=state,
                              folders=[{"path": hot, "prompt": FOLDER_PROMPT, "prompt_file": "replace"},
                                       {"path": hot_a, "prompt": FOLDER_PROMPT, "prompt_file": "append"},
                                       {"path": hot_q, "prompt": FOLDER_PROMPT, "prompt_file": "required",
                                        "incomplete_timeout": "60s"},
                                       {"path": hot_t, "prompt": FOLDER_PROMPT, "prompt_file": "required",
                                        "incomplete_timeout": "3s"}])
    # replace: a.txt (with a BOM and a trailing newline), b without one, two bad ones
    h.write_bytes(os.path.join(hot, "a.png"), h.png_image(40, 30, 1))
    h.write_bytes(os.path.join(hot, "a.txt"), "\ufeffMake \"a\" <blue> & gold\n".encode("utf-8"))
    h.write_bytes(os.path.join(hot, "b.png"), h.png_image(40, 30, 2))
    h.write_bytes(os.path.join(hot, "big.png"), h.png_image(40, 30, 3))
    h.write_bytes(os.path.join(hot, "big.txt"), b"x" * 8193)
    h.write_bytes(os.path.join(hot, "bad.png"), h.png_image(40, 30, 4))
    h.write_bytes(os.path.join(hot, "bad.txt"), b"caf\xe9 latte\n")
    h.write_bytes(os.path.join(hot, "notes.txt"), b"no image of this name\n")
    # append
    h.write_bytes(os.path.join(hot_a, "c.png"), h.png_image(40, 30, 5))
    h.write_bytes(os.path.join(hot_a, "c.txt"), b"with a red hat\n")
    # required: w waits for its file, t times out without one
    h.write_bytes(os.path.join(hot_q, "w.png"), h.png_image(40, 30, 6))
    h.write_bytes(os.path.join(hot_t, "t.png"), h.png_image(40, 30, 7))

    d = ctx.start_daemon(config)
    try:
        ok = h.wait_until(lambda: os.path.exists(os.path.join(hot + "-out", "b.json")) and
                          os.path.exists(os.path.join(hot_a + "-out", "c.json")) and
                          os.path.exists(os.path.join(hot_t + "-out", "t.error.json")), 30)
        c.check(ok, "the ready images are done and the one without its required file timed out")
        sent = {r.get("image_sha256"): r for r in api.generations()}
        w_sha = h.sha256_bytes(h.png_image(40, 30, 6))
        c.check(w_sha not in sent, "required: w.png is not sent before w.txt exists")
        time.sleep(1.0)
        h.write_bytes(os.path.join(hot_q, "w.txt"), b"a prompt written after the image\n")
        ok = h.wait_until(lambda: os.path.exists(os.path.join(hot_q + "-out", "w.json")), 20)
        c.check(ok, "required: w.png is sent once w.txt appears")
    finally:
        d.terminate()

    gens = {r.get("image_sha256"): r for r in api.generations()}
    c.eq(len(api.generations()), 4, "4 generation calls (a, b, c, w); no call for the refused ones")

    def check_done(folder, stem, idx, prompt, source, pfile):
        rec = gens.get(h.sha256_bytes(h.png_image(40, 30, idx)), {})
        c.eq(rec.get("prompt"), prompt, "%s: the prompt sent" % stem)
        sc = h.read_json(os.path.join(folder + "-out", stem + ".json")) if os.path.exists(
            os.path.join(folder + "-out", stem + ".json")) else {}
        c.eq(sc.get("prompt"), prompt, "%s: the sidecar's prompt" % stem)
        c.eq(sc.get("prompt_source"), source, "%s: prompt_source %s" % (stem, source))
        c.eq(sc.get("prompt_file"), pfile, "%s: prompt_file" % stem)

    check_done(hot, "a", 1, 'Make "a" <blue> & gold', "file", "a.txt")
    check_done(hot, "b", 2, FOLDER_PROMPT, "folder", None)
    check_done(hot_a, "c", 5, FOLDER_PROMPT + "\nwith a red hat", "folder+file", "c.txt")
    check_done(hot_q, "w", 6, "a prompt written after the image", "file", "w.txt")

    for folder, stem, code in ((hot, "big", "LocalValidation.PromptFile.TooLarge"),
                               (hot, "bad", "LocalValidation.PromptFile.NotUTF8"),
                               (hot_t, "t", "LocalValidation.PromptFile.Missing")):
        p = os.path.join(folder + "-out", stem + ".error.json")
        sc = h.read_json(p) if os.path.exists(p) else {}
        c.eq((sc.get("error") or {}).get("code"), code, "%s: .error.json %s" % (stem, code))
        c.eq(sc.get("attempts"), 0, "%s: no API call" % stem)
    outs = os.listdir(hot + "-out")
    c.check(not any(n.startswith("notes") for n in outs), ".txt files are never inputs", repr(outs))

    # a prompt file changed after its image is done: nothing is sent again
    h.write_bytes(os.path.join(hot, "a.txt"), b"another prompt entirely\n")
    old = os.stat(os.path.join(hot, "a.txt"))
    os.utime(os.path.join(hot, "a.txt"), (old.st_atime - 60, old.st_mtime - 60))
    res = ctx.run_once(config)
    c.check(res.rc == 0 and not res.timed_out, "--once after the change exits 0", res.describe())
    c.eq(len(api.generations()), 4, "a changed prompt file does not reprocess a done image")
    c.eq(h.read_json(os.path.join(hot + "-out", "a.json")).get("prompt"), 'Make "a" <blue> & gold',
         "a.json still holds the prompt it was made with")


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
