#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "api.h"
#include "civil.h"
#include "fdio.h"
#include "sidecar.h"

static void check_time(int64_t sec, long nsec, const char *want)
{
	char buf[64];
	int64_t s;
	long ns;

	assert_int_equal(sidecar_format_time(sec, nsec, buf, sizeof(buf)), 0);
	assert_string_equal(buf, want);
	assert_int_equal(sidecar_parse_time(buf, &s, &ns), 0);
	assert_int_equal(s, sec);
	assert_int_equal(ns, nsec < 0 ? 0 : nsec);
}

static void test_rfc3339_roundtrip(void **state)
{
	(void)state;
	check_time(0, -1, "1970-01-01T00:00:00Z");
	check_time(0, 0, "1970-01-01T00:00:00.000000000Z");
	check_time(1795533414, -1, "2026-11-24T15:16:54Z");
	check_time(1795533414, 123456789, "2026-11-24T15:16:54.123456789Z");
	check_time(1795533414, 1, "2026-11-24T15:16:54.000000001Z");
	check_time(-1, 999999999, "1969-12-31T23:59:59.999999999Z");
	check_time(951782400, -1, "2000-02-29T00:00:00Z");
	check_time(253402300799, -1, "9999-12-31T23:59:59Z");
}

static void test_rfc3339_parse(void **state)
{
	int64_t s;
	long ns;

	(void)state;
	assert_int_equal(sidecar_parse_time("2026-11-24T15:16:54.5Z", &s, &ns), 0);
	assert_int_equal(s, 1795533414);
	assert_int_equal(ns, 500000000);
	assert_int_equal(sidecar_parse_time("2026-11-24T15:16:54.000123Z", &s, &ns), 0);
	assert_int_equal(ns, 123000);

	static const char *const bad[] = {
	    "",
	    "garbage",
	    "2026-11-24",
	    "2026-11-24T15:16:54",
	    "2026-11-24T15:16:54+00:00",
	    "2026-11-24T15:16:54+02:00",
	    "2026-11-24T15:16:54.123-05:00",
	    "2026-11-24 15:16:54Z",
	    "2026-11-24T15:16:54z",
	    "2026-11-24T15:16:54.Z",
	    "2026-11-24T15:16:54.1234567890Z",
	    "2026-11-24T15:16:54ZZ",
	    "2026-11-24T15:16:54Z ",
	    " 2026-11-24T15:16:54Z",
	    "2026-13-01T00:00:00Z",
	    "2026-00-01T00:00:00Z",
	    "2026-02-29T00:00:00Z",
	    "2026-04-31T00:00:00Z",
	    "2026-11-24T24:00:00Z",
	    "2026-11-24T23:60:00Z",
	    "2026-11-24T23:59:60Z",
	    "+026-11-24T23:59:59Z",
	    "2026-1-24T23:59:59Z",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(sidecar_parse_time(bad[i], &s, &ns), -EINVAL);
	assert_int_equal(sidecar_parse_time(NULL, &s, &ns), -EINVAL);
}

static void test_rfc3339_format_errors(void **state)
{
	char buf[64];

	(void)state;
	assert_int_equal(sidecar_format_time(0, 1000000000L, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(sidecar_format_time(0, 0, buf, 10), -EINVAL);
	assert_int_equal(sidecar_format_time(253402300800, -1, buf, sizeof(buf)), -EINVAL);
}

static const cJSON *member(const cJSON *obj, const char *key)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

	assert_non_null(item);
	return item;
}

static void check_str(const cJSON *obj, const char *key, const char *want)
{
	const cJSON *item = member(obj, key);

	assert_true(cJSON_IsString(item));
	assert_string_equal(item->valuestring, want);
}

static void check_num(const cJSON *obj, const char *key, double want)
{
	const cJSON *item = member(obj, key);

	assert_true(cJSON_IsNumber(item));
	assert_true(item->valuedouble == want);
}

static void check_null(const cJSON *obj, const char *key)
{
	assert_true(cJSON_IsNull(member(obj, key)));
}

static const char SHA[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
static const char PROMPT[] = "Make it \"cinematic\" \\ with çiçek & 写真\nline two";

static void test_sidecar_json(void **state)
{
	cJSON *usage = cJSON_Parse("{\"generated_images\": 1, \"output_tokens\": 16384, "
				   "\"total_tokens\": 16384}");
	struct sidecar_success s = {
	    .src = {.source = "sub/Fotoğraf \"1\".jpg",
		    .sha256_hex = SHA,
		    .size = 123456789012ULL,
		    .mtime_sec = 1795533414,
		    .mtime_nsec = 7},
	    .output = "sub/Fotoğraf _1_.jpeg",
	    .model = "seedream-4-0-250828",
	    .prompt = PROMPT,
	    .size = "2K",
	    .result_size = "2048x2048",
	    .watermark = false,
	    .response_format = "b64_json",
	    .created = 1795533400,
	    .usage = usage,
	    .request_id = "req-1",
	    .attempts = 2,
	    .elapsed_ms = 12345,
	    .completed_at = 1795533414,
	    .version = "0.1.0",
	};
	cJSON *root;
	char *text;

	(void)state;
	assert_non_null(usage);
	text = sidecar_success_json(&s);
	assert_non_null(text);
	assert_int_equal(text[strlen(text) - 1], '\n');
	assert_non_null(strchr(text, '\t')); /* pretty-printed */
	root = cJSON_Parse(text);
	assert_non_null(root);
	check_str(root, "source", s.src.source);
	check_str(root, "source_sha256", SHA);
	check_num(root, "source_size", 123456789012.0);
	check_str(root, "source_mtime", "2026-11-24T15:16:54.000000007Z");
	check_str(root, "output", s.output);
	check_str(root, "model", s.model);
	check_str(root, "prompt", PROMPT);
	check_str(root, "size", "2K");
	check_str(root, "result_size", "2048x2048");
	assert_true(cJSON_IsFalse(member(root, "watermark")));
	check_str(root, "response_format", "b64_json");
	check_num(root, "created", 1795533400);
	assert_true(cJSON_Compare(member(root, "usage"), usage, true));
	check_str(root, "request_id", "req-1");
	check_num(root, "attempts", 2);
	check_num(root, "elapsed_ms", 12345);
	check_str(root, "completed_at", "2026-11-24T15:16:54Z");
	check_str(root, "seedreamd_version", "0.1.0");
	assert_int_equal(cJSON_GetArraySize(root), 18);
	cJSON_Delete(root);
	free(text);

	/* Optional members become null. */
	s.usage = NULL;
	s.request_id = NULL;
	s.result_size = NULL;
	s.watermark = true;
	text = sidecar_success_json(&s);
	assert_non_null(text);
	root = cJSON_Parse(text);
	assert_non_null(root);
	check_null(root, "usage");
	check_null(root, "request_id");
	check_null(root, "result_size");
	assert_true(cJSON_IsTrue(member(root, "watermark")));
	cJSON_Delete(root);
	free(text);
	cJSON_Delete(usage);
}

/* A group's sources and the references: written in order, compared back. */
static void test_sources_and_references(void **state)
{
	const struct sidecar_source srcs[] = {
	    {.source = "C.png", .sha256_hex = SHA, .size = 10, .mtime_sec = 1795533414, .mtime_nsec = 5},
	    {.source = "a\xff.jpg", .sha256_hex = NULL, .size = 20, .mtime_sec = 1795533415},
	};
	const struct sidecar_reference refs[] = {{.path = "/srv/logo.png", .sha256_hex = SHA}};
	struct sidecar_source other[2];
	struct sidecar_reference other_ref = {.path = "/srv/logo.png", .sha256_hex = "00"};
	struct sidecar_success s = {.src = {.source = "grp", .sha256_hex = SHA},
				    .output = "grp.jpeg",
				    .model = "m",
				    .prompt = "p",
				    .size = "2K",
				    .response_format = "url",
				    .version = "0.1.0",
				    .references = refs,
				    .n_references = 1,
				    .sources = srcs,
				    .n_sources = 2};
	char *text = sidecar_success_json(&s), *plain;
	cJSON *root;

	(void)state;
	assert_non_null(text);
	root = cJSON_Parse(text);
	assert_non_null(root);
	assert_string_equal(
	    cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(root, "sources"), 1), "name_hex")
		->valuestring,
	    "61ff2e6a7067");
	assert_string_equal(
	    cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(root, "sources"), 0), "mtime")
		->valuestring,
	    "2026-11-24T15:16:54.000000005Z");
	cJSON_Delete(root);
	assert_true(sidecar_sources_equal(text, strlen(text), srcs, 2));
	assert_false(sidecar_sources_equal(text, strlen(text), srcs, 1));
	memcpy(other, srcs, sizeof(other));
	other[1].mtime_nsec = 1;
	assert_false(sidecar_sources_equal(text, strlen(text), other, 2));
	memcpy(other, srcs, sizeof(other));
	other[0].source = "c.png";
	assert_false(sidecar_sources_equal(text, strlen(text), other, 2));
	assert_true(sidecar_references_equal(text, strlen(text), refs, 1));
	assert_false(sidecar_references_equal(text, strlen(text), &other_ref, 1));
	assert_false(sidecar_references_equal(text, strlen(text), refs, 0));

	/* Without either member: no references equals none, no sources equals nothing. */
	s.n_references = s.n_sources = 0;
	plain = sidecar_success_json(&s);
	assert_non_null(plain);
	assert_null(strstr(plain, "\"references\""));
	assert_null(strstr(plain, "\"sources\""));
	assert_true(sidecar_references_equal(plain, strlen(plain), refs, 0));
	assert_false(sidecar_references_equal(plain, strlen(plain), refs, 1));
	assert_false(sidecar_sources_equal(plain, strlen(plain), srcs, 2));
	free(plain);
	free(text);
}

