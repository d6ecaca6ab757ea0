/* work: a small pool of worker threads for blocking work (image fitting now,
 * file-system calls later), in the manner of redis's bio.c and libuv's
 * threadpool. The loop thread submits a self-contained request; a worker runs
 * fn(arg) and touches nothing else; done(arg, cancelled) then runs on the
 * loop thread, woken through an eventfd registered with the loop. Requests
 * run in submission order across the pool; each done is called exactly once. */
#ifndef SEEDREAMD_WORK_H
#define SEEDREAMD_WORK_H

#include <stdbool.h>
#include <stddef.h>

#include "loop.h"

struct work_pool;

/* Runs on a worker thread: blocking is fine, logging and job state are not. */
typedef void (*work_fn)(void *arg);
/* Runs on the loop thread; cancelled when the pool was freed before fn ran. */
typedef void (*work_done_fn)(void *arg, bool cancelled);

/* threads: 1..64. Registers an eventfd with loop. Returns 0 or -errno. */
int work_pool_new(struct loop *loop, unsigned threads, struct work_pool **ret_pool);

/* The same, starting threads and adding one (up to max_threads, <= 64) when a
 * request finds every worker busy: for requests that may block on a share
 * that stopped answering, so that they cannot starve the others. */
int work_pool_new_growing(struct loop *loop, unsigned threads, unsigned max_threads,
			  struct work_pool **ret_pool);

/* Queues fn(arg) for a worker. -ENOMEM, or -ESHUTDOWN while the pool is
 * being freed (done is not called then). */
int work_submit(struct work_pool *pool, work_fn fn, work_done_fn done, void *arg);

/* Requests queued or running (not yet handed to done). */
size_t work_pending(const struct work_pool *pool);

/* close(fd) on a worker: close() may block on a network file system (it
 * flushes written data). Inline when pool is NULL, out of memory or stopping.
 * fd must not be used after the call; nothing may rely on the close having
 * happened when this returns. fd < 0 is ignored. */
void work_close(struct work_pool *pool, int fd);

/* Waits for the requests already running, calls done(arg, true) for those
 * not started and done(arg, false) for the finished ones, joins the threads
 * and removes the eventfd from the loop. A request still running after 5 s
 * (a hung share) is left behind with its thread and the pool's memory, for
 * the exit that follows: its done is never called. Accepts NULL. On the loop
 * thread. */
void work_pool_free(struct work_pool *pool);

/* Whether a work_pool_free left a stuck request's thread behind: what such
 * a request may still touch (the journal, libvips) must not be freed; the
 * process should exit without tearing down more. */
bool work_threads_left_behind(void);

#endif
