/* work: the worker pool (see work.h). One mutex guards two lists: requests
 * waiting for a worker and requests finished and waiting for the loop. A
 * worker takes the head of the first, runs it unlocked, appends it to the
 * second and writes the eventfd; the loop drains the second and calls each
 * done. Nothing else is shared.
 *
 * A request may block for as long as a hung share does. So a pool grows (a
 * thread more when a request finds no idle worker, up to its maximum) rather
 * than let stuck workers starve requests of other folders, and a pool being
 * freed waits only WORK_STOP_WAIT_MS for requests still running before it
 * leaves their threads behind (the process is about to exit). */
#include "work.h"

#include <errno.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define WORK_THREADS_MAX 64
#define WORK_STOP_WAIT_MS 5000

struct work_req {
	work_fn fn;
	work_done_fn done;
	void *arg;
	struct work_req *next;
};

struct work_list {
	struct work_req *head, *tail;
};

struct work_pool {
	struct loop *loop;
	struct loop_source *source;
	int efd;
	pthread_mutex_t lock;
	pthread_cond_t wake, exited;
	struct work_list todo, finished;
	size_t pending; /* loop thread only */
	bool stopping;
	unsigned n_threads, max_threads;
	unsigned n_idle, n_todo, n_alive; /* under lock */
	pthread_t threads[WORK_THREADS_MAX];
};

static void list_push(struct work_list *l, struct work_req *r)
{
	r->next = NULL;
	if (l->tail)
		l->tail->next = r;
	else
		l->head = r;
	l->tail = r;
}

static struct work_req *list_take_all(struct work_list *l)
{
	struct work_req *head = l->head;

	l->head = l->tail = NULL;
	return head;
}

static void *work_thread(void *userdata)
{
	struct work_pool *pool = userdata;
	const uint64_t one = 1;

	pthread_mutex_lock(&pool->lock);
	for (;;) {
		struct work_req *r;

		pool->n_idle++;
		while (!pool->todo.head && !pool->stopping)
			pthread_cond_wait(&pool->wake, &pool->lock);
		pool->n_idle--;
		if (pool->stopping)
			break; /* what is not started stays for work_pool_free to cancel */
		r = pool->todo.head;
		pool->todo.head = r->next;
		if (!pool->todo.head)
			pool->todo.tail = NULL;
		pool->n_todo--;
		pthread_mutex_unlock(&pool->lock);
		r->fn(r->arg);
		pthread_mutex_lock(&pool->lock);
		/* The loop reads the eventfd before it takes the list: a list
		 * that is not empty has woken it already, one write will do.
		 * An eventfd counter only saturates at 2^64-2: it cannot block. */
		if (!pool->finished.head)
			(void)!write(pool->efd, &one, sizeof(one));
		list_push(&pool->finished, r);
	}
	pool->n_alive--;
	pthread_cond_signal(&pool->exited);
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

/* Calls done for every finished request, in the order they finished. */
static void work_drain(struct work_pool *pool)
{
	struct work_req *r;

	pthread_mutex_lock(&pool->lock);
	r = list_take_all(&pool->finished);
	pthread_mutex_unlock(&pool->lock);
	while (r) {
		struct work_req *next = r->next;
		pool->pending--;
		r->done(r->arg, false);
		free(r);
		r = next;
	}
}

static void work_ready(int fd, uint32_t events, void *userdata)
{
	uint64_t n;

	(void)events;
	(void)!read(fd, &n, sizeof(n));
	work_drain(userdata);
}

/* Under the lock. */
static int work_spawn(struct work_pool *pool)
{
	int r = -pthread_create(&pool->threads[pool->n_threads], NULL, work_thread, pool);

	if (r < 0)
		return r;
	pool->n_threads++;
	pool->n_alive++;
	return 0;
}

int work_pool_new(struct loop *loop, unsigned threads, struct work_pool **ret_pool)
{
	return work_pool_new_growing(loop, threads, threads, ret_pool);
}

int work_pool_new_growing(struct loop *loop, unsigned threads, unsigned max_threads,
			  struct work_pool **ret_pool)
{
	struct work_pool *pool;
	pthread_condattr_t attr;
	int r;

	if (threads < 1 || max_threads < threads || max_threads > WORK_THREADS_MAX)
		return -EINVAL;
	pool = calloc(1, sizeof(*pool));
	if (!pool)
		return -ENOMEM;
	pool->loop = loop;
	pool->max_threads = max_threads;
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->wake, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&pool->exited, &attr);
	pthread_condattr_destroy(&attr);
	pool->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (pool->efd < 0) {
		r = -errno;
		goto fail;
	}
	r = loop_add(loop, pool->efd, EPOLLIN, work_ready, pool, &pool->source);
	if (r < 0)
		goto fail;
	pthread_mutex_lock(&pool->lock);
	r = 0;
	while (r >= 0 && pool->n_threads < threads)
		r = work_spawn(pool);
	pthread_mutex_unlock(&pool->lock);
	if (r < 0)
		goto fail;
	*ret_pool = pool;
	return 0;
fail:
	work_pool_free(pool);
	return r;
}

