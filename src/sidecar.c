#include "sidecar.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "b64.h"
#include "civil.h"
#include "clean.h"

int sidecar_format_time(int64_t sec, long nsec, char *buf, size_t len)
{
	time_t t = (time_t)sec;
	struct tm tm;
	int n;

	if (!buf || nsec >= 1000000000L || (int64_t)t != sec || !gmtime_r(&t, &tm))
		return -EINVAL;
	/* RFC 3339 has exactly four year digits. */
	if (tm.tm_year < -1900 || tm.tm_year > 9999 - 1900)
		return -EINVAL;
	if (nsec >= 0)
		n = snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ", tm.tm_year + 1900,
			     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, nsec);
	else
		n = snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
			     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	if (n < 0 || (size_t)n >= len)
		return -EINVAL;
	return 0;
}

/* Exactly `digits` decimal digits at *p; advances *p. */
static bool parse_digits(const char **p, int digits, int *ret)
{
	int v = 0;

	for (int i = 0; i < digits; i++) {
		char c = (*p)[i];

		if (c < '0' || c > '9')
			return false;
		v = v * 10 + (c - '0');
	}
	*p += digits;
	*ret = v;
	return true;
}

static bool expect_char(const char **p, char c)
{
	if (**p != c)
		return false;
	(*p)++;
	return true;
}

int sidecar_parse_time(const char *text, int64_t *ret_sec, long *ret_nsec)
{
	int year, mon, day, hour, min, sec;
	const char *p = text;
	long nsec = 0;

	if (!text)
		return -EINVAL;
	if (!parse_digits(&p, 4, &year) || !expect_char(&p, '-') || !parse_digits(&p, 2, &mon) ||
	    !expect_char(&p, '-') || !parse_digits(&p, 2, &day) || !expect_char(&p, 'T') ||
	    !parse_digits(&p, 2, &hour) || !expect_char(&p, ':') || !parse_digits(&p, 2, &min) ||
	    !expect_char(&p, ':') || !parse_digits(&p, 2, &sec))
		return -EINVAL;
	if (!civil_date_valid(year, mon, day) || hour > 23 || min > 59 || sec > 59)
		return -EINVAL;
	if (*p == '.') {
		int digits = 0;

		p++;
		while (*p >= '0' && *p <= '9') {
			if (++digits > 9)
				return -EINVAL;
			nsec = nsec * 10 + (*p++ - '0');
		}
		if (digits == 0)
			return -EINVAL;
		for (; digits < 9; digits++)
			nsec *= 10;
	}
	if (!expect_char(&p, 'Z') || *p != '\0')
		return -EINVAL;
	if (ret_sec)
		*ret_sec =
		    civil_days_from_civil(year, mon, day) * 86400 + hour * 3600 + min * 60 + sec;
	if (ret_nsec)
		*ret_nsec = nsec;
	return 0;
}

/* cJSON adders return NULL only when out of memory; NULL strings become null.
 * cJSON writes bytes as they are, and a document must stay valid UTF-8: bad
 * bytes become U+FFFD (names that must stay exact go through add_name). */
bool sidecar_add_string(cJSON *obj, const char *key, const char *value)
{
	char *lossy;
	bool ok;

	if (!value)
		return cJSON_AddNullToObject(obj, key) != NULL;
	if (clean_utf8_valid(value))
		return cJSON_AddStringToObject(obj, key, value) != NULL;
	lossy = clean_text(value, SIZE_MAX, NULL);
	ok = lossy && cJSON_AddStringToObject(obj, key, lossy) != NULL;
	free(lossy);
	return ok;
}

static bool add_number(cJSON *obj, const char *key, double value)
{
	return cJSON_AddNumberToObject(obj, key, value) != NULL;
}

/* A time outside RFC 3339's four-digit years is written as null. */
static bool add_time(cJSON *obj, const char *key, int64_t sec, long nsec)
{
	char buf[64];

	if (sidecar_format_time(sec, nsec, buf, sizeof(buf)) < 0)
		return sidecar_add_string(obj, key, NULL);
	return sidecar_add_string(obj, key, buf);
}

/* JSON text must be UTF-8, names on disk need not be: a name that is not
 * valid UTF-8 is written readable (U+FFFD for bad bytes) under key, and
 * exactly, as hex, under "<key>_hex". */
