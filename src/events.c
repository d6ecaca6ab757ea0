/* events: notifications by webhook and command (see events.h). */
#include "events.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "clean.h"
#include "events_store.h"
#include "log.h"
#include "schedule.h"
#include "url.h"
#include "work.h"

extern char **environ;

#define EVENTS_TEXT_MAX	       4096  /* a message, a file name */
#define EVENTS_LINE_MAX	       512   /* one logged line of a command's output */
#define EVENTS_LINES_MAX       100   /* lines logged per command run */
#define EVENTS_KILL_GRACE_MS   5000  /* SIGTERM, then this long before SIGKILL */
#define EVENTS_GROUP_GRACE_MS  2000  /* the same for what a command left behind */
#define EVENTS_READ_MAX	       65536 /* output read per wake-up: others get their turn */
#define EVENTS_KEY_NAMES_KEPT  16    /* names seen holding the key (reloads may change it) */
#define EVENTS_HOOK_TIMEOUT_MS 10000 /* one webhook attempt */
#define EVENTS_HOOK_BACKOFF_MS 1000  /* doubled after each failed attempt */
#define EVENTS_LIMITS_KEPT     16    /* limits remembered as reported today */
#define EVENTS_KEPT_MAX_AGE_S  86400 /* a kept event older than this at start is dropped */
#define EVENTS_RESTORE_WAIT_MS 200   /* a summary due while events.pending is being read */

/* One event as both targets take it; shared by reference count. */
struct events_msg {
	unsigned refs;
	char kind[24];
	char *body; /* the webhook's JSON */
	char **env; /* the command's SEEDREAMD_* variables, NULL-terminated */
	/* What state_dir/events.pending keeps of it while it waits for a
	 * target (for_hook, for_cmd): on ev's kept list, holding a reference. */
	int64_t created;
	struct events_store_field *fields; /* as sent: scrubbed */
	size_t n_fields;
	bool for_hook, for_cmd;
	struct events_msg *kept_prev, *kept_next;
};

struct events_child {
	struct events *ev;
	struct events_msg *msg;
	pid_t pid;
	int pidfd, out_fd;
	struct loop_source *pid_src, *out_src;
	struct loop_timer *timer;
	bool term_sent;
	char line[EVENTS_LINE_MAX];
	size_t line_len;
	unsigned lines;
	struct events_child *next;
};

/* The process group of a command whose leader ended while some of it (a
 * `sleep &`) still ran: SIGTERM was sent, SIGKILL follows after a grace. */
struct events_group {
	struct events *ev;
	pid_t pgid;
	struct loop_timer *timer;
	struct events_group *next;
};

/* A posix_spawn on a worker: it may block (CLONE_VFORK waits for the
 * child's execve, which a hung network mount can stall). Self-contained:
 * the worker reads path and env and fills in the rest; child is only for
 * the loop thread's completion. */
struct events_spawn_req {
	struct events_child *child;
	char *path;
	char **env; /* deep copies, NULL-terminated */
	int r;	    /* 0 or -errno */
	pid_t pid;
	int pidfd, out_fd;
};

struct events_day {
	uint64_t done, failed, images, spent;
	int64_t day_end; /* 0 before the first use */
};

struct events_ring {
	struct events_msg *items[EVENTS_WEBHOOK_QUEUE];
	size_t head, n, cap;
};

struct events {
	struct loop *loop;
	struct http *http;
	const struct config *config;
	char *secret;
	/* The webhook: the head of hook_q is under way or waiting to retry. */
	struct events_ring hook_q;
	CURL *easy;
	struct curl_slist *headers;
	bool hook_running;
	unsigned hook_tries;
	struct loop_timer *hook_timer;
	/* The command. */
	struct events_ring cmd_q;
	struct events_child *children;
	unsigned n_children; /* running or being spawned */
	struct events_group *groups;
	struct work_pool *spawn_pool; /* started with the first command */
	bool stopping;
	/* Every api_key_env seen, and every variable that held the key in
	 * use then: a reload that renames it or changes the key leaves the old
	 * variables (and the old key) in the daemon's environment. */
	char *key_names[EVENTS_KEY_NAMES_KEPT];
	/* Events not yet delivered, oldest first, as state_dir keeps them;
	 * deliveries wait while restoring (the kept ones go first). */
	struct events_store *store;
	struct events_msg *kept_head, *kept_tail;
	bool restoring;
	/* The daily summary: the last date one was sent for ("" unknown) and
	 * when the timer is due (a wall clock set back fires it early). */
	struct loop_timer *summary_timer;
	struct events_day cur, prev;
	char summarised[EVENTS_STORE_DATE_LEN];
	int64_t summary_due;
	struct {
		char key[256];
		int64_t day_end;
	} limits[EVENTS_LIMITS_KEPT];
	size_t next_limit;
};

static void events_hook_next(struct events *ev);
static void events_cmd_next(struct events *ev);

/* ---- messages ---------------------------------------------------------- */

static void events_msg_unref(struct events_msg *m)
{
	if (!m || --m->refs > 0)
		return;
	free(m->body);
	for (char **e = m->env; e && *e; e++)
		free(*e);
	free(m->env);
	for (size_t i = 0; i < m->n_fields; i++) {
		free(m->fields[i].name);
		free(m->fields[i].text);
	}
	free(m->fields);
	free(m);
}

static void events_persist(struct events *ev)
{
	if (!ev->restoring && !ev->stopping)
		events_store_changed(ev->store);
}

/* m waits for a target now: kept until it has none. */
static void events_keep(struct events *ev, struct events_msg *m, bool hook)
{
	bool was_kept = m->for_hook || m->for_cmd;

	if (hook)
		m->for_hook = true;
	else
		m->for_cmd = true;
	if (!was_kept) {
		m->refs++;
		m->kept_prev = ev->kept_tail;
		m->kept_next = NULL;
		if (ev->kept_tail)
			ev->kept_tail->kept_next = m;
		else
			ev->kept_head = m;
		ev->kept_tail = m;
	}
	events_persist(ev);
}

/* m was delivered to a target, or given up for it. Not while stopping: what
 * the stop cuts short stays in state_dir for the next start. */
static void events_delivered(struct events *ev, struct events_msg *m, bool hook)
{
	if (ev->stopping || !(hook ? m->for_hook : m->for_cmd))
		return;
	if (hook)
		m->for_hook = false;
	else
		m->for_cmd = false;
	if (!m->for_hook && !m->for_cmd) {
		if (m->kept_prev)
			m->kept_prev->kept_next = m->kept_next;
		else
			ev->kept_head = m->kept_next;
		if (m->kept_next)
			m->kept_next->kept_prev = m->kept_prev;
		else
			ev->kept_tail = m->kept_prev;
		m->kept_prev = m->kept_next = NULL;
		events_msg_unref(m);
	}
	events_persist(ev);
}

