/* folder_reload_index_async: the done records are read on a worker and the new
 * index is swapped in on the loop thread; a folder reconfigured meanwhile keeps
 * its stale index; a cancelled reload leaves the folder as it was. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "folder.h"
#include "loop.h"
#include "output.h"
#include "sidecar.h"
#include "work.h"

struct outcome {
	int calls;
	int result;
	struct folder *folder;
};

static void on_reloaded(struct folder *f, int result, void *userdata)
{
	struct outcome *o = userdata;

	o->calls++;
	o->result = result;
	o->folder = f;
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
	char source[64], path[512], *text;
	FILE *f;

	(void)snprintf(source, sizeof(source), "%s.png", stem);
	s.src.source = source;
	text = sidecar_success_json(&s);
	assert_non_null(text);
	(void)snprintf(path, sizeof(path), "%s/%s.json", dir, stem);
	f = fopen(path, "w");
	assert_non_null(f);
	(void)fputs(text, f);
	(void)fclose(f);
	free(text);
}

static void run_until(struct loop *loop, const struct outcome *o)
{
	for (int i = 0; i < 500 && !o->calls; i++)
		assert_true(loop_run_once(loop, 20) >= 0);
}

static void test_reload_async(void **state)
{
	char dir[] = "/tmp/test_folder_reload.XXXXXX", cmd[256], other[600];
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
	cfg.path = "/nonexistent-hot";
	cfg.output = dir;
	f.cfg = &cfg;
	assert_int_equal(index_new(&f.index), 0);
	f.index_stale = true;
	assert_int_equal(loop_new(&loop), 0);
	assert_int_equal(work_pool_new(loop, 2, &pool), 0);

	assert_int_equal(folder_reload_index_async(&f, pool, on_reloaded, &o), 0);
	assert_true(f.index_reloading);
	assert_int_equal(folder_reload_index_async(&f, pool, on_reloaded, &o), -EBUSY);
	assert_int_equal(index_count(f.index), 0); /* nothing changes before the loop runs */
	run_until(loop, &o);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.result, 0);
	assert_ptr_equal(o.folder, &f);
	assert_false(f.index_reloading);
	assert_false(f.index_stale);
	assert_int_equal(index_count(f.index), 2);
	assert_non_null(index_get(f.index, "a.png"));

	/* reconfigured to another output while it ran: not swapped in */
	put_sidecar(dir, "c");
	f.index_stale = true;
	(void)snprintf(other, sizeof(other), "%s/elsewhere", dir);
	o.calls = 0;
	assert_int_equal(folder_reload_index_async(&f, pool, on_reloaded, &o), 0);
	cfg.output = other;
	run_until(loop, &o);
	assert_int_equal(o.result, -ESTALE);
	assert_true(f.index_stale);
	assert_int_equal(index_count(f.index), 2);
	cfg.output = dir;

	/* judged away while it read (a share that blips: the load skips what it
	 * cannot read): not swapped in, still stale, to be read again */
	o.calls = 0;
	assert_int_equal(folder_reload_index_async(&f, pool, on_reloaded, &o), 0);
	seen = (struct folder_output_seen){.probe_r = -EIO};
	assert_false(folder_output_judge(&f, &seen, why, sizeof(why)));
	run_until(loop, &o);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.result, -ESTALE);
	assert_true(f.index_stale);
	assert_false(f.index_reloading);
	assert_int_equal(index_count(f.index), 2); /* not a, b and c */

	/* the pool freed first: cancelled or finished, done runs once either way */
	o.calls = 0;
	assert_int_equal(folder_reload_index_async(&f, pool, on_reloaded, &o), 0);
	work_pool_free(pool);
	assert_int_equal(o.calls, 1);
	assert_false(f.index_reloading);
	if (o.result == 0)
		assert_int_equal(index_count(f.index), 3);
	else
		assert_int_equal(o.result, -ECANCELED);

	index_free(f.index);
	folder_clear_ids(&f);
	loop_free(loop);
	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static void age(const char *path)
{
	struct timespec ts[2];

	assert_int_equal(clock_gettime(CLOCK_REALTIME, &ts[0]), 0);
	ts[0].tv_sec -= 10;
	ts[1] = ts[0];
	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

/* The cache written on a worker from a copy taken on the loop. */
static void test_save_async(void **state)
{
	char dir[] = "/tmp/test_folder_save.XXXXXX", sdir[] = "/tmp/test_folder_state.XXXXXX";
	char cache[600], cmd[600];
	struct folder_config cfg = {0};
	struct folder f = {0};
	struct outcome o = {0};
	struct index_load_stats st;
	struct work_pool *pool = NULL;
	struct loop *loop = NULL;
	struct index *idx = NULL;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_non_null(mkdtemp(sdir));
	put_sidecar(dir, "a");
	put_sidecar(dir, "b");
	age(dir);
	cfg.path = "/nonexistent-hot";
	cfg.output = dir;
	f.cfg = &cfg;
	f.state_dir = sdir;
	assert_int_equal(loop_new(&loop), 0);
	assert_int_equal(work_pool_new(loop, 1, &pool), 0);
	assert_int_equal(folder_reload_index(&f), 0);
	assert_int_equal(f.index_changes_saved, index_changes(f.index));

	assert_int_equal(folder_save_index_cache_async(&f, pool, on_reloaded, &o), 0);
	assert_true(f.index_saving);
	assert_int_equal(folder_save_index_cache_async(&f, pool, on_reloaded, &o), -EBUSY);
	/* the loop goes on changing the index: the copy is what is written */
	assert_int_equal(index_remove(f.index, "a.png"), 0);
	run_until(loop, &o);
	assert_int_equal(o.result, 0);
	assert_false(f.index_saving);
	assert_int_equal(f.index_changes_saved, index_changes(f.index) - 1);

	folder_index_cache_file(&f, cache, sizeof(cache));
	assert_int_equal(index_new(&idx), 0);
	assert_int_equal(index_load_tree_cached(idx, dir, NULL, cache, NULL, &st), 0);
	assert_int_equal(st.cache_result, 0);
	assert_int_equal(st.dirs_cached, 1);
	assert_int_equal(st.sidecars_read, 0);
	assert_int_equal(index_count(idx), 2);
	index_free(idx);

	work_pool_free(pool);
	index_free(f.index);
	loop_free(loop);
	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", dir, sdir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reload_async),
	    cmocka_unit_test(test_save_async),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
