#include "metrics_serve.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "work.h"

/* ---- the HTTP server --------------------------------------------------------- */

struct metrics_client {
	struct metrics_server *server;
	int fd;
	struct loop_source *source;
	uint64_t deadline; /* monotonic ms: dropped then, reading or writing */
	char request[METRICS_REQUEST_MAX];
	size_t request_len;
	char *response; /* headers and body, once the request is complete */
	size_t response_len, response_off;
	bool draining; /* answered; reading what is left until the client closes */
	size_t drained;
	struct metrics_client *prev, *next;
};

struct metrics_server {
	struct loop *loop;
	int fd;
	struct loop_source *source;
	struct loop_timer *timer;
	struct loop_timer *rest; /* out of descriptors: when the listener listens again */
	metrics_render_fn render;
	void *userdata;
	struct metrics_client *clients;
	size_t n_clients;
};

#define METRICS_ACCEPT_BATCH 16	  /* accepts per wake-up: the loop's other sources get their turn */
#define METRICS_REST_MS	     1000 /* out of descriptors: how long the listener rests */

static void metrics_client_drop(struct metrics_client *c)
{
	struct metrics_server *s = c->server;

	loop_remove(s->loop, c->source);
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->n_clients--;
	free(c->response);
	free(c);
}

static void metrics_server_rearm(struct metrics_server *s)
{
	uint64_t earliest = 0;

	for (struct metrics_client *c = s->clients; c; c = c->next)
		if (!earliest || c->deadline < earliest)
			earliest = c->deadline;
	if (earliest)
		(void)loop_timer_arm_at(s->timer, earliest);
	else
		loop_timer_disarm(s->timer);
}

static void metrics_server_timeout(void *userdata)
{
	struct metrics_server *s = userdata;
	uint64_t now = loop_now_ms();
	struct metrics_client *next;

	/* A client that sends slowly or does not read is dropped, so a few of
	 * them cannot hold every slot (or memory) for long. */
	for (struct metrics_client *c = s->clients; c; c = next) {
		next = c->next;
		if (c->deadline <= now)
			metrics_client_drop(c);
	}
	metrics_server_rearm(s);
}

static int metrics_client_respond(struct metrics_client *c, int status, const char *reason,
				  const char *body, size_t body_len, bool head, const char *extra)
{
	char header[512];
	int n = snprintf(header, sizeof(header),
			 "HTTP/1.0 %d %s\r\n"
			 "Content-Type: %s\r\n"
			 "Content-Length: %zu\r\n"
			 "%s"
			 "Connection: close\r\n"
			 "\r\n",
			 status, reason,
			 status == 200 ? "text/plain; version=0.0.4; charset=utf-8"
				       : "text/plain; charset=utf-8",
			 body_len, extra ? extra : "");
	size_t total;

	if (n < 0 || (size_t)n >= sizeof(header))
		return -EINVAL;
	total = (size_t)n + (head ? 0 : body_len);
	c->response = malloc(total);
	if (!c->response)
		return -ENOMEM;
	memcpy(c->response, header, (size_t)n);
	if (!head)
		memcpy(c->response + n, body, body_len);
	c->response_len = total;
	c->response_off = 0;
	return 0;
}

/* The request line of a complete request: what to answer. */
static int metrics_client_answer(struct metrics_client *c)
{
	static const char not_found[] = "Not found: the metrics are at /metrics\n";
	static const char not_allowed[] = "Method not allowed: use GET\n";
	static const char bad[] = "Bad request\n";
	struct metrics_server *s = c->server;
	char *line_end = memchr(c->request, '\n', c->request_len), *sp, *path, *version;
	bool head;
	size_t path_len;

	if (!line_end)
		return metrics_client_respond(c, 400, "Bad Request", bad, sizeof(bad) - 1, false,
					      NULL);
	*line_end = '\0';
	if (line_end > c->request && line_end[-1] == '\r')
		line_end[-1] = '\0';
	sp = strchr(c->request, ' ');
	if (!sp)
		return metrics_client_respond(c, 400, "Bad Request", bad, sizeof(bad) - 1, false,
					      NULL);
	*sp = '\0';
	path = sp + 1;
	version = strchr(path, ' ');
	if (!version || strncmp(version + 1, "HTTP/1.", 7) != 0)
		return metrics_client_respond(c, 400, "Bad Request", bad, sizeof(bad) - 1, false,
					      NULL);
	path_len = (size_t)(version - path);
	head = strcmp(c->request, "HEAD") == 0;
	if (!head && strcmp(c->request, "GET") != 0)
		return metrics_client_respond(c, 405, "Method Not Allowed", not_allowed,
					      sizeof(not_allowed) - 1, false,
					      "Allow: GET, HEAD\r\n");
	if (!((path_len == 8 && memcmp(path, "/metrics", 8) == 0) ||
	      (path_len > 8 && memcmp(path, "/metrics?", 9) == 0)))
		return metrics_client_respond(c, 404, "Not Found", not_found, sizeof(not_found) - 1,
					      head, NULL);
	{
		char *text = NULL;
		size_t len = 0;
		int r = s->render(s->userdata, &text, &len);
		if (r < 0)
			return r;
		r = metrics_client_respond(c, 200, "OK", text, len, head, NULL);
		free(text);
		return r;
	}
}