/* Pushes m (a reference taken); when full the oldest is dropped, never the
 * one under way at the head (busy). */
static void events_ring_push(struct events *ev, struct events_ring *q, struct events_msg *m,
			     bool busy, bool hook)
{
	const char *target = hook ? "webhook" : "command";

	if (q->n == q->cap) {
		size_t victim = busy ? (q->head + 1) % q->cap : q->head;
		struct events_msg *old = q->items[victim];

		log_warn("notify: the %s queue is full (%zu events): dropping the oldest, %s",
			 target, q->cap, old->kind);
		if (busy) {
			/* Close the gap right after the head. */
			for (size_t i = 1; i + 1 < q->n; i++)
				q->items[(q->head + i) % q->cap] =
				    q->items[(q->head + i + 1) % q->cap];
		} else {
			q->head = (q->head + 1) % q->cap;
		}
		q->n--;
		events_delivered(ev, old, hook);
		events_msg_unref(old);
	}
	events_keep(ev, m, hook);
	m->refs++;
	q->items[(q->head + q->n) % q->cap] = m;
	q->n++;
}

static struct events_msg *events_ring_pop(struct events_ring *q)
{
	struct events_msg *m;

	if (!q->n)
		return NULL;
	m = q->items[q->head];
	q->head = (q->head + 1) % q->cap;
	q->n--;
	return m;
}

static void events_format_money(uint64_t micros, char *buf, size_t len)
{
	size_t n;

	(void)snprintf(buf, len, "%llu.%06llu", (unsigned long long)(micros / CONFIG_MICROS),
		       (unsigned long long)(micros % CONFIG_MICROS));
	/* At least two decimals, no trailing zeros beyond them: 0.09, 0.125. */
	n = strlen(buf);
	while (n > 0 && buf[n - 1] == '0' && n >= 2 && buf[n - 3] != '.')
		buf[--n] = '\0';
}

/* Builds an event from name/value pairs (values NULL are left out); every
 * text is scrubbed of the key and bounded again. events_store.c reads back
 * only the fields each kind is built with here: keep its list in step. */
struct events_field {
	const char *name; /* the JSON member; the variable is SEEDREAMD_<NAME> */
	const char *text; /* a string value, or NULL */
	bool number;	  /* text is a JSON number */
};

/* An event that happened at created (epoch s): now, or before a restart. */
static struct events_msg *events_msg_build(struct events *ev, const char *kind, int64_t created,
					   const struct events_field *fields, size_t n)
{
	struct events_msg *m = calloc(1, sizeof(*m));
	cJSON *doc = cJSON_CreateObject();
	char when[32], *clean = NULL;
	struct tm tm;
	time_t now = (time_t)created;
	size_t e = 0;

	if (!m || !doc || !(m->env = calloc(n + 3, sizeof(*m->env))) ||
	    (n && !(m->fields = calloc(n, sizeof(*m->fields)))))
		log_oom();
	(void)snprintf(m->kind, sizeof(m->kind), "%s", kind);
	m->created = created;
	if (!gmtime_r(&now, &tm))
		memset(&tm, 0, sizeof(tm));
	(void)strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (!cJSON_AddNumberToObject(doc, "version", EVENTS_BODY_VERSION) ||
	    !cJSON_AddStringToObject(doc, "event", kind) ||
	    !cJSON_AddStringToObject(doc, "time", when))
		log_oom();
	if (asprintf(&m->env[e++], "SEEDREAMD_EVENT=%s", kind) < 0 ||
	    asprintf(&m->env[e++], "SEEDREAMD_TIME=%s", when) < 0)
		log_oom();
	for (size_t i = 0; i < n; i++) {
		const struct events_field *f = &fields[i];
		char upper[32];
		cJSON *item;
		size_t k;

		if (!f->text)
			continue;
		clean = clean_text(f->text, EVENTS_TEXT_MAX, ev->secret);
		if (!clean)
			log_oom();
		for (k = 0; f->name[k] && k + 1 < sizeof(upper); k++)
			upper[k] = (char)(f->name[k] >= 'a' && f->name[k] <= 'z' ? f->name[k] - 32
										 : f->name[k]);
		upper[k] = '\0';
		if (asprintf(&m->env[e++], "SEEDREAMD_%s=%s", upper, clean) < 0)
			log_oom();
		item = f->number ? cJSON_CreateRaw(clean) : cJSON_CreateString(clean);
		if (!item || !cJSON_AddItemToObject(doc, f->name, item))
			log_oom();
		m->fields[m->n_fields].name = strdup(f->name);
		m->fields[m->n_fields].text = clean; /* scrubbed: what state_dir keeps */
		m->fields[m->n_fields].number = f->number;
		if (!m->fields[m->n_fields++].name)
			log_oom();
	}
	m->body = cJSON_PrintUnformatted(doc);
	if (!m->body)
		log_oom();
	cJSON_Delete(doc);
	return m;
}

static struct events_msg *events_msg_new(struct events *ev, const char *kind,
					 const struct events_field *fields, size_t n)
{
	return events_msg_build(ev, kind, (int64_t)time(NULL), fields, n);
}

static void events_send(struct events *ev, unsigned bit, struct events_msg *m)
{
	const struct notify_config *nc = &ev->config->notify;

	m->refs = 1;
	if (nc->events & bit) {
		if (nc->webhook) {
			events_ring_push(ev, &ev->hook_q, m,
					 ev->hook_running || loop_timer_armed(ev->hook_timer),
					 true);
			events_hook_next(ev);
		}
		if (nc->command) {
			events_ring_push(ev, &ev->cmd_q, m, false, false);
			events_cmd_next(ev);
		}
	}
	events_msg_unref(m);
}

/* ---- the webhook ------------------------------------------------------- */

/* Plain http only to this machine unless allowed, checked on the address
 * actually connected to (a name may resolve anywhere). */
static curl_socket_t events_open_socket(void *clientp, curlsocktype purpose,
					struct curl_sockaddr *a)
{
	struct events *ev = clientp;
	struct sockaddr_storage ss;
	size_t len = a->addrlen < sizeof(ss) ? a->addrlen : sizeof(ss);
	const char *url = ev->config->notify.webhook;

	if (purpose != CURLSOCKTYPE_IPCXN)
		return CURL_SOCKET_BAD;
	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, &a->addr, len);
	if (url && strncasecmp(url, "https://", 8) && !ev->config->api.allow_insecure_http &&
	    url_sockaddr_class((const struct sockaddr *)&ss) != URL_LOOPBACK)
		return CURL_SOCKET_BAD;
	return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static size_t events_discard(char *data, size_t size, size_t nmemb, void *userdata)
{
	(void)data;
	(void)userdata;
	return size * nmemb;
}

static void events_hook_clear(struct events *ev)
{
	if (ev->easy) {
		if (ev->hook_running)
			http_cancel(ev->http, ev->easy);
		curl_easy_cleanup(ev->easy);
	}
	ev->easy = NULL;
	ev->hook_running = false;
}