bool sidecar_add_name(cJSON *obj, const char *key, const char *name)
{
	char hex_key[32], *lossy, *hex;
	size_t n;
	bool ok;

	if (!name || clean_utf8_valid(name))
		return sidecar_add_string(obj, key, name);
	n = strlen(name);
	lossy = clean_text(name, SIZE_MAX, NULL);
	hex = malloc(2 * n + 1);
	ok = lossy && hex;
	if (ok) {
		b64_hex((const uint8_t *)name, n, hex);
		(void)snprintf(hex_key, sizeof(hex_key), "%s_hex", key);
		ok = sidecar_add_string(obj, key, lossy) && sidecar_add_string(obj, hex_key, hex);
	}
	free(lossy);
	free(hex);
	return ok;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *sidecar_get_name(const cJSON *root, const char *key)
{
	char hex_key[32];
	const cJSON *hex, *src = cJSON_GetObjectItemCaseSensitive(root, key);
	size_t n;
	char *out;

	(void)snprintf(hex_key, sizeof(hex_key), "%s_hex", key);
	hex = cJSON_GetObjectItemCaseSensitive(root, hex_key);
	if (!cJSON_IsString(hex) || !hex->valuestring)
		return cJSON_IsString(src) && src->valuestring ? strdup(src->valuestring) : NULL;
	n = strlen(hex->valuestring);
	if (n == 0 || n % 2)
		return NULL;
	out = malloc(n / 2 + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hex_value(hex->valuestring[2 * i]),
		    lo = hex_value(hex->valuestring[2 * i + 1]);
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
			free(out);
			return NULL;
		}
		out[i] = (char)(hi << 4 | lo);
	}
	out[n / 2] = '\0';
	return out;
}

static bool add_source(cJSON *obj, const struct sidecar_source *src)
{
	/* Sizes stay exact up to 2^53 bytes as a JSON number. */
	long nsec = src->mtime_nsec < 0 ? 0 : src->mtime_nsec;

	return sidecar_add_name(obj, SIDECAR_SOURCE, src->source) &&
	       sidecar_add_string(obj, SIDECAR_SHA256, src->sha256_hex) &&
	       add_number(obj, SIDECAR_SIZE, (double)src->size) &&
	       add_time(obj, SIDECAR_MTIME, src->mtime_sec, nsec);
}

static bool add_usage(cJSON *obj, const cJSON *usage)
{
	cJSON *copy;

	if (!usage)
		return cJSON_AddNullToObject(obj, SIDECAR_USAGE) != NULL;
	copy = cJSON_Duplicate(usage, true);
	if (!copy)
		return false;
	/* Bounded by api_bound_usage already; this keeps the document UTF-8
	 * whoever filled usage (a reused sidecar, say). */
	if (clean_json(copy, NULL) < 0) {
		cJSON_Delete(copy);
		return false;
	}
	if (!cJSON_AddItemToObject(obj, SIDECAR_USAGE, copy)) {
		cJSON_Delete(copy);
		return false;
	}
	return true;
}

/* cJSON_Print's text plus the trailing newline, in a plain malloc() buffer so
 * the caller can free() it whatever hooks cJSON was given. */
static char *print_document(const cJSON *root)
{
	char *text, *out;
	size_t len;

	text = cJSON_Print(root);
	if (!text)
		return NULL;
	len = strlen(text);
	out = malloc(len + 2);
	if (out) {
		memcpy(out, text, len);
		out[len] = '\n';
		out[len + 1] = '\0';
	}
	cJSON_free(text);
	return out;
}

static bool add_fitted(cJSON *obj, const struct sidecar_fitted *f)
{
	cJSON *o = cJSON_AddObjectToObject(obj, "fitted"), *reasons;

	if (!o || !sidecar_add_string(o, "from", f->from) || !sidecar_add_string(o, "to", f->to))
		return false;
	reasons = cJSON_AddArrayToObject(o, "reasons");
	if (!reasons)
		return false;
	for (size_t i = 0; i < f->n_reasons; i++) {
		cJSON *r = cJSON_CreateString(f->reasons[i]);
		if (!r || !cJSON_AddItemToArray(reasons, r)) {
			cJSON_Delete(r);
			return false;
		}
	}
	return add_number(o, "bytes_sent", (double)f->bytes_sent);
}

