#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <yaml.h>

#include "fdio.h"
#include "refs.h"
#include "url.h"

#define MAX_DOCUMENT_BYTES (1024 * 1024)
/* A valid config is four levels deep (folders, entry, exclude); anything far
 * deeper is garbage, refused before libyaml builds a tree for it. */
#define MAX_DEPTH          16
/* Durations end up in timers as nanoseconds; a year keeps every product far
 * from overflowing and is longer than any sensible setting. */
#define MAX_DURATION_MS    ((uint64_t)366 * 24 * 3600 * 1000)
#define KiB                ((uint64_t)1024)
#define MiB                (1024 * KiB)
#define GiB                (1024 * MiB)

struct ctx {
	const char *name;
	char *err;
	size_t errlen;
	yaml_document_t *doc;
	const char *model;
	bool b64_json; /* api.response_format, read before the folders */
};

/* A key found in a mapping, by its index in the section's key table. */
struct found {
	yaml_node_t *key, *value;
};

/* Where a folder's paths came from, for the overlap messages. */
struct fmeta {
	yaml_mark_t path, output, done;
	yaml_mark_t group; /* where group: is set (here or in defaults) */
	yaml_mark_t max_images;	  /* where max_images: is set (here or in defaults) */
	yaml_mark_t group_marker; /* where group_marker: is set, if it is */
};

enum {
	TK_API,
	TK_DEFAULTS,
	TK_FOLDERS,
	TK_STATE_DIR,
	TK_STOP_TIMEOUT,
	TK_RESCAN_INTERVAL,
	TK_MIN_FREE_SPACE,
	TK_MAX_PER_DAY,
	TK_PER_MINUTE,
	TK_MAX_FITS,
	TK_NOTIFY,
	TK_PRICES,
	TK_CURRENCY,
	TK_MAX_SPEND,
	TK_METRICS_LISTEN,
	TK_METRICS_TEXTFILE,
	TK_CONTROL_SOCKET,
	TK_COUNT
};

static const char *const top_keys[TK_COUNT] = {
	[TK_API] = "api",
	[TK_DEFAULTS] = "defaults",
	[TK_FOLDERS] = "folders",
	[TK_STATE_DIR] = "state_dir",
	[TK_STOP_TIMEOUT] = "stop_timeout",
	[TK_RESCAN_INTERVAL] = "rescan_interval",
	[TK_MIN_FREE_SPACE] = "min_free_space",
	[TK_MAX_PER_DAY] = "max_images_per_day",
	[TK_PER_MINUTE] = "images_per_minute",
	[TK_MAX_FITS] = "max_fits",
	[TK_NOTIFY] = "notify",
	[TK_PRICES] = "price_per_image",
	[TK_CURRENCY] = "currency",
	[TK_MAX_SPEND] = "max_spend_per_day",
	[TK_METRICS_LISTEN] = "metrics_listen",
	[TK_METRICS_TEXTFILE] = "metrics_textfile",
	[TK_CONTROL_SOCKET] = "control_socket",
};

enum { NK_WEBHOOK, NK_EVENTS, NK_COMMAND, NK_COMMAND_TIMEOUT, NK_SUMMARY_AT, NK_COUNT };

static const char *const notify_keys[NK_COUNT] = {
	[NK_WEBHOOK] = "webhook",
	[NK_EVENTS] = "events",
	[NK_COMMAND] = "command",
	[NK_COMMAND_TIMEOUT] = "command_timeout",
	[NK_SUMMARY_AT] = "daily_summary_at",
};

/* In the order of enum config_event's bits. */
static const char *const event_names[] = {
	"file_failed", "paused", "resumed", "spend_limit", "daily_summary",
};

enum {
	AK_BASE_URL,
	AK_MODEL,
	AK_KEY_ENV,
	AK_KEY_FILE,
	AK_TIMEOUT,
	AK_MAX_IN_FLIGHT,
	AK_RESPONSE_FORMAT,
	AK_RETRIES,
	AK_PAUSE_RETRY,
	AK_CA_FILE,
	AK_INSECURE,
	AK_PRIVATE_RESULTS,
	AK_COUNT
};

static const char *const api_keys[AK_COUNT] = {
	[AK_BASE_URL] = "base_url",
	[AK_MODEL] = "model",
	[AK_KEY_ENV] = "api_key_env",
	[AK_KEY_FILE] = "api_key_file",
	[AK_TIMEOUT] = "timeout",
	[AK_MAX_IN_FLIGHT] = "max_in_flight",
	[AK_RESPONSE_FORMAT] = "response_format",
	[AK_RETRIES] = "retries",
	[AK_PAUSE_RETRY] = "pause_retry",
	[AK_CA_FILE] = "ca_file",
	[AK_INSECURE] = "allow_insecure_http",
	[AK_PRIVATE_RESULTS] = "allow_private_result_urls",
};

enum {
	FK_PATH,
	FK_OUTPUT,
	FK_PROMPT,
	FK_SIZE,
	FK_WATERMARK,
	FK_SETTLE,
	FK_INCOMPLETE_TIMEOUT,
	FK_RECURSIVE,
	FK_EXCLUDE,
	FK_MODE,
	FK_POLL_INTERVAL,
	FK_FOLLOW_SYMLINKS,
	FK_MAX_INPUT_BYTES,
	FK_ON_SUCCESS,
	FK_DONE_DIR,
	FK_MAX_PER_DAY,
	FK_FIT,
	FK_FIT_QUALITY,
	FK_EMBED_PROVENANCE,
	FK_EMBED_PROMPT,
	FK_PROMPT_FILE,
	FK_EXTRA,
	FK_MAX_IMAGES,
	FK_REFERENCES,
	FK_GROUP,
	FK_GROUP_READY,
	FK_GROUP_MARKER,
	FK_COUNT
};

static const char *const folder_keys[FK_COUNT] = {
	[FK_PATH] = "path",
	[FK_OUTPUT] = "output",
	[FK_PROMPT] = "prompt",
	[FK_SIZE] = "size",
	[FK_WATERMARK] = "watermark",
	[FK_SETTLE] = "settle",
	[FK_INCOMPLETE_TIMEOUT] = "incomplete_timeout",
	[FK_RECURSIVE] = "recursive",
	[FK_EXCLUDE] = "exclude",
	[FK_MODE] = "mode",
	[FK_POLL_INTERVAL] = "poll_interval",
	[FK_FOLLOW_SYMLINKS] = "follow_symlinks",
	[FK_MAX_INPUT_BYTES] = "max_input_bytes",
	[FK_ON_SUCCESS] = "on_success",
	[FK_DONE_DIR] = "done_dir",
	[FK_MAX_PER_DAY] = "max_images_per_day",
	[FK_FIT] = "fit",
	[FK_FIT_QUALITY] = "fit_quality",
	[FK_EMBED_PROVENANCE] = "embed_provenance",
	[FK_EMBED_PROMPT] = "embed_prompt",
	[FK_PROMPT_FILE] = "prompt_file",
	[FK_EXTRA] = "extra",
	[FK_MAX_IMAGES] = "max_images",
	[FK_REFERENCES] = "references",
	[FK_GROUP] = "group",
	[FK_GROUP_READY] = "group_ready",
	[FK_GROUP_MARKER] = "group_marker",
};

static const char *const group_names[] = {
	[GROUP_NONE] = "none",
	[GROUP_SUBFOLDER] = "subfolder",
};

static const char *const group_ready_names[] = {
	[GROUP_READY_SETTLE] = "settle",
	[GROUP_READY_MARKER] = "marker",
};

static const char *const fit_names[] = {
	[FIT_AUTO] = "auto",
	[FIT_NEVER] = "never",
	[FIT_ALWAYS] = "always",
};

static const char *const prompt_file_names[] = {
	[PROMPT_FILE_OFF] = "off",
	[PROMPT_FILE_REPLACE] = "replace",
	[PROMPT_FILE_APPEND] = "append",
	[PROMPT_FILE_REQUIRED] = "required",
};

static const char *const mode_names[] = {
	[FOLDER_MODE_AUTO] = "auto",
	[FOLDER_MODE_INOTIFY] = "inotify",
	[FOLDER_MODE_POLL] = "poll",
};

static const char *const on_success_names[] = {
	[ON_SUCCESS_KEEP] = "keep",
	[ON_SUCCESS_MOVE] = "move",
	[ON_SUCCESS_DELETE] = "delete",
};

static const char *const response_format_names[] = {
	[RESPONSE_FORMAT_URL] = "url",
	[RESPONSE_FORMAT_B64_JSON] = "b64_json",
};

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- messages ---- */

static void put_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail_at(struct ctx *c, yaml_mark_t mark, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void put_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int fail_at(struct ctx *c, yaml_mark_t mark, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!c->err || !c->errlen)
		return -EINVAL;
	n = snprintf(c->err, c->errlen, "%s:%zu:%zu: ", c->name, mark.line + 1, mark.column + 1);
	if (n >= 0 && (size_t)n < c->errlen) {
		va_start(ap, fmt);
		vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static int oom(struct ctx *c)
{
	put_err(c->err, c->errlen, "%s: out of memory", c->name);
	return -ENOMEM;
}

/* User text echoed in a message: quoted, bounded, and on one line whatever it
 * holds, so that the caller's single log line stays single. */
struct quoted {
	char s[140];
};

static struct quoted quote(const char *text)
{
	struct quoted q;
	size_t limit = 128, n = strlen(text), o = 0;
	bool cut = n > limit;

	if (cut) {
		n = limit;
		while (n > 0 && ((unsigned char)text[n] & 0xc0) == 0x80)
			n--; /* not in the middle of a UTF-8 sequence */
	}
	q.s[o++] = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)text[i];

		q.s[o++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
	}
	if (cut) {
		memcpy(q.s + o, "...", 3);
		o += 3;
	}
	q.s[o++] = '"';
	q.s[o] = '\0';
	return q;
}

static void format_duration(uint64_t ms, char *buf, size_t len)
{
	if (ms && ms % 3600000 == 0)
		snprintf(buf, len, "%" PRIu64 "h", ms / 3600000);
	else if (ms && ms % 60000 == 0)
		snprintf(buf, len, "%" PRIu64 "m", ms / 60000);
	else if (ms % 1000 == 0)
		snprintf(buf, len, "%" PRIu64 "s", ms / 1000);
	else
		snprintf(buf, len, "%" PRIu64 "ms", ms);
}

static void format_bytes(uint64_t n, char *buf, size_t len)
{
	if (n && n % GiB == 0)
		snprintf(buf, len, "%" PRIu64 "GiB", n / GiB);
	else if (n && n % MiB == 0)
		snprintf(buf, len, "%" PRIu64 "MiB", n / MiB);
	else if (n && n % KiB == 0)
		snprintf(buf, len, "%" PRIu64 "KiB", n / KiB);
	else
		snprintf(buf, len, "%" PRIu64 "B", n);
}

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[33];

	if (la > 32 || lb > 32)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j], best = diag + (a[i - 1] == b[j - 1] ? 0 : 1);

			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* The known key a typo most likely meant, if any is close. */
