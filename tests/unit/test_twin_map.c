/* twin_map: the key is the whole of (owner, size, sha256, prompt); a leader
 * is unique per key; followers come back in order when it ends; many keys
 * survive the table growing. */
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
	assert_null(twin_map_find(m, &folder1, 10, SHA_A, "p"));
	assert_int_equal(twin_map_lead(m, &folder1, 10, SHA_A, "p", &job1, &e), 0);
	assert_ptr_equal(twin_map_find(m, &folder1, 10, SHA_A, "p"), e);
	assert_ptr_equal(twin_entry_leader(e), &job1);
	/* Every part of the key matters. */
	assert_null(twin_map_find(m, &folder2, 10, SHA_A, "p"));
	assert_null(twin_map_find(m, &folder1, 11, SHA_A, "p"));
	assert_null(twin_map_find(m, &folder1, 10, SHA_B, "p"));
	assert_null(twin_map_find(m, &folder1, 10, SHA_A, "q"));
	assert_null(twin_map_find(m, &folder1, 10, SHA_A, ""));
	/* One leader per key: the second is told who leads. */
	assert_int_equal(twin_map_lead(m, &folder1, 10, SHA_A, "p", &job2, &other), -EEXIST);
	assert_ptr_equal(other, e);
	assert_ptr_equal(twin_entry_leader(e), &job1);
	/* Another prompt is another key. */
	assert_int_equal(twin_map_lead(m, &folder1, 10, SHA_A, "q", &job2, &other), 0);
	assert_ptr_not_equal(other, e);
	assert_int_equal(twin_map_count(m), 2);
	assert_int_equal(twin_map_lead(m, &folder1, 10, "", "p", &job3, &other), -EINVAL);
	assert_int_equal(twin_map_lead(m, &folder1, 10, SHA_B, "p", NULL, &other), -EINVAL);
	twin_map_free(m);
}

static void test_followers(void **state)
{
	struct twin_map *m;
	struct twin_entry *e;
	void **f = NULL;

	(void)state;
	assert_int_equal(twin_map_new(&m), 0);
	assert_int_equal(twin_map_lead(m, &folder1, 10, SHA_A, "p", &job1, &e), 0);
	assert_int_equal(twin_entry_follow(e, &job2), 0);
	assert_int_equal(twin_entry_follow(e, &job3), 0);
	assert_int_equal(twin_entry_follow(e, &job4), 0);
	assert_int_equal(twin_entry_follow(e, &job3), -EEXIST);
	assert_int_equal(twin_entry_followers(e), 3);
	assert_int_equal(twin_entry_unfollow(e, &job3), 0);
	assert_int_equal(twin_entry_unfollow(e, &job3), -ENOENT);
	assert_int_equal(twin_map_end(m, e, &f), 2);
	assert_non_null(f);
	assert_ptr_equal(f[0], &job2); /* in the order they came */
	assert_ptr_equal(f[1], &job4);
	free(f);
	assert_int_equal(twin_map_count(m), 0);
	assert_null(twin_map_find(m, &folder1, 10, SHA_A, "p"));
	/* A leader with nobody waiting. */
	assert_int_equal(twin_map_lead(m, &folder1, 10, SHA_A, "p", &job2, &e), 0);
	assert_int_equal(twin_entry_follow(e, &job3), 0);
	assert_int_equal(twin_entry_unfollow(e, &job3), 0);
	f = (void **)&job1;
	assert_int_equal(twin_map_end(m, e, &f), 0);
	assert_null(f);
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
		assert_int_equal(twin_map_lead(m, &folder1, 100, sha, "p", &jobs[i], &e), 0);
	}
	assert_int_equal(twin_map_count(m), 5000);
	for (int i = 0; i < 5000; i += 2) {
		void **f;
		(void)snprintf(sha, sizeof(sha), "%064d", i);
		e = twin_map_find(m, &folder1, 100, sha, "p");
		assert_non_null(e);
		assert_ptr_equal(twin_entry_leader(e), &jobs[i]);
		assert_int_equal(twin_map_end(m, e, &f), 0);
	}
	for (int i = 0; i < 5000; i++) {
		(void)snprintf(sha, sizeof(sha), "%064d", i);
		e = twin_map_find(m, &folder1, 100, sha, "p");
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
	    cmocka_unit_test(test_many),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