/* The extra: fields as an object (config.c wrote valid JSON; anything else
 * is left out rather than written as text). */
static bool add_extra(cJSON *obj, const char *extra_json)
{
	cJSON *extra = cJSON_Parse(extra_json);

	if (!extra)
		return true;
	if (!cJSON_IsObject(extra)) {
		cJSON_Delete(extra);
		return true;
	}
	if (clean_json(extra, NULL) < 0) {
		cJSON_Delete(extra);
		return false;
	}
	if (!cJSON_AddItemToObject(obj, "extra", extra)) {
		cJSON_Delete(extra);
		return false;
	}
	return true;
}

static bool add_references(cJSON *obj, const struct sidecar_reference *refs, size_t n)
{
	cJSON *arr = cJSON_AddArrayToObject(obj, "references");

	if (!arr)
		return false;
	for (size_t i = 0; i < n; i++) {
		cJSON *o = cJSON_CreateObject();
		if (!o || !cJSON_AddItemToArray(arr, o)) {
			cJSON_Delete(o);
			return false;
		}
		if (!sidecar_add_name(o, "path", refs[i].path) ||
		    !sidecar_add_string(o, "sha256", refs[i].sha256_hex))
			return false;
	}
	return true;
}

static bool add_outputs(cJSON *root, const struct sidecar_success *s)
{
	cJSON *outputs;

	if (s->max_images > 1 && !add_number(root, "max_images", s->max_images))
		return false;
	if (!s->outputs)
		return true;
	outputs = cJSON_Duplicate(s->outputs, true);
	if (!outputs)
		return false;
	cJSON_AddItemToObject(root, "outputs", outputs);
	return true;
}

/* Whether the i-th item of a sidecar's array matches the i-th of want. */
typedef bool sidecar_item_matcher(const cJSON *item, size_t i, const void *want);

/* Whether json's array under key has n items, each matching want's; a
 * missing key is an empty array when missing_is_empty. */
static bool sidecar_array_matches(const char *json, size_t len, const char *key,
				  bool missing_is_empty, size_t n,
				  sidecar_item_matcher *item_matches, const void *want)
{
	cJSON *root = cJSON_ParseWithLength(json, len), *arr;
	bool same = false;

	if (!root)
		return false;
	arr = cJSON_GetObjectItemCaseSensitive(root, key);
	if (!arr && missing_is_empty) {
		same = n == 0;
		goto out;
	}
	if (!cJSON_IsArray(arr) || (size_t)cJSON_GetArraySize(arr) != n)
		goto out;
	for (size_t i = 0; i < n; i++)
		if (!item_matches(cJSON_GetArrayItem(arr, (int)i), i, want))
			goto out;
	same = true;
out:
	cJSON_Delete(root);
	return same;
}

static bool reference_matches(const cJSON *o, size_t i, const void *want)
{
	const struct sidecar_reference *refs = want;
	char *path = sidecar_get_name(o, "path");
	const cJSON *sha = cJSON_GetObjectItemCaseSensitive(o, "sha256");
	bool match = path && !strcmp(path, refs[i].path) && cJSON_IsString(sha) &&
		     refs[i].sha256_hex && !strcmp(sha->valuestring, refs[i].sha256_hex);

	free(path);
	return match;
}

bool sidecar_references_equal(const char *json, size_t len, const struct sidecar_reference *refs,
			      size_t n)
{
	return sidecar_array_matches(json, len, "references", true, n, reference_matches, refs);
}

static bool add_sources(cJSON *obj, const struct sidecar_source *srcs, size_t n)
{
	cJSON *arr = cJSON_AddArrayToObject(obj, "sources");

	if (!arr)
		return false;
	for (size_t i = 0; i < n; i++) {
		cJSON *o = cJSON_CreateObject();
		long nsec = srcs[i].mtime_nsec < 0 ? 0 : srcs[i].mtime_nsec;

		if (!o || !cJSON_AddItemToArray(arr, o)) {
			cJSON_Delete(o);
			return false;
		}
		if (!sidecar_add_name(o, "name", srcs[i].source) ||
		    !sidecar_add_string(o, "sha256", srcs[i].sha256_hex) ||
		    !add_number(o, "size", (double)srcs[i].size) ||
		    !add_time(o, "mtime", srcs[i].mtime_sec, nsec) ||
		    (srcs[i].fitted && !add_fitted(o, srcs[i].fitted)))
			return false;
	}
	return true;
}

