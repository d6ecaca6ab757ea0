#!/usr/bin/env python3
"""extra: request fields sent as they are (issue 13 item 6): the stand-in records each body and the
fields arrive exactly (folder keys over defaults, YAML scalars typed, quoted strings kept strings);
--check refuses fields seedreamd sets and bad values of every key of issue 13 items 1, 5 and 6
with file:line:column."""

import json
import os
import re
import sys

import harness as h

DEFAULTS_SENT = {"optimize_prompt_options": {"mode": "standard"}, "user": "studio-7"}


def test(ctx):
    c = ctx.checks
    api = ctx.start_api()
    root, hot, out, state = ctx.folder("extra")
    hot_b = hot + "-b"
    os.makedirs(hot_b)
    config = os.path.join(root, "seedreamd.yaml")
    ctx.write_config(config, api=api, state_dir=state, folders=[{"path": hot}, {"path": hot_b}])
    text = open(config, encoding="utf-8").read()
    # defaults give two fields; folder a overrides one and adds typed values
    text = text.replace("defaults:\n", "defaults:\n  extra:\n    optimize_prompt_options: {mode: standard}\n"
                        "    user: studio-7\n", 1)
    text = text.replace("  - path: %s\n" % json.dumps(hot),
                        "  - path: %s\n    extra:\n      optimize_prompt_options:\n        mode: fast\n"
                        "      flags: [true, 'true', 3, 2.5, null, \"007\", plain text]\n" % json.dumps(hot), 1)
    with open(config, "w", encoding="utf-8") as f:
        f.write(text)
    h.write_bytes(os.path.join(hot, "a.png"), h.png_image(40, 30, 1))
    h.write_bytes(os.path.join(hot_b, "b.png"), h.png_image(40, 30, 2))
    res = ctx.run_once(config)
    c.check(res.rc == 0 and not res.timed_out, "--once exits 0", res.describe())
    gens = {r.get("image_sha256"): r for r in api.generations()}
    c.eq(len(gens), 2, "two generation calls")
    a = gens.get(h.sha256_bytes(h.png_image(40, 30, 1)), {})
    b = gens.get(h.sha256_bytes(h.png_image(40, 30, 2)), {})
    fa, fb = a.get("fields") or {}, b.get("fields") or {}
    c.eq(fa.get("optimize_prompt_options"), {"mode": "fast"}, "a: the folder's extra over defaults'")
    c.eq(fa.get("user"), "studio-7", "a: the defaults' other field is kept")
    c.eq(fa.get("flags"), [True, "true", 3, 2.5, None, "007", "plain text"],
         "a: YAML scalars typed (quoted ones stay strings)")
    c.eq(fb.get("optimize_prompt_options"), {"mode": "standard"}, "b: the defaults' extra")
    c.eq(fb.get("user"), "studio-7", "b: the defaults' extra, a string")
    c.check("flags" not in fb, "b: no field of another folder")
    c.eq(fa.get("prompt"), h.PROMPT, "a: the prompt is seedreamd's")
    c.eq(fa.get("watermark"), False, "a: watermark is seedreamd's")
    c.eq((a.get("field_order") or [])[:3], ["model", "prompt", "image"], "a: the usual fields come first")
    sa = h.read_json(os.path.join(out, "a.json"))
    c.eq(sa.get("extra"), {"optimize_prompt_options": {"mode": "fast"}, "user": "studio-7",
                           "flags": [True, "true", 3, 2.5, None, "007", "plain text"]},
         "a.json records the extra fields sent")
    c.eq(h.read_json(os.path.join(hot_b + "-out", "b.json")).get("extra"), DEFAULTS_SENT,
         "b.json records the defaults' extra")

    # the same image again under another name, with the same extra: reused, no call; after the
    # folder's extra changes, a copy is generated anew (the fields are part of "the same settings")
    h.write_bytes(os.path.join(hot, "a-copy.png"), h.png_image(40, 30, 1))
    res = ctx.run_once(config)
    c.check(res.rc == 0 and not res.timed_out, "second --once exits 0", res.describe())
    c.eq(len(api.generations()), 2, "a copy with the same extra reuses the result")
    with open(config, encoding="utf-8") as f:
        text = f.read()
    with open(config, "w", encoding="utf-8") as f:
        f.write(text.replace("mode: fast", "mode: standard", 1))
    h.write_bytes(os.path.join(hot, "a-copy2.png"), h.png_image(40, 30, 1))
    res = ctx.run_once(config)
    c.check(res.rc == 0 and not res.timed_out, "third --once exits 0", res.describe())
    c.eq(len(api.generations()), 3, "a copy with another extra is generated anew")

    # --check refusals with file:line:column, one per bad value
    bad = [
        ("extra: {prompt: other}", "extra", r':\d+:\d+: extra: field "prompt"'),
        ("extra: {image: x}", "extra", r':\d+:\d+: extra: field "image"'),
        ("extra: {model: x}", "extra", r':\d+:\d+: extra: field "model"'),
        ("extra: {size: 4K}", "extra", r':\d+:\d+: extra: field "size"'),
        ("extra: {response_format: url}", "extra", r':\d+:\d+: extra: field "response_format"'),
        ("extra: {stream: true}", "extra", r':\d+:\d+: extra: field "stream"'),
        ("extra: {max_images: 2}", "extra", r':\d+:\d+: extra: field "max_images"'),
        ("extra: [1, 2]", "extra", r':\d+:\d+: extra: expected a mapping'),
        ("extra: {seed: 99999999999999999999}", "extra", r':\d+:\d+: extra: the number'),
        ("prompt_file: sometimes", "prompt_file", r':\d+:\d+: prompt_file: unknown value'),
        ("embed_provenance: maybe", "embed_provenance", r':\d+:\d+: embed_provenance: expected a boolean'),
        ("embed_prompt: 2", "embed_prompt", r':\d+:\d+: embed_prompt: expected a boolean'),
    ]
    for i, (line, key, pattern) in enumerate(bad):
        path = os.path.join(root, "bad%02d.yaml" % i)
        ctx.write_config(path, api=api, state_dir=state, folders=[{"path": hot}])
        text = open(path, encoding="utf-8").read().rstrip("\n") + "\n    %s\n" % line
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        want_line = text.count("\n")
        res = ctx.run(["-c", path, "--check"], timeout=15)
        err = res.stderr if isinstance(res.stderr, str) else (res.stderr or b"").decode("utf-8", "replace")
        m = re.search(re.escape(path) + r":(\d+):(\d+): ", err)
        c.check(res.rc == 1 and m is not None and re.search(pattern, err) is not None and
                int(m.group(1)) == want_line,
                "--check refuses %r at %s:%d:column" % (line, os.path.basename(path), want_line),
                err.strip()[:300])


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
