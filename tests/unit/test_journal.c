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
#include <pthread.h>
#include <sys/stat.h>

#include "api.h"
#include "config.h"
#include "fdio.h"
#include "output.h"
#include "sidecar.h"

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

/* What was sent (prompt, extra:, references, a group's images) comes back
 * exactly, names that are no UTF-8 and prompts full of control bytes too; a
 * record without them (older versions) reads with none. */
static void test_sent_round_trip(void **state)
{
	struct journal_record in = sample(), out;
	struct journal_sent_ref refs[2] = {{.path = "/srv/refs/style.png"},
					   {.path = "/srv/refs/\xff logo.png"}};
	struct journal_sent_source srcs[2] = {
	    {.name = "a.jpg", .size = 10, .mtime_sec = 1795534572, .mtime_nsec = 5},
	    {.name = "b\x01\x02\x03.png", .size = 20, .mtime_sec = 1795534573, .mtime_nsec = 0}};
	char *text;

	(void)state;
	text = journal_record_json(&in);
	assert_non_null(text);
	assert_int_equal(journal_record_parse(text, strlen(text), &out), 0);
	assert_null(out.prompt);
	assert_null(out.prompt_source);
	assert_null(out.prompt_file);
	assert_null(out.extra_json);
	assert_int_equal(out.n_references, 0);
	assert_int_equal(out.n_sources, 0);
	journal_record_clear(&out);
	free(text);

	memset(refs[0].sha256, 'b', 64);
	memset(srcs[0].sha256, 'c', 64);
	memset(srcs[1].sha256, 'd', 64);
	in.prompt = "folder prompt\nline \"two\"\x01\x02\x03\x04";
	in.prompt_source = "folder+file";
	in.prompt_file = "sub/\xfe.txt";
	in.extra_json = "{\"optimize_prompt_options\":{\"mode\":\"fast\"},\"seed\":7}";
	in.references = refs;
	in.n_references = 2;
	in.sources = srcs;
	in.n_sources = 2;
	text = journal_record_json(&in);
	assert_non_null(text);
	assert_int_equal(journal_record_parse(text, strlen(text), &out), 0);
	assert_string_equal(out.prompt, in.prompt);
	assert_string_equal(out.prompt_source, in.prompt_source);
	assert_string_equal(out.prompt_file, in.prompt_file);
	assert_string_equal(out.extra_json, in.extra_json);
	assert_int_equal(out.n_references, 2);
	assert_string_equal(out.references[0].path, refs[0].path);
	assert_string_equal(out.references[0].sha256, refs[0].sha256);
	assert_string_equal(out.references[1].path, refs[1].path);
	assert_string_equal(out.references[1].sha256, "");
	assert_int_equal(out.n_sources, 2);
	for (size_t i = 0; i < 2; i++) {
		assert_string_equal(out.sources[i].name, srcs[i].name);
		assert_string_equal(out.sources[i].sha256, srcs[i].sha256);
		assert_int_equal(out.sources[i].size, srcs[i].size);
		assert_int_equal(out.sources[i].mtime_sec, srcs[i].mtime_sec);
		assert_int_equal(out.sources[i].mtime_nsec, srcs[i].mtime_nsec);
	}
	journal_record_clear(&out);
	free(text);
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
	/* One output: no list, as older versions wrote it. */
	assert_null(out.images);
	assert_int_equal(out.max_images, 0);
	journal_record_clear(&out);
	free(text);

	/* Several outputs: every URL, in order, and the errors between them. */
	in.images = cJSON_Parse("[{\"url\":\"https://e/1\",\"size\":\"1x1\"},"
				"{\"index\":1,\"error\":{\"code\":\"X\",\"message\":\"m\"}},"
				"{\"url\":\"https://e/3\"}]");
	assert_non_null(in.images);
	in.max_images = 3;
	text = journal_record_json(&in);
	assert_non_null(text);
	assert_int_equal(journal_record_parse(text, strlen(text), &out), 0);
	assert_int_equal(out.max_images, 3);
	assert_int_equal(cJSON_GetArraySize(out.images), 3);
	assert_string_equal(
	    cJSON_GetObjectItem(cJSON_GetArrayItem(out.images, 2), "url")->valuestring,
	    "https://e/3");
	journal_record_clear(&out);
	cJSON_Delete(in.images);
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
		/* images that are not a list of entries */
		"{\"folder\":\"/a\",\"source\":\"x.png\",\"stem\":\"x\",\"url\":\"https://e/\","
		"\"source_mtime\":\"2026-01-01T00:00:00Z\",\"source_size\":1,\"created\":1,"
		"\"generated_at_ms\":1,\"elapsed_ms\":1,\"attempts\":1,\"images\":{}}",
		"{\"folder\":\"/a\",\"source\":\"x.png\",\"stem\":\"x\",\"url\":\"https://e/\","
		"\"source_mtime\":\"2026-01-01T00:00:00Z\",\"source_size\":1,\"created\":1,"
		"\"generated_at_ms\":1,\"elapsed_ms\":1,\"attempts\":1,\"images\":[]}",
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
	(void)snprintf(path, sizeof(path), "%s/journal", dir); /* the old layout's folder */
	assert_int_equal(mkdir(path, 0700), 0);
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
	assert_int_equal(fdio_read_file(fd, SIDECAR_RECORD_MAX, &buf, &len), 0);
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
	cJSON *outputs;

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

	text = sidecar_success_json(&s);
	assert_non_null(text);
	assert_true(strlen(text) < SIDECAR_RECORD_MAX);
	back = read_back(text);
	cJSON *doc = cJSON_Parse(back);
	assert_non_null(doc);
	char *src = sidecar_get_name(doc, SIDECAR_SOURCE);
	assert_string_equal(src, path);
	free(src);
	cJSON_Delete(doc);
	free(back);
	free(text);

	text = sidecar_error_json(&e);
	assert_non_null(text);
	assert_true(strlen(text) < SIDECAR_RECORD_MAX);
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
	assert_true(strlen(text) < SIDECAR_RECORD_MAX);
	back = read_back(text);
	assert_int_equal(journal_record_parse(back, strlen(back), &got), 0);
	assert_string_equal(got.source, path);
	assert_string_equal(got.url, url);
	journal_record_clear(&got);
	free(back);
	free(text);

	/* Several outputs: every URL (or error) of API_IMAGES_MAX entries in the
	 * journal record, every output (or error) in the sidecar. */
	rec.images = cJSON_CreateArray();
	outputs = cJSON_CreateArray();
	assert_non_null(rec.images);
	assert_non_null(outputs);
	for (int i = 0; i < API_IMAGES_MAX; i++) {
		cJSON *img = cJSON_CreateObject(), *out = cJSON_CreateObject(), *err;

		assert_non_null(img);
		assert_non_null(out);
		assert_non_null(cJSON_AddStringToObject(img, "url", url));
		assert_non_null(cJSON_AddStringToObject(img, "size", size));
		cJSON_AddItemToArray(rec.images, img);
		assert_non_null(cJSON_AddNumberToObject(out, "index", i));
		if (i % 2) {
			err = cJSON_AddObjectToObject(out, "error");
			assert_non_null(cJSON_AddStringToObject(err, "code", code));
			assert_non_null(cJSON_AddStringToObject(err, "message", message));
		} else {
			assert_non_null(cJSON_AddStringToObject(out, "output", path));
			assert_non_null(cJSON_AddStringToObject(out, "size", size));
		}
		cJSON_AddItemToArray(outputs, out);
	}
	rec.max_images = API_IMAGES_MAX;
	/* What was sent, each at its cap: the folder's prompt and the file's
	 * appended, a prompt file and references named by the longest paths, a
	 * group of the most images with the longest names, extra: at its cap. */
	char *sent_prompt = worst(CONFIG_PROMPT_MAX + 1 + CONFIG_PROMPT_FILE_MAX);
	char *extra = malloc(CONFIG_EXTRA_MAX + 1);
	struct journal_sent_ref sent_refs[CONFIG_IMAGES_MAX];
	struct journal_sent_source sent_srcs[API_IMAGES_MAX];

	assert_non_null(extra);
	/* {"a":"\u0001..."}: as config.c prints it, 6 bytes per control byte */
	{
		size_t n = 0;

		n += (size_t)snprintf(extra, CONFIG_EXTRA_MAX, "{\"a\":\"");
		while (n + 6 + 2 <= CONFIG_EXTRA_MAX) {
			memcpy(extra + n, "\\u0001", 6);
			n += 6;
		}
		memcpy(extra + n, "\"}", 3);
	}
	for (size_t i = 0; i < CONFIG_IMAGES_MAX; i++) {
		sent_refs[i].path = path;
		memcpy(sent_refs[i].sha256, sha, 65);
	}
	for (size_t i = 0; i < API_IMAGES_MAX; i++) {
		sent_srcs[i] = (struct journal_sent_source){.name = name,
							    .size = 9000000000000000ull,
							    .mtime_sec = 253402300799,
							    .mtime_nsec = 999999999};
		memcpy(sent_srcs[i].sha256, sha, 65);
	}
	rec.prompt = sent_prompt;
	rec.prompt_source = code;
	rec.prompt_file = path;
	rec.extra_json = extra;
	rec.references = sent_refs;
	rec.n_references = CONFIG_IMAGES_MAX;
	rec.sources = sent_srcs;
	rec.n_sources = API_IMAGES_MAX;
	text = journal_record_json(&rec);
	assert_non_null(text);
	print_message("largest journal record: %zu of %d bytes\n", strlen(text),
		      SIDECAR_RECORD_MAX);
	assert_true(strlen(text) < SIDECAR_RECORD_MAX);
	back = read_back(text);
	assert_int_equal(journal_record_parse(back, strlen(back), &got), 0);
	assert_int_equal(cJSON_GetArraySize(got.images), API_IMAGES_MAX);
	assert_string_equal(
	    cJSON_GetObjectItem(cJSON_GetArrayItem(got.images, 14), "url")->valuestring, url);
	assert_int_equal(got.max_images, API_IMAGES_MAX);
	assert_string_equal(got.prompt, sent_prompt);
	assert_string_equal(got.prompt_file, path);
	assert_non_null(got.extra_json);
	assert_int_equal(got.n_references, CONFIG_IMAGES_MAX);
	assert_string_equal(got.references[CONFIG_IMAGES_MAX - 1].path, path);
	assert_int_equal(got.n_sources, API_IMAGES_MAX);
	assert_string_equal(got.sources[API_IMAGES_MAX - 1].name, name);
	journal_record_clear(&got);
	rec.prompt = rec.prompt_source = rec.prompt_file = rec.extra_json = NULL;
	rec.references = NULL;
	rec.sources = NULL;
	rec.n_references = rec.n_sources = 0;
	free(sent_prompt);
	free(extra);
	free(back);
	free(text);
	cJSON_Delete(rec.images);
	rec.images = NULL;
	s.outputs = outputs;
	s.max_images = API_IMAGES_MAX;
	text = sidecar_success_json(&s);
	assert_non_null(text);
	assert_true(strlen(text) < SIDECAR_RECORD_MAX);
	back = read_back(text);
	doc = cJSON_Parse(back);
	assert_non_null(doc);
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(doc, "outputs")), API_IMAGES_MAX);
	cJSON_Delete(doc);
	free(back);
	free(text);
	cJSON_Delete(outputs);

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