/* A group's fitted image: the file's "fitted" object in its sources entry,
 * none in the others; the comparison with a listing ignores it. */
static void test_sources_fitted(void **state)
{
	const char *reasons[] = {"format", "orientation"};
	const struct sidecar_fitted fitted = {.from = "HEIF 4032x3024 orientation 6",
					      .to = "JPEG 3024x4032",
					      .reasons = reasons,
					      .n_reasons = 2,
					      .bytes_sent = 2419210};
	struct sidecar_source srcs[] = {
	    {.source = "a.heic", .sha256_hex = SHA, .size = 10, .fitted = &fitted},
	    {.source = "b.jpg", .sha256_hex = SHA, .size = 20},
	};
	struct sidecar_success s = {.src = {.source = "grp", .sha256_hex = SHA},
				    .output = "grp.jpeg",
				    .model = "m",
				    .prompt = "p",
				    .size = "2K",
				    .response_format = "url",
				    .version = "0.1.0",
				    .sources = srcs,
				    .n_sources = 2};
	char *text = sidecar_success_json(&s);
	cJSON *root, *arr, *f;

	(void)state;
	assert_non_null(text);
	root = cJSON_Parse(text);
	assert_non_null(root);
	assert_null(cJSON_GetObjectItem(root, "fitted"));
	arr = cJSON_GetObjectItem(root, "sources");
	f = cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 0), "fitted");
	assert_non_null(f);
	assert_string_equal(cJSON_GetObjectItem(f, "from")->valuestring, fitted.from);
	assert_string_equal(cJSON_GetObjectItem(f, "to")->valuestring, fitted.to);
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(f, "reasons")), 2);
	assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(f, "reasons"), 1)->valuestring,
			    "orientation");
	assert_int_equal((int64_t)cJSON_GetObjectItem(f, "bytes_sent")->valuedouble, 2419210);
	assert_null(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 1), "fitted"));
	cJSON_Delete(root);
	srcs[0].fitted = NULL; /* a listing knows nothing of fits */
	assert_true(sidecar_sources_equal(text, strlen(text), srcs, 2));
	free(text);
}