static const char *suggest(const char *name, const char *const *keys, size_t nkeys)
{
	const char *pick = NULL;
	size_t best = 3;

	for (size_t i = 0; i < nkeys; i++) {
		size_t d = edit_distance(name, keys[i]);

		if (d < best) {
			best = d;
			pick = keys[i];
		}
	}
	return pick;
}

/* ---- numbers ---- */

/* strtoull alone takes leading blanks, signs ("-1" wraps) and empty input. */
static int parse_digits(const char *text, uint64_t *ret, const char **end)
{
	unsigned long long v;
	char *e;

	if (!text || text[0] < '0' || text[0] > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(text, &e, 10);
	if (errno)
		return -EINVAL;
	*ret = v;
	*end = e;
	return 0;
}

struct unit {
	const char *suffix;
	uint64_t factor;
};

static int parse_with_units(const char *text, const struct unit *units, size_t n, bool nocase,
			    uint64_t *ret)
{
	const char *end;
	uint64_t v;

	if (parse_digits(text, &v, &end) < 0)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (nocase ? strcasecmp(end, units[i].suffix) : strcmp(end, units[i].suffix))
			continue;
		if (v > UINT64_MAX / units[i].factor)
			return -EINVAL;
		*ret = v * units[i].factor;
		return 0;
	}
	return -EINVAL;
}

int config_parse_duration(const char *text, uint64_t *ret_ms)
{
	static const struct unit units[] = {
		{"ms", 1}, {"s", 1000}, {"", 1000}, {"m", 60000}, {"h", 3600000},
	};

	return parse_with_units(text, units, N_ELEMENTS(units), false, ret_ms);
}

int config_parse_bytes(const char *text, uint64_t *ret_bytes)
{
	static const struct unit units[] = {
		{"", 1},
		{"B", 1},
		{"K", 1000},
		{"KB", 1000},
		{"KiB", KiB},
		{"M", 1000000},
		{"MB", 1000000},
		{"MiB", MiB},
		{"G", 1000000000},
		{"GB", 1000000000},
		{"GiB", GiB},
		{"T", 1000000000000},
		{"TB", 1000000000000},
		{"TiB", 1024 * GiB},
	};

	return parse_with_units(text, units, N_ELEMENTS(units), true, ret_bytes);
}

int config_check_size(const char *size, const char *model, char *err, size_t errlen)
{
	bool v45 = model && strstr(model, "seedream-4-5");
	uint64_t w, h, pixels, min_pixels = v45 ? 2560 * 1440 : 1280 * 720;
	const char *end;

	if (!size || !*size) {
		put_err(err, errlen, "size is empty (expected 2K, 4K, 1K or WxH)");
		return -EINVAL;
	}
	if (!strcmp(size, "2K") || !strcmp(size, "4K"))
		return 0;
	if (!strcmp(size, "1K")) {
		if (!v45)
			return 0;
		put_err(err, errlen,
			"size 1K is not available with seedream 4.5 models (use 2K, 4K or WxH)");
		return -EINVAL;
	}
	if (parse_digits(size, &w, &end) < 0 || (*end != 'x' && *end != 'X') ||
	    parse_digits(end + 1, &h, &end) < 0 || *end) {
		put_err(err, errlen, "invalid size %s: expected 2K, 4K%s or WxH such as 2048x2048",
			quote(size).s, v45 ? "" : ", 1K");
		return -EINVAL;
	}
	if (!w || !h || w > 65536 || h > 65536) {
		put_err(err, errlen, "size %s: width and height must be from 1 to 65536",
			quote(size).s);
		return -EINVAL;
	}
	if (w > 16 * h || h > 16 * w) {
		put_err(err, errlen, "size %s: the aspect ratio must be between 1:16 and 16:1",
			quote(size).s);
		return -EINVAL;
	}
	pixels = w * h;
	if (pixels < min_pixels || pixels > 4096 * 4096) {
		put_err(err, errlen,
			"size %s: the total pixels must be between %" PRIu64 " and %d for this "
			"model",
			quote(size).s, min_pixels, 4096 * 4096);
		return -EINVAL;
	}
	return 0;
}

/* ---- paths ---- */

/* Absolute, no doubled or trailing slashes, no "." or "..": the overlap checks
 * compare these as strings. ".." is refused rather than resolved, since
 * resolving it lexically would disagree with the filesystem across symlinks. */
static int normalise_path(char *p, const char **why)
{
	size_t r = 0, w = 0, n = strlen(p);

	if (p[0] != '/') {
		*why = "expected an absolute path";
		return -EINVAL;
	}
	while (r < n) {
		size_t start, len;

		while (r < n && p[r] == '/')
			r++;
		if (r == n)
			break;
		for (start = r; r < n && p[r] != '/'; r++)
			;
		len = r - start;
		if (len == 1 && p[start] == '.')
			continue;
		if (len == 2 && p[start] == '.' && p[start + 1] == '.') {
			*why = "\"..\" is not allowed in a path";
			return -EINVAL;
		}
		p[w++] = '/';
		memmove(p + w, p + start, len);
		w += len;
	}
	if (!w)
		p[w++] = '/';
	p[w] = '\0';
	return 0;
}

/* a is b, or below it. */
static bool path_within(const char *a, const char *b)
{
	size_t n = strlen(b);

	if (!strcmp(b, "/"))
		return true;
	return !strncmp(a, b, n) && (a[n] == '\0' || a[n] == '/');
}

/* A folder as the filesystem sees it: a path can reach a folder through a
 * symbolic link or a bind mount, so string comparisons alone miss overlaps. */
struct ident {
	char *real;  /* realpath of the longest existing ancestor + the rest */
	bool exists; /* dev and ino are valid */
	dev_t dev;
	ino_t ino;
};

/* Resolves p (normalised) as far as it exists. NULL only for ENOMEM. */
static char *resolve_path(const char *p)
{
	char *prefix = strdup(p), *real = NULL, *out;
	const char *rest;

	if (!prefix)
		return NULL;
	for (;;) {
		char *slash;

		real = realpath(prefix[0] ? prefix : "/", NULL);
		if (real || errno == ENOMEM)
			break;
		slash = strrchr(prefix, '/');
		if (!slash)
			break;
		*slash = '\0';
	}
	if (!real) {
		free(prefix);
		return NULL;
	}
	rest = p + strlen(prefix);
	if (!strcmp(real, "/") && rest[0])
		out = strdup(rest);
	else if (asprintf(&out, "%s%s", real, rest) < 0)
		out = NULL;
	free(real);
	free(prefix);
	return out;
}

static int ident_init(struct ident *id, const char *path)
{
	struct stat st;

	id->real = resolve_path(path);
	if (!id->real)
		return -ENOMEM;
	id->exists = stat(path, &st) == 0;
	id->dev = id->exists ? st.st_dev : 0;
	id->ino = id->exists ? st.st_ino : 0;
	return 0;
}

static bool ident_same(const struct ident *a, const struct ident *b)
{
	return !strcmp(a->real, b->real) ||
	       (a->exists && b->exists && a->dev == b->dev && a->ino == b->ino);
}

/* a is b or below it, by real path, or by device+inode of one of a's
 * existing ancestors (b bind-mounted somewhere above a). */
static bool ident_within(const struct ident *a, const struct ident *b)
{
	size_t n = strlen(a->real);
	char *p;
	bool found = false;

	if (path_within(a->real, b->real))
		return true;
	if (!b->exists)
		return false;
	p = strdup(a->real);
	if (!p)
		return false;
	while (!found) {
		struct stat st;
		char *slash;

		if (stat(n ? p : "/", &st) == 0 && st.st_dev == b->dev && st.st_ino == b->ino)
			found = true;
		if (!n)
			break;
		slash = strrchr(p, '/');
		if (!slash)
			break;
		*slash = '\0';
		n = strlen(p);
	}
	free(p);
	return found;
}

static char *concat(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *s = malloc(la + lb + 1);

	if (s) {
		memcpy(s, a, la);
		memcpy(s + la, b, lb + 1);
	}
	return s;
}

/* ---- nodes ---- */

static yaml_node_t *node_at(struct ctx *c, yaml_node_item_t item)
{
	return yaml_document_get_node(c->doc, item);
}

