#include "http.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>

#include "log.h"

struct http {
	struct loop *loop;
	CURLM *multi;
	struct loop_timer *timer;
	unsigned running;
};

struct http_transfer {
	http_done_fn fn;
	void *userdata;
};

static void http_check_done(struct http *http)
{
	CURLMsg *msg;
	int pending;

	while ((msg = curl_multi_info_read(http->multi, &pending))) {
		struct http_transfer *t = NULL;
		CURL *easy = msg->easy_handle;
		CURLcode result = msg->data.result;

		if (msg->msg != CURLMSG_DONE)
			continue;
		(void)curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
		(void)curl_multi_remove_handle(http->multi, easy);
		http->running--;
		if (t) {
			http_done_fn fn = t->fn;
			void *ud = t->userdata;
			free(t);
			(void)curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
			fn(easy, result, ud);
		}
	}
}

static void http_socket_ready(int fd, uint32_t events, void *userdata)
{
	struct http *http = userdata;
	int action = 0, still_running;

	if (events & (EPOLLIN | EPOLLHUP))
		action |= CURL_CSELECT_IN;
	if (events & EPOLLOUT)
		action |= CURL_CSELECT_OUT;
	if (events & EPOLLERR)
		action |= CURL_CSELECT_ERR;
	(void)curl_multi_socket_action(http->multi, fd, action, &still_running);
	http_check_done(http);
}

static void http_timer_fired(void *userdata)
{
	struct http *http = userdata;
	int still_running;

	(void)curl_multi_socket_action(http->multi, CURL_SOCKET_TIMEOUT, 0, &still_running);
	http_check_done(http);
}

/* CURLMOPT_SOCKETFUNCTION: keep the epoll set in step with curl's sockets. */
static int http_socket_cb(CURL *easy, curl_socket_t s, int what, void *clientp, void *socketp)
{
	struct http *http = clientp;
	struct loop_source *source = socketp;
	uint32_t events = 0;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		loop_remove(http->loop, source);
		(void)curl_multi_assign(http->multi, s, NULL);
		return 0;
	}
	if (what & CURL_POLL_IN)
		events |= EPOLLIN;
	if (what & CURL_POLL_OUT)
		events |= EPOLLOUT;
	if (source)
		return loop_modify(http->loop, source, events) < 0 ? -1 : 0;
	if (loop_add(http->loop, s, events, http_socket_ready, http, &source) < 0)
		return -1;
	(void)curl_multi_assign(http->multi, s, source);
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: one timerfd for curl's single timeout. */
static int http_timer_cb(CURLM *multi, long timeout_ms, void *clientp)
{
	struct http *http = clientp;

	(void)multi;
	if (timeout_ms < 0) {
		loop_timer_disarm(http->timer);
		return 0;
	}
	return loop_timer_arm(http->timer, (uint64_t)timeout_ms) < 0 ? -1 : 0;
}

int http_new(struct loop *loop, struct http **ret_http)
{
	struct http *http = calloc(1, sizeof(*http));
	int r;

	if (!http)
		return -ENOMEM;
	http->loop = loop;
	r = loop_timer_new(loop, http_timer_fired, http, &http->timer);
	if (r < 0)
		goto fail;
	http->multi = curl_multi_init();
	if (!http->multi) {
		r = -ENOMEM;
		goto fail;
	}
	(void)curl_multi_setopt(http->multi, CURLMOPT_SOCKETFUNCTION, http_socket_cb);
	(void)curl_multi_setopt(http->multi, CURLMOPT_SOCKETDATA, http);
	(void)curl_multi_setopt(http->multi, CURLMOPT_TIMERFUNCTION, http_timer_cb);
	(void)curl_multi_setopt(http->multi, CURLMOPT_TIMERDATA, http);
	(void)curl_multi_setopt(http->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	*ret_http = http;
	return 0;
fail:
	loop_timer_free(loop, http->timer);
	free(http);
	return r;
}

void http_cancel(struct http *http, CURL *easy)
{
	struct http_transfer *t = NULL;

	(void)curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
	if (curl_multi_remove_handle(http->multi, easy) == CURLM_OK && t)
		http->running--;
	free(t);
	(void)curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
}

void http_free(struct http *http)
{
	if (!http)
		return;
	/* Callers cancel their transfers first; what is left is curl's own. */
	(void)curl_multi_cleanup(http->multi);
	loop_timer_free(http->loop, http->timer);
	free(http);
}

int http_start(struct http *http, CURL *easy, http_done_fn fn, void *userdata)
{
	struct http_transfer *t = malloc(sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->fn = fn;
	t->userdata = userdata;
	(void)curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
	if (curl_multi_add_handle(http->multi, easy) != CURLM_OK) {
		(void)curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
		free(t);
		return -EIO;
	}
	http->running++;
	return 0;
}

unsigned http_running(const struct http *http)
{
	return http->running;
}
