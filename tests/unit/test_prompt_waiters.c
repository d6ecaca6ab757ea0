#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "prompt_waiters.h"

static int folder_a, folder_b; /* only their addresses: two folders */

static void waiter_set(struct prompt_waiter *e, const void *folder, const char *rel)
{
	e->folder = folder;
	e->rel = rel;
}

static size_t count_found(const struct prompt_waiters *w, const void *folder, const char *rel)
{
	size_t n = 0;

	for (struct prompt_waiter *e = prompt_waiters_first(w, folder, rel); e;
	     e = prompt_waiters_next(e)) {
		assert_ptr_equal(e->folder, folder);
		assert_string_equal(e->rel, rel);
		n++;
	}
	return n;
}

static void test_find_and_remove(void **state)
{
	struct prompt_waiters w = {0};
	struct prompt_waiter cat_a, cat_b, cat_a2, dog_a;

	(void)state;
	assert_null(prompt_waiters_first(&w, &folder_a, "cat.txt"));
	waiter_set(&cat_a, &folder_a, "cat.txt");
	waiter_set(&cat_b, &folder_b, "cat.txt");
	waiter_set(&cat_a2, &folder_a, "cat.txt"); /* cat.png and cat.jpg: one prompt file */
	waiter_set(&dog_a, &folder_a, "dog.txt");
	assert_int_equal(prompt_waiters_add(&w, &cat_a), 0);
	assert_int_equal(prompt_waiters_add(&w, &cat_b), 0);
	assert_int_equal(prompt_waiters_add(&w, &cat_a2), 0);
	assert_int_equal(prompt_waiters_add(&w, &dog_a), 0);
	assert_int_equal(count_found(&w, &folder_a, "cat.txt"), 2);
	assert_int_equal(count_found(&w, &folder_b, "cat.txt"), 1);
	assert_int_equal(count_found(&w, &folder_a, "dog.txt"), 1);
	assert_int_equal(count_found(&w, &folder_b, "dog.txt"), 0);
	assert_int_equal(count_found(&w, &folder_a, "cat"), 0);

	/* removing the one found, its next taken first, as a wake does */
	for (struct prompt_waiter *e = prompt_waiters_first(&w, &folder_a, "cat.txt"), *next; e;
	     e = next) {
		next = prompt_waiters_next(e);
		prompt_waiters_remove(&w, e);
	}
	assert_int_equal(count_found(&w, &folder_a, "cat.txt"), 0);
	assert_int_equal(count_found(&w, &folder_b, "cat.txt"), 1);
	assert_int_equal(count_found(&w, &folder_a, "dog.txt"), 1);
	assert_int_equal(w.n, 2);
	prompt_waiters_remove(&w, &dog_a);
	prompt_waiters_remove(&w, &cat_b);
	assert_int_equal(w.n, 0);
	assert_null(prompt_waiters_first(&w, &folder_b, "cat.txt"));
	/* added again after removal */
	assert_int_equal(prompt_waiters_add(&w, &cat_b), 0);
	assert_int_equal(count_found(&w, &folder_b, "cat.txt"), 1);
	prompt_waiters_free(&w);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 100,000 images waiting (two folders), then all their prompt files
 * arriving: each arrival finds its waiter in about one step. A walk of all
 * waiters per arrival would take 1e10 steps: minutes, not the bound. */
#define SCALE_N 100000

static void test_burst_scales(void **state)
{
	struct prompt_waiters w = {0};
	struct prompt_waiter *entries = calloc(SCALE_N, sizeof(*entries));
	char(*rels)[32] = calloc(SCALE_N, sizeof(*rels));
	double started;

	(void)state;
	assert_non_null(entries);
	assert_non_null(rels);
	started = now_s();
	for (size_t i = 0; i < SCALE_N; i++) {
		(void)snprintf(rels[i], sizeof(rels[i]), "batch/img%06zu.txt", i / 2);
		waiter_set(&entries[i], i % 2 ? &folder_b : &folder_a, rels[i]);
		assert_int_equal(prompt_waiters_add(&w, &entries[i]), 0);
	}
	/* the table grows with its waiters: chains stay short */
	assert_true(w.n_buckets >= SCALE_N);
	for (size_t i = 0; i < SCALE_N; i++) {
		struct prompt_waiter *e = prompt_waiters_first(&w, entries[i].folder, rels[i]);

		assert_ptr_equal(e, &entries[i]);
		assert_null(prompt_waiters_next(e));
		prompt_waiters_remove(&w, e);
	}
	assert_int_equal(w.n, 0);
	/* generous: well under 0.1 s here, and sanitizer builds run it too */
	assert_true(now_s() - started < 5.0);
	prompt_waiters_free(&w);
	free(rels);
	free(entries);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_find_and_remove),
	    cmocka_unit_test(test_burst_scales),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
