/* work: every submitted request runs once on a worker and completes once on
 * the loop thread; freeing the pool with work pending cancels what has not
 * started and still completes everything exactly once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"
#include "work.h"

#define N_REQUESTS 2000

struct item {
	atomic_int ran;
	int done;
	bool cancelled;
	bool on_worker;
	pthread_t loop_thread;
	bool done_on_loop;
	unsigned sleep_us;
	size_t *completed;
};

static pthread_t main_thread;

static void item_work(void *arg)
{
	struct item *it = arg;

	it->on_worker = !pthread_equal(pthread_self(), main_thread);
	if (it->sleep_us)
		usleep(it->sleep_us);
	atomic_fetch_add(&it->ran, 1);
}

static void item_done(void *arg, bool cancelled)
{
	struct item *it = arg;

	it->done++;
	it->cancelled = cancelled;
	it->done_on_loop = pthread_equal(pthread_self(), main_thread);
	(*it->completed)++;
}

static void test_many_complete_once_on_loop(void **state)
{
	struct item *items = calloc(N_REQUESTS, sizeof(*items));
	struct work_pool *pool;
	struct loop *loop;
	size_t completed = 0;

	(void)state;
	assert_non_null(items);
	assert_int_equal(loop_new(&loop), 0);
	assert_int_equal(work_pool_new(loop, 3, &pool), 0);
	for (size_t i = 0; i < N_REQUESTS; i++) {
		items[i].completed = &completed;
		assert_int_equal(work_submit(pool, item_work, item_done, &items[i]), 0);
	}
	assert_int_equal(work_pending(pool), N_REQUESTS);
	for (int spins = 0; completed < N_REQUESTS && spins < 10000; spins++)
		assert_true(loop_run_once(loop, 1000) >= 0);
	assert_int_equal(completed, N_REQUESTS);
	assert_int_equal(work_pending(pool), 0);
	for (size_t i = 0; i < N_REQUESTS; i++) {
		assert_int_equal(atomic_load(&items[i].ran), 1);
		assert_int_equal(items[i].done, 1);
		assert_false(items[i].cancelled);
		assert_true(items[i].on_worker);
		assert_true(items[i].done_on_loop);
	}
	work_pool_free(pool);
	assert_int_equal(completed, N_REQUESTS); /* nothing completes twice */
	loop_free(loop);
	free(items);
}

static void test_free_with_work_pending(void **state)
{
	struct item items[20] = {0};
	struct work_pool *pool;
	struct loop *loop;
	size_t completed = 0;
	int cancelled = 0;

	(void)state;
	assert_int_equal(loop_new(&loop), 0);
	assert_int_equal(work_pool_new(loop, 1, &pool), 0);
	for (size_t i = 0; i < 20; i++) {
		items[i].completed = &completed;
		items[i].sleep_us = 20000;
		assert_int_equal(work_submit(pool, item_work, item_done, &items[i]), 0);
	}
	usleep(5000); /* the first is running */
	work_pool_free(pool);
	assert_int_equal(completed, 20);
	for (size_t i = 0; i < 20; i++) {
		assert_int_equal(items[i].done, 1);
		assert_true(items[i].done_on_loop);
		/* Ran and completed normally, or never ran and was cancelled. */
		assert_int_equal(atomic_load(&items[i].ran), items[i].cancelled ? 0 : 1);
		cancelled += items[i].cancelled;
	}
	assert_true(cancelled >= 1 && cancelled <= 19);
	loop_free(loop);
}

static void test_bad_sizes(void **state)
{
	struct work_pool *pool = NULL;
	struct loop *loop;

	(void)state;
	assert_int_equal(loop_new(&loop), 0);
	assert_int_equal(work_pool_new(loop, 0, &pool), -EINVAL);
	assert_int_equal(work_pool_new(loop, 65, &pool), -EINVAL);
	work_pool_free(NULL);
	loop_free(loop);
}

/* Whether the write end of the pipe whose read end is rfd has been closed:
 * reading gives end of file then, and EAGAIN while a writer remains. */
static bool pipe_writer_closed(int rfd)
{
	char c;
	ssize_t n = read(rfd, &c, 1);

	assert_true(n == 0 || (n < 0 && errno == EAGAIN));
	return n == 0;
}

static void test_close_on_worker(void **state)
{
	struct item blocker = {0};
	struct work_pool *pool;
	struct loop *loop;
	size_t completed = 0;
	int p[2];

	(void)state;
	assert_int_equal(loop_new(&loop), 0);
	assert_int_equal(work_pool_new(loop, 1, &pool), 0);
	assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	/* The only worker is busy: a close done inline would show at once. */
	blocker.completed = &completed;
	blocker.sleep_us = 50000;
	assert_int_equal(work_submit(pool, item_work, item_done, &blocker), 0);
	work_close(pool, p[1]);
	assert_false(pipe_writer_closed(p[0]));
	assert_int_equal(work_pending(pool), 2);
	for (int spins = 0; work_pending(pool) > 0 && spins < 10000; spins++)
		assert_true(loop_run_once(loop, 1000) >= 0);
	assert_int_equal(work_pending(pool), 0);
	assert_true(pipe_writer_closed(p[0]));
	close(p[0]);

	/* Cancelled by the pool's end before a worker took it: closed anyway. */
	assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	assert_int_equal(work_submit(pool, item_work, item_done, &blocker), 0);
	work_close(pool, p[1]);
	usleep(5000); /* the blocker is running */
	work_pool_free(pool);
	assert_false(blocker.cancelled);
	assert_true(pipe_writer_closed(p[0]));
	close(p[0]);

	/* No pool: inline. A negative descriptor is ignored. */
	assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	work_close(NULL, p[1]);
	assert_true(pipe_writer_closed(p[0]));
	close(p[0]);
	work_close(NULL, -1);
	loop_free(loop);
}

