/* loop: the one epoll set the daemon waits on, and timerfd-backed timers. */
#ifndef SEEDREAMD_LOOP_H
#define SEEDREAMD_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct loop;
struct loop_source;

typedef void (*loop_fd_fn)(int fd, uint32_t events, void *userdata);

int loop_new(struct loop **ret_loop);
void loop_free(struct loop *loop); /* accepts NULL; sources must be removed first */

/* Watches fd for events (EPOLLIN, EPOLLOUT). The source is freed by
 * loop_remove, safely even from inside a callback of the same batch. */
int loop_add(struct loop *loop, int fd, uint32_t events, loop_fd_fn fn, void *userdata,
	     struct loop_source **ret_source);
int loop_modify(struct loop *loop, struct loop_source *source, uint32_t events);
void loop_remove(struct loop *loop, struct loop_source *source); /* accepts NULL */

/* Waits up to timeout_ms (-1: forever) and dispatches. Returns the number of
 * events dispatched, or -errno (EINTR is not an error: 0). */
int loop_run_once(struct loop *loop, int timeout_ms);

/* Increments on every dispatched event: the watchdog pings only while this moves. */
uint64_t loop_iterations(const struct loop *loop);

/* A one-shot timer on its own timerfd. */
struct loop_timer;
typedef void (*loop_timer_fn)(void *userdata);
int loop_timer_new(struct loop *loop, loop_timer_fn fn, void *userdata,
		   struct loop_timer **ret_timer);
void loop_timer_free(struct loop *loop, struct loop_timer *timer); /* accepts NULL */
/* Fires once after delay_ms (0 fires on the next iteration); re-arming replaces. */
int loop_timer_arm(struct loop_timer *timer, uint64_t delay_ms);
int loop_timer_arm_at(struct loop_timer *timer, uint64_t monotonic_ms);
void loop_timer_disarm(struct loop_timer *timer);
bool loop_timer_armed(const struct loop_timer *timer);

/* CLOCK_MONOTONIC and CLOCK_REALTIME in milliseconds. */
uint64_t loop_now_ms(void);
int64_t loop_wall_ms(void);

#endif