static const char *scalar_text(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

static bool is_null(const yaml_node_t *n)
{
	const char *v;

	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	v = scalar_text(n);
	return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
	       !strcmp(v, "NULL");
}

static const char *kind_of(const yaml_node_t *n)
{
	if (n->type == YAML_MAPPING_NODE)
		return "a mapping";
	if (n->type == YAML_SEQUENCE_NODE)
		return "a sequence";
	return is_null(n) ? "nothing" : "a string";
}

/* A non-empty scalar's text, borrowed from the document; `what` names what
 * was expected, for the message. */
static int get_text(struct ctx *c, const yaml_node_t *n, const char *key, const char *what,
		    const char **ret)
{
	const char *v;

	if (n->type != YAML_SCALAR_NODE || is_null(n))
		return fail_at(c, n->start_mark, "%s: expected %s, got %s", key, what, kind_of(n));
	v = scalar_text(n);
	if (strlen(v) != n->data.scalar.length)
		return fail_at(c, n->start_mark, "%s: contains a NUL character", key);
	if (!*v)
		return fail_at(c, n->start_mark, "%s: expected %s, got an empty string", key, what);
	*ret = v;
	return 0;
}

static int replace_str(struct ctx *c, char **dst, const char *src)
{
	char *s = strdup(src);

	if (!s)
		return oom(c);
	free(*dst);
	*dst = s;
	return 0;
}

static int get_string(struct ctx *c, const yaml_node_t *n, const char *key, char **dst)
{
	const char *v;
	int r = get_text(c, n, key, "a string", &v);

	return r < 0 ? r : replace_str(c, dst, v);
}

static int get_path(struct ctx *c, const yaml_node_t *n, const char *key, char **dst)
{
	const char *v, *why;
	char *s;
	int r = get_text(c, n, key, "an absolute path", &v);

	if (r < 0)
		return r;
	s = strdup(v);
	if (!s)
		return oom(c);
	if (normalise_path(s, &why) < 0) {
		free(s);
		return fail_at(c, n->start_mark, "%s: %s, got %s", key, why, quote(v).s);
	}
	free(*dst);
	*dst = s;
	return 0;
}

static int get_bool(struct ctx *c, const yaml_node_t *n, const char *key, bool *ret)
{
	static const char *const yes[] = {"true", "yes", "on"};
	static const char *const no[] = {"false", "no", "off"};
	static const char what[] = "a boolean (true/false, yes/no, on/off)";
	const char *v;
	int r = get_text(c, n, key, what, &v);

	if (r < 0)
		return r;
	for (size_t i = 0; i < N_ELEMENTS(yes); i++) {
		if (!strcasecmp(v, yes[i])) {
			*ret = true;
			return 0;
		}
		if (!strcasecmp(v, no[i])) {
			*ret = false;
			return 0;
		}
	}
	return fail_at(c, n->start_mark, "%s: expected %s, got %s", key, what, quote(v).s);
}

static int get_uint(struct ctx *c, const yaml_node_t *n, const char *key, uint64_t min,
		    uint64_t max, uint64_t *ret)
{
	char what[80];
	const char *v, *end;
	uint64_t u;
	int r;

	if (max == UINT64_MAX)
		snprintf(what, sizeof(what), "a whole number (0 or more)");
	else
		snprintf(what, sizeof(what), "a whole number from %" PRIu64 " to %" PRIu64, min,
			 max);
	r = get_text(c, n, key, what, &v);
	if (r < 0)
		return r;
	if (parse_digits(v, &u, &end) < 0 || *end || u < min || u > max)
		return fail_at(c, n->start_mark, "%s: expected %s, got %s", key, what, quote(v).s);
	*ret = u;
	return 0;
}

static int get_duration(struct ctx *c, const yaml_node_t *n, const char *key, uint64_t min,
			uint64_t *ret)
{
	char what[128], lo[24], hi[24];
	const char *v;
	uint64_t ms;
	int r;

	format_duration(min, lo, sizeof(lo));
	format_duration(MAX_DURATION_MS, hi, sizeof(hi));
	snprintf(what, sizeof(what), "a duration from %s to %s (such as 250ms, 10s, 5m or 1h)", lo,
		 hi);
	r = get_text(c, n, key, what, &v);
	if (r < 0)
		return r;
	if (config_parse_duration(v, &ms) < 0 || ms < min || ms > MAX_DURATION_MS)
		return fail_at(c, n->start_mark, "%s: expected %s, got %s", key, what, quote(v).s);
	*ret = ms;
	return 0;
}

static int get_bytes(struct ctx *c, const yaml_node_t *n, const char *key, uint64_t min,
		     uint64_t max, uint64_t *ret)
{
	char what[128], lo[24], hi[24];
	const char *v;
	uint64_t b;
	int r;

	if (max == UINT64_MAX) {
		snprintf(what, sizeof(what), "a size in bytes (such as 512MiB or 1GB)");
	} else {
		format_bytes(min, lo, sizeof(lo));
		format_bytes(max, hi, sizeof(hi));
		snprintf(what, sizeof(what), "a size from %s to %s (such as 10MiB)", lo, hi);
	}
	r = get_text(c, n, key, what, &v);
	if (r < 0)
		return r;
	if (config_parse_bytes(v, &b) < 0 || b < min || b > max)
		return fail_at(c, n->start_mark, "%s: expected %s, got %s", key, what, quote(v).s);
	*ret = b;
	return 0;
}

static int get_enum(struct ctx *c, const yaml_node_t *n, const char *key,
		    const char *const *names, size_t count, unsigned *ret)
{
	char allowed[96];
	const char *v;
	size_t o = 0;
	int r;

	allowed[0] = '\0';
	for (size_t i = 0; i < count && o < sizeof(allowed); i++) {
		int w = snprintf(allowed + o, sizeof(allowed) - o, "%s%s", i ? ", " : "", names[i]);

		o += w > 0 ? (size_t)w : 0;
	}
	r = get_text(c, n, key, "one of the allowed values", &v);
	if (r < 0)
		return r;
	for (size_t i = 0; i < count; i++) {
		if (!strcmp(v, names[i])) {
			*ret = (unsigned)i;
			return 0;
		}
	}
	return fail_at(c, n->start_mark, "%s: unknown value %s (allowed: %s)", key, quote(v).s,
		       allowed);
}

static int get_globs(struct ctx *c, const yaml_node_t *n, struct folder_config *fc)
{
	yaml_node_item_t *items;
	size_t count;
	char **globs;
	int r = 0;

	if (is_null(n)) {
		count = 0;
	} else if (n->type == YAML_SEQUENCE_NODE) {
		items = n->data.sequence.items.start;
		count = (size_t)(n->data.sequence.items.top - items);
	} else {
		return fail_at(c, n->start_mark,
			       "exclude: expected a sequence of glob strings, got %s", kind_of(n));
	}
	globs = calloc(count ? count : 1, sizeof(*globs));
	if (!globs)
		return oom(c);
	for (size_t i = 0; i < count && r == 0; i++) {
		const char *v;

		r = get_text(c, node_at(c, items[i]), "exclude", "a glob string", &v);
		if (r == 0 && !(globs[i] = strdup(v)))
			r = oom(c);
	}
	if (r < 0) {
		for (size_t i = 0; i < count; i++)
			free(globs[i]);
		free(globs);
		return r;
	}
	for (size_t i = 0; i < fc->n_exclude; i++)
		free(fc->exclude[i]);
	free(fc->exclude);
	fc->exclude = globs;
	fc->n_exclude = count;
	return 0;
}

/* ---- extra: request fields as they are ---- */

/* Fields seedreamd sets itself, or that another setting owns. */
static const char *const extra_refused[] = {
	"model",
	"prompt",
	"image",
	"size",
	"response_format",
	"stream",
	"watermark",
	"sequential_image_generation",
	"sequential_image_generation_options",
	"max_images",
};

struct extra_walk {
	size_t nodes;
};

#define EXTRA_DEPTH_MAX 16
#define EXTRA_NODES_MAX 1024
#define EXTRA_INT_EXACT 9007199254740992.0 /* 2^53: larger integers would not arrive exactly */

/* A plain YAML scalar typed as YAML's core schema does: null, booleans,
 * numbers; anything else (and every quoted scalar) a string. */
static int extra_scalar(struct ctx *c, const yaml_node_t *n, cJSON **ret)
{
	const char *v = scalar_text(n);
	char *end;
	double d;

	if (strlen(v) != n->data.scalar.length)
		return fail_at(c, n->start_mark, "extra: contains a NUL character");
	if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		*ret = cJSON_CreateString(v);
	else if (is_null(n))
		*ret = cJSON_CreateNull();
	else if (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "TRUE"))
		*ret = cJSON_CreateTrue();
	else if (!strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "FALSE"))
		*ret = cJSON_CreateFalse();
	else if (strspn(v, "+-0123456789.eE") == strlen(v) && strpbrk(v, "0123456789") &&
		 (d = strtod(v, &end), *end == '\0')) {
		if (!isfinite(d) || (strpbrk(v, ".eE") == NULL && fabs(d) > EXTRA_INT_EXACT))
			return fail_at(c, n->start_mark,
				       "extra: the number %s cannot be sent exactly (quote it to "
				       "send a string)",
				       quote(v).s);
		*ret = cJSON_CreateNumber(d);
	} else
		*ret = cJSON_CreateString(v);
	return *ret ? 0 : oom(c);
}

static int extra_node(struct ctx *c, const yaml_node_t *n, unsigned depth, struct extra_walk *w,
		      cJSON **ret)
{
	cJSON *out = NULL, *item = NULL;
	int r = 0;

	*ret = NULL;
	if (depth > EXTRA_DEPTH_MAX || ++w->nodes > EXTRA_NODES_MAX)
		return fail_at(c, n->start_mark, "extra: nested deeper than %d or more than %d values",
			       EXTRA_DEPTH_MAX, EXTRA_NODES_MAX);
	if (n->type == YAML_SCALAR_NODE)
		return extra_scalar(c, n, ret);
	out = n->type == YAML_SEQUENCE_NODE ? cJSON_CreateArray() : cJSON_CreateObject();
	if (!out)
		return oom(c);
	if (n->type == YAML_SEQUENCE_NODE) {
		for (yaml_node_item_t *i = n->data.sequence.items.start;
		     r == 0 && i < n->data.sequence.items.top; i++) {
			r = extra_node(c, node_at(c, *i), depth + 1, w, &item);
			if (r == 0 && !cJSON_AddItemToArray(out, item)) {
				cJSON_Delete(item);
				r = oom(c);
			}
		}
	} else {
		for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
		     r == 0 && p < n->data.mapping.pairs.top; p++) {
			const yaml_node_t *k = node_at(c, p->key);
			const char *name;

			if (k->type != YAML_SCALAR_NODE || is_null(k) ||
			    strlen(scalar_text(k)) != k->data.scalar.length) {
				r = fail_at(c, k->start_mark,
					    "extra: expected a field name, got %s", kind_of(k));
				break;
			}
			name = scalar_text(k);
			if (cJSON_GetObjectItemCaseSensitive(out, name)) {
				r = fail_at(c, k->start_mark, "extra: field %s given twice",
					    quote(name).s);
				break;
			}
			if (depth == 0)
				for (size_t i = 0; i < N_ELEMENTS(extra_refused); i++)
					if (!strcmp(name, extra_refused[i]))
						r = fail_at(c, k->start_mark,
							    "extra: field %s is set by seedreamd "
							    "(or another setting) and cannot be "
							    "given here",
							    quote(name).s);
			if (r == 0)
				r = extra_node(c, node_at(c, p->value), depth + 1, w, &item);
			if (r == 0 && !cJSON_AddItemToObject(out, name, item)) {
				cJSON_Delete(item);
				r = oom(c);
			}
		}
	}
	if (r < 0) {
		cJSON_Delete(out);
		return r;
	}
	*ret = out;
	return 0;
}

/* extra: a mapping; merged over what defaults gave (its keys win). */
static int get_extra(struct ctx *c, const yaml_node_t *n, char **dst)
{
	struct extra_walk w = {0};
	cJSON *add = NULL, *merged = NULL;
	char *text = NULL;
	int r;

	if (is_null(n))
		return 0;
	if (n->type != YAML_MAPPING_NODE)
		return fail_at(c, n->start_mark,
			       "extra: expected a mapping of request fields, got %s", kind_of(n));
	r = extra_node(c, n, 0, &w, &add);
	if (r < 0)
		return r;
	merged = *dst ? cJSON_Parse(*dst) : add;
	if (!merged) {
		cJSON_Delete(add);
		return oom(c);
	}
	if (merged != add) {
		while (add->child) {
			cJSON *item = cJSON_DetachItemViaPointer(add, add->child);

			cJSON_DeleteItemFromObjectCaseSensitive(merged, item->string);
			if (!cJSON_AddItemToObject(merged, item->string, item)) {
				cJSON_Delete(item);
				cJSON_Delete(add);
				cJSON_Delete(merged);
				return oom(c);
			}
		}
		cJSON_Delete(add);
	}
	text = cJSON_PrintUnformatted(merged);
	cJSON_Delete(merged);
	if (!text)
		return oom(c);
	if (strlen(text) > CONFIG_EXTRA_MAX) {
		cJSON_free(text);
		return fail_at(c, n->start_mark, "extra: longer than %d bytes as JSON",
			       CONFIG_EXTRA_MAX);
	}
	r = replace_str(c, dst, text);
	cJSON_free(text);
	return r;
}

