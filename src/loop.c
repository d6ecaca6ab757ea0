#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LOOP_BATCH 64

struct loop_source {
	int fd;
	loop_fd_fn fn;
	void *userdata;
	bool dead;
	struct loop_source *next_dead;
};

struct loop {
	int epfd;
	uint64_t iterations;
	bool dispatching;
	struct loop_source *dead; /* freed after the batch that may still point at them */
};

struct loop_timer {
	int fd;
	bool armed;
	loop_timer_fn fn;
	void *userdata;
	struct loop_source *source;
};

int loop_new(struct loop **ret_loop)
{
	struct loop *loop = calloc(1, sizeof(*loop));

	if (!loop)
		return -ENOMEM;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0) {
		int r = -errno;
		free(loop);
		return r;
	}
	*ret_loop = loop;
	return 0;
}

static void loop_reap(struct loop *loop)
{
	while (loop->dead) {
		struct loop_source *s = loop->dead;
		loop->dead = s->next_dead;
		free(s);
	}
}

void loop_free(struct loop *loop)
{
	if (!loop)
		return;
	loop_reap(loop);
	close(loop->epfd);
	free(loop);
}

int loop_add(struct loop *loop, int fd, uint32_t events, loop_fd_fn fn, void *userdata,
	     struct loop_source **ret_source)
{
	struct loop_source *s = calloc(1, sizeof(*s));
	struct epoll_event ev = {.events = events};

	if (!s)
		return -ENOMEM;
	s->fd = fd;
	s->fn = fn;
	s->userdata = userdata;
	ev.data.ptr = s;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int r = -errno;
		free(s);
		return r;
	}
	if (ret_source)
		*ret_source = s;
	return 0;
}

int loop_modify(struct loop *loop, struct loop_source *source, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = source};

	if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, source->fd, &ev) < 0)
		return -errno;
	return 0;
}

void loop_remove(struct loop *loop, struct loop_source *source)
{
	if (!source || source->dead)
		return;
	/* The fd may already be closed (curl closes before telling us): then
	 * epoll dropped it by itself. */
	(void)epoll_ctl(loop->epfd, EPOLL_CTL_DEL, source->fd, NULL);
	source->dead = true;
	source->next_dead = loop->dead;
	loop->dead = source;
	if (!loop->dispatching)
		loop_reap(loop);
}

int loop_run_once(struct loop *loop, int timeout_ms)
{
	struct epoll_event events[LOOP_BATCH];
	int n = epoll_wait(loop->epfd, events, LOOP_BATCH, timeout_ms);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	loop->dispatching = true;
	for (int i = 0; i < n; i++) {
		struct loop_source *s = events[i].data.ptr;
		if (s->dead)
			continue;
		loop->iterations++;
		s->fn(s->fd, events[i].events, s->userdata);
	}
	loop->dispatching = false;
	loop_reap(loop);
	return n;
}

uint64_t loop_iterations(const struct loop *loop)
{
	return loop->iterations;
}

static void loop_timer_ready(int fd, uint32_t events, void *userdata)
{
	struct loop_timer *t = userdata;
	uint64_t expirations;

	(void)events;
	if (read(fd, &expirations, sizeof(expirations)) != sizeof(expirations))
		return; /* spurious: re-armed or disarmed since */
	t->armed = false;
	t->fn(t->userdata);
}

int loop_timer_new(struct loop *loop, loop_timer_fn fn, void *userdata,
		   struct loop_timer **ret_timer)
{
	struct loop_timer *t = calloc(1, sizeof(*t));
	int r;

	if (!t)
		return -ENOMEM;
	t->fn = fn;
	t->userdata = userdata;
	t->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (t->fd < 0) {
		r = -errno;
		goto fail;
	}
	r = loop_add(loop, t->fd, EPOLLIN, loop_timer_ready, t, &t->source);
	if (r < 0)
		goto fail;
	*ret_timer = t;
	return 0;
fail:
	if (t->fd >= 0)
		close(t->fd);
	free(t);
	return r;
}

void loop_timer_free(struct loop *loop, struct loop_timer *timer)
{
	if (!timer)
		return;
	loop_remove(loop, timer->source);
	close(timer->fd);
	free(timer);
}

int loop_timer_arm_at(struct loop_timer *timer, uint64_t monotonic_ms)
{
	struct itimerspec its = {0};

	/* An absolute time of 0 would disarm: the earliest real deadline is 1 ms. */
	if (monotonic_ms == 0)
		monotonic_ms = 1;
	its.it_value.tv_sec = (time_t)(monotonic_ms / 1000);
	its.it_value.tv_nsec = (long)(monotonic_ms % 1000) * 1000000L;
	if (timerfd_settime(timer->fd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
		return -errno;
	timer->armed = true;
	return 0;
}

int loop_timer_arm(struct loop_timer *timer, uint64_t delay_ms)
{
	return loop_timer_arm_at(timer, loop_now_ms() + delay_ms);
}

void loop_timer_disarm(struct loop_timer *timer)
{
	struct itimerspec its = {0};

	(void)timerfd_settime(timer->fd, 0, &its, NULL);
	timer->armed = false;
}

bool loop_timer_armed(const struct loop_timer *timer)
{
	return timer->armed;
}

uint64_t loop_now_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int64_t loop_wall_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