/* ---- the one-file log ---------------------------------------------------- */

static void make_dir(char *dir)
{
	assert_non_null(mkdtemp(dir));
}

static void remove_dir(const char *dir)
{
	char cmd[256];

	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static char *slurp(const char *dir, const char *name, size_t *ret_len)
{
	char path[512], *buf = NULL;
	size_t len = 0;
	int fd;

	(void)snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return NULL;
	assert_int_equal(fdio_read_file(fd, 1 << 30, &buf, &len), 0);
	close(fd);
	if (ret_len)
		*ret_len = len;
	return buf;
}

static void append_bytes(const char *dir, const char *name, const char *data, size_t len)
{
	char path[512];
	int fd;

	(void)snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static off_t file_size(const char *dir, const char *name)
{
	char path[512];
	struct stat st;

	(void)snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (stat(path, &st) < 0)
		return -1;
	return st.st_size;
}

struct names {
	int count;
	char source[64][64];
};

static void collect_names(struct journal_record *rec, void *userdata)
{
	struct names *n = userdata;

	if (n->count < 64)
		(void)snprintf(n->source[n->count], sizeof(n->source[0]), "%s", rec->source);
	n->count++;
}

/* Closes j (if any), opens the journal again and loads it. */
static struct journal *reload(struct journal *j, const char *dir, struct names *n, size_t *bad)
{
	journal_close(j);
	j = NULL;
	assert_int_equal(journal_open(dir, &j), 0);
	memset(n, 0, sizeof(*n));
	assert_int_equal(journal_load(j, collect_names, n, bad), 0);
	return j;
}

static void write_source(struct journal *j, const char *source)
{
	struct journal_record rec = sample();

	rec.source = (char *)source;
	assert_int_equal(journal_write(j, &rec), 0);
}

static void test_log_round_trip_and_tombstones(void **state)
{
	char dir[] = "/tmp/test_journal.XXXXXX";
	struct journal *j = NULL;
	struct names n;
	size_t bad = 99;

	(void)state;
	make_dir(dir);
	j = reload(NULL, dir, &n, &bad);
	assert_int_equal(n.count, 0);
	write_source(j, "a.png");
	write_source(j, "b.png");
	write_source(j, "c.png");
	assert_int_equal(journal_remove(j, "/srv/hot", "b.png"), 0);
	write_source(j, "c.png"); /* the same source again: one live record */
	assert_int_equal(journal_remove(j, "/srv/hot", "d.png"), 0);   /* never written */
	assert_int_equal(journal_remove(j, "/srv/other", "a.png"), 0); /* another folder */
	/* a tombstone, then the same source paid again: live */
	write_source(j, "e.png");
	assert_int_equal(journal_remove(j, "/srv/hot", "e.png"), 0);
	write_source(j, "e.png");
	assert_true(file_size(dir, "journal.log") > 0);
	j = reload(j, dir, &n, &bad);
	assert_int_equal(bad, 0);
	assert_int_equal(n.count, 3);
	assert_string_equal(n.source[0], "a.png");
	assert_string_equal(n.source[1], "c.png");
	assert_string_equal(n.source[2], "e.png");
	/* the load rewrote the file without the dead records: the same again */
	j = reload(j, dir, &n, &bad);
	assert_int_equal(n.count, 3);
	assert_int_equal(bad, 0);
	journal_close(j);
	remove_dir(dir);
}

static void test_log_torn_tail(void **state)
{
	char dir[] = "/tmp/test_journal.XXXXXX";
	struct journal *j = NULL;
	struct names n;
	size_t bad = 99, len = 0;
	char *log, *kept;

	(void)state;
	make_dir(dir);
	j = reload(NULL, dir, &n, &bad);
	write_source(j, "a.png");
	write_source(j, "b.png");
	journal_close(j);
	j = NULL;
	/* A crash in the middle of appending the next record: half of a line. */
	log = slurp(dir, "journal.log", &len);
	assert_non_null(log);
	append_bytes(dir, "journal.log", log, len / 2 / 2);
	j = reload(NULL, dir, &n, &bad);
	assert_int_equal(n.count, 2);
	assert_int_equal(bad, 0); /* never acknowledged: not a lost record */
	kept = slurp(dir, "journal.bad", NULL);
	assert_non_null(kept); /* but kept for a human */
	assert_memory_equal(kept, log, len / 2 / 2);
	free(kept);
	/* appends after it start on a line of their own */
	write_source(j, "c.png");
	j = reload(j, dir, &n, &bad);
	assert_int_equal(n.count, 3);
	assert_string_equal(n.source[2], "c.png");
	assert_int_equal(bad, 0);
	free(log);
	journal_close(j);
	remove_dir(dir);
}

static void test_log_corrupt_middle(void **state)
{
	char dir[] = "/tmp/test_journal.XXXXXX", path[512];
	struct journal *j = NULL;
	struct names n;
	size_t bad = 99, len = 0;
	char *log, *second, *kept;
	int fd;

	(void)state;
	make_dir(dir);
	j = reload(NULL, dir, &n, &bad);
	write_source(j, "a.png");
	write_source(j, "b.png");
	write_source(j, "c.png");
	journal_close(j);
	/* One byte of the middle record's payload changes: the checksum says so. */
	log = slurp(dir, "journal.log", &len);
	second = strchr(log, '\n') + 1;
	second = strstr(second, "b.png");
	assert_non_null(second);
	(void)snprintf(path, sizeof(path), "%s/journal.log", dir);
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "x", 1, second - log), 1);
	close(fd);
	j = reload(NULL, dir, &n, &bad);
	assert_int_equal(bad, 1);
	assert_int_equal(n.count, 2);
	assert_string_equal(n.source[0], "a.png");
	assert_string_equal(n.source[1], "c.png");
	kept = slurp(dir, "journal.bad", NULL);
	assert_non_null(kept);
	assert_non_null(strstr(kept, "x.png")); /* the damaged line, as it was */
	free(kept);
	/* moved out of the log once: not counted again */
	j = reload(j, dir, &n, &bad);
	assert_int_equal(bad, 0);
	assert_int_equal(n.count, 2);
	free(log);
	journal_close(j);
	remove_dir(dir);
}