/* references: a sequence of absolute paths to images the API takes, each
 * validated here (refs_probe) and refused at its own line and column. */
static int get_references(struct ctx *c, const yaml_node_t *n, struct folder_config *fc)
{
	struct config_reference *refs = NULL;
	yaml_node_item_t *items = NULL;
	size_t count = 0, done = 0;
	int r = 0;

	if (is_null(n))
		count = 0;
	else if (n->type == YAML_SEQUENCE_NODE) {
		items = n->data.sequence.items.start;
		count = (size_t)(n->data.sequence.items.top - items);
	} else
		return fail_at(c, n->start_mark,
			       "references: expected a sequence of absolute image paths, got %s",
			       kind_of(n));
	if (count > CONFIG_IMAGES_MAX - 1)
		return fail_at(c, n->start_mark,
			       "references: %zu images, but a request takes at most %d (the "
			       "dropped image and %d references)",
			       count, CONFIG_IMAGES_MAX, CONFIG_IMAGES_MAX - 1);
	if (count && !(refs = calloc(count, sizeof(*refs))))
		return oom(c);
	for (; done < count && r == 0; done++) {
		const yaml_node_t *item = node_at(c, items[done]);
		struct config_reference *ref = &refs[done];
		char why[512];

		r = get_path(c, item, "references", &ref->path);
		if (r < 0)
			break;
		ref->line = (int)item->start_mark.line + 1;
		ref->column = (int)item->start_mark.column + 1;
		r = refs_probe(ref->path, ref, why, sizeof(why));
		if (r == -ENOMEM)
			r = oom(c);
		else if (r < 0)
			r = fail_at(c, item->start_mark, "references: %s %s", quote(ref->path).s,
				    why);
	}
	if (r < 0) {
		refs_free(refs, count);
		return r;
	}
	refs_free(fc->references, fc->n_references);
	fc->references = refs;
	fc->n_references = count;
	return 0;
}

/* Every key known, none twice; found[i] gets the pair for keys[i]. */
static int walk_mapping(struct ctx *c, const yaml_node_t *map, const char *const *keys,
			size_t nkeys, const char *where, struct found *found)
{
	memset(found, 0, nkeys * sizeof(*found));
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = node_at(c, p->key);
		const char *name, *hint;
		size_t i = nkeys;

		if (k->type != YAML_SCALAR_NODE)
			return fail_at(c, k->start_mark, "expected a key name %s, got %s", where,
				       kind_of(k));
		name = scalar_text(k);
		if (strlen(name) == k->data.scalar.length)
			for (i = 0; i < nkeys && strcmp(keys[i], name); i++)
				;
		if (i == nkeys) {
			hint = suggest(name, keys, nkeys);
			return fail_at(c, k->start_mark, "unknown key %s %s%s%s%s", quote(name).s,
				       where, hint ? " (did you mean \"" : "", hint ? hint : "",
				       hint ? "\"?)" : "");
		}
		if (found[i].key)
			return fail_at(c, k->start_mark, "duplicate key %s %s (first at line %zu)",
				       quote(name).s, where, found[i].key->start_mark.line + 1);
		found[i].key = k;
		found[i].value = node_at(c, p->value);
	}
	return 0;
}

/* ---- sections ---- */

static void folder_clear(struct folder_config *f)
{
	free(f->path);
	free(f->output);
	free(f->prompt);
	free(f->size);
	free(f->done_dir);
	free(f->extra_json);
	for (size_t i = 0; i < f->n_exclude; i++)
		free(f->exclude[i]);
	free(f->exclude);
	refs_free(f->references, f->n_references);
	free(f->group_marker);
	memset(f, 0, sizeof(*f));
}

static void folder_init(struct folder_config *f)
{
	memset(f, 0, sizeof(*f));
	f->settle_ms = 2000;
	f->incomplete_timeout_ms = 600000;
	f->mode = FOLDER_MODE_AUTO;
	f->poll_interval_ms = 10000;
	f->max_input_bytes = 10 * MiB;
	f->on_success = ON_SUCCESS_KEEP;
	f->fit = FIT_AUTO;
	f->fit_quality = 92;
	f->embed_provenance = true;
	f->max_images = 1;
}

static int dup_opt(char **dst, const char *src)
{
	*dst = NULL;
	if (src && !(*dst = strdup(src)))
		return -ENOMEM;
	return 0;
}

/* dst owns whatever it got, even on failure. */
static int folder_copy(struct ctx *c, struct folder_config *dst, const struct folder_config *src)
{
	*dst = *src;
	/* None of src's pointers may survive in dst, even if a copy fails half way. */
	dst->path = dst->output = dst->prompt = dst->size = dst->done_dir = NULL;
	dst->exclude = NULL;
	dst->n_exclude = 0;
	dst->extra_json = NULL;
	if (dup_opt(&dst->extra_json, src->extra_json) < 0)
	dst->references = NULL;
	dst->n_references = 0;
	dst->group_marker = NULL;
	if (dup_opt(&dst->group_marker, src->group_marker) < 0)
		return oom(c);
	if (dup_opt(&dst->path, src->path) < 0 || dup_opt(&dst->output, src->output) < 0 ||
	    dup_opt(&dst->prompt, src->prompt) < 0 || dup_opt(&dst->size, src->size) < 0 ||
	    dup_opt(&dst->done_dir, src->done_dir) < 0)
		return oom(c);
	if (src->n_exclude) {
		dst->exclude = calloc(src->n_exclude, sizeof(*dst->exclude));
		if (!dst->exclude)
			return oom(c);
		dst->n_exclude = src->n_exclude;
		for (size_t i = 0; i < src->n_exclude; i++)
			if (dup_opt(&dst->exclude[i], src->exclude[i]) < 0)
				return oom(c);
	}
	if (refs_copy(src->references, src->n_references, &dst->references) < 0)
		return oom(c);
	dst->n_references = src->n_references;
	return 0;
}

static int get_size(struct ctx *c, const yaml_node_t *n, char **dst)
{
	char reason[256];
	const char *v;
	int r = get_text(c, n, "size", "2K, 4K, 1K or WxH", &v);

	if (r < 0)
		return r;
	if (config_check_size(v, c->model, reason, sizeof(reason)) < 0)
		return fail_at(c, n->start_mark, "%s", reason);
	r = replace_str(c, dst, v);
	if (r == 0)
		for (char *x = strchr(*dst, 'X'); x; x = strchr(x, 'X'))
			*x = 'x'; /* the API documents a lowercase x */
	return r;
}

/* The API's own range is 1..15 outputs, but inputs count too: with the one
 * dropped image a request may ask for at most 14. */
static int get_max_images(struct ctx *c, const yaml_node_t *v, const char *key, unsigned *ret)
{
	uint64_t n = 0;
	int r = get_uint(c, v, key, 1, CONFIG_IO_IMAGES_MAX, &n);

	if (r < 0)
		return r;
	if (n > CONFIG_MAX_IMAGES_ONE_INPUT)
		return fail_at(c, v->start_mark,
			       "%s: %" PRIu64 " outputs and the dropped image are more than the "
			       "API's %u images per request; at most %u",
			       key, n, CONFIG_IO_IMAGES_MAX, CONFIG_MAX_IMAGES_ONE_INPUT);
	*ret = (unsigned)n;
	return 0;
}

static int apply_folder_key(struct ctx *c, size_t k, const yaml_node_t *v,
			    struct folder_config *fc, struct fmeta *m)
{
	const char *key = folder_keys[k];
	unsigned e = 0;
	int r;

	switch (k) {
	case FK_PATH:
		m->path = v->start_mark;
		return get_path(c, v, key, &fc->path);
	case FK_OUTPUT:
		m->output = v->start_mark;
		return get_path(c, v, key, &fc->output);
	case FK_PROMPT:
		return get_string(c, v, key, &fc->prompt);
	case FK_SIZE:
		return get_size(c, v, &fc->size);
	case FK_WATERMARK:
		return get_bool(c, v, key, &fc->watermark);
	case FK_SETTLE:
		return get_duration(c, v, key, 0, &fc->settle_ms);
	case FK_INCOMPLETE_TIMEOUT:
		return get_duration(c, v, key, 1000, &fc->incomplete_timeout_ms);
	case FK_RECURSIVE:
		return get_bool(c, v, key, &fc->recursive);
	case FK_EXCLUDE:
		return get_globs(c, v, fc);
	case FK_MODE:
		r = get_enum(c, v, key, mode_names, N_ELEMENTS(mode_names), &e);
		fc->mode = (enum folder_mode)e;
		return r;
	case FK_POLL_INTERVAL:
		return get_duration(c, v, key, 100, &fc->poll_interval_ms);
	case FK_FOLLOW_SYMLINKS:
		return get_bool(c, v, key, &fc->follow_symlinks);
	case FK_MAX_INPUT_BYTES:
		return get_bytes(c, v, key, 1, GiB, &fc->max_input_bytes);
	case FK_ON_SUCCESS:
		r = get_enum(c, v, key, on_success_names, N_ELEMENTS(on_success_names), &e);
		fc->on_success = (enum on_success)e;
		return r;
	case FK_DONE_DIR:
		m->done = v->start_mark;
		return get_path(c, v, key, &fc->done_dir);
	case FK_MAX_PER_DAY:
		return get_uint(c, v, key, 0, UINT64_MAX, &fc->max_images_per_day);
	case FK_FIT:
		r = get_enum(c, v, key, fit_names, N_ELEMENTS(fit_names), &e);
		fc->fit = (enum fit_mode)e;
		return r;
	case FK_REFERENCES:
		return get_references(c, v, fc);
	case FK_GROUP:
		m->group = v->start_mark;
		r = get_enum(c, v, key, group_names, N_ELEMENTS(group_names), &e);
		fc->group = (enum group_mode)e;
		return r;
	case FK_GROUP_READY:
		r = get_enum(c, v, key, group_ready_names, N_ELEMENTS(group_ready_names), &e);
		fc->group_ready = (enum group_ready)e;
		return r;
	case FK_GROUP_MARKER:
		m->group_marker = v->start_mark;
		r = get_string(c, v, key, &fc->group_marker);
		if (r == 0 && (!fc->group_marker[0] || strchr(fc->group_marker, '/') ||
			       !strcmp(fc->group_marker, ".") || !strcmp(fc->group_marker, "..")))
			return fail_at(c, v->start_mark,
				       "group_marker: expected a file name (no \"/\"), got %s",
				       quote(fc->group_marker).s);
		return r;
	case FK_FIT_QUALITY: {
		uint64_t q = 0;
		r = get_uint(c, v, key, 50, 100, &q);
		fc->fit_quality = (unsigned)q;
		return r;
	}
	case FK_EMBED_PROVENANCE:
		return get_bool(c, v, key, &fc->embed_provenance);
	case FK_EMBED_PROMPT:
		return get_bool(c, v, key, &fc->embed_prompt);
	case FK_EXTRA:
		return get_extra(c, v, &fc->extra_json);
	case FK_PROMPT_FILE:
		r = get_enum(c, v, key, prompt_file_names, N_ELEMENTS(prompt_file_names), &e);
		fc->prompt_file = (enum prompt_file_mode)e;
		return r;
	case FK_MAX_IMAGES:
		m->max_images = v->start_mark;
		return get_max_images(c, v, key, &fc->max_images);
	}
	return 0;
}