static bool source_matches(const cJSON *o, size_t i, const void *want)
{
	const struct sidecar_source *srcs = want;
	const cJSON *mtime = cJSON_GetObjectItemCaseSensitive(o, "mtime");
	char *name = sidecar_get_name(o, "name");
	double size = -1;
	int64_t sec = 0;
	long nsec = 0;
	bool match = name && !strcmp(name, srcs[i].source) &&
		     sidecar_get_number(o, "size", 9007199254740992.0, &size) &&
		     (uint64_t)size == srcs[i].size && cJSON_IsString(mtime) &&
		     sidecar_parse_time(mtime->valuestring, &sec, &nsec) == 0 &&
		     sec == srcs[i].mtime_sec && nsec == srcs[i].mtime_nsec;

	free(name);
	return match;
}

bool sidecar_sources_equal(const char *json, size_t len, const struct sidecar_source *srcs,
			   size_t n)
{
	return sidecar_array_matches(json, len, "sources", false, n, source_matches, srcs);
}

char *sidecar_success_json(const struct sidecar_success *s)
{
	cJSON *root;
	char *out = NULL;
	bool ok;

	if (!s)
		return NULL;
	root = cJSON_CreateObject();
	if (!root)
		return NULL;
	ok = add_source(root, &s->src) && sidecar_add_name(root, SIDECAR_OUTPUT, s->output) &&
	     sidecar_add_string(root, SIDECAR_MODEL, s->model) &&
	     sidecar_add_string(root, "prompt", s->prompt) &&
	     sidecar_add_string(root, "size", s->size) &&
	     sidecar_add_string(root, SIDECAR_RESULT_SIZE, s->result_size) &&
	     cJSON_AddBoolToObject(root, "watermark", s->watermark) &&
	     sidecar_add_string(root, "response_format", s->response_format) &&
	     add_number(root, SIDECAR_CREATED, (double)s->created) && add_usage(root, s->usage) &&
	     sidecar_add_string(root, SIDECAR_REQUEST_ID, s->request_id) &&
	     add_number(root, SIDECAR_ATTEMPTS, s->attempts) &&
	     add_number(root, SIDECAR_ELAPSED_MS, (double)s->elapsed_ms) &&
	     add_time(root, "completed_at", s->completed_at, -1) &&
	     (!s->paid_at || add_time(root, SIDECAR_PAID_AT, s->paid_at, -1)) &&
	     sidecar_add_string(root, "seedreamd_version", s->version) &&
	     (!s->reused_from || sidecar_add_name(root, "reused_from", s->reused_from)) &&
	     (!s->fitted || add_fitted(root, s->fitted)) &&
	     (!s->provenance || sidecar_add_string(root, "provenance", s->provenance)) &&
	     (!s->prompt_source || sidecar_add_string(root, "prompt_source", s->prompt_source)) &&
	     (!s->prompt_file || sidecar_add_name(root, "prompt_file", s->prompt_file)) &&
	     (!s->extra_json || add_extra(root, s->extra_json)) && add_outputs(root, s) &&
	     (!s->n_references || add_references(root, s->references, s->n_references)) &&
	     (!s->n_sources || add_sources(root, s->sources, s->n_sources));
	if (ok)
		out = print_document(root);
	cJSON_Delete(root);
	return out;
}

static bool add_error(cJSON *obj, const struct sidecar_error *e)
{
	cJSON *err = cJSON_AddObjectToObject(obj, "error");
	bool ok;

	if (!err)
		return false;
	if (e->http_status == 0)
		ok = cJSON_AddNullToObject(err, "http_status") != NULL;
	else
		ok = add_number(err, "http_status", (double)e->http_status);
	return ok && sidecar_add_string(err, "code", e->code) &&
	       sidecar_add_string(err, "message", e->message);
}