static void test_error_json(void **state)
{
	struct sidecar_error e = {
	    .src = {.source = "a\"b\".png",
		    .sha256_hex = SHA,
		    .size = 42,
		    .mtime_sec = 0,
		    .mtime_nsec = 999999999},
	    .http_status = 400,
	    .code = "InvalidParameter",
	    .message = "The \"image\" is bad: çok kötü",
	    .request_id = "req-2",
	    .attempts = 1,
	    .failed_at = 1795533414,
	    .version = "0.1.0",
	};
	const cJSON *err;
	cJSON *root;
	char *text;

	(void)state;
	text = sidecar_error_json(&e);
	assert_non_null(text);
	assert_int_equal(text[strlen(text) - 1], '\n');
	root = cJSON_Parse(text);
	assert_non_null(root);
	check_str(root, "source", e.src.source);
	check_str(root, "source_sha256", SHA);
	check_num(root, "source_size", 42);
	check_str(root, "source_mtime", "1970-01-01T00:00:00.999999999Z");
	err = member(root, "error");
	assert_true(cJSON_IsObject(err));
	check_num(err, "http_status", 400);
	check_str(err, "code", "InvalidParameter");
	check_str(err, "message", e.message);
	check_str(root, "request_id", "req-2");
	check_num(root, "attempts", 1);
	check_str(root, "failed_at", "2026-11-24T15:16:54Z");
	check_str(root, "seedreamd_version", "0.1.0");
	assert_int_equal(cJSON_GetArraySize(root), 9);
	cJSON_Delete(root);
	free(text);

	/* Local validation: no HTTP exchange, no request id. */
	e.http_status = 0;
	e.request_id = NULL;
	e.attempts = 0;
	text = sidecar_error_json(&e);
	assert_non_null(text);
	root = cJSON_Parse(text);
	assert_non_null(root);
	check_null(member(root, "error"), "http_status");
	check_null(root, "request_id");
	check_num(root, "attempts", 0);
	cJSON_Delete(root);
	free(text);
}