static int apply_folder_keys(struct ctx *c, const struct found *f, struct folder_config *fc,
			     struct fmeta *m)
{
	for (size_t k = 0; k < FK_COUNT; k++) {
		int r = f[k].value ? apply_folder_key(c, k, f[k].value, fc, m) : 0;

		if (r < 0)
			return r;
	}
	return 0;
}

static int parse_defaults(struct ctx *c, const yaml_node_t *n, struct folder_config *tmpl,
			  struct fmeta *m)
{
	struct found f[FK_COUNT];
	int r;

	if (is_null(n))
		return 0;
	if (n->type != YAML_MAPPING_NODE)
		return fail_at(c, n->start_mark, "defaults: expected a mapping, got %s",
			       kind_of(n));
	r = walk_mapping(c, n, folder_keys, FK_COUNT, "in defaults", f);
	if (r < 0)
		return r;
	for (size_t k = FK_PATH; k <= FK_OUTPUT; k++)
		if (f[k].key)
			return fail_at(c, f[k].key->start_mark,
				       "key \"%s\" is not allowed in defaults: each folder has "
				       "its own",
				       folder_keys[k]);
	return apply_folder_keys(c, f, tmpl, m);
}

static int finish_folder(struct ctx *c, const yaml_node_t *map, struct folder_config *fc,
			 struct fmeta *m)
{
	const char *why;

	if (!fc->path)
		return fail_at(c, map->start_mark, "missing key \"path\" in folder");
	/* Every image brings its own prompt: the folder's is never sent. */
	if (!fc->prompt && fc->prompt_file == PROMPT_FILE_REQUIRED && !(fc->prompt = strdup("")))
		return oom(c);
	if (!fc->prompt)
		return fail_at(c, map->start_mark,
			       "missing key \"prompt\" in folder %s (set it here or in defaults)",
			       quote(fc->path).s);
	/* Every sidecar repeats the prompt: it must stay readable (SIDECAR_RECORD_MAX). */
	if (strlen(fc->prompt) > CONFIG_PROMPT_MAX)
		return fail_at(c, map->start_mark,
			       "the prompt of folder %s is longer than %d bytes", quote(fc->path).s,
			       CONFIG_PROMPT_MAX);
	if (!fc->size && !(fc->size = strdup("2K")))
		return oom(c);
	/* A request that may make N images waits until N fit today's limit: a
	 * limit below N would hold the folder for ever. */
	if (fc->max_images_per_day && fc->max_images_per_day < fc->max_images)
		return fail_at(c, map->start_mark,
			       "folder %s: max_images %u is more than its max_images_per_day "
			       "%" PRIu64 ", so no request could ever start",
			       quote(fc->path).s, fc->max_images, fc->max_images_per_day);
	/* Several b64_json images would be held in memory at once (up to 16 MiB
	 * of text each, per request in flight): url fetches them one by one. */
	if (c->b64_json && fc->max_images > 1)
		return fail_at(c, m->max_images,
			       "folder %s: max_images %u needs response_format: url (with b64_json "
			       "every image of an answer is held in memory at once)",
			       quote(fc->path).s, fc->max_images);
	if (!fc->output) {
		fc->output = concat(fc->path, "-out");
		if (!fc->output)
			return oom(c);
		m->output = m->path;
	}
	if (!fc->done_dir) {
		fc->done_dir = concat(fc->output, "/originals");
		if (!fc->done_dir)
			return oom(c);
		normalise_path(fc->done_dir, &why); /* only to fold the "//" of output "/" */
		m->done = m->output;
	}
	/* A group is an immediate subfolder: with recursive every subfolder
	 * would also be watched for files of its own. The originals of a group
	 * stay where they are (moving one member would change the group). */
	if (fc->group == GROUP_SUBFOLDER && fc->recursive)
		return fail_at(c, m->group,
			       "group: subfolder needs recursive: false in folder %s (each "
			       "immediate subfolder is one request)",
			       quote(fc->path).s);
	if (fc->group == GROUP_SUBFOLDER && fc->on_success != ON_SUCCESS_KEEP)
		return fail_at(c, m->group,
			       "group: subfolder needs on_success: keep in folder %s (the images "
			       "of a group stay where they are)",
			       quote(fc->path).s);
	if (fc->group == GROUP_SUBFOLDER && fc->n_references > CONFIG_IMAGES_MAX - 2)
		return fail_at(c, m->group,
			       "group: subfolder with %zu references leaves no room for two images "
			       "in a request of at most %d",
			       fc->n_references, CONFIG_IMAGES_MAX);
	/* The API's limit counts inputs and outputs together: the dropped image
	 * (or a group's first), the references and max_images outputs. */
	if (fc->n_references + 1 + fc->max_images > CONFIG_IO_IMAGES_MAX)
		return fail_at(c, m->max_images,
			       "max_images: %u outputs, %zu references and the %s are more than "
			       "the API's %d images per request in folder %s",
			       fc->max_images, fc->n_references,
			       fc->group == GROUP_SUBFOLDER ? "group's images" : "dropped image",
			       CONFIG_IO_IMAGES_MAX, quote(fc->path).s);
	if (!fc->group_marker && !(fc->group_marker = strdup(".ready")))
		return oom(c);
	/* The marker says "ready", never what to make. */
	if (fc->group == GROUP_SUBFOLDER && fc->prompt_file != PROMPT_FILE_OFF &&
	    !strcmp(fc->group_marker, CONFIG_GROUP_PROMPT_FILE))
		return fail_at(c, m->group_marker,
			       "group_marker: %s is the prompt file of a group with prompt_file in "
			       "folder %s; name the marker otherwise",
			       CONFIG_GROUP_PROMPT_FILE, quote(fc->path).s);
	/* The size limit is the folder's (it may be set after references:). */
	for (size_t i = 0; i < fc->n_references; i++) {
		const struct config_reference *ref = &fc->references[i];
		yaml_mark_t at = {.line = (size_t)ref->line - 1, .column = (size_t)ref->column - 1};

		if (ref->size > fc->max_input_bytes)
			return fail_at(c, at,
				       "references: %s has %" PRIu64 " bytes, more than max_input_bytes "
				       "(%" PRIu64 ") of folder %s",
				       quote(ref->path).s, ref->size, fc->max_input_bytes,
				       quote(fc->path).s);
	}
	fc->line = (int)map->start_mark.line + 1;
	fc->column = (int)map->start_mark.column + 1;
	return 0;
}

static int parse_folder(struct ctx *c, const yaml_node_t *n, const struct folder_config *tmpl,
			const struct fmeta *tmeta, struct folder_config *fc, struct fmeta *m)
{
	struct found f[FK_COUNT];
	int r;

	if (n->type != YAML_MAPPING_NODE)
		return fail_at(c, n->start_mark,
			       "folders: each entry must be a mapping with path and prompt, got %s",
			       kind_of(n));
	r = folder_copy(c, fc, tmpl);
	if (r < 0)
		return r;
	*m = *tmeta;
	r = walk_mapping(c, n, folder_keys, FK_COUNT, "in folder", f);
	if (r < 0)
		return r;
	r = apply_folder_keys(c, f, fc, m);
	if (r < 0)
		return r;
	return finish_folder(c, n, fc, m);
}

/* " (the same folder as ...)" when only the resolved identity shows the overlap. */
static const char *by_identity(bool lexical)
{
	return lexical ? "" : " (the same folder reached through a symbolic link or a mount)";
}

/* Outputs must never land where a watcher would pick them up again. Compared
 * by spelling and by identity (real path, device+inode): a symlink or a bind
 * mount must not hide an overlap. */
static int check_overlaps(struct ctx *c, const struct config *cfg, const struct fmeta *m)
{
	const struct folder_config *f = cfg->folders;
	size_t n = cfg->n_folders;
	struct ident *ids = calloc(3 * (n ? n : 1), sizeof(*ids));
	const struct ident *path, *out, *done;
	int r = 0;

	if (!ids)
		return oom(c);
	for (size_t i = 0; i < n && r == 0; i++) {
		r = ident_init(&ids[3 * i], f[i].path);
		if (r == 0)
			r = ident_init(&ids[3 * i + 1], f[i].output);
		if (r == 0)
			r = ident_init(&ids[3 * i + 2], f[i].done_dir);
	}
	if (r < 0) {
		r = oom(c);
		goto out;
	}
	path = ids;
	out = ids + 1;
	done = ids + 2;
#define ID(a, i) (&(a)[3 * (i)])
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < i; j++) {
			bool lex = !strcmp(f[i].path, f[j].path);
			if (lex || ident_same(ID(path, i), ID(path, j))) {
				r = fail_at(c, m[i].path,
					    "folder %s is listed twice (first at line %d)%s",
					    quote(f[i].path).s, f[j].line, by_identity(lex));
				goto out;
			}
		}
	}
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < n; j++) {
			bool lex;

			/* Sidecars name sources relative to their folder: two folders
			 * writing into one output would overwrite each other. */
			lex = !strcmp(f[i].output, f[j].output);
			if (j < i && (lex || ident_same(ID(out, i), ID(out, j)))) {
				r = fail_at(c, m[i].output,
					    "output %s is also the output of the folder at line "
					    "%d: each folder needs its own%s",
					    quote(f[i].output).s, f[j].line, by_identity(lex));
				goto out;
			}
			/* A file inside both would be taken (and paid for) twice. */
			lex = path_within(f[i].path, f[j].path);
			if (i != j && f[j].recursive && (lex || ident_within(ID(path, i), ID(path, j)))) {
				r = fail_at(c, m[i].path,
					    "folder %s is inside the recursive folder %s: its "
					    "files would be taken twice%s",
					    quote(f[i].path).s, quote(f[j].path).s, by_identity(lex));
				goto out;
			}
			lex = path_within(f[i].output, f[j].path);
			if (lex || ident_within(ID(out, i), ID(path, j))) {
				r = fail_at(c, m[i].output,
					    "output %s is inside (or is) the watched folder %s: "
					    "results would be fed back in%s",
					    quote(f[i].output).s, quote(f[j].path).s, by_identity(lex));
				goto out;
			}
			lex = path_within(f[i].path, f[j].output);
			if (i != j && (lex || ident_within(ID(path, i), ID(out, j)))) {
				r = fail_at(c, m[i].path,
					    "folder %s is inside (or is) the output %s of the "
					    "folder at line %d%s",
					    quote(f[i].path).s, quote(f[j].output).s, f[j].line,
					    by_identity(lex));
				goto out;
			}
			lex = path_within(f[i].done_dir, f[j].path);
			if (f[i].on_success == ON_SUCCESS_MOVE &&
			    (lex || ident_within(ID(done, i), ID(path, j)))) {
				r = fail_at(c, m[i].done,
					    "done_dir %s is inside (or is) the watched folder "
					    "%s: moved originals would be processed again%s",
					    quote(f[i].done_dir).s, quote(f[j].path).s,
					    by_identity(lex));
				goto out;
			}
		}
	}
