#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal.h"

#include <fcntl.h>
#include <limits.h>

#include "api.h"
#include "config.h"
#include "output.h"

static struct journal_record sample(void)
{
	struct journal_record rec = {
		.folder = "/srv/hot",
		.source = "sub/ç photo.png",
		.stem = "ç photo",
		.url = "https://example.test/r/1.jpeg?sig=a%2Fb",
		.model = "doubao-seedream-4-5-251128",
		.result_size = "2048x2048",
		.request_id = "req-1",
		.size = 5700000,
		.mtime_sec = 1795534572,
		.mtime_nsec = 123456789,
		.created = 1795534573,
		.generated_at = 1795534573123,
		.elapsed_ms = 4321,
		.attempts = 2,
	};

	memset(rec.sha256, 'a', 64);
	rec.sha256[64] = '\0';
	return rec;
}

static void test_roundtrip(void **state)
{
	struct journal_record in = sample(), out;
	char *text;

	(void)state;
	in.usage = cJSON_Parse("{\"generated_images\":1,\"output_tokens\":16384}");
	assert_non_null(in.usage);
	text = journal_record_json(&in);
	assert_non_null(text);
	assert_int_equal(journal_record_parse(text, strlen(text), &out), 0);
	assert_string_equal(out.folder, in.folder);
	assert_string_equal(out.source, in.source);
	assert_string_equal(out.stem, in.stem);
	assert_string_equal(out.url, in.url);
	assert_string_equal(out.model, in.model);
	assert_string_equal(out.result_size, in.result_size);
	assert_string_equal(out.request_id, in.request_id);
	assert_string_equal(out.sha256, in.sha256);
	assert_int_equal(out.size, in.size);
	assert_int_equal(out.mtime_sec, in.mtime_sec);
	assert_int_equal(out.mtime_nsec, in.mtime_nsec);
	assert_int_equal(out.created, in.created);
	assert_int_equal(out.generated_at, in.generated_at);
	assert_int_equal(out.elapsed_ms, in.elapsed_ms);
	assert_int_equal(out.attempts, in.attempts);
	assert_int_equal(cJSON_GetObjectItem(out.usage, "output_tokens")->valueint, 16384);
	journal_record_clear(&out);
	cJSON_Delete(in.usage);
	free(text);
}

static void test_refusals(void **state)
{
	static const char *const bad[] = {
		"",
		"[]",
		"{\"folder\":\"/a\"}",
		/* a stem that would leave the output folder */
		"{\"folder\":\"/a\",\"source\":\"x.png\",\"stem\":\"../x\",\"url\":\"https://e/\","
		"\"source_mtime\":\"2026-01-01T00:00:00Z\",\"source_size\":1,\"created\":1,"
		"\"generated_at_ms\":1,\"elapsed_ms\":1,\"attempts\":1}",
		"{\"folder\":\"/a\",\"source\":\"x.png\",\"stem\":\".hidden\",\"url\":\"https://e/\","
		"\"source_mtime\":\"2026-01-01T00:00:00Z\",\"source_size\":1,\"created\":1,"
		"\"generated_at_ms\":1,\"elapsed_ms\":1,\"attempts\":1}",
		/* a negative size */
		"{\"folder\":\"/a\",\"source\":\"x.png\",\"stem\":\"x\",\"url\":\"https://e/\","
		"\"source_mtime\":\"2026-01-01T00:00:00Z\",\"source_size\":-1,\"created\":1,"
		"\"generated_at_ms\":1,\"elapsed_ms\":1,\"attempts\":1}",
		/* a bad mtime */
		"{\"folder\":\"/a\",\"source\":\"x.png\",\"stem\":\"x\",\"url\":\"https://e/\","
		"\"source_mtime\":\"yesterday\",\"source_size\":1,\"created\":1,"
		"\"generated_at_ms\":1,\"elapsed_ms\":1,\"attempts\":1}",
	};
	struct journal_record rec;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(journal_record_parse(bad[i], strlen(bad[i]), &rec), -EINVAL);
}

struct loaded {
	int count;
	char source[256];
};

static void collect(struct journal_record *rec, void *userdata)
{
	struct loaded *l = userdata;

	l->count++;
	(void)snprintf(l->source, sizeof(l->source), "%s", rec->source);
}

