#!/bin/sh
# seedreamd benchmark: builds a Release binary in build-bench/ (unless SEEDREAMD is set), then runs
# bench/bench.py, which prints a Markdown table and writes bench/results.md.
#   ./bench/run.sh            full run (~10 min)
#   ./bench/run.sh --quick    smaller N (~1-2 min); every option: ./bench/run.sh --help
# Needs python3, inotify-tools, curl and jq (apt-get install inotify-tools curl jq).
set -eu
cd "$(dirname "$0")/.."
if [ -z "${SEEDREAMD:-}" ]; then
	cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build-bench -j"$(nproc)" >/dev/null
	SEEDREAMD=build-bench/seedreamd
fi
exec python3 bench/bench.py --binary "$SEEDREAMD" "$@"