/* A worker held until the test lets it go: it says when it runs through
 * one pipe and waits on another, so nothing depends on how long a sleep is. */
struct gate {
	int started[2], release[2];
	size_t completed;
};

static void gate_work(void *arg)
{
	struct gate *g = arg;
	char c = 1;

	(void)!write(g->started[1], &c, 1);
	(void)!read(g->release[0], &c, 1);
}

static void gate_done(void *arg, bool cancelled)
{
	struct gate *g = arg;

	(void)cancelled;
	g->completed++;
}

static void gate_open(struct gate *g)
{
	memset(g, 0, sizeof(*g));
	assert_int_equal(pipe2(g->started, O_CLOEXEC), 0);
	assert_int_equal(pipe2(g->release, O_CLOEXEC), 0);
}

/* Waits (10 s at most: fail, not hang) until the gated worker runs. */
static void gate_wait_started(struct gate *g)
{
	struct pollfd pfd = {.fd = g->started[0], .events = POLLIN};
	char c;

	assert_int_equal(poll(&pfd, 1, 10000), 1);
	assert_int_equal(read(g->started[0], &c, 1), 1);
}

static void gate_let_go(struct gate *g)
{
	char c = 1;

	assert_int_equal(write(g->release[1], &c, 1), 1);
}

static void gate_close(struct gate *g)
{
	close(g->started[0]);
	close(g->started[1]);
	close(g->release[0]);
	close(g->release[1]);
}

/* Runs the loop until nothing is pending; fails after 10 s. */
static void drain(struct loop *loop, struct work_pool *pool)
{
	struct timespec t0, now;

	assert_int_equal(clock_gettime(CLOCK_MONOTONIC, &t0), 0);
	while (work_pending(pool) > 0) {
		assert_true(loop_run_once(loop, 100) >= 0);
		assert_int_equal(clock_gettime(CLOCK_MONOTONIC, &now), 0);
		assert_true(now.tv_sec - t0.tv_sec < 10);
	}
}

/* Every close is a request of its own, never a batch: a close() hung on a
 * stalled share holds its own descriptor only, not those of other folders
 * queued behind it. Every descriptor is closed, also when the pool ends
 * with closes queued. */
#define N_CLOSES 40

static void test_close_one_request_per_descriptor(void **state)
{
	struct work_pool *pool;
	struct loop *loop;
	struct gate g;
	int p[N_CLOSES][2];

	(void)state;
	gate_open(&g);
	assert_int_equal(loop_new(&loop), 0);
	assert_int_equal(work_pool_new(loop, 1, &pool), 0);
	assert_int_equal(work_submit(pool, gate_work, gate_done, &g), 0);
	gate_wait_started(&g); /* the only worker is held: no close can run */
	for (int i = 0; i < N_CLOSES; i++) {
		assert_int_equal(pipe2(p[i], O_NONBLOCK | O_CLOEXEC), 0);
		work_close(pool, p[i][1]);
	}
	assert_int_equal(work_pending(pool), 1 + N_CLOSES);
	for (int i = 0; i < N_CLOSES; i++)
		assert_false(pipe_writer_closed(p[i][0]));
	gate_let_go(&g);
	drain(loop, pool);
	assert_int_equal(g.completed, 1);
	for (int i = 0; i < N_CLOSES; i++) {
		assert_true(pipe_writer_closed(p[i][0]));
		close(p[i][0]);
	}

	/* The pool ends with closes queued behind a running request. */
	assert_int_equal(work_submit(pool, gate_work, gate_done, &g), 0);
	gate_wait_started(&g);
	for (int i = 0; i < N_CLOSES; i++) {
		assert_int_equal(pipe2(p[i], O_NONBLOCK | O_CLOEXEC), 0);
		work_close(pool, p[i][1]);
	}
	gate_let_go(&g);
	work_pool_free(pool);
	assert_int_equal(g.completed, 2);
	for (int i = 0; i < N_CLOSES; i++) {
		assert_true(pipe_writer_closed(p[i][0]));
		close(p[i][0]);
	}
	gate_close(&g);
	loop_free(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_many_complete_once_on_loop),
	    cmocka_unit_test(test_free_with_work_pending),
	    cmocka_unit_test(test_bad_sizes),
	    cmocka_unit_test(test_close_on_worker),
	    cmocka_unit_test(test_close_one_request_per_descriptor),
	};

	main_thread = pthread_self();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
