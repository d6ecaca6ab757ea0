#!/usr/bin/env python3
"""api.ca_file is read by curl only when a transfer starts, so a typo used to pass --check and
then fail every call (finding 19). Now a ca_file that does not exist, or is not a readable regular
file, is a configuration error naming file:line:column, at --check and at start; an existing one
passes."""

import json
import os
import re

import harness as h


def test(ctx):
    c = ctx.checks
    api = "https://api.example.test/v1"  # never contacted: --check and a refused start only
    _, hot, _, state = ctx.folder("ca")
    pem = os.path.join(ctx.tmp, "ca.pem")
    h.write_bytes(pem, b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    cases = (("missing", os.path.join(ctx.tmp, "no-such-dir", "ca.pem"), "No such file or directory"),
             ("a-directory", ctx.tmp, "not a regular file"))
    for label, path, why in cases:
        cfg = ctx.write_config(os.path.join(ctx.tmp, label + ".yaml"), api=api, state_dir=state,
                               folders=[{"path": hot}], extra_api={"ca_file": json.dumps(path)})
        # write_config puts extra_api keys right after retries: line 8 of the file.
        want = re.compile(r"%s:8:12: api\.ca_file: .*%s" % (re.escape(cfg), re.escape(why)))
        res = ctx.run(["-c", cfg, "--check"], timeout=20)
        c.check(res.rc == 1 and want.search(res.stderr),
                "--check refuses a ca_file that is %s, naming file:line:column" % label.replace("-", " "),
                res.describe())
        res = ctx.run_once(cfg, timeout=20)
        c.check(res.rc != 0 and want.search(res.stderr),
                "the daemon refuses to start with a ca_file that is %s" % label.replace("-", " "), res.describe())
    cfg = ctx.write_config(os.path.join(ctx.tmp, "ok.yaml"), api=api, state_dir=state,
                           folders=[{"path": hot}], extra_api={"ca_file": json.dumps(pem)})
    res = ctx.run(["-c", cfg, "--check"], timeout=20)
    c.eq(res.rc, 0, "--check accepts a readable ca_file (%s)" % res.describe())


if __name__ == "__main__":
    raise SystemExit(h.main(test, __doc__))