int work_submit(struct work_pool *pool, work_fn fn, work_done_fn done, void *arg)
{
	struct work_req *r;

	if (pool->stopping)
		return -ESHUTDOWN;
	r = malloc(sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->fn = fn;
	r->done = done;
	r->arg = arg;
	pthread_mutex_lock(&pool->lock);
	list_push(&pool->todo, r);
	pool->n_todo++;
	/* Every worker busy (perhaps stuck on a share): one more, if allowed.
	 * Failing to start one only leaves the request queued. */
	if (pool->n_todo > pool->n_idle && pool->n_threads < pool->max_threads)
		(void)work_spawn(pool);
	pthread_cond_signal(&pool->wake);
	pthread_mutex_unlock(&pool->lock);
	pool->pending++;
	return 0;
}

size_t work_pending(const struct work_pool *pool)
{
	return pool->pending;
}

static atomic_bool work_left_behind;

bool work_threads_left_behind(void)
{
	return atomic_load(&work_left_behind);
}

/* Waits up to WORK_STOP_WAIT_MS for the threads to leave. Under the lock. */
static bool work_wait_exits(struct work_pool *pool)
{
	struct timespec until;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += WORK_STOP_WAIT_MS / 1000;
	while (pool->n_alive)
		if (pthread_cond_timedwait(&pool->exited, &pool->lock, &until) == ETIMEDOUT)
			break;
	return pool->n_alive == 0;
}

void work_pool_free(struct work_pool *pool)
{
	struct work_req *r;
	bool all_left;

	if (!pool)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->stopping = true;
	pthread_cond_broadcast(&pool->wake);
	all_left = work_wait_exits(pool);
	pthread_mutex_unlock(&pool->lock);
	if (!all_left) {
		/* A request has not returned in WORK_STOP_WAIT_MS: a share that
		 * does not answer. Its thread, the pool and the eventfd it will
		 * write are left as they are (freeing them under it would be
		 * worse); done is not called for it. Only the loop lets go. */
		atomic_store(&work_left_behind, true);
		for (unsigned i = 0; i < pool->n_threads; i++)
			(void)pthread_detach(pool->threads[i]);
		loop_remove(pool->loop, pool->source);
		pool->source = NULL;
		return;
	}
	for (unsigned i = 0; i < pool->n_threads; i++)
		pthread_join(pool->threads[i], NULL);
	work_drain(pool);
	r = list_take_all(&pool->todo);
	while (r) {
		struct work_req *next = r->next;
		pool->pending--;
		r->done(r->arg, true);
		free(r);
		r = next;
	}
	loop_remove(pool->loop, pool->source);
	if (pool->efd >= 0)
		close(pool->efd);
	pthread_cond_destroy(&pool->exited);
	pthread_cond_destroy(&pool->wake);
	pthread_mutex_destroy(&pool->lock);
	free(pool);
}

/* ---- closing descriptors off the loop ---- */

/* One request per descriptor, never a batch: a close() hung on a stalled
 * share must hold only its own descriptor, not those of healthy folders
 * queued behind it (the pool grows so that the others get a worker). */
struct work_close_req {
	int fd;
};

static void work_close_run(void *arg)
{
	struct work_close_req *c = arg;

	(void)close(c->fd);
	c->fd = -1;
}

static void work_close_done(void *arg, bool cancelled)
{
	struct work_close_req *c = arg;

	(void)cancelled;
	if (c->fd >= 0)
		(void)close(c->fd); /* the pool went away before a worker took it */
	free(c);
}

void work_close(struct work_pool *pool, int fd)
{
	struct work_close_req *c;

	if (fd < 0)
		return;
	c = pool ? malloc(sizeof(*c)) : NULL;
	if (c) {
		c->fd = fd;
		if (work_submit(pool, work_close_run, work_close_done, c) == 0)
			return;
		free(c);
	}
	(void)close(fd);
}