static const char *const REASONS[] = {"format", "orientation"};

static struct sidecar_success sample_success(const cJSON *usage)
{
	static const struct sidecar_fitted fitted = {.from = "HEIF 4032x3024",
						     .to = "JPEG 3024x4032",
						     .reasons = REASONS,
						     .n_reasons = 2,
						     .bytes_sent = 77};
	struct sidecar_success s = {
	    .src = {.source = "sub/caf\xe9.heic", /* Latin-1: not UTF-8 */
		    .sha256_hex = SHA,
		    .size = 4096,
		    .mtime_sec = 1795533414,
		    .mtime_nsec = 5},
	    .output = "sub/caf_.jpeg",
	    .model = "seedream-4-0-250828",
	    .prompt = PROMPT,
	    .size = "2K",
	    .result_size = "2048x2048",
	    .watermark = true,
	    .response_format = "url",
	    .created = 1795533400,
	    .usage = usage,
	    .request_id = "req-9",
	    .attempts = 3,
	    .elapsed_ms = 10,
	    .completed_at = 1795533420,
	    .version = "0.1.0",
	    .reused_from = "other.heic",
	    .fitted = &fitted,
	};
	return s;
}

/* What the writer writes, the reader reads: the schema lives in one place. */
static void test_parse_roundtrip(void **state)
{
	cJSON *usage = cJSON_Parse("{\"generated_images\": 1, \"total_tokens\": 16384}");
	struct sidecar_success s = sample_success(usage);
	struct sidecar_doc d;
	char *text;

	(void)state;
	text = sidecar_success_json(&s);
	assert_non_null(text);
	assert_int_equal(sidecar_parse_reuse(text, strlen(text), &d), 0);
	assert_string_equal(d.source, s.src.source); /* exact, through source_hex */
	assert_string_equal(d.sha256, SHA);
	assert_int_equal(d.size, 4096);
	assert_int_equal(d.mtime_sec, 1795533414);
	assert_int_equal(d.mtime_nsec, 5);
	assert_false(d.failed);
	assert_int_equal(d.finished_at, 1795533420);
	assert_int_equal(d.generated_images, 1);
	assert_true(d.reused); /* reused_from: the earlier answer's usage, not paid again */
	assert_string_equal(d.output, s.output);
	assert_string_equal(d.prompt, PROMPT);
	assert_string_equal(d.size_requested, "2K");
	assert_true(d.watermark);
	assert_string_equal(d.model, s.model);
	assert_string_equal(d.result_size, "2048x2048");
	assert_string_equal(d.response_format, "url");
	assert_string_equal(d.request_id, "req-9");
	assert_int_equal(d.created, 1795533400);
	assert_true(cJSON_Compare(d.usage, usage, true));
	sidecar_doc_clear(&d);

	/* The plain parse leaves the reuse fields alone. */
	assert_int_equal(sidecar_parse(text, strlen(text), &d), 0);
	assert_string_equal(d.source, s.src.source);
	assert_null(d.output);
	assert_null(d.usage);
	sidecar_doc_clear(&d);
	free(text);
	cJSON_Delete(usage);
}

