#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fnv.h"
#include "index.h"
#include "output.h"
#include "sidecar.h"

static const char SHA[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static struct index_entry make_entry(const char *source, const char *sidecar, int64_t finished)
{
	struct index_entry e = {
		.source = (char *)source,
		.sidecar = (char *)sidecar,
		.size = 100,
		.mtime_sec = 1700000000,
		.mtime_nsec = 5,
		.finished_at = finished,
	};

	return e;
}

/* The published FNV-1a 64 test vectors: the index, its cache checksum and
 * folder.c's state file names all hash with it. */
static void test_fnv(void **state)
{
	(void)state;
	assert_true(fnv1a64_str("") == 0xcbf29ce484222325ULL);
	assert_true(fnv1a64_str("a") == 0xaf63dc4c8601ec8cULL);
	assert_true(fnv1a64_str("foobar") == 0x85944171f73967e8ULL);
	assert_true(fnv1a64_update(FNV1A64_INIT, "foobar", 3) == fnv1a64_str("foo"));
}

static void test_put_get_remove(void **state)
{
	struct index *idx = NULL;
	struct index_entry e = make_entry("a/b.png", "a/b.json", 10);
	const struct index_entry *got;

	(void)state;
	assert_int_equal(index_new(&idx), 0);
	assert_int_equal(index_count(idx), 0);
	assert_null(index_get(idx, "a/b.png"));

	memcpy(e.sha256, SHA, sizeof(SHA));
	e.generated_images = 1;
	assert_int_equal(index_put(idx, &e), 0);
	assert_int_equal(index_count(idx), 1);
	got = index_get(idx, "a/b.png");
	assert_non_null(got);
	assert_ptr_not_equal(got->source, e.source);
	assert_string_equal(got->source, "a/b.png");
	assert_string_equal(got->sidecar, "a/b.json");
	assert_string_equal(got->sha256, SHA);
	assert_int_equal(got->size, 100);
	assert_int_equal(got->mtime_sec, 1700000000);
	assert_int_equal(got->mtime_nsec, 5);
	assert_int_equal(got->generated_images, 1);
	assert_false(got->failed);

	/* Replace with a newer result. */
	e = make_entry("a/b.png", "a/b.error.json", 20);
	e.failed = true;
	assert_int_equal(index_put(idx, &e), 0);
	assert_int_equal(index_count(idx), 1);
	got = index_get(idx, "a/b.png");
	assert_true(got->failed);
	assert_string_equal(got->sidecar, "a/b.error.json");
	assert_string_equal(got->sha256, "");

	/* An older one does not replace it; a tie does. */
	e = make_entry("a/b.png", "old.json", 19);
	assert_int_equal(index_put(idx, &e), 0);
	assert_string_equal(index_get(idx, "a/b.png")->sidecar, "a/b.error.json");
	e = make_entry("a/b.png", "tie.json", 20);
	assert_int_equal(index_put(idx, &e), 0);
	assert_string_equal(index_get(idx, "a/b.png")->sidecar, "tie.json");

	e = make_entry("other.png", NULL, 1);
	assert_int_equal(index_put(idx, &e), 0);
	assert_string_equal(index_get(idx, "other.png")->sidecar, "");
	assert_int_equal(index_count(idx), 2);

	assert_int_equal(index_remove(idx, "a/b.png"), 0);
	assert_int_equal(index_remove(idx, "a/b.png"), -ENOENT);
	assert_null(index_get(idx, "a/b.png"));
	assert_non_null(index_get(idx, "other.png"));
	assert_int_equal(index_count(idx), 1);
	index_free(idx);
	index_free(NULL);
}

static void count_cb(const struct index_entry *entry, void *userdata)
{
	size_t *n = userdata;

	assert_non_null(entry->source);
	(*n)++;
}

#define MANY 200000

static void test_many(void **state)
{
	struct index *idx = NULL;
	char key[64], side[64];
	size_t n = 0;

	(void)state;
	assert_int_equal(index_new(&idx), 0);
	for (int i = 0; i < MANY; i++) {
		struct index_entry e = make_entry(key, side, i);

		snprintf(key, sizeof(key), "folder/%d/image-%d.png", i % 97, i);
		snprintf(side, sizeof(side), "folder/%d/image-%d.json", i % 97, i);
		assert_int_equal(index_put(idx, &e), 0);
	}
	assert_int_equal(index_count(idx), MANY);
	for (int i = 0; i < MANY; i++) {
		const struct index_entry *got;

		snprintf(key, sizeof(key), "folder/%d/image-%d.png", i % 97, i);
		got = index_get(idx, key);
		assert_non_null(got);
		assert_int_equal(got->finished_at, i);
	}
	index_foreach(idx, count_cb, &n);
	assert_int_equal(n, MANY);

	/* Removing every other entry must not lose the rest of a probe run. */
	for (int i = 0; i < MANY; i += 2) {
		snprintf(key, sizeof(key), "folder/%d/image-%d.png", i % 97, i);
		assert_int_equal(index_remove(idx, key), 0);
	}
	assert_int_equal(index_count(idx), MANY / 2);
	for (int i = 0; i < MANY; i++) {
		snprintf(key, sizeof(key), "folder/%d/image-%d.png", i % 97, i);
		if (i % 2)
			assert_non_null(index_get(idx, key));
		else
			assert_null(index_get(idx, key));
	}
	index_free(idx);
}

/* Entries share one copy of each model name; a clone has its own. */
static void test_models(void **state)
{
	struct index_entry a = make_entry("a.png", "a.json", 1),
			   b = make_entry("b.png", "b.json", 2);
	struct index_entry c = make_entry("c.png", "c.json", 3);
	char model_a[] = "model-a", model_a_too[] = "model-a";
	struct index *idx = NULL, *copy = NULL;
	const struct index_entry *x, *y;

	(void)state;
	assert_int_equal(index_new(&idx), 0);
	a.model = model_a;
	b.model = model_a_too;
	c.model = "";
	assert_int_equal(index_put(idx, &a), 0);
	assert_int_equal(index_put(idx, &b), 0);
	assert_int_equal(index_put(idx, &c), 0);
	memset(model_a, 'x', 7); /* the index holds its own copy */
	x = index_get(idx, "a.png");
	y = index_get(idx, "b.png");
	assert_string_equal(x->model, "model-a");
	assert_ptr_equal(x->model, y->model);
	assert_null(index_get(idx, "c.png")->model);
	for (int i = 0; i < 100; i++) { /* the set grows */
		char source[32], model[32];

		snprintf(source, sizeof(source), "m%d.png", i);
		snprintf(model, sizeof(model), "model-%d", i % 20);
		a.source = source;
		a.model = model;
		assert_int_equal(index_put(idx, &a), 0);
	}
	assert_string_equal(index_get(idx, "m57.png")->model, "model-17");
	assert_ptr_equal(index_get(idx, "m57.png")->model, index_get(idx, "m17.png")->model);
	assert_int_equal(index_clone(idx, &copy), 0);
	index_free(idx);
	assert_string_equal(index_get(copy, "b.png")->model, "model-a");
	assert_string_equal(index_get(copy, "m99.png")->model, "model-19");
	index_free(copy);
}

static char *success_doc(const char *source, int64_t completed_at)
{
	cJSON *usage = cJSON_Parse("{\"generated_images\": 1, \"output_tokens\": 16384}");
	struct sidecar_success s = {
		.src = {.source = source,
			.sha256_hex = SHA,
			.size = 2048,
			.mtime_sec = 1700000000,
			.mtime_nsec = 123456789},
		.output = "x.jpeg",
		.model = "seedream-4-0-250828",
		.prompt = "a \"quoted\" prompt, çiçek",
		.size = "2K",
		.response_format = "b64_json",
		.created = 1700000100,
		.usage = usage,
		.attempts = 1,
		.elapsed_ms = 900,
		.completed_at = completed_at,
		.version = "0.1.0",
	};
	char *text = sidecar_success_json(&s);

	assert_non_null(text);
	cJSON_Delete(usage);
	return text;
}

static char *error_doc(const char *source, int64_t failed_at)
{
	struct sidecar_error e = {
		.src = {.source = source,
			.sha256_hex = NULL,
			.size = 4096,
			.mtime_sec = 1700000001,
			.mtime_nsec = 0},
		.http_status = 0,
		.code = "LocalValidation.TooSmall",
		.message = "too small",
		.failed_at = failed_at,
		.version = "0.1.0",
	};
	char *text = sidecar_error_json(&e);

	assert_non_null(text);
	return text;
}

static void test_parse_success(void **state)
{
	struct index_entry e;
	char *text = success_doc("sub/ç.png", 1700000200);

	(void)state;
	assert_int_equal(index_parse_sidecar(text, strlen(text), "sub/ç.json", &e), 0);
	assert_string_equal(e.source, "sub/ç.png");
	assert_string_equal(e.sidecar, "sub/ç.json");
	assert_int_equal(e.size, 2048);
	assert_int_equal(e.mtime_sec, 1700000000);
	assert_int_equal(e.mtime_nsec, 123456789);
	assert_string_equal(e.sha256, SHA);
	assert_false(e.failed);
	assert_int_equal(e.finished_at, 1700000200);
	assert_int_equal(e.generated_images, 1);
	assert_string_equal(e.model, "seedream-4-0-250828");
	index_entry_clear(&e);
	assert_null(e.source);
	assert_null(e.model);
	free(text);
}

/* A name that is not UTF-8 (an old SMB client's Latin-1): the sidecar stays
 * valid JSON text, and the index still keys it by the exact bytes. */
static void test_parse_not_utf8(void **state)
{
	const char *raw = "sub/caf\xe9.png";
	struct index_entry e;
	char *text = success_doc(raw, 1700000200), *err = error_doc(raw, 1700000300);
	cJSON *root = cJSON_Parse(text);

	(void)state;
	assert_non_null(root);
	assert_string_equal(cJSON_GetObjectItem(root, "source")->valuestring, "sub/caf\xef\xbf\xbd.png");
	assert_string_equal(cJSON_GetObjectItem(root, "source_hex")->valuestring,
			    "7375622f636166e92e706e67");
	cJSON_Delete(root);
	assert_int_equal(index_parse_sidecar(text, strlen(text), "sub/caf_.json", &e), 0);
	assert_string_equal(e.source, raw);
	index_entry_clear(&e);
	assert_int_equal(index_parse_sidecar(err, strlen(err), "sub/caf_.error.json", &e), 0);
	assert_string_equal(e.source, raw);
	assert_true(e.failed);
	index_entry_clear(&e);
	free(text);
	free(err);
}

static void test_parse_error(void **state)
{
	struct index_entry e;
	char *text = error_doc("b.png", 1700000300);

	(void)state;
	assert_int_equal(index_parse_sidecar(text, strlen(text), "b.error.json", &e), 0);
	assert_string_equal(e.source, "b.png");
	assert_int_equal(e.size, 4096);
	assert_int_equal(e.mtime_sec, 1700000001);
	assert_int_equal(e.mtime_nsec, 0);
	assert_string_equal(e.sha256, "");
	assert_true(e.failed);
	assert_int_equal(e.finished_at, 1700000300);
	assert_int_equal(e.generated_images, 0);
	assert_null(e.model);
	index_entry_clear(&e);
	free(text);
}

#define MT "\"source_mtime\": \"2023-11-14T22:13:20.5Z\""

static void test_parse_lenient_members(void **state)
{
	static const char doc[] = "{\"source\": \"a.png\", \"source_size\": 0, " MT ", "
				  "\"source_sha256\": \"0123456789ABCDEF0123456789abcdef"
				  "0123456789abcdef0123456789abcdef\", \"usage\": "
				  "{\"generated_images\": \"many\"}}";
	struct index_entry e;

	(void)state;
	assert_int_equal(index_parse_sidecar(doc, strlen(doc), "a.json", &e), 0);
	assert_int_equal(e.size, 0);
	assert_int_equal(e.mtime_nsec, 500000000);
	assert_int_equal(e.finished_at, 0);
	assert_int_equal(e.generated_images, 0);
	assert_string_equal(e.sha256, SHA);
	index_entry_clear(&e);
}

static void test_parse_invalid(void **state)
{
	static const char *const bad[] = {
		"",
		"garbage",
		"[]",
		"\"a string\"",
		"null",
		"{}",
		"{\"name\": \"package\", \"version\": \"1.0.0\"}",
		"{\"source_size\": 1, " MT "}",
		"{\"source\": 5, \"source_size\": 1, " MT "}",
		"{\"source\": \"\", \"source_size\": 1, " MT "}",
		"{\"source\": \"a\", " MT "}",
		"{\"source\": \"a\", \"source_size\": -1, " MT "}",
		"{\"source\": \"a\", \"source_size\": 1.5, " MT "}",
		"{\"source\": \"a\", \"source_size\": \"1\", " MT "}",
		"{\"source\": \"a\", \"source_size\": 1e300, " MT "}",
		"{\"source\": \"a\", \"source_size\": 1}",
		"{\"source\": \"a\", \"source_size\": 1, \"source_mtime\": 1700000000}",
		"{\"source\": \"a\", \"source_size\": 1, \"source_mtime\": \"yesterday\"}",
		"{\"source\": \"a\", \"source_size\": 1, "
		"\"source_mtime\": \"2023-11-14T22:13:20+01:00\"}",
		"{\"source\": \"a\", \"source_size\": 1, " MT ", \"source_sha256\": 7}",
		"{\"source\": \"a\", \"source_size\": 1, " MT ", \"source_sha256\": \"abc\"}",
		"{\"source\": \"a\", \"source_size\": 1, " MT ", \"error\": \"boom\"}",
		"{\"source\": \"a\", \"source_size\": 1, " MT ", \"completed_at\": 5}",
		"{\"source\": \"a\", \"source_size\": 1, " MT ", \"completed_at\": \"now\"}",
		"{\"source\": \"a\", \"source_size\": 1, " MT ", \"error\": {}, "
		"\"failed_at\": \"2023\"}",
	};
	struct index_entry e;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = index_parse_sidecar(bad[i], strlen(bad[i]), "x.json", &e);

		assert_int_equal(r, -EINVAL);
		assert_null(e.source);
	}
	/* The length bounds the text: a valid document cut short is invalid. */
	{
		char *text = success_doc("a.png", 1);

		int r = index_parse_sidecar(text, strlen(text) / 2, "x.json", &e);

		assert_int_equal(r, -EINVAL);
		free(text);
	}
}