static void events_hook_done(CURL *easy, CURLcode result, void *userdata)
{
	struct events *ev = userdata;
	struct events_msg *m = ev->hook_q.items[ev->hook_q.head];
	long status = 0;
	uint64_t delay;
	char why[128];

	(void)curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	ev->hook_running = false;
	events_hook_clear(ev);
	ev->hook_tries++;
	if (result == CURLE_OK)
		(void)snprintf(why, sizeof(why), "HTTP %ld", status);
	else
		(void)snprintf(why, sizeof(why), "%s", curl_easy_strerror(result));
	if (result == CURLE_OK && status >= 200 && status < 300) {
		log_debug("notify: webhook took event %s (%s)", m->kind, why);
	} else if (ev->hook_tries < EVENTS_WEBHOOK_TRIES) {
		delay = (uint64_t)EVENTS_HOOK_BACKOFF_MS << (ev->hook_tries - 1);
		log_info("notify: webhook did not take event %s (%s): trying again in %llu ms",
			 m->kind, why, (unsigned long long)delay);
		(void)loop_timer_arm(ev->hook_timer, delay);
		return;
	} else {
		log_warn("notify: webhook did not take event %s after %u attempts (%s): dropped",
			 m->kind, ev->hook_tries, why);
	}
	ev->hook_tries = 0;
	m = events_ring_pop(&ev->hook_q);
	events_delivered(ev, m, true);
	events_msg_unref(m);
	events_hook_next(ev);
}

static void events_hook_timer(void *userdata)
{
	events_hook_next(userdata);
}

static void events_hook_next(struct events *ev)
{
	const char *url = ev->config->notify.webhook;
	const char *protocols = "https";
	struct url_info info;
	struct events_msg *m;

	if (ev->hook_running || loop_timer_armed(ev->hook_timer) || !ev->hook_q.n ||
	    ev->restoring)
		return;
	if (!url) {
		/* A reload removed the webhook. */
		while ((m = events_ring_pop(&ev->hook_q))) {
			events_delivered(ev, m, true);
			events_msg_unref(m);
		}
		return;
	}
	m = ev->hook_q.items[ev->hook_q.head];
	ev->easy = curl_easy_init();
	if (!ev->easy)
		log_oom();
	if (ev->config->api.allow_insecure_http ||
	    (url_inspect(url, &info) == 0 && info.host == URL_LOOPBACK))
		protocols = "http,https";
	/* Its own handle and headers: nothing of the API's request (the
	 * Authorization header) can reach it. */
	(void)curl_easy_setopt(ev->easy, CURLOPT_URL, url);
	(void)curl_easy_setopt(ev->easy, CURLOPT_NOSIGNAL, 1L);
	(void)curl_easy_setopt(ev->easy, CURLOPT_PROTOCOLS_STR, protocols);
	(void)curl_easy_setopt(ev->easy, CURLOPT_FOLLOWLOCATION, 0L);
	(void)curl_easy_setopt(ev->easy, CURLOPT_OPENSOCKETFUNCTION, events_open_socket);
	(void)curl_easy_setopt(ev->easy, CURLOPT_OPENSOCKETDATA, ev);
	(void)curl_easy_setopt(ev->easy, CURLOPT_TIMEOUT_MS, (long)EVENTS_HOOK_TIMEOUT_MS);
	(void)curl_easy_setopt(ev->easy, CURLOPT_USERAGENT, "seedreamd/" SEEDREAMD_VERSION);
	(void)curl_easy_setopt(ev->easy, CURLOPT_HTTPHEADER, ev->headers);
	(void)curl_easy_setopt(ev->easy, CURLOPT_POSTFIELDS, m->body);
	(void)curl_easy_setopt(ev->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(m->body));
	(void)curl_easy_setopt(ev->easy, CURLOPT_WRITEFUNCTION, events_discard);
	if (http_start(ev->http, ev->easy, events_hook_done, ev) < 0) {
		curl_easy_cleanup(ev->easy);
		ev->easy = NULL;
		(void)loop_timer_arm(ev->hook_timer, EVENTS_HOOK_BACKOFF_MS);
		return;
	}
	ev->hook_running = true;
}

/* ---- the command ------------------------------------------------------- */

static void events_child_log_line(struct events_child *c)
{
	char *line;

	c->line[c->line_len] = '\0';
	c->line_len = 0;
	if (c->lines == EVENTS_LINES_MAX)
		log_info("notify: command (event %s, pid %d): more output, not logged",
			 c->msg->kind, (int)c->pid);
	if (c->lines++ >= EVENTS_LINES_MAX)
		return;
	line = clean_text(c->line, EVENTS_LINE_MAX, c->ev->secret);
	if (!line)
		log_oom();
	log_info("notify: command (event %s, pid %d): %s", c->msg->kind, (int)c->pid, line);
	free(line);
}

/* Reads what is there, up to EVENTS_READ_MAX (a command that writes without
 * end must not hold the loop); false at the end of the output. */
static bool events_child_read(struct events_child *c)
{
	char buf[4096];
	size_t budget = EVENTS_READ_MAX;
	ssize_t n;

	for (;;) {
		if (!budget)
			return true; /* the rest at the next wake-up */
		n = read(c->out_fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return true;
		if (n <= 0)
			break;
		budget -= (size_t)n < budget ? (size_t)n : budget;
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n') {
				events_child_log_line(c);
				continue;
			}
			/* A long line is logged in pieces. */
			if (c->line_len + 1 >= sizeof(c->line))
				events_child_log_line(c);
			c->line[c->line_len++] = buf[i];
		}
	}
	if (c->line_len)
		events_child_log_line(c);
	return false;
}

static void events_child_close_output(struct events_child *c)
{
	loop_remove(c->ev->loop, c->out_src);
	c->out_src = NULL;
	if (c->out_fd >= 0)
		close(c->out_fd);
	c->out_fd = -1;
}

static void events_child_output(int fd, uint32_t events, void *userdata)
{
	struct events_child *c = userdata;

	(void)fd;
	(void)events;
	if (!events_child_read(c))
		events_child_close_output(c);
}

static void events_child_free(struct events_child *c)
{
	struct events *ev = c->ev;

	for (struct events_child **p = &ev->children; *p; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			break;
		}
	}
	ev->n_children--;
	events_child_close_output(c);
	loop_remove(ev->loop, c->pid_src);
	if (c->pidfd >= 0)
		close(c->pidfd);
	loop_timer_free(ev->loop, c->timer);
	events_msg_unref(c->msg);
	free(c);
}

/* ---- what a command left behind ---------------------------------------- */

static void events_group_free(struct events_group *g)
{
	struct events *ev = g->ev;

	for (struct events_group **p = &ev->groups; *p; p = &(*p)->next) {
		if (*p == g) {
			*p = g->next;
			break;
		}
	}
	loop_timer_free(ev->loop, g->timer);
	free(g);
}