#undef ID
out:
	for (size_t i = 0; i < 3 * n; i++)
		free(ids[i].real);
	free(ids);
	return r;
}

static int parse_folders(struct ctx *c, const yaml_node_t *n, const struct folder_config *tmpl,
			 const struct fmeta *tmeta, struct config *cfg)
{
	yaml_node_item_t *items;
	struct fmeta *meta;
	size_t count;
	int r = 0;

	if (n->type == YAML_MAPPING_NODE || (n->type == YAML_SCALAR_NODE && !is_null(n)))
		return fail_at(c, n->start_mark, "folders: expected a sequence of folders, got %s",
			       kind_of(n));
	count = is_null(n) ? 0
			   : (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	if (!count)
		return fail_at(c, n->start_mark, "folders: the list is empty (add at least one)");
	items = n->data.sequence.items.start;
	cfg->folders = calloc(count, sizeof(*cfg->folders));
	meta = calloc(count, sizeof(*meta));
	if (!cfg->folders || !meta) {
		r = oom(c);
		goto out;
	}
	cfg->n_folders = count;
	for (size_t i = 0; i < count && r == 0; i++)
		r = parse_folder(c, node_at(c, items[i]), tmpl, tmeta, &cfg->folders[i], &meta[i]);
	if (r == 0)
		r = check_overlaps(c, cfg, meta);
out:
	free(meta);
	return r;
}

static bool env_name_ok(const char *s)
{
	if (!*s || (*s >= '0' && *s <= '9'))
		return false;
	for (; *s; s++)
		if (!(*s == '_' || (*s >= '0' && *s <= '9') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= 'a' && *s <= 'z')))
			return false;
	return true;
}

/* A file named in the configuration that curl reads only when a transfer
 * starts: without this, a typo would pass --check and fail every call. */
static int check_readable_file(struct ctx *c, const yaml_node_t *n, const char *key,
			       const char *path)
{
	struct stat st;
	char ebuf[128];
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK), e;

	if (fd < 0) {
		e = errno;
		return fail_at(c, n->start_mark, "%s: cannot read %s: %s", key, quote(path).s,
			       strerror_r(e, ebuf, sizeof(ebuf)));
	}
	e = fstat(fd, &st) < 0 ? errno : 0;
	close(fd);
	if (e)
		return fail_at(c, n->start_mark, "%s: cannot read %s: %s", key, quote(path).s,
			       strerror_r(e, ebuf, sizeof(ebuf)));
	if (!S_ISREG(st.st_mode))
		return fail_at(c, n->start_mark, "%s: %s is not a regular file", key,
			       quote(path).s);
	return 0;
}

static int check_base_url(struct ctx *c, const yaml_node_t *n, struct api_config *api)
{
	char *u = api->base_url;
	size_t len = strlen(u), scheme;
	struct url_info info;
	int r;

	if (!strncasecmp(u, "https://", 8))
		scheme = 8;
	else if (!strncasecmp(u, "http://", 7))
		scheme = 7;
	else
		return fail_at(c, n->start_mark,
			       "api.base_url: expected a URL starting with http:// or https://, "
			       "got %s",
			       quote(u).s);
	for (size_t i = 0; i < scheme - 3; i++)
		u[i] = (char)(u[i] | 0x20); /* lowercase, as the transfer code compares it */
	for (const char *p = u; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f)
			return fail_at(c, n->start_mark,
				       "api.base_url: spaces and control characters are not "
				       "allowed, got %s",
				       quote(u).s);
	while (len > scheme && u[len - 1] == '/')
		u[--len] = '\0';
	if (len == scheme || u[scheme] == '/')
		return fail_at(c, n->start_mark, "api.base_url: no host in %s", quote(u).s);
	/* The host curl will connect to, as curl parses it (the transfer code
	 * checks the same way, and again on the address it connects to). */
	r = url_inspect(u, &info);
	if (r == -ENOMEM)
		return oom(c);
	if (r < 0)
		return fail_at(c, n->start_mark, "api.base_url: not a valid URL: %s", quote(u).s);
	if (!info.https && !api->allow_insecure_http && info.host != URL_LOOPBACK)
		return fail_at(c, n->start_mark,
			       "api.base_url: plain http beyond this machine would send the API "
			       "key in the clear; set api.allow_insecure_http: true to allow it");
	return 0;
}

static int parse_api(struct ctx *c, const yaml_node_t *n, struct api_config *api)
{
	struct found f[AK_COUNT];
	uint64_t u;
	unsigned e = 0;
	int r;

	if (n->type != YAML_MAPPING_NODE)
		return fail_at(c, n->start_mark,
			       "api: expected a mapping with base_url and model, got %s",
			       kind_of(n));
	r = walk_mapping(c, n, api_keys, AK_COUNT, "in api", f);
	if (r < 0)
		return r;
	for (size_t k = AK_BASE_URL; k <= AK_MODEL; k++)
		if (!f[k].value)
			return fail_at(c, n->start_mark, "missing key \"%s\" in api", api_keys[k]);
	if ((r = get_string(c, f[AK_MODEL].value, "api.model", &api->model)) < 0)
		return r;
	c->model = api->model;
	if (f[AK_INSECURE].value &&
	    (r = get_bool(c, f[AK_INSECURE].value, "api.allow_insecure_http",
			  &api->allow_insecure_http)) < 0)
		return r;
	if ((r = get_string(c, f[AK_BASE_URL].value, "api.base_url", &api->base_url)) < 0 ||
	    (r = check_base_url(c, f[AK_BASE_URL].value, api)) < 0)
		return r;
	if (f[AK_KEY_ENV].value && f[AK_KEY_FILE].value) {
		const yaml_node_t *later = f[AK_KEY_ENV].key->start_mark.index >
							   f[AK_KEY_FILE].key->start_mark.index
						   ? f[AK_KEY_ENV].key
						   : f[AK_KEY_FILE].key;

		return fail_at(c, later->start_mark,
			       "api.api_key_env and api.api_key_file are both set: pick one");
	}
	if (f[AK_KEY_ENV].value) {
		if ((r = get_string(c, f[AK_KEY_ENV].value, "api.api_key_env", &api->api_key_env)) <
		    0)
			return r;
		if (!env_name_ok(api->api_key_env))
			return fail_at(c, f[AK_KEY_ENV].value->start_mark,
				       "api.api_key_env: expected an environment variable name, "
				       "got %s",
				       quote(api->api_key_env).s);
	} else if (f[AK_KEY_FILE].value) {
		if ((r = get_path(c, f[AK_KEY_FILE].value, "api.api_key_file",
				  &api->api_key_file)) < 0)
			return r;
	} else if ((r = replace_str(c, &api->api_key_env, "SEEDREAM_API_KEY")) < 0) {
		return r;
	}
	if (f[AK_TIMEOUT].value &&
	    (r = get_duration(c, f[AK_TIMEOUT].value, "api.timeout", 1000, &api->timeout_ms)) < 0)
		return r;
	if (f[AK_MAX_IN_FLIGHT].value) {
		if ((r = get_uint(c, f[AK_MAX_IN_FLIGHT].value, "api.max_in_flight", 1, 256, &u)) <
		    0)
			return r;
		api->max_in_flight = (unsigned)u;
	}
	if (f[AK_RESPONSE_FORMAT].value) {
		r = get_enum(c, f[AK_RESPONSE_FORMAT].value, "api.response_format",
			     response_format_names, N_ELEMENTS(response_format_names), &e);
		if (r < 0)
			return r;
		api->response_format = (enum response_format)e;
		c->b64_json = api->response_format == RESPONSE_FORMAT_B64_JSON;
	}
	if (f[AK_RETRIES].value) {
		if ((r = get_uint(c, f[AK_RETRIES].value, "api.retries", 0, 100, &u)) < 0)
			return r;
		api->retries = (unsigned)u;
	}
	if (f[AK_PAUSE_RETRY].value &&
	    (r = get_duration(c, f[AK_PAUSE_RETRY].value, "api.pause_retry", 1000,
			      &api->pause_retry_ms)) < 0)
		return r;
	if (f[AK_PRIVATE_RESULTS].value &&
	    (r = get_bool(c, f[AK_PRIVATE_RESULTS].value, "api.allow_private_result_urls",
			  &api->allow_private_result_urls)) < 0)
		return r;
	if (f[AK_CA_FILE].value &&
	    ((r = get_path(c, f[AK_CA_FILE].value, "api.ca_file", &api->ca_file)) < 0 ||
	     (r = check_readable_file(c, f[AK_CA_FILE].value, "api.ca_file", api->ca_file)) < 0))
		return r;
	return 0;
}

/* systemd's StateDirectory= may list several, separated by ':'; ours is the first. */
static int default_state_dir(struct ctx *c, char **dst)
{
	const char *env = getenv("STATE_DIRECTORY"), *why;
	char *s;

	if (env && env[0] == '/') {
		s = strndup(env, strcspn(env, ":"));
		if (!s)
			return oom(c);
		if (normalise_path(s, &why) == 0) {
			*dst = s;
			return 0;
		}
		free(s);
	}
	return replace_str(c, dst, "/var/lib/seedreamd");
}

int config_parse_listen(const char *text, struct sockaddr_storage *ret_addr, socklen_t *ret_len)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon, *port_text;
	struct sockaddr_storage ss = {0};
	unsigned long port;
	size_t host_len;
	char *end;

	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		host_len = (size_t)(close - text - 1);
		if (host_len >= sizeof(host))
			return -EINVAL;
		memcpy(host, text + 1, host_len);
		port_text = close + 2;
	} else {
		colon = strrchr(text, ':');
		if (!colon)
			return -EINVAL;
		host_len = (size_t)(colon - text);
		if (host_len >= sizeof(host))
			return -EINVAL;
		memcpy(host, text, host_len);
		port_text = colon + 1;
	}
	host[host_len] = '\0';
	if (port_text[0] < '0' || port_text[0] > '9')
		return -EINVAL;
	errno = 0;
	port = strtoul(port_text, &end, 10);
	if (errno || *end || port < 1 || port > 65535)
		return -EINVAL;
	if (text[0] == '[') {
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
		if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1)
			return -EINVAL;
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		*ret_len = sizeof(*a6);
	} else {
		struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
		if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
			return -EINVAL;
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		*ret_len = sizeof(*a4);
	}
	*ret_addr = ss;
	return 0;
}