/* A temporary output tree, removed after each test. */
static char root[64];

static int setup_tree(void **state)
{
	(void)state;
	snprintf(root, sizeof(root), "/tmp/test_index.XXXXXX");
	return mkdtemp(root) ? 0 : -1;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int teardown_tree(void **state)
{
	(void)state;
	return nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void put_file(const char *rel, const char *text)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static void put_doc(const char *rel, char *text)
{
	put_file(rel, text);
	free(text);
}

static void make_dir(const char *rel)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	assert_int_equal(mkdir(path, 0755), 0);
}

static void test_load_tree(void **state)
{
	struct index *idx = NULL;
	const struct index_entry *got;
	char path[4096], skip[4096];
	size_t skipped = 99;

	(void)state;
	make_dir("sub");
	make_dir("sub/deep");
	make_dir("done");
	make_dir(".hiddendir");
	put_doc("a.json", success_doc("a.png", 100));
	put_doc("sub/b.error.json", error_doc("sub/b.png", 100));
	put_doc("sub/deep/c.json", success_doc("sub/deep/c.png", 100));
	/* Newest wins: n failed after it succeeded, m succeeded after it failed. */
	put_doc("n.json", success_doc("n.png", 100));
	put_doc("n.error.json", error_doc("n.png", 200));
	put_doc("sub/m.json", success_doc("m.png", 300));
	put_doc("sub/deep/m.error.json", error_doc("m.png", 200));
	put_file("foreign.json", "{\"name\": \"not a sidecar\"}\n");
	put_file("sub/garbage.json", "\x01\x02 not json");
	put_file("notes.txt", "not even named like a sidecar");
	put_doc(".hidden.json", success_doc("hidden.png", 100));
	put_doc(".hiddendir/h.json", success_doc("h.png", 100));
	put_doc("done/d.json", success_doc("d.png", 100));
	snprintf(path, sizeof(path), "%s/link.json", root);
	assert_int_equal(symlink("a.json", path), 0);
	snprintf(path, sizeof(path), "%s/outside.json", root);
	assert_int_equal(symlink("/nonexistent/x.json", path), 0);
	snprintf(path, sizeof(path), "%s/linkdir", root);
	assert_int_equal(symlink("sub", path), 0);

	snprintf(skip, sizeof(skip), "%s/done", root);
	assert_int_equal(index_new(&idx), 0);
	assert_int_equal(index_load_tree(idx, root, skip, &skipped), 0);
	assert_int_equal(skipped, 2);
	assert_int_equal(index_count(idx), 5);

	got = index_get(idx, "a.png");
	assert_non_null(got);
	assert_string_equal(got->sidecar, "a.json");
	assert_false(got->failed);
	got = index_get(idx, "sub/b.png");
	assert_non_null(got);
	assert_string_equal(got->sidecar, "sub/b.error.json");
	assert_true(got->failed);
	assert_int_equal(got->size, 4096);
	got = index_get(idx, "sub/deep/c.png");
	assert_non_null(got);
	assert_string_equal(got->sidecar, "sub/deep/c.json");
	assert_int_equal(got->mtime_nsec, 123456789);
	got = index_get(idx, "n.png");
	assert_non_null(got);
	assert_true(got->failed);
	assert_string_equal(got->sidecar, "n.error.json");
	got = index_get(idx, "m.png");
	assert_non_null(got);
	assert_false(got->failed);
	assert_string_equal(got->sidecar, "sub/m.json");
	assert_null(index_get(idx, "hidden.png"));
	assert_null(index_get(idx, "h.png"));
	assert_null(index_get(idx, "d.png"));
	index_free(idx);

	/* Without skip_dir, done/ is an ordinary folder. */
	assert_int_equal(index_new(&idx), 0);
	assert_int_equal(index_load_tree(idx, root, NULL, NULL), 0);
	assert_int_equal(index_count(idx), 6);
	assert_string_equal(index_get(idx, "d.png")->sidecar, "done/d.json");
	index_free(idx);
}

static void test_load_missing_root(void **state)
{
	struct index *idx = NULL;
	char path[4096];
	size_t skipped = 99;

	(void)state;
	snprintf(path, sizeof(path), "%s/does/not/exist", root);
	assert_int_equal(index_new(&idx), 0);
	assert_int_equal(index_load_tree(idx, path, "/nonexistent", &skipped), 0);
	assert_int_equal(skipped, 0);
	assert_int_equal(index_count(idx), 0);

	put_file("plain", "x");
	snprintf(path, sizeof(path), "%s/plain", root);
	assert_int_equal(index_load_tree(idx, path, NULL, &skipped), -ENOTDIR);
	index_free(idx);
}

static void test_load_depth_limit(void **state)
{
	struct index *idx = NULL;
	char rel[4096] = "";
	size_t len = 0;

	(void)state;
	/* Sidecars at folder depths 1..66; only depths up to 64 are read. */
	for (int depth = 1; depth <= 66; depth++) {
		char name[64], file[4200], *doc;

		len += (size_t)snprintf(rel + len, sizeof(rel) - len, "%sd", len ? "/" : "");
		make_dir(rel);
		snprintf(name, sizeof(name), "src%d.png", depth);
		snprintf(file, sizeof(file), "%s/s.json", rel);
		doc = success_doc(name, 1);
		put_doc(file, doc);
	}
	assert_int_equal(index_new(&idx), 0);
	assert_int_equal(index_load_tree(idx, root, NULL, NULL), 0);
	assert_int_equal(index_count(idx), 64);
	assert_non_null(index_get(idx, "src64.png"));
	assert_null(index_get(idx, "src65.png"));
	index_free(idx);
}

/* ---- the done-record cache ---------------------------------------------- */

/* Sets the mtime of root/rel back 10 s: settled, so the cache trusts it. */
static void age_dir(const char *rel)
{
	char path[4096];
	struct timespec ts[2];

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	assert_int_equal(clock_gettime(CLOCK_REALTIME, &ts[0]), 0);
	ts[0].tv_sec -= 10;
	ts[1] = ts[0];
	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static struct index *load_cached(const char *cache, const char *skip, struct index_load_stats *st)
{
	struct index *idx = NULL;

	assert_int_equal(index_new(&idx), 0);
	assert_int_equal(index_load_tree_cached(idx, root, skip, cache, NULL, st), 0);
	return idx;
}

static void assert_same_entry(const struct index *a, const struct index *b, const char *source)
{
	const struct index_entry *x = index_get(a, source), *y = index_get(b, source);

	assert_non_null(x);
	assert_non_null(y);
	assert_string_equal(x->sidecar, y->sidecar);
	assert_int_equal(x->size, y->size);
	assert_int_equal(x->mtime_sec, y->mtime_sec);
	assert_int_equal(x->mtime_nsec, y->mtime_nsec);
	assert_string_equal(x->sha256, y->sha256);
	assert_int_equal(x->failed, y->failed);
	assert_int_equal(x->finished_at, y->finished_at);
	assert_int_equal(x->generated_images, y->generated_images);
	assert_int_equal(x->reused, y->reused);
	assert_int_equal(x->paid_at, y->paid_at);
	if (x->model || y->model) {
		assert_non_null(x->model);
		assert_non_null(y->model);
		assert_string_equal(x->model, y->model);
	}
}

static void test_cache(void **state)
{
	char cache[4096], skip[4096], path[4096], state_dir[] = "/tmp/test_index_state.XXXXXX";
	struct index_load_stats st;
	struct index *from_sidecars, *idx;
	struct stat sb;
	FILE *f;
	int c;

	(void)state;
	make_dir("sub");
	make_dir("sub/deep");
	make_dir("done");
	assert_non_null(mkdtemp(state_dir));
	put_doc("a.json", success_doc("a.png", 100));
	put_doc("sub/b.error.json", error_doc("sub/b.png", 150));
	put_doc("sub/deep/c.json", success_doc("sub/deep/c.png", 200));
	put_doc("done/d.json", success_doc("d.png", 100));
	age_dir("sub/deep");
	age_dir("sub");
	age_dir("done");
	age_dir(".");
	snprintf(cache, sizeof(cache), "%s/index/x.cache", state_dir);
	snprintf(skip, sizeof(skip), "%s/done", root);

	/* no cache yet: everything is read */
	from_sidecars = load_cached(cache, skip, &st);
	assert_int_equal(st.cache_result, -ENOENT);
	assert_int_equal(st.dirs_read, 3);
	assert_int_equal(st.sidecars_read, 3);
	assert_int_equal(index_count(from_sidecars), 3);
	assert_int_equal(index_save_cache(from_sidecars, root, skip, cache), 0);

	/* with it: no folder listed, no sidecar read, the same entries */
	idx = load_cached(cache, skip, &st);
	assert_int_equal(st.cache_result, 0);
	assert_int_equal(st.sidecars_read, 0);
	assert_int_equal(st.dirs_read, 0);
	assert_int_equal(st.dirs_cached, 3);
	assert_int_equal(index_count(idx), 3);
	assert_same_entry(idx, from_sidecars, "a.png");
	assert_same_entry(idx, from_sidecars, "sub/b.png");
	assert_same_entry(idx, from_sidecars, "sub/deep/c.png");
	assert_null(index_get(idx, "d.png")); /* the done_dir stays skipped */
	index_free(idx);

	/* another skip_dir (or output): a foreign cache, not used */
	idx = load_cached(cache, NULL, &st);
	assert_int_equal(st.cache_result, -EINVAL);
	assert_int_equal(index_count(idx), 4);
	index_free(idx);

	/* a sidecar deleted: its folder is read again, the others still cached,
	 * and sub/deep is still reached through sub */
	snprintf(path, sizeof(path), "%s/sub/b.error.json", root);
	assert_int_equal(unlink(path), 0);
	idx = load_cached(cache, skip, &st);
	assert_int_equal(st.dirs_cached, 2);
	assert_int_equal(st.sidecars_read, 0);
	assert_null(index_get(idx, "sub/b.png"));
	assert_non_null(index_get(idx, "sub/deep/c.png"));
	assert_non_null(index_get(idx, "a.png"));

	/* a cache written right after that change does not trust sub (it could
	 * change again within the same mtime), yet leads to sub/deep */
	assert_int_equal(index_save_cache(idx, root, skip, cache), 0);
	index_free(idx);
	idx = load_cached(cache, skip, &st);
	assert_int_equal(st.cache_result, 0);
	assert_null(index_get(idx, "sub/b.png"));
	assert_non_null(index_get(idx, "sub/deep/c.png"));
	assert_non_null(index_get(idx, "a.png"));
	assert_int_equal(index_count(idx), 2);
	index_free(idx);

	/* a cache entry for a sidecar deleted while the daemon ran is dropped at
	 * the save: the in-memory index still has b, the folder does not */
	age_dir("sub");
	assert_int_equal(index_save_cache(from_sidecars, root, skip, cache), 0);
	idx = load_cached(cache, skip, &st);
	assert_int_equal(st.sidecars_read, 0);
	assert_null(index_get(idx, "sub/b.png"));
	assert_int_equal(index_count(idx), 2);
	index_free(idx);

	/* a "*.json" the index does not hold (a sidecar committed after the
	 * index was taken, say): its folder is not trusted */
	put_doc("sub/late.json", success_doc("sub/late.png", 300));
	age_dir("sub");
	assert_int_equal(index_save_cache(from_sidecars, root, skip, cache), 0);
	idx = load_cached(cache, skip, &st);
	assert_int_equal(st.dirs_cached, 2);
	assert_int_equal(st.sidecars_read, 1);
	assert_non_null(index_get(idx, "sub/late.png"));
	index_free(idx);
	snprintf(path, sizeof(path), "%s/sub/late.json", root);
	assert_int_equal(unlink(path), 0);
	age_dir("sub");
	assert_int_equal(index_save_cache(from_sidecars, root, skip, cache), 0);

	/* truncated: ignored, the sidecars are read */
	assert_int_equal(stat(cache, &sb), 0);
	assert_int_equal(truncate(cache, sb.st_size / 2), 0);
	idx = load_cached(cache, skip, &st);
	assert_int_equal(st.cache_result, -EINVAL);
	assert_int_equal(st.sidecars_read, 2);
	assert_int_equal(index_count(idx), 2);
	index_free(idx);

	/* one byte changed: the checksum says so */
	assert_int_equal(index_save_cache(from_sidecars, root, skip, cache), 0);
	/* flipped, not overwritten: byte 40 lies in the mkdtemp name, which
	 * could already hold any fixed letter (1 run in 62 before) */
	f = fopen(cache, "r+b");
	assert_non_null(f);
	assert_int_equal(fseek(f, 40, SEEK_SET), 0);
	c = fgetc(f);
	assert_true(c != EOF);
	assert_int_equal(fseek(f, 40, SEEK_SET), 0);
	assert_int_equal(fputc(c ^ 0x01, f), c ^ 0x01);
	assert_int_equal(fclose(f), 0);
	idx = load_cached(cache, skip, &st);
	assert_int_equal(st.cache_result, -EINVAL);
	assert_int_equal(st.dirs_cached, 0);
	assert_int_equal(index_count(idx), 2);
	index_free(idx);
	index_free(from_sidecars);
	assert_int_equal(unlink(cache), 0);
	snprintf(path, sizeof(path), "%s/index", state_dir);
	assert_int_equal(rmdir(path), 0);
	assert_int_equal(rmdir(state_dir), 0);
}

/* The records spend counts (a reused copy, a paid failure with paid_at)
 * keep what it counts through the cache. */
static void test_cache_spend(void **state)
{
	char cache[4096], path[4096], state_dir[] = "/tmp/test_index_state.XXXXXX";
	cJSON *usage = cJSON_Parse("{\"generated_images\": 2}");
	struct sidecar_success s = {
	    .src = {.source = "r.png", .sha256_hex = SHA, .size = 2048, .mtime_sec = 1700000000},
	    .output = "r.jpeg",
	    .model = "model-a",
	    .prompt = "p",
	    .size = "2K",
	    .response_format = "url",
	    .usage = usage,
	    .completed_at = 1700000500,
	    .paid_at = 1699990000,
	    .version = "0.1.0",
	    .reused_from = "earlier.png",
	};
	struct sidecar_error e = {
	    .src = {.source = "p.png", .size = 4096, .mtime_sec = 1700000001},
	    .http_status = 200,
	    .code = "FetchFailed",
	    .message = "gone",
	    .attempts = 1,
	    .failed_at = 1700090000,
	    .version = "0.1.0",
	    .model = "model-b",
	    .images_paid = 2,
	    .usage = usage,
	    .max_images = 2,
	    .paid_at = 1700000000,
	};
	struct index_load_stats st;
	struct index *from_sidecars, *idx;
	const struct index_entry *x;

	(void)state;
	assert_non_null(usage);
	assert_non_null(mkdtemp(state_dir));
	put_doc("r.json", sidecar_success_json(&s));
	put_doc("p.error.json", sidecar_error_json(&e));
	cJSON_Delete(usage);
	age_dir(".");
	snprintf(cache, sizeof(cache), "%s/index/x.cache", state_dir);
	from_sidecars = load_cached(cache, NULL, &st);
	assert_int_equal(st.sidecars_read, 2);
	x = index_get(from_sidecars, "r.png");
	assert_non_null(x);
	assert_true(x->reused);
	assert_int_equal(x->paid_at, 1699990000);
	x = index_get(from_sidecars, "p.png");
	assert_non_null(x);
	assert_true(x->failed);
	assert_false(x->reused);
	assert_int_equal(x->generated_images, 2);
	assert_int_equal(x->paid_at, 1700000000);
	assert_int_equal(x->finished_at, 1700090000);
	assert_string_equal(x->model, "model-b");
	assert_int_equal(index_save_cache(from_sidecars, root, NULL, cache), 0);

	idx = load_cached(cache, NULL, &st);
	assert_int_equal(st.cache_result, 0);
	assert_int_equal(st.sidecars_read, 0);
	assert_same_entry(idx, from_sidecars, "r.png");
	assert_same_entry(idx, from_sidecars, "p.png");
	index_free(idx);
	index_free(from_sidecars);
	assert_int_equal(unlink(cache), 0);
	snprintf(path, sizeof(path), "%s/index", state_dir);
	assert_int_equal(rmdir(path), 0);
	assert_int_equal(rmdir(state_dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fnv),
	    cmocka_unit_test(test_put_get_remove),
	    cmocka_unit_test(test_models),
	    cmocka_unit_test(test_many),
	    cmocka_unit_test(test_parse_success),
	    cmocka_unit_test(test_parse_error),
	    cmocka_unit_test(test_parse_not_utf8),
	    cmocka_unit_test(test_parse_lenient_members),
	    cmocka_unit_test(test_parse_invalid),
	    cmocka_unit_test_setup_teardown(test_load_tree, setup_tree, teardown_tree),
	    cmocka_unit_test_setup_teardown(test_load_missing_root, setup_tree, teardown_tree),
	    cmocka_unit_test_setup_teardown(test_load_depth_limit, setup_tree, teardown_tree),
	    cmocka_unit_test_setup_teardown(test_cache, setup_tree, teardown_tree),
	    cmocka_unit_test_setup_teardown(test_cache_spend, setup_tree, teardown_tree),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