char *sidecar_error_json(const struct sidecar_error *e)
{
	cJSON *root;
	char *out = NULL;
	bool ok;

	if (!e)
		return NULL;
	root = cJSON_CreateObject();
	if (!root)
		return NULL;
	ok = add_source(root, &e->src) && add_error(root, e) &&
	     sidecar_add_string(root, SIDECAR_REQUEST_ID, e->request_id) &&
	     add_number(root, SIDECAR_ATTEMPTS, e->attempts) &&
	     add_time(root, "failed_at", e->failed_at, -1) &&
	     sidecar_add_string(root, "seedreamd_version", e->version) &&
	     (!e->model || sidecar_add_string(root, SIDECAR_MODEL, e->model)) &&
	     (!e->images_paid || (add_number(root, SIDECAR_IMAGES_PAID, e->images_paid) &&
				  add_usage(root, e->usage))) &&
	     (!e->images_paid || !e->paid_at || add_time(root, SIDECAR_PAID_AT, e->paid_at, -1)) &&
	     (e->max_images <= 1 || add_number(root, "max_images", e->max_images));
	if (ok)
		out = print_document(root);
	cJSON_Delete(root);
	return out;
}

int sidecar_dup_string(const cJSON *obj, const char *key, bool required, char **ret)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

	*ret = NULL;
	if (cJSON_IsString(v) && v->valuestring) {
		*ret = strdup(v->valuestring);
		return *ret ? 0 : -ENOMEM;
	}
	return required ? -EINVAL : 0;
}

bool sidecar_get_number(const cJSON *obj, const char *key, double max, double *ret)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

	/* Written so that NaN fails too. */
	if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= max))
		return false;
	*ret = v->valuedouble;
	return true;
}

void sidecar_doc_clear(struct sidecar_doc *doc)
{
	if (!doc)
		return;
	free(doc->source);
	free(doc->output);
	free(doc->prompt);
	free(doc->size_requested);
	free(doc->model);
	free(doc->result_size);
	free(doc->response_format);
	free(doc->request_id);
	free(doc->provenance);
	free(doc->prompt_source);
	free(doc->prompt_file);
	cJSON_free(doc->extra_json);
	cJSON_Delete(doc->usage);
	memset(doc, 0, sizeof(*doc));
}

static bool is_hex64(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++)
		if (hex_value(s[i]) < 0)
			return false;
	return i == 64;
}

/* An RFC 3339 time member; absent or null gives 0 (older than anything). */
static int parse_finished_at(const cJSON *root, const char *key, int64_t *ret)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
	long nsec;

	*ret = 0;
	if (!item || cJSON_IsNull(item))
		return 0;
	if (!cJSON_IsString(item))
		return -EINVAL;
	return sidecar_parse_time(item->valuestring, ret, &nsec);
}

static int64_t parse_generated_images(const cJSON *root)
{
	const cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, SIDECAR_USAGE);
	const cJSON *gen = cJSON_GetObjectItemCaseSensitive(usage, "generated_images");
	double v;

	/* usage is the API's verbatim object: tolerate anything in it. */
	if (!cJSON_IsObject(usage) || !cJSON_IsNumber(gen))
		return 0;
	v = gen->valuedouble;
	/* Also false for NaN. */
	if (!(v >= 0 && v <= 1e15))
		return 0;
	return (int64_t)v;
}

/* The images a sidecar of several outputs lists as written (a relay that
 * dropped usage still had them made, and billed). */
static int64_t count_outputs(const cJSON *root)
{
	const cJSON *outputs = cJSON_GetObjectItemCaseSensitive(root, "outputs");
	const cJSON *o;
	int64_t n = 0;

	if (!cJSON_IsArray(outputs))
		return 0;
	cJSON_ArrayForEach(o, outputs)
	{
		if (cJSON_IsObject(o) &&
		    cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "output")))
			n++;
	}
	return n;
}

static int parse_source_fields(const cJSON *root, struct sidecar_doc *d)
{
	const cJSON *mtime = cJSON_GetObjectItemCaseSensitive(root, SIDECAR_MTIME);
	const cJSON *sha = cJSON_GetObjectItemCaseSensitive(root, SIDECAR_SHA256);
	double size;

	/* A whole number up to 2^53, where doubles stop being exact; the range
	 * test makes the cast below defined. */
	if (!sidecar_get_number(root, SIDECAR_SIZE, 0x1p53, &size))
		return -EINVAL;
	d->size = (uint64_t)size;
	if ((double)d->size != size)
		return -EINVAL;
	if (!cJSON_IsString(mtime) ||
	    sidecar_parse_time(mtime->valuestring, &d->mtime_sec, &d->mtime_nsec) < 0)
		return -EINVAL;
	if (sha && !cJSON_IsNull(sha)) {
		if (!cJSON_IsString(sha) || !is_hex64(sha->valuestring))
			return -EINVAL;
		for (size_t i = 0; i < 64; i++)
			d->sha256[i] = (char)(sha->valuestring[i] | 0x20);
		d->sha256[64] = '\0';
	}
	return 0;
}

