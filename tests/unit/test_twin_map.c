/* twin_map: the key is the whole of (owner, size, sha256); a key may have
 * several leaders (told apart by the caller), each found once; followers come
 * back in order when it ends, or the first leads when it ends without a
 * result; many keys survive the table growing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "twin_map.h"

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static int folder1, folder2, job1, job2, job3, job4;

static void test_key(void **state)
{
	struct twin_map *m;
	struct twin_entry *e, *other;

	(void)state;
	assert_int_equal(twin_map_new(&m), 0);
	assert_null(twin_map_find(m, &folder1, 10, SHA_A));
	assert_int_equal(twin_map_lead(m, &folder1, 10, SHA_A, &job1, &e), 0);
	assert_ptr_equal(twin_map_find(m, &folder1, 10, SHA_A), e);
	assert_ptr_equal(twin_entry_leader(e), &job1);
	assert_null(twin_map_next(e));
	assert_true(twin_entry_is(e, &folder1, 10, SHA_A));
	/* Every part of the key matters. */
	assert_null(twin_map_find(m, &folder2, 10, SHA_A));
	assert_null(twin_map_find(m, &folder1, 11, SHA_A));
	assert_null(twin_map_find(m, &folder1, 10, SHA_B));
	assert_false(twin_entry_is(e, &folder2, 10, SHA_A));
	assert_false(twin_entry_is(e, &folder1, 11, SHA_A));
	assert_false(twin_entry_is(e, &folder1, 10, SHA_B));
	/* A second leader of the same content (another prompt, told apart by
	 * the caller): both are found, each once. */
	assert_int_equal(twin_map_lead(m, &folder1, 10, SHA_A, &job2, &other), 0);
	assert_ptr_not_equal(other, e);
	assert_int_equal(twin_map_lead(m, &folder2, 10, SHA_A, &job3, &other), 0);
	assert_int_equal(twin_map_count(m), 3);
	{
		int seen1 = 0, seen2 = 0, n = 0;
		for (struct twin_entry *x = twin_map_find(m, &folder1, 10, SHA_A); x;
		     x = twin_map_next(x), n++) {
			seen1 += twin_entry_leader(x) == &job1;
			seen2 += twin_entry_leader(x) == &job2;
		}
		assert_int_equal(n, 2);
		assert_int_equal(seen1, 1);
		assert_int_equal(seen2, 1);
	}
	assert_int_equal(twin_map_lead(m, &folder1, 10, "", &job3, &other), -EINVAL);
	assert_int_equal(twin_map_lead(m, &folder1, 10, SHA_B, NULL, &other), -EINVAL);
	twin_map_free(m);
}

static void test_followers(void **state)
{
	struct twin_map *m;
	struct twin_entry *e;
	void **f = NULL;

	(void)state;
	assert_int_equal(twin_map_new(&m), 0);
	assert_int_equal(twin_map_lead(m, &folder1, 10, SHA_A, &job1, &e), 0);
	assert_int_equal(twin_entry_follow(e, &job2), 0);
	assert_int_equal(twin_entry_follow(e, &job3), 0);
	assert_int_equal(twin_entry_follow(e, &job4), 0);
	assert_int_equal(twin_entry_followers(e), 3);
	assert_int_equal(twin_entry_unfollow(e, &job3), 0);
	assert_int_equal(twin_entry_unfollow(e, &job3), -ENOENT);
	assert_int_equal(twin_map_end(m, e, &f), 2);
	assert_non_null(f);
	assert_ptr_equal(f[0], &job2); /* in the order they came */
	assert_ptr_equal(f[1], &job4);
	free(f);
	assert_int_equal(twin_map_count(m), 0);
	assert_null(twin_map_find(m, &folder1, 10, SHA_A));
	/* A leader with nobody waiting. */
	assert_int_equal(twin_map_lead(m, &folder1, 10, SHA_A, &job2, &e), 0);
	assert_int_equal(twin_entry_follow(e, &job3), 0);
	assert_int_equal(twin_entry_unfollow(e, &job3), 0);
	f = (void **)&job1;
	assert_int_equal(twin_map_end(m, e, &f), 0);
	assert_null(f);
	twin_map_free(m);
}

/* A leader ends without a result: the first follower leads, the others keep
 * waiting on the same entry, in order. */
static void test_promote(void **state)
{
	struct twin_map *m;
	struct twin_entry *e;
	void **f = NULL;

	(void)state;
	assert_int_equal(twin_map_new(&m), 0);
	assert_int_equal(twin_map_lead(m, &folder1, 10, SHA_A, &job1, &e), 0);
	assert_null(twin_entry_promote(e)); /* nobody waits: unchanged */
	assert_ptr_equal(twin_entry_leader(e), &job1);
	assert_int_equal(twin_entry_follow(e, &job2), 0);
	assert_int_equal(twin_entry_follow(e, &job3), 0);
	assert_int_equal(twin_entry_follow(e, &job4), 0);
	assert_ptr_equal(twin_entry_promote(e), &job2);
	assert_ptr_equal(twin_entry_leader(e), &job2);
	assert_int_equal(twin_entry_followers(e), 2);
	assert_ptr_equal(twin_map_find(m, &folder1, 10, SHA_A), e);
	assert_int_equal(twin_map_count(m), 1);
	assert_ptr_equal(twin_entry_promote(e), &job3);
	assert_int_equal(twin_map_end(m, e, &f), 1);
	assert_ptr_equal(f[0], &job4);
	free(f);
	assert_int_equal(twin_map_count(m), 0);
	twin_map_free(m);
}

static void test_many(void **state)
{
	static int jobs[5000];
	struct twin_map *m;
	struct twin_entry *e;
	char sha[65];

	(void)state;
	assert_int_equal(twin_map_new(&m), 0);
	for (int i = 0; i < 5000; i++) {
		(void)snprintf(sha, sizeof(sha), "%064d", i);
		assert_int_equal(twin_map_lead(m, &folder1, 100, sha, &jobs[i], &e), 0);
	}
	assert_int_equal(twin_map_count(m), 5000);
	for (int i = 0; i < 5000; i += 2) {
		void **f;
		(void)snprintf(sha, sizeof(sha), "%064d", i);
		e = twin_map_find(m, &folder1, 100, sha);
		assert_non_null(e);
		assert_ptr_equal(twin_entry_leader(e), &jobs[i]);
		assert_int_equal(twin_map_end(m, e, &f), 0);
	}
	for (int i = 0; i < 5000; i++) {
		(void)snprintf(sha, sizeof(sha), "%064d", i);
		e = twin_map_find(m, &folder1, 100, sha);
		if (i % 2)
			assert_ptr_equal(twin_entry_leader(e), &jobs[i]);
		else
			assert_null(e);
	}
	assert_int_equal(twin_map_count(m), 2500);
	twin_map_free(m); /* frees what is left (ASan checks) */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_key),
	    cmocka_unit_test(test_followers),
	    cmocka_unit_test(test_promote),
	    cmocka_unit_test(test_many),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