static void test_log_compaction(void **state)
{
	char dir[] = "/tmp/test_journal.XXXXXX", src[32];
	struct journal_record rec = sample();
	struct journal *j = NULL;
	struct names n;
	size_t bad = 0;
	char *url = malloc(8001);
	off_t most = 0;

	(void)state;
	assert_non_null(url);
	memset(url, 'u', 8000);
	url[8000] = '\0';
	rec.url = url;
	make_dir(dir);
	j = reload(NULL, dir, &n, &bad);
	write_source(j, "kept.png");
	/* 300 records of 8 KB, each done at once: 2.4 MB appended in all. */
	for (int i = 0; i < 300; i++) {
		off_t size;

		(void)snprintf(src, sizeof(src), "gone-%d.png", i);
		rec.source = src;
		assert_int_equal(journal_write(j, &rec), 0);
		assert_int_equal(journal_remove(j, rec.folder, src), 0);
		size = file_size(dir, "journal.log");
		if (size > most)
			most = size;
	}
	/* Rewritten whenever it doubled past 1 MiB: never much more. */
	assert_true(most < 2 * 1024 * 1024 + 16 * 1024);
	assert_true(file_size(dir, "journal.log") < 2 * 1024 * 1024);
	/* a record written right after a rewrite is durable in the new file */
	write_source(j, "after.png");
	j = reload(j, dir, &n, &bad);
	assert_int_equal(bad, 0);
	assert_int_equal(n.count, 2);
	assert_string_equal(n.source[0], "kept.png");
	assert_string_equal(n.source[1], "after.png");
	/* the load compacted the tail of tombstones away */
	assert_true(file_size(dir, "journal.log") < 4096);
	free(url);
	journal_close(j);
	remove_dir(dir);
}

