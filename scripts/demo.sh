#!/bin/sh
# The README's demo: installs what is missing, builds seedreamd, starts the local stand-in of the
# Seedream API (tests/fake_api.py) on a free loopback port, and runs the daemon once over the sample
# images in demo-run/hot/. Results land in demo-run/hot-out/. No network, no real API key.
# Exits non-zero if the build or the daemon fails.
set -eu
cd "$(dirname "$0")/.."
REPO=$(pwd)
DEMO="$REPO/demo-run"
KEY="demo-key-not-a-secret"

./scripts/install-deps.sh
cmake -S . -B build
cmake --build build -j"$(nproc)"

rm -rf "$DEMO"
mkdir -p "$DEMO/hot" "$DEMO/state"
cp tests/data/samples/* "$DEMO/hot/"

API_PID=""
stop_api() {
	if [ -n "$API_PID" ]; then
		kill "$API_PID" 2>/dev/null || true
		wait "$API_PID" 2>/dev/null || true
		API_PID=""
	fi
}
trap stop_api EXIT
trap 'exit 130' INT TERM

python3 tests/fake_api.py --port 0 --key "$KEY" --latency-ms 200 --max-seconds 900 \
	--state-file "$DEMO/api-requests.jsonl" >"$DEMO/api.port" 2>"$DEMO/api.log" &
API_PID=$!
tries=0
until grep -q '^PORT ' "$DEMO/api.port" 2>/dev/null; do
	tries=$((tries + 1))
	if [ "$tries" -gt 100 ] || ! kill -0 "$API_PID" 2>/dev/null; then
		echo "demo: the stand-in API did not start; its log:" >&2
		cat "$DEMO/api.log" >&2
		exit 1
	fi
	sleep 0.1
done
PORT=$(sed -n 's/^PORT //p' "$DEMO/api.port")
echo "demo: stand-in API listening on 127.0.0.1:$PORT"

cat >"$DEMO/seedreamd.yaml" <<EOF
# Written by scripts/demo.sh: the daemon against the local stand-in API.
api:
  base_url: http://127.0.0.1:$PORT/v1
  model: doubao-seedream-4-5-251128
  timeout: 30s
  max_in_flight: 4
  response_format: url
  retries: 2
defaults:
  size: 2K
  watermark: false
  settle: 300ms
state_dir: "$DEMO/state"
folders:
  - path: "$DEMO/hot"
    prompt: "Turn this into a soft watercolour painting"
EOF

echo "demo: build/seedreamd -c demo-run/seedreamd.yaml --once"
set +e
SEEDREAM_API_KEY="$KEY" build/seedreamd -c "$DEMO/seedreamd.yaml" --once
rc=$?
set -e
stop_api

OUT="$DEMO/hot-out"
n_in=0
for f in "$DEMO/hot"/*; do [ -e "$f" ] && n_in=$((n_in + 1)); done
echo
echo "demo: seedreamd exited with status $rc"
echo "demo: inputs in  demo-run/hot/ ($n_in files)"
echo "demo: results in demo-run/hot-out/:"
ls -l "$OUT" 2>/dev/null || echo "  (no output folder)"
sidecar=""
errors=""
for f in "$OUT"/*.json; do
	[ -e "$f" ] || continue
	case "$f" in
	*.error.json) errors="$errors  $(basename "$f")
" ;;
	*) [ -n "$sidecar" ] || sidecar=$f ;;
	esac
done
if [ -n "$sidecar" ]; then
	echo
	echo "demo: one sidecar, demo-run/hot-out/$(basename "$sidecar"):"
	if command -v jq >/dev/null 2>&1; then
		jq . "$sidecar"
	else
		python3 -m json.tool "$sidecar"
	fi
fi
if [ -n "$errors" ]; then
	echo
	echo "demo: failures (each has an .error.json):"
	printf '%s' "$errors"
fi
gens=$(grep -c '"kind": "generation"' "$DEMO/api-requests.jsonl" 2>/dev/null || true)
dls=$(grep -c '"kind": "download"' "$DEMO/api-requests.jsonl" 2>/dev/null || true)
echo
echo "demo: the stand-in API saw ${gens:-0} generation calls and ${dls:-0} downloads (log: demo-run/api-requests.jsonl)"
if [ "$rc" -ne 0 ]; then
	echo "demo: FAILED (seedreamd exit status $rc)" >&2
fi
exit "$rc"