/* A numeric address and port: a host name would need a resolver, which blocks. */
static int get_listen(struct ctx *c, const yaml_node_t *n, const char *key, char **dst)
{
	static const char what[] = "an address and port such as 127.0.0.1:9464 or [::1]:9464";
	struct sockaddr_storage ss;
	socklen_t len;
	const char *v;
	int r = get_text(c, n, key, what, &v);

	if (r < 0)
		return r;
	if (config_parse_listen(v, &ss, &len) < 0)
		return fail_at(c, n->start_mark, "%s: expected %s, got %s", key, what, quote(v).s);
	return replace_str(c, dst, v);
}

/* "off", or an absolute path that fits a unix socket address (sun_path). */
static int get_control_socket(struct ctx *c, const yaml_node_t *n, struct config *cfg)
{
	const char *v;
	int r = get_text(c, n, "control_socket", "an absolute path or off", &v);

	if (r < 0)
		return r;
	if (strcmp(v, "off") == 0) {
		cfg->control_socket_off = true;
		return 0;
	}
	r = get_path(c, n, "control_socket", &cfg->control_socket);
	if (r < 0)
		return r;
	if (strlen(cfg->control_socket) >= CONFIG_SOCKET_PATH_MAX)
		return fail_at(c, n->start_mark,
			       "control_socket: a unix socket path must be shorter than %d bytes, "
			       "got %zu",
			       CONFIG_SOCKET_PATH_MAX, strlen(cfg->control_socket));
	return 0;
}

static int parse_top_scalars(struct ctx *c, const struct found *f, struct config *cfg)
{
	int r = 0;

	if (f[TK_STATE_DIR].value)
		r = get_path(c, f[TK_STATE_DIR].value, "state_dir", &cfg->state_dir);
	else
		r = default_state_dir(c, &cfg->state_dir);
	if (r == 0 && f[TK_STOP_TIMEOUT].value)
		r = get_duration(c, f[TK_STOP_TIMEOUT].value, "stop_timeout", 0,
				 &cfg->stop_timeout_ms);
	if (r == 0 && f[TK_RESCAN_INTERVAL].value)
		r = get_duration(c, f[TK_RESCAN_INTERVAL].value, "rescan_interval", 1000,
				 &cfg->rescan_interval_ms);
	if (r == 0 && f[TK_MIN_FREE_SPACE].value)
		r = get_bytes(c, f[TK_MIN_FREE_SPACE].value, "min_free_space", 0, UINT64_MAX,
			      &cfg->min_free_space);
	if (r == 0 && f[TK_MAX_PER_DAY].value)
		r = get_uint(c, f[TK_MAX_PER_DAY].value, "max_images_per_day", 0, UINT64_MAX,
			     &cfg->max_images_per_day);
	if (r == 0 && f[TK_PER_MINUTE].value)
		r = get_uint(c, f[TK_PER_MINUTE].value, "images_per_minute", 0, UINT64_MAX,
			     &cfg->images_per_minute);
	if (r == 0 && f[TK_MAX_FITS].value) {
		uint64_t n = 0;
		r = get_uint(c, f[TK_MAX_FITS].value, "max_fits", 1, 64, &n);
		cfg->max_fits = (unsigned)n;
	}
	if (r == 0 && f[TK_METRICS_LISTEN].value)
		r = get_listen(c, f[TK_METRICS_LISTEN].value, "metrics_listen",
			       &cfg->metrics_listen);
	if (r == 0 && f[TK_METRICS_TEXTFILE].value)
		r = get_path(c, f[TK_METRICS_TEXTFILE].value, "metrics_textfile",
			     &cfg->metrics_textfile);
	if (r == 0 && f[TK_CONTROL_SOCKET].value)
		r = get_control_socket(c, f[TK_CONTROL_SOCKET].value, cfg);
	return r;
}

/* ---- notify and spend ---- */

int config_parse_money(const char *text, uint64_t *ret_micros)
{
	const uint64_t max_units = 1000000000000ull;
	uint64_t units, frac = 0, scale = CONFIG_MICROS;
	const char *end;

	if (parse_digits(text, &units, &end) < 0 || units > max_units)
		return -EINVAL;
	if (*end == '.') {
		end++;
		if (*end < '0' || *end > '9')
			return -EINVAL;
		while (*end >= '0' && *end <= '9') {
			if (scale == 1)
				return -EINVAL; /* finer than a millionth */
			scale /= 10;
			frac += (uint64_t)(*end - '0') * scale;
			end++;
		}
	}
	if (*end)
		return -EINVAL;
	*ret_micros = units * CONFIG_MICROS + frac;
	return 0;
}

int config_price_of(const struct config *config, const char *model, uint64_t *ret_micros)
{
	for (size_t i = 0; model && i < config->n_prices; i++) {
		if (!strcmp(config->prices[i].model, model)) {
			*ret_micros = config->prices[i].micros;
			return 0;
		}
	}
	return -ENOENT;
}

static int get_money(struct ctx *c, const yaml_node_t *n, const char *key, uint64_t *ret)
{
	static const char what[] = "an amount such as 25 or 0.03 (at most 6 decimals)";
	const char *v;
	int r = get_text(c, n, key, what, &v);

	if (r < 0)
		return r;
	if (config_parse_money(v, ret) < 0)
		return fail_at(c, n->start_mark, "%s: expected %s, got %s", key, what, quote(v).s);
	return 0;
}

static int parse_prices(struct ctx *c, const yaml_node_t *n, struct config *cfg)
{
	size_t count;
	int r;

	if (n->type != YAML_MAPPING_NODE)
		return fail_at(c, n->start_mark,
			       "price_per_image: expected a mapping of model: price, got %s",
			       kind_of(n));
	count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
	cfg->prices = calloc(count ? count : 1, sizeof(*cfg->prices));
	if (!cfg->prices)
		return oom(c);
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = node_at(c, p->key), *v = node_at(c, p->value);
		struct config_price *price = &cfg->prices[cfg->n_prices];
		const char *model;
		uint64_t micros;

		r = get_text(c, k, "price_per_image", "a model name", &model);
		if (r < 0)
			return r;
		if (config_price_of(cfg, model, &micros) == 0)
			return fail_at(c, k->start_mark, "price_per_image: duplicate model %s",
				       quote(model).s);
		r = get_money(c, v, "price_per_image", &price->micros);
		if (r < 0)
			return r;
		/* Far above any real price, and small enough that the sums of a
		 * day's images stay exact. */
		if (price->micros > CONFIG_PRICE_MAX_MICROS)
			return fail_at(c, v->start_mark,
				       "price_per_image: at most 1000000 per image, got %llu.%06llu",
				       (unsigned long long)(price->micros / CONFIG_MICROS),
				       (unsigned long long)(price->micros % CONFIG_MICROS));
		if (!(price->model = strdup(model)))
			return oom(c);
		cfg->n_prices++;
	}
	return 0;
}

static int get_events(struct ctx *c, const yaml_node_t *n, unsigned *ret)
{
	yaml_node_item_t *items;
	unsigned bits = 0;
	unsigned e;
	int r;

	if (n->type != YAML_SEQUENCE_NODE)
		return fail_at(c, n->start_mark,
			       "notify.events: expected a sequence of event names, got %s",
			       kind_of(n));
	for (items = n->data.sequence.items.start; items < n->data.sequence.items.top; items++) {
		r = get_enum(c, node_at(c, *items), "notify.events", event_names,
			     N_ELEMENTS(event_names), &e);
		if (r < 0)
			return r;
		bits |= 1u << e;
	}
	*ret = bits;
	return 0;
}

/* The same rule as api.base_url for plain http: an event may say what
 * failed and why, which is not for the wire beyond this machine unless the
 * user allows it (api.allow_insecure_http). */
static int check_webhook(struct ctx *c, const yaml_node_t *n, const char *u,
			 const struct api_config *api)
{
	struct url_info info;
	int r;

	if (strncasecmp(u, "https://", 8) && strncasecmp(u, "http://", 7))
		return fail_at(c, n->start_mark,
			       "notify.webhook: expected a URL starting with http:// or https://, "
			       "got %s",
			       quote(u).s);
	for (const char *p = u; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f)
			return fail_at(c, n->start_mark,
				       "notify.webhook: spaces and control characters are not "
				       "allowed, got %s",
				       quote(u).s);
	r = url_inspect(u, &info);
	if (r == -ENOMEM)
		return oom(c);
	if (r < 0)
		return fail_at(c, n->start_mark, "notify.webhook: not a valid URL: %s", quote(u).s);
	if (!info.https && !api->allow_insecure_http && info.host != URL_LOOPBACK)
		return fail_at(c, n->start_mark,
			       "notify.webhook: plain http beyond this machine; use https or set "
			       "api.allow_insecure_http: true to allow it");
	return 0;
}

/* "HH:MM", local time. */
static int get_time_of_day(struct ctx *c, const yaml_node_t *n, const char *key, unsigned *ret)
{
	static const char what[] = "a local time of day as HH:MM (00:00 to 23:59)";
	const char *v, *end;
	uint64_t h, m;
	int r = get_text(c, n, key, what, &v);

	if (r < 0)
		return r;
	if (strlen(v) != 5 || parse_digits(v, &h, &end) < 0 || end != v + 2 || *end != ':' ||
	    parse_digits(end + 1, &m, &end) < 0 || *end || h > 23 || m > 59)
		return fail_at(c, n->start_mark, "%s: expected %s, got %s", key, what, quote(v).s);
	*ret = (unsigned)(h * 60 + m);
	return 0;
}

static int parse_notify(struct ctx *c, const yaml_node_t *n, struct config *cfg)
{
	struct notify_config *nc = &cfg->notify;
	struct found f[NK_COUNT];
	int r;

	if (n->type != YAML_MAPPING_NODE)
		return fail_at(c, n->start_mark,
			       "notify: expected a mapping with webhook and/or command, got %s",
			       kind_of(n));
	r = walk_mapping(c, n, notify_keys, NK_COUNT, "in notify", f);
	if (r < 0)
		return r;
	if (!f[NK_WEBHOOK].value && !f[NK_COMMAND].value)
		return fail_at(c, n->start_mark, "notify: needs a webhook or a command (or both)");
	if (f[NK_WEBHOOK].value &&
	    ((r = get_string(c, f[NK_WEBHOOK].value, "notify.webhook", &nc->webhook)) < 0 ||
	     (r = check_webhook(c, f[NK_WEBHOOK].value, nc->webhook, &cfg->api)) < 0))
		return r;
	if (f[NK_COMMAND].value) {
		struct stat st;

		r = get_path(c, f[NK_COMMAND].value, "notify.command", &nc->command);
		if (r < 0)
			return r;
		if (stat(nc->command, &st) < 0 || !S_ISREG(st.st_mode) ||
		    access(nc->command, X_OK) < 0)
			return fail_at(c, f[NK_COMMAND].value->start_mark,
				       "notify.command: %s is not an executable file",
				       quote(nc->command).s);
	}
	if (f[NK_EVENTS].value && (r = get_events(c, f[NK_EVENTS].value, &nc->events)) < 0)
		return r;
	if (f[NK_COMMAND_TIMEOUT].value &&
	    (r = get_duration(c, f[NK_COMMAND_TIMEOUT].value, "notify.command_timeout", 100,
			      &nc->command_timeout_ms)) < 0)
		return r;
	if (f[NK_SUMMARY_AT].value &&
	    (r = get_time_of_day(c, f[NK_SUMMARY_AT].value, "notify.daily_summary_at",
				 &nc->summary_minute)) < 0)
		return r;
	return 0;
}