/* A sidecar of several outputs: written with its list, "output" the first;
 * without usage (a relay) the images are counted from the list. */
static void test_several_outputs(void **state)
{
	cJSON *outputs = cJSON_Parse("[{\"index\":0,\"output\":\"a-1.jpeg\",\"size\":\"1x1\"},"
				     "{\"index\":1,\"error\":{\"code\":\"X\",\"message\":\"m\"}},"
				     "{\"index\":2,\"output\":\"a-2.jpeg\",\"size\":null}]");
	struct sidecar_success s = sample_success(NULL);
	struct sidecar_doc d;
	cJSON *root;
	char *text;

	(void)state;
	assert_non_null(outputs);
	s.output = "a-1.jpeg";
	s.outputs = outputs;
	s.max_images = 3;
	text = sidecar_success_json(&s);
	assert_non_null(text);
	root = cJSON_Parse(text);
	assert_non_null(root);
	assert_true(cJSON_Compare(cJSON_GetObjectItem(root, "outputs"), outputs, true));
	assert_int_equal(cJSON_GetObjectItem(root, "max_images")->valueint, 3);
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(root, "usage")));
	cJSON_Delete(root);
	assert_int_equal(sidecar_parse(text, strlen(text), &d), 0);
	assert_int_equal(d.generated_images, 2);
	sidecar_doc_clear(&d);
	free(text);
	cJSON_Delete(outputs);
}

static void test_parse_error_sidecar(void **state)
{
	struct sidecar_error e = {
	    .src = {.source = "a.png", .sha256_hex = NULL, .size = 1, .mtime_sec = 2},
	    .http_status = 400,
	    .code = "InvalidParameter",
	    .message = "bad",
	    .attempts = 1,
	    .failed_at = 1795533414,
	    .version = "0.1.0",
	};
	struct sidecar_doc d;
	char *text = sidecar_error_json(&e);

	(void)state;
	assert_non_null(text);
	assert_int_equal(sidecar_parse(text, strlen(text), &d), 0);
	assert_true(d.failed);
	assert_string_equal(d.sha256, "");
	assert_int_equal(d.finished_at, 1795533414);
	sidecar_doc_clear(&d);
	/* An error sidecar has no result to reuse. */
	assert_int_equal(sidecar_parse_reuse(text, strlen(text), &d), -EINVAL);
	assert_null(d.source);
	free(text);
}

/* A failure after a paid answer keeps what was paid, bounded like a
 * success's count; a failure without images_paid counts nothing. */
