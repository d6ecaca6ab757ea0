#!/bin/sh
# Installs what building and testing seedreamd needs on Debian 12, only if
# something is missing. Runs apt-get as root (or through sudo).
set -eu
PACKAGES="build-essential cmake pkg-config python3 libcurl4-openssl-dev libyaml-dev
libcjson-dev libsystemd-dev libcmocka-dev libssl-dev ca-certificates curl jq inotify-tools systemd dpkg-dev file man-db
clang libclang-rt-14-dev
libvips-dev libvips-tools libheif-examples libimage-exiftool-perl
fuse python3-fusepy
prometheus tmux
${SEEDREAMD_EXTRA_PACKAGES:-}"

missing=""
for p in $PACKAGES; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root for:$missing" >&2; exit 1; }
	SUDO=sudo
fi
echo "install-deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
