#!/bin/sh
# seedreamd's container entrypoint.
#
#   PUID, PGID          the user and group the daemon runs as (default 1000:1000); the user
#                       "seedreamd" in the container is made (or changed) to have these ids, and
#                       /config/state is given to them
#   SEEDREAMD_CONFIG    the configuration (default /config/seedreamd.yaml; set state_dir:
#                       /config/state in it)
#   SEEDREAM_API_KEY    the API key; or
#   SEEDREAM_API_KEY_FILE  a file holding it (e.g. a secret at /run/secrets/...); or a file
#                       /config/api_key. A file is copied, readable by PUID only, to
#                       /run/seedreamd/credentials/api_key and read as the daemon reads a systemd
#                       credential ($CREDENTIALS_DIRECTORY).
#
# Logs go to standard output. The daemon replaces this script (exec), so it gets docker stop's
# SIGTERM itself and finishes transfers in flight before it exits.
# "seedreamd-entrypoint healthcheck" is the HEALTHCHECK: the daemon is PID 1 and not stopped,
# and its configuration is valid. Other arguments are passed to seedreamd.
set -eu
CONFIG=${SEEDREAMD_CONFIG:-/config/seedreamd.yaml}
PUID=${PUID:-1000}
PGID=${PGID:-1000}

if [ "${1:-}" = healthcheck ]; then
	[ "$(cat /proc/1/comm 2>/dev/null)" = seedreamd ] || { echo "seedreamd is not running"; exit 1; }
	st=$(awk '/^State:/ { print $2 }' /proc/1/status)
	case $st in
	T | t | Z) echo "seedreamd is stopped or a zombie (state $st)"; exit 1 ;;
	esac
	exec setpriv --reuid="$PUID" --regid="$PGID" --clear-groups seedreamd --check -c "$CONFIG"
fi

exec 2>&1
case $PUID$PGID in
*[!0-9]*) echo "seedreamd-entrypoint: PUID and PGID must be numbers" ; exit 1 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
	# Started as a user already (docker run --user): no user to change, no key to copy.
	exec seedreamd -c "$CONFIG" "$@"
fi

# The user and group seedreamd, with the ids asked for (-o: the ids may be taken already).
if getent group seedreamd >/dev/null; then
	[ "$(getent group seedreamd | cut -d: -f3)" = "$PGID" ] || groupmod -o -g "$PGID" seedreamd
else
	groupadd -o -g "$PGID" seedreamd
fi
if getent passwd seedreamd >/dev/null; then
	[ "$(id -u seedreamd)" = "$PUID" ] || usermod -o -u "$PUID" seedreamd
	usermod -g "$PGID" seedreamd
else
	useradd -o -u "$PUID" -g "$PGID" -d /config -M -s /usr/sbin/nologin seedreamd
fi

if [ ! -f "$CONFIG" ]; then
	echo "seedreamd-entrypoint: no configuration at $CONFIG: mount a folder at /config with a" \
		"seedreamd.yaml (seedreamd.yaml(5); the commented example is /etc/seedreamd/seedreamd.yaml in" \
		"the image; set state_dir: /config/state)"
	exit 1
fi
mkdir -p /config/state
chown -R "$PUID:$PGID" /config/state
chmod 0700 /config/state

keyfile=${SEEDREAM_API_KEY_FILE:-}
[ -z "$keyfile" ] && [ -z "${SEEDREAM_API_KEY:-}" ] && [ -f /config/api_key ] && keyfile=/config/api_key
if [ -n "$keyfile" ]; then
	install -d -m 0700 -o "$PUID" -g "$PGID" /run/seedreamd/credentials
	install -m 0400 -o "$PUID" -g "$PGID" "$keyfile" /run/seedreamd/credentials/api_key
	export CREDENTIALS_DIRECTORY=/run/seedreamd/credentials
	unset SEEDREAM_API_KEY_FILE
fi

# The control socket (seedreamctl): $RUNTIME_DIRECTORY/control, as under systemd's
# RuntimeDirectory=. `docker exec seedreamd seedreamctl status` runs as root and is let in.
install -d -m 0750 -o "$PUID" -g "$PGID" /run/seedreamd
export RUNTIME_DIRECTORY=/run/seedreamd

export HOME=/config
exec setpriv --reuid="$PUID" --regid="$PGID" --clear-groups seedreamd -c "$CONFIG" "$@"