static void test_parse_paid_error_sidecar(void **state)
{
	cJSON *usage = cJSON_Parse("{\"generated_images\": 5, \"output_tokens\": 32768}");
	struct sidecar_error e = {
	    .src = {.source = "a.png", .sha256_hex = SHA, .size = 1, .mtime_sec = 2},
	    .http_status = 200,
	    .code = "Result.NotAnImage",
	    .message = "an HTML page",
	    .attempts = 1,
	    .failed_at = 1795533414,
	    .version = "0.1.0",
	    .model = "model-a",
	    .images_paid = 2,
	    .usage = usage,
	    .max_images = 2,
	};
	static const struct {
		const char *members;
		int64_t counted;
	} planted[] = {
	    {"\"images_paid\": 9, \"max_images\": 2", 2},
	    {"\"images_paid\": 9", 1},
	    {"\"images_paid\": 1e9, \"max_images\": 4", 0},
	    {"\"images_paid\": -1", 0},
	    {"\"images_paid\": \"1\"", 0},
	    {"\"usage\": {\"generated_images\": 1}", 0},
	};
	struct sidecar_doc d;
	cJSON *root;
	char *text, big[1024];

	(void)state;
	assert_non_null(usage);
	text = sidecar_error_json(&e);
	assert_non_null(text);
	root = cJSON_Parse(text);
	assert_non_null(root);
	check_num(root, "images_paid", 2);
	check_num(member(root, "usage"), "generated_images", 5); /* verbatim */
	check_num(root, "max_images", 2);
	check_str(root, "model", "model-a");
	cJSON_Delete(root);
	assert_int_equal(sidecar_parse(text, strlen(text), &d), 0);
	assert_true(d.failed);
	assert_false(d.reused);
	assert_int_equal(d.generated_images, 2);
	assert_string_equal(d.model, "model-a");
	sidecar_doc_clear(&d);
	free(text);

	/* Nothing paid: neither images_paid nor usage is written. */
	e.images_paid = 0;
	e.max_images = 0;
	text = sidecar_error_json(&e);
	assert_non_null(text);
	root = cJSON_Parse(text);
	assert_null(cJSON_GetObjectItemCaseSensitive(root, "images_paid"));
	assert_null(cJSON_GetObjectItemCaseSensitive(root, "usage"));
	assert_null(cJSON_GetObjectItemCaseSensitive(root, "max_images"));
	cJSON_Delete(root);
	assert_int_equal(sidecar_parse(text, strlen(text), &d), 0);
	assert_int_equal(d.generated_images, 0);
	sidecar_doc_clear(&d);
	free(text);
	cJSON_Delete(usage);

	/* Planted records: a claim bounded by max_images (else 1), nonsense
	 * counted as nothing, usage alone is no payment. */
	for (size_t i = 0; i < sizeof(planted) / sizeof(planted[0]); i++) {
		char doc[512];

		snprintf(doc, sizeof(doc),
			 "{\"source\": \"a.png\", \"source_size\": 1, "
			 "\"source_mtime\": \"2023-11-14T22:13:20Z\", \"error\": {\"code\": "
			 "\"X\"}, %s}",
			 planted[i].members);
		assert_int_equal(sidecar_parse(doc, strlen(doc), &d), 0);
		assert_true(d.failed);
		assert_int_equal(d.generated_images, planted[i].counted);
		sidecar_doc_clear(&d);
	}

	/* A planted model is cut like a server's. */
	memset(big, 'm', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	e.model = big;
	text = sidecar_error_json(&e);
	assert_non_null(text);
	assert_int_equal(sidecar_parse(text, strlen(text), &d), 0);
	assert_true(strlen(d.model) <= API_MODEL_MAX);
	sidecar_doc_clear(&d);
	free(text);
}

/* A result is reused only when the file says exactly what it holds; the
 * caller opens output, so it never climbs out of the folder. */
static void test_parse_reuse_refuses(void **state)
{
	static const struct {
		const char *key;
		const char *json; /* NULL: remove the member */
	} cases[] = {
	    {"output", "\"../../etc/passwd\""},
	    {"output", "\"a/..b.jpeg\""},
	    {"output", NULL},
	    {"output", "7"},
	    {"output_hex", "\"6162\""},
	    {"prompt", NULL},
	    {"size", "2"},
	    {"watermark", NULL},
	    {"watermark", "\"yes\""},
	    {"source_size", "-1"},
	    /* several outputs: a reuse links one output only */
	    {"outputs",
	     "[{\"index\":0,\"output\":\"a-1.jpeg\"},{\"index\":1,\"output\":\"a-2.jpeg\"}]"},
	};
	struct sidecar_success s = sample_success(NULL);
	char *good = sidecar_success_json(&s);

	(void)state;
	assert_non_null(good);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cJSON *root = cJSON_Parse(good);
		struct sidecar_doc d;
		char *text;

		assert_non_null(root);
		cJSON_DeleteItemFromObjectCaseSensitive(root, cases[i].key);
		if (cases[i].json)
			cJSON_AddItemToObject(root, cases[i].key, cJSON_Parse(cases[i].json));
		text = cJSON_PrintUnformatted(root);
		assert_non_null(text);
		assert_int_equal(sidecar_parse_reuse(text, strlen(text), &d), -EINVAL);
		assert_null(d.source);
		cJSON_free(text);
		cJSON_Delete(root);
	}
	free(good);
}