static int parse_spend(struct ctx *c, const struct found *f, struct config *cfg)
{
	uint64_t micros;
	int r;

	if (f[TK_PRICES].value && (r = parse_prices(c, f[TK_PRICES].value, cfg)) < 0)
		return r;
	if (f[TK_CURRENCY].value) {
		r = get_string(c, f[TK_CURRENCY].value, "currency", &cfg->currency);
		if (r < 0)
			return r;
		bool odd = strlen(cfg->currency) > 16;

		for (const char *p = cfg->currency; *p; p++)
			odd |= (unsigned char)*p < 0x20 || *p == 0x7f;
		if (odd)
			return fail_at(c, f[TK_CURRENCY].value->start_mark,
				       "currency: expected a short name such as EUR, got %s",
				       quote(cfg->currency).s);
	}
	if (f[TK_MAX_SPEND].value) {
		r = get_money(c, f[TK_MAX_SPEND].value, "max_spend_per_day",
			      &cfg->max_spend_per_day);
		if (r < 0)
			return r;
		/* Without a price the limit could never be reached. */
		if (cfg->max_spend_per_day && config_price_of(cfg, cfg->api.model, &micros) < 0)
			return fail_at(c, f[TK_MAX_SPEND].value->start_mark,
				       "max_spend_per_day: price_per_image gives no price for "
				       "api.model %s",
				       quote(cfg->api.model).s);
	}
	return 0;
}

static int parse_root(struct ctx *c, const yaml_node_t *root, struct config *cfg)
{
	struct found f[TK_COUNT];
	struct folder_config tmpl;
	struct fmeta tmeta = {0};
	int r;

	if (root->type != YAML_MAPPING_NODE)
		return fail_at(c, root->start_mark,
			       "expected a mapping with api and folders at the top level, got %s",
			       kind_of(root));
	r = walk_mapping(c, root, top_keys, TK_COUNT, "at top level", f);
	if (r < 0)
		return r;
	if (!f[TK_API].value)
		return fail_at(c, root->start_mark, "missing key \"api\" at top level");
	if (!f[TK_FOLDERS].value)
		return fail_at(c, root->start_mark, "missing key \"folders\" at top level");
	r = parse_api(c, f[TK_API].value, &cfg->api);
	if (r < 0)
		return r;
	r = parse_top_scalars(c, f, cfg);
	if (r < 0)
		return r;
	r = parse_spend(c, f, cfg);
	if (r == 0 && f[TK_NOTIFY].value)
		r = parse_notify(c, f[TK_NOTIFY].value, cfg);
	if (r < 0)
		return r;
	folder_init(&tmpl);
	r = f[TK_DEFAULTS].value ? parse_defaults(c, f[TK_DEFAULTS].value, &tmpl, &tmeta) : 0;
	if (r == 0)
		r = parse_folders(c, f[TK_FOLDERS].value, &tmpl, &tmeta, cfg);
	folder_clear(&tmpl);
	/* Like a folder's own limit: a request of N images waits until N fit. */
	for (size_t i = 0; r == 0 && cfg->max_images_per_day && i < cfg->n_folders; i++)
		if (cfg->max_images_per_day < cfg->folders[i].max_images)
			r = fail_at(c, f[TK_MAX_PER_DAY].value->start_mark,
				    "max_images_per_day %" PRIu64 " is less than max_images %u of "
				    "folder %s, so no request of it could ever start",
				    cfg->max_images_per_day, cfg->folders[i].max_images,
				    quote(cfg->folders[i].path).s);
	return r;
}

/* ---- the document ---- */

static yaml_mark_t mark_at_offset(const char *text, size_t len, size_t offset)
{
	yaml_mark_t m = {0};

	for (size_t i = 0; i < offset && i < len; i++) {
		if (text[i] == '\n') {
			m.line++;
			m.column = 0;
		} else if (((unsigned char)text[i] & 0xc0) != 0x80) {
			m.column++;
		}
	}
	m.index = offset;
	return m;
}

static int syntax_error(struct ctx *c, const yaml_parser_t *p, const char *text, size_t len)
{
	yaml_mark_t m = p->problem_mark;
	const char *problem = p->problem ? p->problem : "malformed document";

	if (p->error == YAML_MEMORY_ERROR)
		return oom(c);
	if (p->error == YAML_READER_ERROR)
		m = mark_at_offset(text, len, p->problem_offset); /* readers leave the mark unset */
	if (p->context)
		return fail_at(c, m, "YAML syntax error: %s (%s at line %zu)", problem, p->context,
			       p->context_mark.line + 1);
	return fail_at(c, m, "YAML syntax error: %s", problem);
}

/* A pass over the events before building the tree: the tree API expands
 * nothing but gives no way to see aliases, and silently loads only the first
 * of several documents. */
static int prescan(struct ctx *c, const char *text, size_t len)
{
	yaml_parser_t p;
	yaml_event_t ev;
	int depth = 0, docs = 0, r = 0;
	bool done = false;

	if (!yaml_parser_initialize(&p))
		return oom(c);
	yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
	while (!done && r == 0) {
		if (!yaml_parser_parse(&p, &ev)) {
			r = syntax_error(c, &p, text, len);
			break;
		}
		switch (ev.type) {
		case YAML_ALIAS_EVENT:
			r = fail_at(c, ev.start_mark, "aliases are not supported");
			break;
		case YAML_DOCUMENT_START_EVENT:
			if (++docs > 1)
				r = fail_at(c, ev.start_mark, "only one YAML document is allowed");
			break;
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			if (++depth > MAX_DEPTH)
				r = fail_at(c, ev.start_mark, "nested more than %d levels deep",
					    MAX_DEPTH);
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			depth--;
			break;
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&p);
	return r;
}

static void config_set_defaults(struct config *cfg)
{
	cfg->api.timeout_ms = 180000;
	cfg->api.max_in_flight = 4;
	cfg->api.response_format = RESPONSE_FORMAT_URL;
	cfg->api.retries = 5;
	cfg->api.pause_retry_ms = 300000;
	cfg->stop_timeout_ms = 60000;
	cfg->rescan_interval_ms = 600000;
	cfg->min_free_space = 256 * MiB;
	/* One fit at a time: a 48 MP photo that must be turned upright peaks
	 * at ~160 MB (the rotation needs the whole fitted image), a 12 MP HEIC
	 * at ~100 MB (libheif decodes whole images); two at once pass 300 MB
	 * (bench/fit.py). One core fits a photo in 2-5 s, faster than the API
	 * generates. */
	cfg->max_fits = 1;
	cfg->notify.events = CONFIG_EVENT_ALL;
	cfg->notify.command_timeout_ms = 30000;
}

int config_parse(const char *name, const char *yaml, size_t len, struct config **ret_config,
		 char *err, size_t errlen)
{
	struct ctx c = {.name = name ? name : "<config>", .err = err, .errlen = errlen};
	struct config *cfg = NULL;
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_node_t *root;
	bool have_doc = false;
	int r;

	put_err(err, errlen, "%s", "");
	if (!ret_config || (!yaml && len))
		return -EINVAL;
	if (!yaml)
		yaml = "";
	if (len > MAX_DOCUMENT_BYTES) {
		put_err(err, errlen, "%s: larger than 1 MiB, refused", c.name);
		return -EINVAL;
	}
	r = prescan(&c, yaml, len);
	if (r < 0)
		return r;
	if (!yaml_parser_initialize(&parser))
		return oom(&c);
	yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
	if (!yaml_parser_load(&parser, &doc)) {
		r = syntax_error(&c, &parser, yaml, len);
		goto out;
	}
	have_doc = true;
	c.doc = &doc;
	root = yaml_document_get_root_node(&doc);
	if (!root) {
		r = fail_at(&c, (yaml_mark_t){0}, "the config is empty");
		goto out;
	}
	cfg = calloc(1, sizeof(*cfg));
	if (!cfg || !(cfg->source_file = strdup(c.name))) {
		r = oom(&c);
		goto out;
	}
	config_set_defaults(cfg);
	r = parse_root(&c, root, cfg);
	if (r < 0)
		goto out;
	*ret_config = cfg;
	cfg = NULL;
out:
	config_free(cfg);
	if (have_doc)
		yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	return r;
}

int config_load(const char *path, struct config **ret_config, char *err, size_t errlen)
{
	char *buf = NULL, ebuf[128];
	size_t len;
	ssize_t n;
	int fd, r;

	put_err(err, errlen, "%s", "");
	if (!path || !ret_config)
		return -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		r = -errno;
		goto fail_errno;
	}
	/* One byte over the limit tells "too large" from "exactly the limit". */
	buf = malloc(MAX_DOCUMENT_BYTES + 1);
	if (!buf) {
		r = -ENOMEM;
		goto fail_errno;
	}
	n = fdio_read_full(fd, buf, MAX_DOCUMENT_BYTES + 1);
	if (n < 0) {
		r = (int)n;
		goto fail_errno;
	}
	len = (size_t)n;
	if (len > MAX_DOCUMENT_BYTES) {
		put_err(err, errlen, "%s: larger than 1 MiB, refused", path);
		r = -EINVAL;
		goto out;
	}
	r = config_parse(path, buf, len, ret_config, err, errlen);
	goto out;
fail_errno:
	put_err(err, errlen, "%s: %s", path, strerror_r(-r, ebuf, sizeof(ebuf)));
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return r;
}

void config_free(struct config *config)
{
	if (!config)
		return;
	free(config->source_file);
	free(config->api.base_url);
	free(config->api.model);
	free(config->api.api_key_env);
	free(config->api.api_key_file);
	free(config->api.ca_file);
	for (size_t i = 0; i < config->n_folders; i++)
		folder_clear(&config->folders[i]);
	free(config->folders);
	free(config->state_dir);
	free(config->notify.webhook);
	free(config->notify.command);
	for (size_t i = 0; i < config->n_prices; i++)
		free(config->prices[i].model);
	free(config->prices);
	free(config->currency);
	free(config->metrics_listen);
	free(config->metrics_textfile);
	free(config->control_socket);
	free(config);
}