static void test_write_load_remove(void **state)
{
	char dir[] = "/tmp/test_journal.XXXXXX", cmd[256], path[512];
	struct journal_record a = sample(), b = sample();
	struct loaded l = {0};
	struct journal *j = NULL;
	size_t bad = 99;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(journal_open(dir, &j), 0);
	assert_int_equal(journal_write(j, &a), 0);
	b.source = "other.png";
	assert_int_equal(journal_write(j, &b), 0);
	assert_int_equal(journal_write(j, &b), 0); /* the same source again: replaced */
	(void)snprintf(path, sizeof(path), "%s/journal/garbage.json", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	(void)fputs("{not json", f);
	(void)fclose(f);

	assert_int_equal(journal_load(j, collect, &l, &bad), 0);
	assert_int_equal(l.count, 2);
	assert_int_equal(bad, 1);

	assert_int_equal(journal_remove(j, "/srv/hot", "other.png"), 0);
	assert_int_equal(journal_remove(j, "/srv/hot", "never.png"), 0);
	l.count = 0;
	assert_int_equal(journal_load(j, collect, &l, NULL), 0);
	assert_int_equal(l.count, 1);
	assert_string_equal(l.source, "sub/ç photo.png");
	journal_close(j);
	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* n bytes of 0x01: valid UTF-8 that cJSON writes as \u0001, 6 bytes each. */
static char *worst(size_t n)
{
	char *s = malloc(n + 1);

	assert_non_null(s);
	memset(s, 0x01, n);
	s[n] = '\0';
	return s;
}

/* Writes text to a file and reads it back the way every reader does. */
static char *read_back(const char *text)
{
	char path[] = "/tmp/seedreamd-record-XXXXXX", *buf = NULL;
	size_t len = 0;
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_int_equal(output_read_fd(fd, OUTPUT_RECORD_MAX, &buf, &len), 0);
	assert_int_equal(len, strlen(text));
	close(fd);
	unlink(path);
	return buf;
}

/* Every field at its cap with the worst escaping: each record is read back. */
static void test_largest_records_read_back(void **state)
{
	char *path = worst(PATH_MAX - 1), *name = worst(NAME_MAX), *prompt = worst(CONFIG_PROMPT_MAX);
	char *model = worst(API_MODEL_MAX), *size = worst(API_SIZE_MAX);
	char *rid = worst(API_REQUEST_ID_MAX), *code = worst(API_CODE_MAX);
	char *message = worst(API_MESSAGE_MAX), *url = malloc(API_URL_MAX + 1), *text, *back;
	char sha[65];
	cJSON *usage = cJSON_CreateObject(), *a = cJSON_AddObjectToObject(usage, "a");
	cJSON *b = cJSON_AddObjectToObject(a, "b"), *arr = cJSON_AddArrayToObject(b, "c");
	struct journal_record rec = {0}, got;

	(void)state;
	assert_non_null(url);
	/* a URL is printable ASCII; '"' and '\\' are escaped as 2 bytes */
	memset(url, '"', API_URL_MAX);
	url[API_URL_MAX] = '\0';
	memset(sha, 'a', 64);
	sha[64] = '\0';
	/* a usage just inside the bounds, so kept verbatim */
	for (int i = 0; i < 1000; i++)
		cJSON_AddItemToArray(arr, cJSON_CreateNumber(0));
	assert_int_equal(api_bound_usage(&usage, NULL), 0);
	assert_null(cJSON_GetObjectItemCaseSensitive(usage, "truncated"));

	struct sidecar_success s = {
	    .src = {.source = path, .sha256_hex = sha, .size = 1ull << 53, .mtime_sec = 253402300799,
		    .mtime_nsec = 999999999},
	    .output = path, .model = model, .prompt = prompt, .size = size, .result_size = size,
	    .response_format = "b64_json", .created = 1ll << 53, .usage = usage, .request_id = rid,
	    .attempts = UINT_MAX, .elapsed_ms = 1ull << 53, .completed_at = 253402300799,
	    .version = name, .reused_from = path,
	};
	struct sidecar_error e = {
	    .src = s.src, .http_status = 599, .code = code, .message = message, .request_id = rid,
	    .attempts = UINT_MAX, .failed_at = 253402300799, .version = name,
	};

	text = output_sidecar_json(&s);
	assert_non_null(text);
	assert_true(strlen(text) < OUTPUT_RECORD_MAX);
	back = read_back(text);
	cJSON *doc = cJSON_Parse(back);
	assert_non_null(doc);
	char *src = output_sidecar_source(doc);
	assert_string_equal(src, path);
	free(src);
	cJSON_Delete(doc);
	free(back);
	free(text);

	text = output_error_json(&e);
	assert_non_null(text);
	assert_true(strlen(text) < OUTPUT_RECORD_MAX);
	back = read_back(text);
	doc = cJSON_Parse(back);
	assert_non_null(doc);
	cJSON_Delete(doc);
	free(back);
	free(text);

	rec.folder = path;
	rec.source = path;
	rec.stem = name + 1; /* a stem starts with no '.', and \x01 is none */
	rec.url = url;
	rec.model = model;
	rec.result_size = size;
	rec.request_id = rid;
	rec.usage = usage;
	memcpy(rec.sha256, sha, 65);
	rec.size = 9000000000000000ull; /* what the reader takes; inputs are far smaller */
	rec.mtime_sec = 253402300799;
	rec.created = API_CREATED_MAX;
	rec.generated_at = 1ll << 52;
	rec.elapsed_ms = 1ull << 52;
	rec.attempts = 1000000;
	text = journal_record_json(&rec);
	assert_non_null(text);
	assert_true(strlen(text) < OUTPUT_RECORD_MAX);
	back = read_back(text);
	assert_int_equal(journal_record_parse(back, strlen(back), &got), 0);
	assert_string_equal(got.source, path);
	assert_string_equal(got.url, url);
	journal_record_clear(&got);
	free(back);
	free(text);

	cJSON_Delete(usage);
	free(path);
	free(name);
	free(prompt);
	free(model);
	free(size);
	free(rid);
	free(code);
	free(message);
	free(url);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_largest_records_read_back),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_write_load_remove),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