/* A planted sidecar may hold anything up to SIDECAR_RECORD_MAX: a reuse
 * carries it over bounded like a server's answer. */
static void test_parse_reuse_bounds(void **state)
{
	struct sidecar_success s = sample_success(NULL);
	char *good = sidecar_success_json(&s), *text, *huge = malloc(10000);
	cJSON *root, *usage;
	struct sidecar_doc d;

	(void)state;
	assert_non_null(good);
	assert_non_null(huge);
	memset(huge, 'm', 9999);
	huge[9999] = '\0';
	root = cJSON_Parse(good);
	assert_non_null(root);
	cJSON_ReplaceItemInObjectCaseSensitive(root, "model", cJSON_CreateString(huge));
	cJSON_ReplaceItemInObjectCaseSensitive(root, "request_id", cJSON_CreateString(huge));
	usage = cJSON_CreateObject();
	assert_non_null(usage);
	for (int i = 0; i < 500; i++) {
		char key[32];

		(void)snprintf(key, sizeof(key), "k%d", i);
		cJSON_AddNumberToObject(usage, key, i);
	}
	cJSON_ReplaceItemInObjectCaseSensitive(root, "usage", usage);
	text = cJSON_PrintUnformatted(root);
	assert_non_null(text);
	assert_int_equal(sidecar_parse_reuse(text, strlen(text), &d), 0);
	assert_true(strlen(d.model) <= API_MODEL_MAX);
	assert_true(strlen(d.request_id) <= API_REQUEST_ID_MAX);
	assert_non_null(d.usage);
	assert_true(cJSON_GetArraySize(d.usage) <= API_USAGE_KEEP_MAX + 1);
	sidecar_doc_clear(&d);
	cJSON_free(text);
	cJSON_Delete(root);
	free(huge);
	free(good);
}

static void test_names(void **state)
{
	cJSON *o = cJSON_CreateObject();
	char *back;

	(void)state;
	assert_non_null(o);
	assert_true(sidecar_add_name(o, "a", "plain"));
	assert_true(sidecar_add_name(o, "b", "bad\xff\xfe"));
	assert_true(sidecar_add_name(o, "c", NULL));
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "a_hex"));
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(o, "b_hex")->valuestring,
			    "626164fffe");
	back = sidecar_get_name(o, "a");
	assert_string_equal(back, "plain");
	free(back);
	back = sidecar_get_name(o, "b");
	assert_string_equal(back, "bad\xff\xfe");
	free(back);
	assert_null(sidecar_get_name(o, "c"));
	/* A hex form that would smuggle a NUL or is odd is refused. */
	cJSON_AddStringToObject(o, "d", "x");
	cJSON_AddStringToObject(o, "d_hex", "6100");
	assert_null(sidecar_get_name(o, "d"));
	cJSON_Delete(o);
}

static void test_numbers_and_strings(void **state)
{
	cJSON *o = cJSON_Parse("{\"n\": 5, \"neg\": -1, \"s\": \"x\", \"t\": 3}");
	double v;
	char *str;

	(void)state;
	assert_non_null(o);
	assert_true(sidecar_get_number(o, "n", 5, &v));
	assert_true(v == 5);
	assert_false(sidecar_get_number(o, "n", 4, &v));
	assert_false(sidecar_get_number(o, "neg", 10, &v));
	assert_false(sidecar_get_number(o, "s", 10, &v));
	assert_false(sidecar_get_number(o, "missing", 10, &v));
	assert_int_equal(sidecar_dup_string(o, "s", true, &str), 0);
	assert_string_equal(str, "x");
	free(str);
	assert_int_equal(sidecar_dup_string(o, "t", false, &str), 0);
	assert_null(str);
	assert_int_equal(sidecar_dup_string(o, "t", true, &str), -EINVAL);
	cJSON_Delete(o);
}