static void test_log_migrates_old_layout(void **state)
{
	char dir[] = "/tmp/test_journal.XXXXXX", path[512];
	struct journal_record rec = sample();
	struct journal *j = NULL;
	struct names n;
	size_t bad = 99;
	char *text;
	FILE *f;

	(void)state;
	make_dir(dir);
	(void)snprintf(path, sizeof(path), "%s/journal", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	/* what the one-file-per-record journal left: a record, a half-written
	 * temporary file, an unreadable record */
	rec.source = "old.png";
	text = journal_record_json(&rec);
	assert_non_null(text);
	(void)snprintf(path, sizeof(path), "%s/journal/%s.json", dir, "0123abcd");
	f = fopen(path, "w");
	assert_non_null(f);
	(void)fputs(text, f);
	(void)fclose(f);
	free(text);
	append_bytes(dir, "journal/.0123abcd.json.0123456789abcdef.tmp", "{\"fo", 4);
	append_bytes(dir, "journal/broken.json", "{\"folder\"", 9);

	assert_int_equal(journal_open(dir, &j), 0);
	write_source(j, "new.png"); /* a record of the new layout beside them */
	j = reload(j, dir, &n, &bad);
	assert_int_equal(n.count, 2);
	assert_string_equal(n.source[0], "old.png");
	assert_string_equal(n.source[1], "new.png");
	assert_int_equal(bad, 1);
	assert_int_equal(access(path, F_OK), -1); /* migrated: gone from the old folder */
	(void)snprintf(path, sizeof(path), "%s/journal/.0123abcd.json.0123456789abcdef.tmp", dir);
	assert_int_equal(access(path, F_OK), -1);
	(void)snprintf(path, sizeof(path), "%s/journal/broken.json", dir);
	assert_int_equal(access(path, F_OK), 0); /* left for a human */
	/* the migrated record lives on in journal.log, and can be done */
	j = reload(j, dir, &n, &bad);
	assert_int_equal(n.count, 2);
	assert_int_equal(journal_remove(j, "/srv/hot", "old.png"), 0);
	j = reload(j, dir, &n, &bad);
	assert_int_equal(n.count, 1);
	assert_string_equal(n.source[0], "new.png");
	journal_close(j);
	remove_dir(dir);
}

#define WRITERS		  8
#define WRITES_PER_WRITER 200
#define NAS_SYNC_DELAY_US 2000

struct writer {
	struct journal *j;
	int id;
	int failed;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct journal_record rec = sample();
	char src[32];

	for (int i = 0; i < WRITES_PER_WRITER; i++) {
		(void)snprintf(src, sizeof(src), "w%d-%d.png", w->id, i);
		rec.source = src;
		if (journal_write(w->j, &rec) < 0)
			w->failed++;
		/* done for half of them, from the same thread, right after */
		if (i % 2 && journal_remove(w->j, rec.folder, src) < 0)
			w->failed++;
	}
	return NULL;
}

static void count_record(struct journal_record *rec, void *userdata)
{
	(void)rec;
	(*(int *)userdata)++;
}

/* Group commit: writers that wait at the same time share one fdatasync. */
static void test_log_group_commit(void **state)
{
	char dir[] = "/tmp/test_journal.XXXXXX";
	struct writer w[WRITERS];
	pthread_t t[WRITERS];
	struct journal *j = NULL;
	unsigned long syncs;
	size_t bad = 0;
	int count = 0;

	(void)state;
	make_dir(dir);
	assert_int_equal(journal_open(dir, &j), 0);
	assert_int_equal(journal_load(j, count_record, &count, &bad), 0);
	journal_test_set_sync_delay(j, NAS_SYNC_DELAY_US);

	/* One writer alone: every write waits for a sync of its own. */
	for (int i = 0; i < 20; i++) {
		char src[32];

		(void)snprintf(src, sizeof(src), "alone-%d.png", i);
		write_source(j, src);
	}
	assert_int_equal(journal_sync_count(j), 20);

	for (int i = 0; i < WRITERS; i++) {
		w[i] = (struct writer){.j = j, .id = i};
		assert_int_equal(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
	}
	for (int i = 0; i < WRITERS; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(w[i].failed, 0);
	}
	syncs = journal_sync_count(j) - 20;
	print_message("group commit: %d writes by %d threads, %lu fdatasync calls\n",
		      WRITERS * WRITES_PER_WRITER, WRITERS, syncs);
	/* Without sharing it would be one per write (1600); with it a sync
	 * covers the records of the writers that waited meanwhile (about 4 here). */
	assert_true(syncs <= WRITERS * WRITES_PER_WRITER / 2);

	journal_close(j);
	j = NULL;
	assert_int_equal(journal_open(dir, &j), 0);
	count = 0;
	assert_int_equal(journal_load(j, count_record, &count, &bad), 0);
	assert_int_equal(bad, 0);
	assert_int_equal(count, 20 + WRITERS * WRITES_PER_WRITER / 2);
	journal_close(j);
	remove_dir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip),
	    cmocka_unit_test(test_sent_round_trip),
	    cmocka_unit_test(test_largest_records_read_back),
	    cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_write_load_remove),
	    cmocka_unit_test(test_log_round_trip_and_tombstones),
	    cmocka_unit_test(test_log_torn_tail),
	    cmocka_unit_test(test_log_corrupt_middle),
	    cmocka_unit_test(test_log_compaction),
	    cmocka_unit_test(test_log_migrates_old_layout),
	    cmocka_unit_test(test_log_group_commit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
