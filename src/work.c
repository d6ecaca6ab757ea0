/* work: the worker pool (see work.h). One mutex guards two lists: requests
 * waiting for a worker and requests finished and waiting for the loop. A
 * worker takes the head of the first, runs it unlocked, appends it to the
 * second and writes the eventfd; the loop drains the second and calls each
 * done. Nothing else is shared. */
#include "work.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define WORK_THREADS_MAX 64

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
	pthread_cond_t wake;
	struct work_list todo, finished;
	size_t pending; /* loop thread only */
	bool stopping;
	unsigned n_threads;
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

		while (!pool->todo.head && !pool->stopping)
			pthread_cond_wait(&pool->wake, &pool->lock);
		if (pool->stopping)
			break; /* what is not started stays for work_pool_free to cancel */
		r = pool->todo.head;
		pool->todo.head = r->next;
		if (!pool->todo.head)
			pool->todo.tail = NULL;
		pthread_mutex_unlock(&pool->lock);
		r->fn(r->arg);
		pthread_mutex_lock(&pool->lock);
		list_push(&pool->finished, r);
		/* An eventfd counter only saturates at 2^64-2: the write cannot block. */
		(void)!write(pool->efd, &one, sizeof(one));
	}
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

int work_pool_new(struct loop *loop, unsigned threads, struct work_pool **ret_pool)
{
	struct work_pool *pool;
	int r;

	if (threads < 1 || threads > WORK_THREADS_MAX)
		return -EINVAL;
	pool = calloc(1, sizeof(*pool));
	if (!pool)
		return -ENOMEM;
	pool->loop = loop;
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->wake, NULL);
	pool->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (pool->efd < 0) {
		r = -errno;
		goto fail;
	}
	r = loop_add(loop, pool->efd, EPOLLIN, work_ready, pool, &pool->source);
	if (r < 0)
		goto fail;
	for (; pool->n_threads < threads; pool->n_threads++) {
		r = -pthread_create(&pool->threads[pool->n_threads], NULL, work_thread, pool);
		if (r < 0)
			goto fail;
	}
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
	pthread_cond_signal(&pool->wake);
	pthread_mutex_unlock(&pool->lock);
	pool->pending++;
	return 0;
}

size_t work_pending(const struct work_pool *pool)
{
	return pool->pending;
}

void work_pool_free(struct work_pool *pool)
{
	struct work_req *r;

	if (!pool)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->stopping = true;
	pthread_cond_broadcast(&pool->wake);
	pthread_mutex_unlock(&pool->lock);
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
	pthread_cond_destroy(&pool->wake);
	pthread_mutex_destroy(&pool->lock);
	free(pool);
}