/* The one calendar against the C library's, every day of 1600..2400. */
static void test_civil(void **state)
{
	(void)state;
	for (int y = 1600; y <= 2400; y++)
		for (int m = 1; m <= 12; m++)
			for (int d = 1; d <= 31; d++) {
				struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d};
				time_t t;

				if (!civil_date_valid(y, m, d)) {
					assert_true(d >= 29);
					continue;
				}
				t = timegm(&tm);
				assert_int_equal(tm.tm_mday, d); /* not normalised: a real date */
				assert_int_equal(civil_days_from_civil(y, m, d) * 86400,
						 (int64_t)t);
			}
	assert_true(civil_date_valid(2000, 2, 29));
	assert_false(civil_date_valid(1900, 2, 29));
	assert_true(civil_date_valid(2024, 2, 29));
	assert_false(civil_date_valid(2026, 4, 31));
	assert_false(civil_date_valid(2026, 13, 1));
	assert_false(civil_date_valid(2026, 0, 1));
	assert_false(civil_date_valid(2026, 1, 0));
}

static void test_fdio(void **state)
{
	char path[] = "/tmp/test_sidecar.XXXXXX", buf[16], *text;
	int fd = mkstemp(path), p[2];
	size_t len;

	(void)state;
	assert_true(fd >= 0);
	(void)unlink(path);
	assert_int_equal(fdio_write_all(fd, "hello, world", 12, &len), 0);
	assert_int_equal(len, 12);
	assert_int_equal(fdio_pread_full(fd, buf, sizeof(buf), 7), 5);
	assert_memory_equal(buf, "world", 5);
	assert_int_equal(fdio_pread_full(fd, buf, 5, -1), -EINVAL);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_int_equal(fdio_read_file(fd, 11, &text, &len), -EFBIG);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_int_equal(fdio_read_file(fd, 12, &text, &len), 0);
	assert_int_equal(len, 12);
	assert_string_equal(text, "hello, world");
	free(text);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_int_equal(fdio_read_full(fd, buf, 5), 5);
	assert_memory_equal(buf, "hello", 5);
	close(fd);
	assert_int_equal(fdio_read_full(fd, buf, 5), -EBADF);

	/* Short reads (a pipe hands out what it has) are read through. */
	assert_int_equal(pipe(p), 0);
	assert_int_equal(fdio_write_all(p[1], "ab", 2, NULL), 0);
	assert_int_equal(fdio_write_all(p[1], "cd", 2, NULL), 0);
	close(p[1]);
	assert_int_equal(fdio_read_full(p[0], buf, sizeof(buf)), 4);
	assert_memory_equal(buf, "abcd", 4);
	assert_int_equal(fdio_read_file(p[0], 100, &text, &len), -EINVAL); /* not a file */
	close(p[0]);

	/* A failed write says how much got through: none here (no reader). */
	assert_int_equal(pipe(p), 0);
	close(p[0]);
	(void)signal(SIGPIPE, SIG_IGN);
	len = 7;
	assert_int_equal(fdio_write_all(p[1], "x", 1, &len), -EPIPE);
	assert_int_equal(len, 0);
	close(p[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc3339_roundtrip),
	    cmocka_unit_test(test_rfc3339_parse),
	    cmocka_unit_test(test_rfc3339_format_errors),
	    cmocka_unit_test(test_sidecar_json),
	    cmocka_unit_test(test_error_json),
	    cmocka_unit_test(test_sources_and_references),
	    cmocka_unit_test(test_sources_fitted),
	    cmocka_unit_test(test_parse_roundtrip),
	    cmocka_unit_test(test_several_outputs),
	    cmocka_unit_test(test_parse_error_sidecar),
	    cmocka_unit_test(test_parse_paid_error_sidecar),
	    cmocka_unit_test(test_parse_reuse_refuses),
	    cmocka_unit_test(test_parse_reuse_bounds),
	    cmocka_unit_test(test_names),
	    cmocka_unit_test(test_numbers_and_strings),
	    cmocka_unit_test(test_civil),
	    cmocka_unit_test(test_fdio),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