static bool metrics_request_complete(const struct metrics_client *c)
{
	for (size_t i = 0; i + 1 < c->request_len; i++) {
		if (c->request[i] != '\n')
			continue;
		if (c->request[i + 1] == '\n' ||
		    (c->request[i + 1] == '\r' && i + 2 < c->request_len &&
		     c->request[i + 2] == '\n'))
			return true;
	}
	return false;
}

static void metrics_client_write(struct metrics_client *c)
{
	while (c->response_off < c->response_len) {
		ssize_t n =
		    write(c->fd, c->response + c->response_off, c->response_len - c->response_off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return; /* EPOLLOUT says when; the deadline bounds the wait */
		if (n <= 0) {
			metrics_client_drop(c);
			return;
		}
		c->response_off += (size_t)n;
	}
	/* Closing with unread request bytes would reset the connection, and
	 * the client could lose the answer: say we are done, read what is left
	 * until it closes (the deadline still bounds that). */
	if (shutdown(c->fd, SHUT_WR) < 0 || loop_modify(c->server->loop, c->source, EPOLLIN) < 0) {
		metrics_client_drop(c);
		return;
	}
	c->draining = true;
}

static void metrics_client_drain(struct metrics_client *c)
{
	char sink[4096];

	for (;;) {
		ssize_t n = read(c->fd, sink, sizeof(sink));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		/* A client that keeps sending is not read for long. */
		if (n <= 0 || (c->drained += (size_t)n) > 16 * METRICS_REQUEST_MAX) {
			metrics_client_drop(c);
			return;
		}
	}
}

static void metrics_client_ready(int fd, uint32_t events, void *userdata)
{
	struct metrics_client *c = userdata;
	int r = 0;

	if (c->draining) {
		metrics_client_drain(c);
		return;
	}
	if (c->response) {
		if (events & (EPOLLERR | EPOLLHUP)) {
			metrics_client_drop(c);
			return;
		}
		metrics_client_write(c);
		return;
	}
	for (;;) {
		ssize_t n;

		if (c->request_len == sizeof(c->request)) {
			static const char large[] = "Request too large\n";
			r = metrics_client_respond(c, 431, "Request Header Fields Too Large", large,
						   sizeof(large) - 1, false, NULL);
			break;
		}
		n = read(fd, c->request + c->request_len, sizeof(c->request) - c->request_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) { /* closed before a whole request, or an error */
			metrics_client_drop(c);
			return;
		}
		c->request_len += (size_t)n;
		if (metrics_request_complete(c)) {
			r = metrics_client_answer(c);
			break;
		}
	}
	if (r == -ENOMEM)
		log_oom();
	if (r < 0 || loop_modify(c->server->loop, c->source, EPOLLOUT) < 0) {
		metrics_client_drop(c);
		return;
	}
	metrics_client_write(c);
}

static void metrics_server_listen_again(void *userdata)
{
	struct metrics_server *s = userdata;

	(void)loop_modify(s->loop, s->source, EPOLLIN);
}

static void metrics_server_accept(int fd, uint32_t events, void *userdata)
{
	struct metrics_server *s = userdata;

	(void)events;
	for (int i = 0; i < METRICS_ACCEPT_BATCH; i++) {
		struct metrics_client *c;
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (cfd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE) {
				/* The connection stays pending, and the listener readable:
				 * rest it, or the loop would spin on it. */
				log_warn("metrics_listen: cannot accept: %s; trying again in %d ms",
					 strerror(errno), METRICS_REST_MS);
				(void)loop_modify(s->loop, s->source, 0);
				(void)loop_timer_arm(s->rest, METRICS_REST_MS);
			}
			return;
		}
		if (s->n_clients >= METRICS_CLIENTS_MAX) {
			close(cfd); /* full: a scraper tries again at its next interval */
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c)
			log_oom();
		c->server = s;
		c->fd = cfd;
		c->deadline = loop_now_ms() + METRICS_CLIENT_TIMEOUT_MS;
		if (loop_add(s->loop, cfd, EPOLLIN, metrics_client_ready, c, &c->source) < 0) {
			close(cfd);
			free(c);
			continue;
		}
		c->next = s->clients;
		if (s->clients)
			s->clients->prev = c;
		s->clients = c;
		s->n_clients++;
		if (!loop_timer_armed(s->timer))
			(void)loop_timer_arm_at(s->timer, c->deadline);
	}
}

int metrics_server_new(struct loop *loop, const struct sockaddr *addr, socklen_t addr_len,
		       metrics_render_fn render, void *userdata, struct metrics_server **ret_server)
{
	struct metrics_server *s = calloc(1, sizeof(*s));
	int one = 1, r;

	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->render = render;
	s->userdata = userdata;
	s->fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0) {
		r = -errno;
		goto fail;
	}
	(void)setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(s->fd, addr, addr_len) < 0 || listen(s->fd, 16) < 0) {
		r = -errno;
		goto fail;
	}
	r = loop_timer_new(loop, metrics_server_timeout, s, &s->timer);
	if (r >= 0)
		r = loop_timer_new(loop, metrics_server_listen_again, s, &s->rest);
	if (r < 0)
		goto fail;
	r = loop_add(loop, s->fd, EPOLLIN, metrics_server_accept, s, &s->source);
	if (r < 0)
		goto fail;
	*ret_server = s;
	return 0;
