#!/bin/sh
# Builds the libFuzzer targets with clang into build-fuzz/ and runs each for
# SECONDS on a temporary copy of its seed corpus (so new inputs never land in
# the repo). Fails on the first crash, leak or sanitizer report; the reproducer
# is kept in build-fuzz/artifacts/.
#
# usage: tests/fuzz/run.sh SECONDS [TARGET...]    (targets: config api image sidecar journal control)
set -eu

if [ $# -lt 1 ] || ! [ "$1" -gt 0 ] 2>/dev/null; then
	echo "usage: $0 SECONDS [config|api|image|sidecar|journal|control]..." >&2
	exit 2
fi
seconds=$1
shift
[ $# -gt 0 ] || set -- config api image sidecar journal control

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
cc=${FUZZ_CC:-clang}

targets=
for t in "$@"; do
	case $t in
	config | api | image | sidecar | journal | control) targets="$targets fuzz_$t" ;;
	*)
		echo "$0: unknown target '$t'" >&2
		exit 2
		;;
	esac
done

cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER="$cc" -DSEEDREAMD_FUZZ=ON \
	-DSEEDREAMD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
# shellcheck disable=SC2086 # one word per target
cmake --build "$build" -j"$(nproc)" --target $targets

work=$(mktemp -d "${TMPDIR:-/tmp}/seedreamd-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
mkdir -p "$build/artifacts"

for t in "$@"; do
	cp -R "$root/tests/fuzz/corpus/$t" "$work/$t"
	echo "== fuzz_$t: ${seconds}s" >&2
	"$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
		-max_len=65536 -print_final_stats=1 -artifact_prefix="$build/artifacts/fuzz_$t-" \
		"$work/$t"
done
