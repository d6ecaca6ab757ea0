#!/usr/bin/env bash
# The baseline seedreamd is measured against: the hot-folder script a competent shell user would
# write with Debian's inotify-tools, curl and jq.
#
#   SEEDREAM_API_KEY=... API_BASE=http://127.0.0.1:PORT/v1 bench/baseline.sh HOT [OUT]
#
# Design (deliberately the ordinary way, not a strawman):
#   - `inotifywait -m -e close_write,moved_to` prints each finished or renamed-in file;
#   - `xargs -P 16` runs up to 16 files at once, one `bash -c process FILE` per file;
#   - per file: `base64 -w0 | jq -Rs` builds the request JSON (streamed through a pipe, so a 5.7 MB
#     image does not hit the argument-length limit), `curl --data-binary @-` posts it,
#     `jq -r` takes data[0].url, a second curl downloads the result to a temporary name and `mv`
#     puts it in place, and a last `jq` writes the sidecar (source, size, mtime, output, model,
#     prompt, result size, created, usage, completed_at) to a temporary name, then `mv`;
#   - a file whose sidecar exists is skipped; a failed call leaves <stem>.error.json.
# What it does not do that seedreamd does (so it is, if anything, flattered): no validation of
# the image, no SHA-256 of the source, no retries or backoff, no fsync, no x-request-id, no
# handling of files already there at start, no rescan after an inotify queue overflow, no
# settle time for files written in place (close_write is taken as complete).
# Environment: MODEL, PROMPT, SIZE, JOBS (default 16), CURL_MAX_TIME (default 180).
set -u

HOT=${1:?usage: baseline.sh HOT [OUT]}
OUT=${2:-$HOT-out}
: "${SEEDREAM_API_KEY:?set SEEDREAM_API_KEY}" "${API_BASE:?set API_BASE (…/v1)}"
MODEL=${MODEL:-doubao-seedream-4-5-251128}
PROMPT=${PROMPT:-Make it watercolour}
SIZE=${SIZE:-2K}
JOBS=${JOBS:-16}
CURL_MAX_TIME=${CURL_MAX_TIME:-180}
mkdir -p -- "$OUT"

process() {
	local f=$1 name stem ext fmt resp url size mtime now
	name=${f##*/}
	stem=${name%.*}
	ext=${name##*.}
	case ${ext,,} in
	png) fmt=png ;;
	jpg | jpeg) fmt=jpeg ;;
	webp) fmt=webp ;;
	*) return 0 ;;
	esac
	[[ $name == .* || -e $OUT/$stem.json ]] && return 0

	if ! resp=$(base64 -w0 -- "$f" |
		jq -Rsc --arg model "$MODEL" --arg prompt "$PROMPT" --arg fmt "$fmt" --arg size "$SIZE" \
			'{model: $model, prompt: $prompt, image: ("data:image/" + $fmt + ";base64," + .),
			  size: $size, watermark: false, response_format: "url"}' |
		curl -sS --fail-with-body --max-time "$CURL_MAX_TIME" \
			-H "Authorization: Bearer $SEEDREAM_API_KEY" -H 'Content-Type: application/json' \
			--data-binary @- "$API_BASE/images/generations"); then
		printf '%s\n' "$resp" >"$OUT/$stem.error.json"
		return 1
	fi
	url=$(jq -r '.data[0].url // empty' <<<"$resp")
	if [[ -z $url ]]; then
		printf '%s\n' "$resp" >"$OUT/$stem.error.json"
		return 1
	fi
	curl -sS --fail --max-time "$CURL_MAX_TIME" -o "$OUT/.$stem.jpeg.part" -- "$url" &&
		mv -f -- "$OUT/.$stem.jpeg.part" "$OUT/$stem.jpeg" || return 1

	read -r size mtime < <(stat -c '%s %.9Y' -- "$f")
	printf -v now '%(%Y-%m-%dT%H:%M:%SZ)T' -1
	jq --arg source "$name" --argjson source_size "$size" --arg source_mtime "$mtime" \
		--arg output "$stem.jpeg" --arg prompt "$PROMPT" --arg size "$SIZE" --arg now "$now" \
		'{source: $source, source_size: $source_size, source_mtime: $source_mtime,
		  output: $output, model: .model, prompt: $prompt, size: $size,
		  result_size: .data[0].size, created: .created, usage: .usage, completed_at: $now}' \
		<<<"$resp" >"$OUT/.$stem.json.tmp" &&
		mv -f -- "$OUT/.$stem.json.tmp" "$OUT/$stem.json"
}
export -f process
export OUT MODEL PROMPT SIZE API_BASE SEEDREAM_API_KEY CURL_MAX_TIME
export TZ=UTC

inotifywait -m -e close_write,moved_to --format '%w%f' -- "$HOT" |
	xargs -d '\n' -n 1 -P "$JOBS" bash -c 'process "$1"' _