fail:
	loop_timer_free(loop, s->rest);
	loop_timer_free(loop, s->timer);
	if (s->fd >= 0)
		close(s->fd);
	free(s);
	return r;
}

void metrics_server_free(struct metrics_server *s)
{
	if (!s)
		return;
	while (s->clients)
		metrics_client_drop(s->clients);
	loop_remove(s->loop, s->source);
	loop_timer_free(s->loop, s->rest);
	loop_timer_free(s->loop, s->timer);
	close(s->fd);
	free(s);
}

/* ---- the textfile -------------------------------------------------------- */

struct metrics_write {
	struct metrics_textfile *owner;
	char *path, *text;
	size_t len;
	int r;
};

struct metrics_textfile {
	struct loop *loop;
	char *path;
	metrics_render_fn render;
	void *userdata;
	struct work_pool *pool;
	struct loop_timer *timer;
	bool writing;
	int last_error; /* logged once until a write succeeds again */
};

int metrics_textfile_write(const char *path, const char *text, size_t len)
{
	char tmp[4096];
	size_t off = 0;
	int fd, r = 0;

	/* Not ending in .prom: node_exporter never reads a half-written file. */
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return -errno;
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			break;
		}
		off += (size_t)n;
	}
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		(void)unlink(tmp);
	return r;
}

static void metrics_write_work(void *arg)
{
	struct metrics_write *w = arg;

	w->r = metrics_textfile_write(w->path, w->text, w->len);
}

static void metrics_textfile_note(struct metrics_textfile *t, int r)
{
	if (r < 0 && r != t->last_error)
		log_warn("cannot write the metrics textfile %s: %s", t->path, strerror(-r));
	else if (r == 0 && t->last_error)
		log_info("the metrics textfile %s is written again", t->path);
	t->last_error = r;
}

static void metrics_write_done(void *arg, bool cancelled)
{
	struct metrics_write *w = arg;

	if (!cancelled) {
		w->owner->writing = false;
		metrics_textfile_note(w->owner, w->r);
	}
	free(w->path);
	free(w->text);
	free(w);
}

static void metrics_textfile_tick(void *userdata)
{
	struct metrics_textfile *t = userdata;
	struct metrics_write *w;
	int r;

	(void)loop_timer_arm(t->timer, METRICS_TEXTFILE_INTERVAL_MS);
	if (t->writing)
		return; /* the storage is slow: the next tick writes newer values */
	w = calloc(1, sizeof(*w));
	if (!w)
		log_oom();
	w->owner = t;
	w->path = strdup(t->path);
	if (!w->path)
		log_oom();
	r = t->render(t->userdata, &w->text, &w->len);
	if (r == -ENOMEM)
		log_oom();
	if (r < 0) {
		metrics_textfile_note(t, r);
		free(w->path);
		free(w);
		return;
	}
	r = work_submit(t->pool, metrics_write_work, metrics_write_done, w);
	if (r == -ENOMEM)
		log_oom();
	if (r < 0) {
		free(w->path);
		free(w->text);
		free(w);
		return;
	}
	t->writing = true;
}

int metrics_textfile_new(struct loop *loop, const char *path, metrics_render_fn render,
			 void *userdata, struct metrics_textfile **ret_textfile)
{
	struct metrics_textfile *t = calloc(1, sizeof(*t));
	int r;

	if (!t)
		return -ENOMEM;
	t->loop = loop;
	t->render = render;
	t->userdata = userdata;
	t->path = strdup(path);
	if (!t->path) {
		free(t);
		return -ENOMEM;
	}
	r = work_pool_new(loop, 1, &t->pool);
	if (r >= 0)
		r = loop_timer_new(loop, metrics_textfile_tick, t, &t->timer);
	if (r >= 0)
		r = loop_timer_arm(t->timer, 0);
	if (r < 0) {
		metrics_textfile_free(t);
		return r;
	}
	*ret_textfile = t;
	return 0;
}

int metrics_textfile_final(struct metrics_textfile *t)
{
	char *text = NULL;
	size_t len = 0;
	int r;

	/* A write still running would rename an older text over this one. */
	work_pool_free(t->pool);
	t->pool = NULL;
	if (work_threads_left_behind())
		return -ETIMEDOUT; /* its storage does not answer: no second write to hang on */
	r = t->render(t->userdata, &text, &len);
	if (r < 0)
		return r;
	r = metrics_textfile_write(t->path, text, len);
	free(text);
	return r;
}

void metrics_textfile_free(struct metrics_textfile *t)
{
	if (!t)
		return;
	work_pool_free(t->pool);
	loop_timer_free(t->loop, t->timer);
	free(t->path);
	free(t);
}
