#!/usr/bin/env python3
"""seedreamd --check: a valid config exits 0; refused configs exit 1 with
"seedreamd: error: <file>:<line>:<column>: <what>" on stderr pointing at the right line.
Also --version and --help."""

import os
import re
import sys

import harness as h


def base_lines(hot, hot2, state):
    return [
        "api:",                                           # 1
        "  base_url: http://127.0.0.1:9/v1",              # 2
        "  model: doubao-seedream-4-5-251128",            # 3
        "  timeout: 20s",                                 # 4
        "  max_in_flight: 4",                             # 5
        "  response_format: url",                         # 6
        "  retries: 2",                                   # 7
        "defaults:",                                      # 8
        "  size: 2K",                                     # 9
        "  watermark: false",                             # 10
        "  settle: 300ms",                                # 11
        "state_dir: %s" % state,                          # 12
        "folders:",                                       # 13
        "  - path: %s" % hot,                             # 14
        '    prompt: "Make it watercolour"',              # 15
        "  - path: %s" % hot2,                            # 16
        '    prompt: "Make it an oil painting"',          # 17
    ]


def test(ctx):
    c = ctx.checks
    root = os.path.join(ctx.tmp, "check")
    hot, hot2, state = (os.path.join(root, n) for n in ("hot", "hot2", "state"))
    for d in (hot, hot2, state):
        os.makedirs(d)

    def write(name, lines):
        path = os.path.join(root, name)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    base = base_lines(hot, hot2, state)
    valid = write("valid.yaml", base)
    res = ctx.run(["-c", valid, "--check"], timeout=15)
    c.check(res.rc == 0 and not res.timed_out, "--check on a valid config exits 0", res.describe())
    c.check("error" not in res.stderr.lower(), "--check on a valid config prints no error",
            "stderr: %r" % res.stderr[-300:])

    # (name, lines, acceptable line numbers, column or None, what it is)
    cases = []
    lines = base[:6] + ["  bogus_option: 1"] + base[6:]
    cases.append(("unknown-key.yaml", lines, {7}, 3, "unknown key api.bogus_option"))
    lines = base[:16]  # the second folder loses its prompt, and defaults has none
    cases.append(("missing-prompt.yaml", lines, {16}, None, "folder without a prompt"))
    lines = list(base)
    lines[8] = "  size: 3K"
    cases.append(("bad-size.yaml", lines, {9}, None, "size: 3K"))
    lines = list(base)
    lines[15] = "  - path: %s" % hot
    cases.append(("duplicate-path.yaml", lines, {16}, None, "duplicate folder path (2nd entry)"))
    lines = base + ["    output: %s/results" % hot]
    cases.append(("output-inside.yaml", lines, {16, 18}, None,
                  "output inside a watched folder (entry or output: line)"))
    lines = list(base)
    lines[9] = "  watermark: false: true"
    cases.append(("syntax.yaml", lines, {10}, 19, "YAML syntax error 'false: true'"))

    for name, lines, want_lines, want_col, what in cases:
        path = write(name, lines)
        res = ctx.run(["-c", path, "--check"], timeout=15)
        c.check(res.rc == 1 and not res.timed_out, "%s: --check exits 1" % what, res.describe())
        rx = re.compile(r"seedreamd: error: %s:(\d+):(\d+): \S" % re.escape(path))
        m = rx.search(res.stderr)
        if not c.check(m, "%s: stderr has 'seedreamd: error: <file>:<line>:<column>: <what>'" % what,
                       "stderr: %r" % res.stderr[-400:]):
            continue
        line, col = int(m.group(1)), int(m.group(2))
        c.check(line in want_lines, "%s: line %s" % (what, " or ".join(map(str, sorted(want_lines)))),
                "expected %s, found %d (%r)" % (" or ".join(map(str, sorted(want_lines))), line,
                                                  lines[line - 1] if 0 < line <= len(lines) else "past the end"))
        if want_col is not None:
            c.eq(col, want_col, "%s: column %d" % (what, want_col))
        c.eq(res.stdout, "", "%s: nothing on stdout" % what)

    missing = os.path.join(root, "does-not-exist.yaml")
    res = ctx.run(["-c", missing, "--check"], timeout=15)
    c.check(res.rc == 1 and "seedreamd: error: " in res.stderr and missing in res.stderr,
            "--check on a missing file exits 1 with 'seedreamd: error: ...<path>...'", res.describe())

    res = ctx.run(["--version"], timeout=10)
    c.check(res.rc == 0 and re.fullmatch(r"seedreamd \S+\n?", res.stdout),
            "--version prints 'seedreamd <version>' and exits 0", "stdout %r; %s" % (res.stdout, res.describe()))
    res = ctx.run(["--help"], timeout=10)
    c.check(res.rc == 0 and "--once" in res.stdout + res.stderr and "--check" in res.stdout + res.stderr,
            "--help exits 0 and mentions --once and --check", res.describe())


if __name__ == "__main__":
    sys.exit(h.main(test, __doc__))