static int dup_bounded(const cJSON *root, const char *key, size_t max, char **ret);

static int parse_core(const cJSON *root, struct sidecar_doc *d)
{
	const cJSON *source, *error;
	int r;

	if (!cJSON_IsObject(root))
		return -EINVAL;
	source = cJSON_GetObjectItemCaseSensitive(root, SIDECAR_SOURCE);
	if (!cJSON_IsString(source) || !source->valuestring[0])
		return -EINVAL;
	d->source = sidecar_get_name(root, SIDECAR_SOURCE);
	if (!d->source || !d->source[0])
		return -EINVAL; /* a NULL from ENOMEM reads as foreign: skipped, never fatal */
	r = parse_source_fields(root, d);
	if (r < 0)
		return r;
	error = cJSON_GetObjectItemCaseSensitive(root, "error");
	if (error && !cJSON_IsObject(error))
		return -EINVAL;
	d->failed = error != NULL;
	r = parse_finished_at(root, d->failed ? "failed_at" : "completed_at", &d->finished_at);
	if (r < 0)
		return r;
	/* Ours or absent: a bad one counts by finished_at rather than hide the record. */
	if (parse_finished_at(root, SIDECAR_PAID_AT, &d->paid_at) < 0 || d->paid_at < 0)
		d->paid_at = 0;
	if (d->failed) {
		/* Only what the daemon counted as paid: a failure without it
		 * (refused, HTTP errors, records of older versions) cost nothing. */
		double paid = 0;

		if (sidecar_get_number(root, SIDECAR_IMAGES_PAID, API_IMAGES_MAX, &paid))
			d->generated_images = (int64_t)paid;
	} else {
		d->generated_images = parse_generated_images(root);
		if (d->generated_images == 0)
			d->generated_images = count_outputs(root);
		/* An earlier result linked or copied: its usage is the earlier
		 * answer's, paid (and counted) once, there. */
		d->reused = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(root, "reused_from"));
	}
	r = dup_bounded(root, SIDECAR_MODEL, API_MODEL_MAX, &d->model);
	if (r < 0)
		return r;
	/* Counted as at most what the request asked for (max_images, written
	 * when > 1): a server's claim of more is kept in usage, not counted. */
	{
		const cJSON *asked = cJSON_GetObjectItemCaseSensitive(root, "max_images");
		int64_t bound = 1;

		if (cJSON_IsNumber(asked) && asked->valuedouble >= 1 &&
		    asked->valuedouble <= API_IMAGES_MAX)
			bound = (int64_t)asked->valuedouble;
		if (d->generated_images > bound)
			d->generated_images = bound;
	}
	return 0;
}

/* A text a reuse carries over, cleaned and cut like the server's. */
static int dup_bounded(const cJSON *root, const char *key, size_t max, char **ret)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);

	*ret = NULL;
	if (!cJSON_IsString(v) || !v->valuestring)
		return 0;
	*ret = clean_text(v->valuestring, max, NULL);
	return *ret ? 0 : -ENOMEM;
}

