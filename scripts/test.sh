#!/bin/sh
# Installs the build dependencies, builds with -Werror and runs the whole suite
# through ctest; then again under AddressSanitizer + UndefinedBehaviorSanitizer
# (leak detection on); then under ThreadSanitizer; then each fuzz target for FUZZ_SECONDS (default 60);
# the record parsers (sidecar, journal) for FUZZ_RECORD_SECONDS (default 30);
# then the Debian package checks, then the live tests (tests/live: the package under systemd in
# systemd-nspawn, and the container image with podman). This is the README's test command and what
# .ci/run calls. QUICK=1 runs only the first build and ctest.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
BUILD=${BUILD_DIR:-build}
cmake -S . -B "$BUILD" -DSEEDREAMD_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$BUILD" -j"$(nproc)"
ctest --test-dir "$BUILD" --output-on-failure -j2
[ "${QUICK:-0}" = 1 ] && exit 0

# The same suite, daemon included, under the sanitizers: any report fails it.
ASAN_BUILD=${ASAN_BUILD_DIR:-build-asan}
cmake -S . -B "$ASAN_BUILD" -DSEEDREAMD_WERROR=ON -DSEEDREAMD_SANITIZE=ON \
	-DCMAKE_BUILD_TYPE=Debug
cmake --build "$ASAN_BUILD" -j"$(nproc)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ctest --test-dir "$ASAN_BUILD" --output-on-failure -j2

# The same suite under ThreadSanitizer: the daemon's threads must share nothing by accident; any
# report fails it (halt_on_error, exit status 66). ignore_noninstrumented_modules: libvips, GLib
# and the codecs are not built with TSan, so their locks are invisible to it and every buffer they
# copy between the libvips worker threads would be reported; accesses by seedreamd's own code
# are all still checked. Left out: the tests labelled `timing` (test_slow_storage compares rates,
# which TSan's slowdown of the daemon makes meaningless).
TSAN_BUILD=${TSAN_BUILD_DIR:-build-tsan}
cmake -S . -B "$TSAN_BUILD" -DSEEDREAMD_WERROR=ON -DSEEDREAMD_TSAN=ON -DCMAKE_BUILD_TYPE=Debug
cmake --build "$TSAN_BUILD" -j"$(nproc)"
TSAN_OPTIONS=halt_on_error=1:exitcode=66:second_deadlock_stack=1:ignore_noninstrumented_modules=1 \
	ctest --test-dir "$TSAN_BUILD" --output-on-failure -j2 -LE timing

# Bounded fuzzing of the parsers fed by strangers: config, API answers, images;
# and the records anyone who can write a folder can plant: sidecars, journal.
./tests/fuzz/run.sh "${FUZZ_SECONDS:-60}" config api image
./tests/fuzz/run.sh "${FUZZ_RECORD_SECONDS:-30}" sidecar journal
# and what a client allowed on the control socket may send.
./tests/fuzz/run.sh "${FUZZ_RECORD_SECONDS:-30}" control
# The Debian package: build, systemd-analyze, dpkg -i, run, purge. dpkg needs root.
if [ "$(id -u)" -eq 0 ]; then
	BUILD_DIR="$BUILD" ./scripts/package.sh
else
	echo "test.sh: not root: skipping scripts/package.sh (the .deb checks)" >&2
fi

# Live: that .deb under a real systemd (a Debian 12 booted in systemd-nspawn), then in the
# container image (podman). Root only; the root file systems are cached in
# /var/cache/seedreamd-test (SEEDREAMD_TEST_CACHE). SEEDREAMD_LIVE=0 skips them.
if [ "$(id -u)" -eq 0 ] && [ "${SEEDREAMD_LIVE:-1}" != 0 ]; then
	SEEDREAMD_EXTRA_PACKAGES="systemd-container debootstrap podman runc" ./scripts/install-deps.sh
	# shellcheck disable=SC2012  # package.sh's own output
	DEB=$(ls -t "$BUILD"/seedreamd_*.deb | head -n 1)
	SEEDREAMD_LIVE_REQUIRED=1 ./tests/live/systemd_nspawn.sh "$DEB"
	SEEDREAMD_LIVE_REQUIRED=1 ./tests/live/container_podman.sh "$DEB"
else
	echo "test.sh: not root or SEEDREAMD_LIVE=0: skipping tests/live (systemd-nspawn, podman)" >&2
fi