static void events_group_timeout(void *userdata)
{
	struct events_group *g = userdata;

	/* The group outlives its members only while one is left; a pgid is
	 * not handed out again while its group exists. */
	if (kill(-g->pgid, 0) == 0 || errno != ESRCH) {
		log_warn("notify: processes of command group %d ignored SIGTERM: sending SIGKILL",
			 (int)g->pgid);
		(void)kill(-g->pgid, SIGKILL);
	}
	events_group_free(g);
}

/* The leader of pgid ended (reaped): what it started in its group (a
 * `sleep &`) goes too, as the command is bounded in time. */
static void events_group_end(struct events *ev, pid_t pgid, const char *kind)
{
	struct events_group *g;

	if (kill(-pgid, 0) < 0 && errno == ESRCH)
		return; /* nothing left */
	log_info("notify: command (event %s, pid %d) left processes running: sending SIGTERM to "
		 "its process group",
		 kind, (int)pgid);
	(void)kill(-pgid, SIGTERM);
	g = calloc(1, sizeof(*g));
	if (!g)
		log_oom();
	g->ev = ev;
	g->pgid = pgid;
	if (ev->stopping || loop_timer_new(ev->loop, events_group_timeout, g, &g->timer) < 0 ||
	    loop_timer_arm(g->timer, EVENTS_GROUP_GRACE_MS) < 0) {
		/* No timer (or no time left): no grace either. */
		(void)kill(-pgid, SIGKILL);
		loop_timer_free(ev->loop, g->timer);
		free(g);
		return;
	}
	g->next = ev->groups;
	ev->groups = g;
}

/* The pidfd is readable: the process ended. */
static void events_child_exited(int fd, uint32_t events, void *userdata)
{
	struct events_child *c = userdata;
	struct events *ev = c->ev;
	int status = 0;
	pid_t r;

	(void)fd;
	(void)events;
	do
		r = waitpid(c->pid, &status, WNOHANG);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		return; /* not yet (spurious) */
	/* What it wrote before it ended; a descendant that keeps the pipe
	 * open is not waited for. */
	if (c->out_fd >= 0)
		(void)events_child_read(c);
	if (r < 0)
		log_warn("notify: command (event %s, pid %d): cannot reap it: %s", c->msg->kind,
			 (int)c->pid, strerror(errno));
	else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		log_debug("notify: command (event %s, pid %d) done", c->msg->kind, (int)c->pid);
	else if (WIFEXITED(status))
		log_warn("notify: command %s (event %s, pid %d) exited with status %d",
			 ev->config->notify.command ? ev->config->notify.command : "", c->msg->kind,
			 (int)c->pid, WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		log_warn("notify: command (event %s, pid %d) ended by signal %d%s", c->msg->kind,
			 (int)c->pid, WTERMSIG(status), c->term_sent ? " after its timeout" : "");
	events_group_end(ev, c->pid, c->msg->kind);
	events_delivered(ev, c->msg, false); /* it ran, whatever its status */
	events_child_free(c);
	events_cmd_next(ev);
}

static void events_child_timeout(void *userdata)
{
	struct events_child *c = userdata;
	struct events *ev = c->ev;

	/* Its own process group: a shell's children go with it. */
	if (!c->term_sent) {
		log_warn("notify: command (event %s, pid %d) still running after %llu ms: "
			 "sending SIGTERM",
			 c->msg->kind, (int)c->pid,
			 (unsigned long long)ev->config->notify.command_timeout_ms);
		c->term_sent = true;
		(void)kill(-c->pid, SIGTERM);
		(void)loop_timer_arm(c->timer, EVENTS_KILL_GRACE_MS);
		return;
	}
	log_warn("notify: command (event %s, pid %d) ignored SIGTERM: sending SIGKILL",
		 c->msg->kind, (int)c->pid);
	(void)kill(-c->pid, SIGKILL);
}

/* ---- spawning ---------------------------------------------------------- */

static bool events_env_named(const char *entry, const char *name)
{
	size_t len = name ? strlen(name) : 0;

	return len && !strncmp(entry, name, len) && entry[len] == '=';
}

/* Whether a variable of the daemon's environment stays out of a command's:
 * the key wherever it is (any name, any value holding it), every name the
 * key was read from, systemd's credentials, and stale SEEDREAMD_ ones. */
static bool events_env_secret(const struct events *ev, const char *entry)
{
	const char *value = strchr(entry, '=');

	if (!strncmp(entry, "SEEDREAMD_", 10) || events_env_named(entry, "SEEDREAM_API_KEY") ||
	    events_env_named(entry, "CREDENTIALS_DIRECTORY") ||
	    events_env_named(entry, ev->config->api.api_key_env))
		return true;
	for (size_t i = 0; i < EVENTS_KEY_NAMES_KEPT && ev->key_names[i]; i++)
		if (events_env_named(entry, ev->key_names[i]))
			return true;
	return value && ev->secret && ev->secret[0] && strstr(value + 1, ev->secret);
}

/* The daemon's environment without what events_env_secret names, then the
 * event's; copied, for a worker. */
static char **events_child_env(const struct events *ev, const struct events_msg *m)
{
	size_t n = 0, k = 0;
	char **env;

	for (char **e = environ; e && *e; e++)
		n++;
	for (char **e = m->env; *e; e++)
		n++;
	env = calloc(n + 1, sizeof(*env));
	if (!env)
		log_oom();
	for (char **e = environ; e && *e; e++) {
		if (events_env_secret(ev, *e))
			continue;
		if (!(env[k++] = strdup(*e)))
			log_oom();
	}
	for (char **e = m->env; *e; e++)
		if (!(env[k++] = strdup(*e)))
			log_oom();
	env[k] = NULL;
	return env;
}

static void events_spawn_req_free(struct events_spawn_req *req)
{
	for (char **e = req->env; e && *e; e++)
		free(*e);
	free(req->env);
	free(req->path);
	free(req);
}

/* On a worker: no logging, no events state. */
static void events_spawn_work(void *arg)
{
	struct events_spawn_req *req = arg;
	char *const argv[] = {req->path, NULL};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, deflt;
	int pipefd[2] = {-1, -1};

	req->pid = -1;
	req->pidfd = req->out_fd = -1;
	/* Only the loop's end is non-blocking: the two ends are separate open
	 * files, and the child's writes block as they would anywhere. */
	if (pipe2(pipefd, O_CLOEXEC) < 0 || fcntl(pipefd[0], F_SETFL, O_NONBLOCK) < 0) {
		req->r = -errno;
		if (pipefd[0] >= 0) {
			close(pipefd[0]);
			close(pipefd[1]);
		}
		return;
	}
	sigemptyset(&none);
	sigemptyset(&deflt);
	sigaddset(&deflt, SIGPIPE);
	sigaddset(&deflt, SIGTERM);
	sigaddset(&deflt, SIGINT);
	sigaddset(&deflt, SIGHUP);
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	(void)posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	(void)posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
	(void)posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
	/* The daemon blocks its signals (signalfd) and ignores SIGPIPE: the
	 * child starts with neither, in a process group of its own. */
	(void)posix_spawnattr_setsigmask(&attr, &none);
	(void)posix_spawnattr_setsigdefault(&attr, &deflt);
	(void)posix_spawnattr_setpgroup(&attr, 0);
	(void)posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
						  POSIX_SPAWN_SETPGROUP);
	req->r = -posix_spawn(&req->pid, argv[0], &fa, &attr, argv, req->env);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(pipefd[1]);
	if (req->r < 0) {
		close(pipefd[0]);
		req->pid = -1;
		return;
	}
	req->out_fd = pipefd[0];
	req->pidfd = (int)syscall(SYS_pidfd_open, req->pid, 0);
	if (req->pidfd < 0)
		req->r = -errno; /* the pid is there: the loop kills and reaps it */
}

