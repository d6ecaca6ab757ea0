/* folder_intake_start: a folder a reload adds gets its output's temporary
 * files swept and its done records read on a worker; on the loop the records
 * replace its (empty) index, unless the output was reconfigured meanwhile
 * (-ESTALE) or the pool was freed (-ECANCELED). Until then the folder is
 * marked as loading and stale, so that nothing starts it or saves its cache. */
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

#include "folder.h"
#include "folder_intake.h"
#include "loop.h"
#include "sidecar.h"
#include "work.h"

struct outcome {
	int calls;
	struct folder_intake_result res;
	struct folder *folder;
	bool index_reloading; /* as done saw the folder */
};

static void on_intake(struct folder *f, const struct folder_intake_result *res, void *userdata)
{
	struct outcome *o = userdata;

	o->calls++;
	o->res = *res;
	o->folder = f;
	o->index_reloading = f->index_reloading;
}

static void put_file(const char *dir, const char *name, const char *text)
{
	char path[600];
	FILE *f;

	(void)snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	(void)fputs(text, f);
	(void)fclose(f);
}

static void put_sidecar(const char *dir, const char *stem)
{
	struct sidecar_success s = {
	    .src = {.source = NULL,
		    .sha256_hex =
			"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		    .size = 10,
		    .mtime_sec = 1700000000},
	    .output = "x.jpeg",
	    .model = "m",
	    .prompt = "p",
	    .size = "2K",
	    .response_format = "url",
	    .created = 1700000001,
	    .attempts = 1,
	    .completed_at = 1700000002,
	    .version = "0.1.0",
	};
	char source[64], name[80], *text;

	(void)snprintf(source, sizeof(source), "%s.png", stem);
	s.src.source = source;
	text = sidecar_success_json(&s);
	assert_non_null(text);
	(void)snprintf(name, sizeof(name), "%s.json", stem);
	put_file(dir, name, text);
	free(text);
}

static bool exists(const char *dir, const char *name)
{
	char path[600];

	(void)snprintf(path, sizeof(path), "%s/%s", dir, name);
	return access(path, F_OK) == 0;
}

static void run_until(struct loop *loop, const struct outcome *o)
{
	for (int i = 0; i < 500 && !o->calls; i++)
		assert_true(loop_run_once(loop, 20) >= 0);
}

static void test_intake(void **state)
{
	char dir[] = "/tmp/test_folder_intake.XXXXXX", cmd[256], other[600];
	const char *tmp = ".c.jpeg.0123456789abcdef.tmp"; /* left by an interrupted run */
	struct folder_config cfg = {0};
	struct folder f = {0};
	struct outcome o = {0};
	struct work_pool *pool = NULL;
	struct loop *loop = NULL;
	struct folder_output_seen seen;
	char why[512];

	(void)state;
	assert_non_null(mkdtemp(dir));
	put_sidecar(dir, "a");
	put_sidecar(dir, "b");
	put_file(dir, tmp, "partial");
	put_file(dir, "notes.txt", "kept");
	cfg.path = "/nonexistent-hot";
	cfg.output = dir;
	f.cfg = &cfg;
	assert_int_equal(index_new(&f.index), 0);
	assert_int_equal(loop_new(&loop), 0);
	assert_int_equal(work_pool_new(loop, 2, &pool), 0);

	assert_int_equal(folder_intake_start(&f, pool, on_intake, &o), 0);
	/* until the records are in: kept, not started, never saved as the cache */
	assert_true(f.index_reloading);
	assert_true(f.index_stale);
	assert_true(f.records_loading_since > 0);
	assert_int_equal(folder_intake_start(&f, pool, on_intake, &o), -EBUSY);
	assert_int_equal(index_count(f.index), 0);
	run_until(loop, &o);
	assert_int_equal(o.calls, 1);
	assert_ptr_equal(o.folder, &f);
	assert_int_equal(o.res.result, 0);
	assert_int_equal(o.res.sweep_result, 0);
	assert_int_equal(o.res.swept, 1);
	assert_false(o.index_reloading); /* done may start the folder */
	assert_false(f.index_stale);
	assert_int_equal(f.records_loading_since, 0);
	assert_int_equal(index_count(f.index), 2);
	assert_non_null(index_get(f.index, "a.png"));
	assert_int_equal(f.index_changes_saved, index_changes(f.index));
	assert_false(exists(dir, tmp));
	assert_true(exists(dir, "notes.txt"));

	/* reconfigured to another output while it ran: nothing installed, still stale */
	put_sidecar(dir, "c");
	(void)snprintf(other, sizeof(other), "%s/elsewhere", dir);
	o.calls = 0;
	assert_int_equal(folder_intake_start(&f, pool, on_intake, &o), 0);
	cfg.output = other;
	run_until(loop, &o);
	assert_int_equal(o.res.result, -ESTALE);
	assert_true(f.index_stale);
	assert_false(f.index_reloading);
	assert_int_equal(f.records_loading_since, 0);
	assert_int_equal(index_count(f.index), 2);

	/* an output that cannot be read (a file): an error, the records stay stale */
	(void)snprintf(other, sizeof(other), "%s/notes.txt", dir);
	cfg.output = other;
	o.calls = 0;
	assert_int_equal(folder_intake_start(&f, pool, on_intake, &o), 0);
	run_until(loop, &o);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.res.result, -ENOTDIR);
	assert_true(f.index_stale);
	assert_int_equal(index_count(f.index), 2);
	cfg.output = dir;

	/* judged away while it read (a share that blips: the load skips what it
	 * cannot read): nothing installed, the records stay stale */
	o.calls = 0;
	assert_int_equal(folder_intake_start(&f, pool, on_intake, &o), 0);
	seen = (struct folder_output_seen){.probe_r = -EIO};
	assert_false(folder_output_judge(&f, &seen, why, sizeof(why)));
	run_until(loop, &o);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.res.result, -EAGAIN);
	assert_true(f.index_stale);
	assert_false(f.index_reloading);
	assert_int_equal(index_count(f.index), 2); /* not a, b and c */

	/* the pool freed first: cancelled or finished, done runs once either way */
	o.calls = 0;
	assert_int_equal(folder_intake_start(&f, pool, on_intake, &o), 0);
	work_pool_free(pool);
	assert_int_equal(o.calls, 1);
	assert_false(f.index_reloading);
	if (o.res.result == 0) {
		assert_int_equal(index_count(f.index), 3);
	} else {
		assert_int_equal(o.res.result, -ECANCELED);
		assert_true(f.index_stale);
	}

	index_free(f.index);
	folder_clear_ids(&f);
	loop_free(loop);
	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_intake),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