static int parse_reuse(cJSON *root, struct sidecar_doc *d)
{
	const cJSON *output = cJSON_GetObjectItemCaseSensitive(root, SIDECAR_OUTPUT);
	const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "watermark");
	cJSON *usage;
	int r;

	/* An output name that is not UTF-8 (output_hex) is not ours to read. */
	if (d->failed || !cJSON_IsString(output) || strstr(output->valuestring, "..") ||
	    cJSON_GetObjectItemCaseSensitive(root, "outputs") ||
	    cJSON_IsString(cJSON_GetObjectItemCaseSensitive(root, "output_hex")) ||
	    !cJSON_IsBool(wm))
		return -EINVAL;
	d->watermark = cJSON_IsTrue(wm);
	if ((r = sidecar_dup_string(root, SIDECAR_OUTPUT, true, &d->output)) < 0 ||
	    (r = sidecar_dup_string(root, "prompt", true, &d->prompt)) < 0 ||
	    (r = sidecar_dup_string(root, "size", true, &d->size_requested)) < 0 ||
	    (r = dup_bounded(root, SIDECAR_RESULT_SIZE, API_SIZE_MAX, &d->result_size)) < 0 ||
	    (r = dup_bounded(root, SIDECAR_REQUEST_ID, API_REQUEST_ID_MAX, &d->request_id)) < 0 ||
	    (r = dup_bounded(root, "response_format", API_SIZE_MAX, &d->response_format)) < 0 ||
	    (r = dup_bounded(root, "provenance", API_CODE_MAX, &d->provenance)) < 0 ||
	    (r = dup_bounded(root, "prompt_source", API_CODE_MAX, &d->prompt_source)) < 0)
		return r;
	d->prompt_file = sidecar_get_name(root, "prompt_file"); /* NULL also when absent */
	if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "extra"))) {
		d->extra_json =
		    cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(root, "extra"));
		if (!d->extra_json)
			return -ENOMEM;
	}
	if (d->prompt_file && strlen(d->prompt_file) > 4096) { /* PATH_MAX: a planted one */
		free(d->prompt_file);
		d->prompt_file = NULL;
	}
	/* NaN when absent: the checked conversion keeps that defined (as 0). */
	if (!clean_int64(
		cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(root, SIDECAR_CREATED)),
		&d->created))
		d->created = 0;
	usage = cJSON_DetachItemFromObjectCaseSensitive(root, SIDECAR_USAGE);
	if (!cJSON_IsObject(usage)) {
		cJSON_Delete(usage);
		return 0;
	}
	if (api_bound_usage(&usage, NULL) < 0) {
		cJSON_Delete(usage); /* unchanged, or already freed and NULL */
		return -ENOMEM;
	}
	d->usage = usage;
	return 0;
}

static int parse(const char *json, size_t len, bool reuse, struct sidecar_doc *ret_doc)
{
	struct sidecar_doc d = {0};
	cJSON *root;
	int r;

	if (!ret_doc)
		return -EINVAL;
	memset(ret_doc, 0, sizeof(*ret_doc));
	if (!json)
		return -EINVAL;
	root = cJSON_ParseWithLength(json, len);
	r = parse_core(root, &d);
	if (r == 0 && reuse)
		r = parse_reuse(root, &d);
	cJSON_Delete(root);
	if (r < 0) {
		sidecar_doc_clear(&d);
		return r;
	}
	*ret_doc = d;
	return 0;
}

int sidecar_parse(const char *json, size_t len, struct sidecar_doc *ret_doc)
{
	return parse(json, len, false, ret_doc);
}

int sidecar_parse_reuse(const char *json, size_t len, struct sidecar_doc *ret_doc)
{
	return parse(json, len, true, ret_doc);
}

/* Renames one output in a sidecar's text: "output" of the document and of its
 * outputs[] entries where it is old_rel. */
static bool rename_output_in(cJSON *obj, const char *old_rel, const char *new_rel)
{
	char *rel = sidecar_get_name(obj, SIDECAR_OUTPUT);
	bool ok = true;

	if (rel && strcmp(rel, old_rel) == 0) {
		cJSON_DeleteItemFromObjectCaseSensitive(obj, SIDECAR_OUTPUT);
		cJSON_DeleteItemFromObjectCaseSensitive(obj, SIDECAR_OUTPUT "_hex");
		ok = sidecar_add_name(obj, SIDECAR_OUTPUT, new_rel);
	}
	free(rel);
	return ok;
}

char *sidecar_rename_output(const char *doc, const char *old_rel, const char *new_rel)
{
	cJSON *root = cJSON_Parse(doc), *o;
	char *out = NULL;

	if (!root || !rename_output_in(root, old_rel, new_rel))
		goto out;
	cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(root, "outputs"))
	{
		if (!rename_output_in(o, old_rel, new_rel))
			goto out;
	}
	out = print_document(root);
out:
	cJSON_Delete(root);
	return out;
}