/* Kills a spawned command that is not to be watched, and reaps it. */
static void events_spawn_kill(pid_t pid)
{
	(void)kill(-pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

/* On the loop thread: the spawn's outcome. */
static void events_spawn_done(void *arg, bool cancelled)
{
	struct events_spawn_req *req = arg;
	struct events_child *c = req->child;
	struct events *ev = c->ev;
	const char *path = req->path;
	int r = cancelled ? -ECANCELED : req->r;

	c->pid = req->pid;
	c->pidfd = req->pidfd;
	c->out_fd = req->out_fd;
	c->next = ev->children;
	ev->children = c;
	if (c->pid > 0 && (r < 0 || ev->stopping)) {
		/* Without a way to watch it, it is not left running unwatched. */
		if (!ev->stopping)
			log_warn("notify: command (event %s, pid %d) cannot be watched (%s): "
				 "killing it",
				 c->msg->kind, (int)c->pid, strerror(-r));
		events_spawn_kill(c->pid);
		c->pid = -1;
	} else if (r < 0 && !cancelled) {
		log_warn("notify: cannot run %s for event %s: %s", path, c->msg->kind,
			 strerror(-r));
	}
	if (r < 0 || ev->stopping || c->pid <= 0) {
		events_delivered(ev, c->msg, false); /* given up (kept when stopping) */
		events_child_free(c);
		events_spawn_req_free(req);
		if (!ev->stopping)
			events_cmd_next(ev);
		return;
	}
	if (loop_add(ev->loop, c->pidfd, EPOLLIN, events_child_exited, c, &c->pid_src) < 0 ||
	    loop_add(ev->loop, c->out_fd, EPOLLIN, events_child_output, c, &c->out_src) < 0 ||
	    loop_timer_new(ev->loop, events_child_timeout, c, &c->timer) < 0 ||
	    loop_timer_arm(c->timer, ev->config->notify.command_timeout_ms) < 0) {
		log_warn("notify: command (event %s, pid %d) cannot be watched: killing it",
			 c->msg->kind, (int)c->pid);
		events_spawn_kill(c->pid);
		events_delivered(ev, c->msg, false);
		events_child_free(c);
		events_spawn_req_free(req);
		events_cmd_next(ev);
		return;
	}
	log_debug("notify: command %s started for event %s (pid %d)", path, c->msg->kind,
		  (int)c->pid);
	events_spawn_req_free(req);
}

/* Takes m's reference. The command slot is taken until the spawn is
 * done and, if it started, until it ends. */
static int events_spawn(struct events *ev, struct events_msg *m)
{
	struct events_spawn_req *req;
	struct events_child *c;
	int r;

	if (!ev->spawn_pool) {
		r = work_pool_new_growing(ev->loop, 1, EVENTS_COMMANDS_AT_ONCE, &ev->spawn_pool);
		if (r < 0)
			return r;
	}
	req = calloc(1, sizeof(*req));
	c = calloc(1, sizeof(*c));
	if (!req || !c || !(req->path = strdup(ev->config->notify.command)))
		log_oom();
	c->ev = ev;
	c->msg = m;
	c->pid = -1;
	c->pidfd = c->out_fd = -1;
	req->child = c;
	req->pid = -1;
	req->pidfd = req->out_fd = -1;
	req->env = events_child_env(ev, m);
	r = work_submit(ev->spawn_pool, events_spawn_work, events_spawn_done, req);
	if (r < 0) {
		c->msg = NULL; /* the caller keeps the reference */
		free(c);
		events_spawn_req_free(req);
		return r;
	}
	ev->n_children++;
	return 0;
}
static void events_cmd_next(struct events *ev)
{
	struct events_msg *m;
	int r;

	while (!ev->stopping && !ev->restoring && ev->n_children < EVENTS_COMMANDS_AT_ONCE &&
	       (m = events_ring_pop(&ev->cmd_q))) {
		if (!ev->config->notify.command) {
			events_delivered(ev, m, false);
			events_msg_unref(m);
			continue;
		}
		r = events_spawn(ev, m);
		if (r < 0) {
			log_warn("notify: cannot run %s for event %s: %s",
				 ev->config->notify.command, m->kind, strerror(-r));
			events_delivered(ev, m, false);
			events_msg_unref(m);
		}
	}
}

/* ---- the daily summary ------------------------------------------------- */

static void events_roll(struct events *ev, int64_t now)
{
	if (now < ev->cur.day_end)
		return;
	ev->prev = ev->cur;
	ev->cur = (struct events_day){.day_end = sched_next_midnight(now)};
}

/* The next time the summary is due (epoch s), after now. */
static int64_t events_next_summary(unsigned minute, int64_t now)
{
	time_t t = (time_t)now, due;
	struct tm tm;

	if (!localtime_r(&t, &tm))
		return now + 86400;
	tm.tm_hour = (int)(minute / 60);
	tm.tm_min = (int)(minute % 60);
	tm.tm_sec = 0;
	tm.tm_isdst = -1;
	due = mktime(&tm);
	if (due <= t) {
		tm.tm_mday++;
		tm.tm_isdst = -1;
		due = mktime(&tm);
	}
	return (int64_t)due;
}

/* The last time the summary was due (epoch s), at or before now. */
static int64_t events_prev_summary(unsigned minute, int64_t now)
{
	time_t next = (time_t)events_next_summary(minute, now), due;
	struct tm tm;

	if (!localtime_r(&next, &tm))
		return now - 86400;
	tm.tm_mday--;
	tm.tm_isdst = -1;
	due = mktime(&tm);
	return (int64_t)due;
}

static void events_date_of(int64_t t, char date[EVENTS_STORE_DATE_LEN])
{
	time_t day = (time_t)t;
	struct tm tm;

	if (!localtime_r(&day, &tm) || !strftime(date, EVENTS_STORE_DATE_LEN, "%Y-%m-%d", &tm))
		date[0] = '\0';
}

/* The day a summary due at due is about: at midnight the day that ended,
 * later the day so far. */
static void events_summary_date(unsigned minute, int64_t due, char date[EVENTS_STORE_DATE_LEN])
{
	events_date_of(minute == 0 ? due - 43200 : due, date);
}

static void events_arm_summary(struct events *ev)
{
	int64_t now = loop_wall_ms() / 1000;
	int64_t due = events_next_summary(ev->config->notify.summary_minute, now);

	ev->summary_due = due;
	/* A second late rather than early: the day has ended by then. */
	(void)loop_timer_arm(ev->summary_timer, (uint64_t)(due - now) * 1000 + 1000);
}

/* The summary of d for date, unless one went out for that date already (the
 * date is kept in state_dir: a restart neither repeats nor loses it). */
static void events_summary_send(struct events *ev, const struct events_day *d, const char *date)
{
	char done[24], failed[24], images[24], cost[32];

	if (!(ev->config->notify.events & CONFIG_EVENT_DAILY_SUMMARY) || !date[0])
		return;
	if (ev->summarised[0] && events_store_date_ahead(ev->summarised, loop_wall_ms() / 1000)) {
		/* Sent while the clock was ahead: trusted, it would silence every
		 * summary until that day. */
		log_warn("notify: the last daily summary was for %s, a day still to come (the "
			 "clock was ahead?): sending the one for %s",
			 ev->summarised, date);
		ev->summarised[0] = '\0';
	}
	if (ev->summarised[0] && strcmp(date, ev->summarised) <= 0) {
		log_info("notify: the daily summary for %s was sent already", date);
		return;
	}
	(void)snprintf(done, sizeof(done), "%llu", (unsigned long long)d->done);
	(void)snprintf(failed, sizeof(failed), "%llu", (unsigned long long)d->failed);
	(void)snprintf(images, sizeof(images), "%llu", (unsigned long long)d->images);
	events_format_money(d->spent, cost, sizeof(cost));
	{
		const bool priced = ev->config->n_prices > 0;
		const struct events_field f[] = {
		    {"date", date, false},
		    {"done", done, true},
		    {"failed", failed, true},
		    {"images", images, true},
		    {"cost", priced ? cost : NULL, true},
		    {"currency", priced ? ev->config->currency : NULL, false},
		};
		(void)snprintf(ev->summarised, sizeof(ev->summarised), "%s", date);
		events_send(ev, CONFIG_EVENT_DAILY_SUMMARY,
			    events_msg_new(ev, "daily_summary", f, sizeof(f) / sizeof(f[0])));
	}
	events_persist(ev);
}

static void events_summary(void *userdata)
{
	struct events *ev = userdata;
	int64_t now = loop_wall_ms() / 1000, due = ev->summary_due;
	char date[EVENTS_STORE_DATE_LEN];

	if (now < due) {
		/* Early: the wall clock was set back since the timer was armed. */
		events_arm_summary(ev);
		return;
	}
	if (ev->restoring) {
		/* The day last summarised is not known yet ("" until the file is
		 * read): sent now, it could go out twice. Due still, it goes out
		 * when this fires again, unless the catch-up at the end of the
		 * load sent it (the date then says so). */
		(void)loop_timer_arm(ev->summary_timer, EVENTS_RESTORE_WAIT_MS);
		return;
	}
	events_roll(ev, now);
	events_summary_date(ev->config->notify.summary_minute, due, date);
	events_summary_send(ev, ev->config->notify.summary_minute == 0 ? &ev->prev : &ev->cur,
			    date);
	events_arm_summary(ev);
}

/* At start: a summary due while the daemon was not running goes out now (the
 * last one missed only), when state_dir says which was sent last. */
static void events_summary_catch_up(struct events *ev)
{
	unsigned minute = ev->config->notify.summary_minute;
	int64_t now = loop_wall_ms() / 1000;
	char date[EVENTS_STORE_DATE_LEN], today[EVENTS_STORE_DATE_LEN];

	if (!(ev->config->notify.events & CONFIG_EVENT_DAILY_SUMMARY) || !ev->summarised[0])
		return;
	events_summary_date(minute, events_prev_summary(minute, now), date);
	if (!date[0] || strcmp(date, ev->summarised) <= 0)
		return;
	events_roll(ev, now);
	events_date_of(now, today);
	log_info("notify: the daily summary for %s was not sent (the last was for %s): sending "
		 "it now",
		 date, ev->summarised);
	/* The day so far, or yesterday as its done records say. */
	events_summary_send(ev, strcmp(date, today) == 0 ? &ev->cur : &ev->prev, date);
}

/* ---- kept across restarts ---------------------------------------------- */

static const struct {
	const char *kind;
	unsigned bit;
} events_kinds[] = {
    {"file_failed", CONFIG_EVENT_FILE_FAILED}, {"paused", CONFIG_EVENT_PAUSED},
    {"resumed", CONFIG_EVENT_RESUMED},	       {"spend_limit", CONFIG_EVENT_SPEND_LIMIT},
    {"daily_summary", CONFIG_EVENT_DAILY_SUMMARY},
};

static unsigned events_kind_bit(const char *kind)
{
	for (size_t i = 0; i < sizeof(events_kinds) / sizeof(events_kinds[0]); i++)
		if (!strcmp(events_kinds[i].kind, kind))
			return events_kinds[i].bit;
	return 0;
}

/* The document for state_dir: the kept events (their fields borrowed). */
static char *events_snapshot(void *userdata)
{
	struct events *ev = userdata;
	struct events_store_state st;
	size_t n = 0;
	char *text;

	memset(&st, 0, sizeof(st));
	for (struct events_msg *m = ev->kept_head; m; m = m->kept_next)
		n++;
	if (n && !(st.events = calloc(n, sizeof(*st.events))))
		return NULL;
	memcpy(st.summarised, ev->summarised, sizeof(st.summarised));
	for (struct events_msg *m = ev->kept_head; m; m = m->kept_next) {
		struct events_store_event *e = &st.events[st.n_events++];

		memcpy(e->kind, m->kind, sizeof(e->kind));
		e->time = m->created;
		e->webhook = m->for_hook;
		e->command = m->for_cmd;
		e->fields = m->fields;
		e->n_fields = m->n_fields;
	}
	text = events_store_format(&st);
	free(st.events);
	return text;
}

static void events_store_error(void *userdata, int error)
{
	(void)userdata;
	if (error < 0)
		log_warn("notify: cannot write %s in state_dir (%s): events waiting for delivery "
			 "would not survive a restart",
			 EVENTS_STORE_FILE, strerror(-error));
	else
		log_info("notify: %s in state_dir is written again", EVENTS_STORE_FILE);
}

/* Takes the ring's items out (their references with them), oldest first. */
static size_t events_ring_take(struct events_ring *q, struct events_msg **items)
{
	size_t n = 0;

	while (q->n)
		items[n++] = events_ring_pop(q);
	return n;
}

/* What state_dir kept, put ahead of what happened since the start. */
static void events_restored(void *userdata, struct events_store_loaded *l)
{
	struct events *ev = userdata;
	const struct notify_config *nc = &ev->config->notify;
	const char *dir = ev->config->state_dir ? ev->config->state_dir : "state_dir";
	struct events_msg *hooks[EVENTS_WEBHOOK_QUEUE], *cmds[EVENTS_COMMAND_QUEUE];
	struct events_msg *head = ev->kept_head, *tail = ev->kept_tail;
	int64_t now = (int64_t)time(NULL);
	size_t n_hooks, n_cmds, old = 0, restored = 0, unwanted = 0;

	if (ev->stopping)
		return; /* events_free: the file stays as it is */
	if (l->read_error == -ENOMEM)
		log_oom();
	if (l->damaged)
		log_warn("notify: %s/%s does not read (%s; %zu event(s) read, %zu not): %s", dir,
			 EVENTS_STORE_FILE, l->read_error ? strerror(-l->read_error) : "damaged",
			 l->state.n_events, l->bad,
			 l->aside_error ? "it could not be kept aside" : "kept as " EVENTS_STORE_BAD);
	if (l->damaged && l->aside_error)
		log_warn("notify: cannot rename %s/%s to %s: %s; it is left as it is (not "
			 "written until the next start): events waiting for delivery would not "
			 "survive a restart",
			 dir, EVENTS_STORE_FILE, EVENTS_STORE_BAD, strerror(-l->aside_error));
	if (l->state.summarised[0] && events_store_date_ahead(l->state.summarised, now))
		log_warn("notify: %s/%s says the last daily summary was for %s, a day still to "
			 "come (was the clock ahead?): ignored",
			 dir, EVENTS_STORE_FILE, l->state.summarised);
	else if (l->state.summarised[0] && strcmp(l->state.summarised, ev->summarised) > 0)
		memcpy(ev->summarised, l->state.summarised, sizeof(ev->summarised));
	n_hooks = events_ring_take(&ev->hook_q, hooks);
	n_cmds = events_ring_take(&ev->cmd_q, cmds);
	ev->kept_head = ev->kept_tail = NULL;
	for (size_t i = 0; i < l->state.n_events; i++) {
		const struct events_store_event *e = &l->state.events[i];
		unsigned bit = events_kind_bit(e->kind);
		bool hook = e->webhook && nc->webhook && (nc->events & bit);
		bool cmd = e->command && nc->command && (nc->events & bit);
		struct events_field f[EVENTS_STORE_FIELDS_MAX];
		struct events_msg *m;

		if (e->time < now - EVENTS_KEPT_MAX_AGE_S) {
			if (!old++)
				log_warn("notify: event %s of %lld s ago, kept from before the "
					 "restart, is older than %d h: dropped",
					 e->kind, (long long)(now - e->time),
					 EVENTS_KEPT_MAX_AGE_S / 3600);
			continue;
		}
		if (!hook && !cmd) {
			unwanted++;
			continue;
		}
		for (size_t k = 0; k < e->n_fields; k++)
			f[k] = (struct events_field){e->fields[k].name, e->fields[k].text,
						     e->fields[k].number};
		m = events_msg_build(ev, e->kind, e->time, f, e->n_fields);
		m->refs = 1;
		if (hook)
			events_ring_push(ev, &ev->hook_q, m, false, true);
		if (cmd)
			events_ring_push(ev, &ev->cmd_q, m, false, false);
		events_msg_unref(m);
		restored++;
	}
	/* Then what happened meanwhile, after them. */
	if (head) {
		head->kept_prev = ev->kept_tail;
		if (ev->kept_tail)
			ev->kept_tail->kept_next = head;
		else
			ev->kept_head = head;
		ev->kept_tail = tail;
	}
	for (size_t i = 0; i < n_hooks; i++) {
		events_ring_push(ev, &ev->hook_q, hooks[i], false, true);
		events_msg_unref(hooks[i]);
	}
	for (size_t i = 0; i < n_cmds; i++) {
		events_ring_push(ev, &ev->cmd_q, cmds[i], false, false);
		events_msg_unref(cmds[i]);
	}
	ev->restoring = false;
	if (old > 1)
		log_warn("notify: %zu event(s) kept from before the restart were older than %d h: "
			 "dropped",
			 old, EVENTS_KEPT_MAX_AGE_S / 3600);
	if (unwanted)
		log_info("notify: %zu event(s) kept from before the restart are no longer asked "
			 "for (notify: changed): dropped",
			 unwanted);
	if (restored)
		log_info("notify: %zu event(s) kept from before the restart are delivered now",
			 restored);
	/* Always written once: what was dropped or unreadable goes from the file. */
	events_persist(ev);
	events_hook_next(ev);
	events_cmd_next(ev);
	events_summary_catch_up(ev);
}

/* ---- the public side --------------------------------------------------- */

/* Remembers a variable name (its first len bytes; 0: all of it). */
static void events_keep_key_name(struct events *ev, const char *name, size_t len)
{
	size_t i;

	if (!name)
		return;
	if (!len)
		len = strlen(name);
	for (i = 0; i < EVENTS_KEY_NAMES_KEPT && ev->key_names[i]; i++)
		if (strlen(ev->key_names[i]) == len && !strncmp(ev->key_names[i], name, len))
			return;
	if (i == EVENTS_KEY_NAMES_KEPT) {
		/* The oldest name goes: the key's value is dropped anyway. */
		free(ev->key_names[0]);
		memmove(&ev->key_names[0], &ev->key_names[1],
			(EVENTS_KEY_NAMES_KEPT - 1) * sizeof(ev->key_names[0]));
		i = EVENTS_KEY_NAMES_KEPT - 1;
	}
	if (!(ev->key_names[i] = strndup(name, len)))
		log_oom();
}

void events_set_config(struct events *ev, const struct config *config, const char *secret)
{
	char *copy = secret ? strdup(secret) : NULL;

	if (!ev)
		return;
	if (secret && !copy)
		log_oom();
	if (ev->secret) {
		explicit_bzero(ev->secret, strlen(ev->secret));
		free(ev->secret);
	}
	ev->secret = copy;
	ev->config = config;
	events_keep_key_name(ev, config->api.api_key_env, 0);
	for (char **e = environ; copy && copy[0] && e && *e; e++) {
		const char *value = strchr(*e, '=');

		if (value && strstr(value + 1, copy))
			events_keep_key_name(ev, *e, (size_t)(value - *e));
	}
	if (ev->summary_timer)
		events_arm_summary(ev);
	events_hook_next(ev);
	events_cmd_next(ev);
}

int events_new(struct loop *loop, struct http *http, const struct config *config,
	       const char *secret, struct events **ret_events)
{
	struct events *ev = calloc(1, sizeof(*ev));
	int r;

	if (!ev)
		return -ENOMEM;
	ev->loop = loop;
	ev->http = http;
	ev->config = config;
	ev->hook_q.cap = EVENTS_WEBHOOK_QUEUE;
	ev->cmd_q.cap = EVENTS_COMMAND_QUEUE;
	ev->headers = curl_slist_append(NULL, "Content-Type: application/json");
	if (!ev->headers) {
		free(ev);
		return -ENOMEM;
	}
	events_roll(ev, loop_wall_ms() / 1000);
	r = loop_timer_new(loop, events_hook_timer, ev, &ev->hook_timer);
	if (r >= 0)
		r = loop_timer_new(loop, events_summary, ev, &ev->summary_timer);
	if (r < 0) {
		events_free(ev);
		return r;
	}
	events_set_config(ev, config, secret);
	*ret_events = ev;
	return 0;
}

void events_free(struct events *ev)
{
	struct events_msg *m;

	if (!ev)
		return;
	/* Spawns under way end first (their completions see stopping and
	 * kill what they started). */
	ev->stopping = true;
	work_pool_free(ev->spawn_pool);
	/* Its last snapshot still has every event not delivered. */
	events_store_free(ev->store);
	while (ev->kept_head) {
		struct events_msg *k = ev->kept_head;

		ev->kept_head = k->kept_next;
		events_msg_unref(k);
	}
	events_hook_clear(ev);
	while ((m = events_ring_pop(&ev->hook_q)))
		events_msg_unref(m);
	while ((m = events_ring_pop(&ev->cmd_q)))
		events_msg_unref(m);
	while (ev->children) {
		struct events_child *c = ev->children;

		/* The daemon is ending: a hook still running does not outlive it. */
		(void)kill(-c->pid, SIGKILL);
		while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
			;
		events_child_free(c);
	}
	while (ev->groups) {
		(void)kill(-ev->groups->pgid, SIGKILL);
		events_group_free(ev->groups);
	}
	for (size_t i = 0; i < EVENTS_KEY_NAMES_KEPT; i++)
		free(ev->key_names[i]);
	loop_timer_free(ev->loop, ev->hook_timer);
	loop_timer_free(ev->loop, ev->summary_timer);
	curl_slist_free_all(ev->headers);
	if (ev->secret) {
		explicit_bzero(ev->secret, strlen(ev->secret));
		free(ev->secret);
	}
	free(ev);
}

void events_file_failed(struct events *ev, const char *folder, const char *file, long http_status,
			const char *code, const char *message)
{
	char status[24];

	if (!ev)
		return;
	events_roll(ev, loop_wall_ms() / 1000);
	ev->cur.failed++;
	(void)snprintf(status, sizeof(status), "%ld", http_status);
	{
		const struct events_field f[] = {
		    {"folder", folder, false},
		    {"file", file, false},
		    {"code", code, false},
		    {"message", message, false},
		    {"http_status", http_status > 0 ? status : NULL, true},
		};
		events_send(ev, CONFIG_EVENT_FILE_FAILED,
			    events_msg_new(ev, "file_failed", f, sizeof(f) / sizeof(f[0])));
	}
}

void events_paused(struct events *ev, const char *message)
{
	const struct events_field f[] = {{"message", message, false}};

	if (ev)
		events_send(ev, CONFIG_EVENT_PAUSED, events_msg_new(ev, "paused", f, 1));
}

void events_resumed(struct events *ev, const char *message)
{
	const struct events_field f[] = {{"message", message, false}};

	if (ev)
		events_send(ev, CONFIG_EVENT_RESUMED, events_msg_new(ev, "resumed", f, 1));
}

void events_limit_reached(struct events *ev, const char *limit, const char *folder,
			  const char *message, int64_t day_end)
{
	char key[256];

	if (!ev)
		return;
	(void)snprintf(key, sizeof(key), "%s\n%s", limit, folder ? folder : "");
	for (size_t i = 0; i < EVENTS_LIMITS_KEPT; i++)
		if (ev->limits[i].day_end == day_end && !strcmp(ev->limits[i].key, key))
			return; /* reported today already */
	memcpy(ev->limits[ev->next_limit].key, key, sizeof(key));
	ev->limits[ev->next_limit].day_end = day_end;
	ev->next_limit = (ev->next_limit + 1) % EVENTS_LIMITS_KEPT;
	{
		const struct events_field f[] = {
		    {"limit", limit, false},
		    {"folder", folder, false},
		    {"message", message, false},
		};
		events_send(ev, CONFIG_EVENT_SPEND_LIMIT,
			    events_msg_new(ev, "spend_limit", f, sizeof(f) / sizeof(f[0])));
	}
}

void events_file_done(struct events *ev)
{
	if (!ev)
		return;
	events_roll(ev, loop_wall_ms() / 1000);
	ev->cur.done++;
}

void events_paid(struct events *ev, uint64_t images, uint64_t micros)
{
	if (!ev)
		return;
	events_roll(ev, loop_wall_ms() / 1000);
	ev->cur.images = sched_add_sat(ev->cur.images, images);
	ev->cur.spent = sched_add_sat(ev->cur.spent, micros);
}

void events_count_earlier(struct events *ev, uint64_t images, uint64_t micros)
{
	events_paid(ev, images, micros);
}

void events_count_rebuilt(struct events *ev, const struct events_tally *today,
			  const struct events_tally *yesterday)
{
	if (!ev)
		return;
	events_roll(ev, loop_wall_ms() / 1000);
	ev->cur.done = sched_add_sat(ev->cur.done, today->done);
	ev->cur.failed = sched_add_sat(ev->cur.failed, today->failed);
	ev->cur.images = sched_add_sat(ev->cur.images, today->images);
	ev->cur.spent = sched_add_sat(ev->cur.spent, today->micros);
	ev->prev.done = sched_add_sat(ev->prev.done, yesterday->done);
	ev->prev.failed = sched_add_sat(ev->prev.failed, yesterday->failed);
	ev->prev.images = sched_add_sat(ev->prev.images, yesterday->images);
	ev->prev.spent = sched_add_sat(ev->prev.spent, yesterday->micros);
}

int events_restore(struct events *ev, const char *state_dir)
{
	int r;

	if (!ev || !state_dir || ev->store)
		return 0;
	r = events_store_new(ev->loop, state_dir, events_snapshot, events_store_error, ev,
			     &ev->store);
	if (r < 0)
		return r;
	ev->restoring = true;
	r = events_store_load(ev->store, events_restored);
	if (r < 0) {
		/* Not read: not written either, or it would be lost. */
		ev->restoring = false;
		events_store_free(ev->store);
		ev->store = NULL;
		events_hook_next(ev);
		events_cmd_next(ev);
	}
	return r;
}

unsigned events_pending(const struct events *ev)
{
	if (!ev)
		return 0;
	return (unsigned)(ev->hook_q.n + ev->cmd_q.n) + ev->n_children;
}
