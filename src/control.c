#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control_proto.h"
#include "index.h"
#include "log.h"
#include "schedule.h"
#include "sidecar.h"
#include "ledger.h"
#include "spend.h"
#include "work.h"

#define CONTROL_ACCEPT_BATCH 64	  /* accepts per wake-up: the loop's other sources get their turn */
#define CONTROL_SWEEP_MS     1000 /* how often idle clients are looked for */
#define CONTROL_MESSAGE_MAX  500  /* bytes of an error record's message shown */
#define CONTROL_LINES_A_TURN 4	  /* requests of one client answered per wake-up */
#define CONTROL_PEER_GROUPS  256  /* supplementary groups of a peer looked at */
/* failed and retry requests out on workers at once, those of clients gone
 * included: each copies every failed entry, so a flood must not pile them up. */
#define CONTROL_WORK_MAX 4
/* Room for a reply's items: the rest of it (counts, flags) is small. */
#define CONTROL_ITEMS_BUDGET (CONTROL_REPLY_MAX - 4096)

struct control_work;

struct control_client {
	struct control *ctl;
	int fd;
	struct loop_source *source;
	uid_t uid;
	char *in; /* CONTROL_LINE_MAX bytes */
	size_t in_len;
	char *out; /* the reply being written */
	size_t out_len, out_off;
	bool closing;		   /* drop once the reply is out */
	bool eof;		   /* the peer sent all it will */
	bool dead;		   /* the connection failed: freed by client_settle */
	struct control_work *work; /* the request out on the worker */
	uint64_t deadline;	   /* monotonic ms; 0 while a worker has its request */
	struct control_client *prev, *next;
};

struct control {
	struct control_env env; /* env.state_dir points at state_dir below */
	char *state_dir;	/* our copy: a reload frees the configuration it came from */
	char *path;
	int fd;
	dev_t dev; /* the socket file we bound: removed at exit only if still ours */
	ino_t ino;
	struct loop_source *source;
	struct loop_timer *sweep;
	struct work_pool *pool; /* error records read and removed: storage may hang */
	struct control_client *clients;
	size_t n_clients;
	size_t n_work;		 /* failed and retry requests on workers, until their done */
	bool accept_off;	 /* out of descriptors: the listener rests until the next sweep */
	bool saving, save_again; /* the pauses' file: one write at a time, the latest state last */
};

#define CONTROL_PAUSES_FILE "paused.json"
#define CONTROL_PAUSES_MAX  (1024 * 1024)

/* ---- the socket's path ------------------------------------------------ */

int control_socket_path(const struct config *config, char *buf, size_t len)
{
	const char *dir = getenv("RUNTIME_DIRECTORY");
	int n;

	if (config->control_socket_off) {
		buf[0] = '\0';
		return 0;
	}
	if (config->control_socket)
		n = snprintf(buf, len, "%s", config->control_socket);
	else if (dir && dir[0] == '/') /* systemd may list several, ':'-separated: ours is first */
		n = snprintf(buf, len, "%.*s/control", (int)strcspn(dir, ":"), dir);
	else
		n = snprintf(buf, len, "%s/control", CONTROL_DEFAULT_DIR);
	if (n < 0 || (size_t)n >= len || (size_t)n >= CONFIG_SOCKET_PATH_MAX)
		return -ENAMETOOLONG;
	return 0;
}

/* ---- clients ------------------------------------------------------------ */

struct control_file {
	char *folder;  /* the watched folder's path */
	char *rel;     /* the source, relative to it */
	char *sidecar; /* the error record's full path */
	char *source;  /* the source's full path (retry) */
	bool follow;   /* follow_symlinks (retry) */
	bool group;    /* rel is a subfolder of a group: subfolder folder (retry) */
	/* Filled by the worker. */
	int r; /* 0, or -errno of the read (failed) or the removal (retry) */
	struct stat st;
	int stat_r;
	long http_status;
	char *code, *message, *request_id, *failed_at;
};

struct control_work {
	struct control *ctl;
	struct control_client *client; /* NULL once it went away */
	enum control_cmd cmd;
	struct control_file *files;
	size_t n, cap;
	size_t limit;  /* failed: records copied at most (-n) */
	size_t total;  /* failed records found (failed: beyond limit too) */
	cJSON *errors; /* retry: files refused on the loop before the worker */
};

static void client_free(struct control_client *c)
{
	struct control *ctl = c->ctl;

	if (c->work)
		c->work->client = NULL; /* its done frees it */
	loop_remove(ctl->env.loop, c->source);
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		ctl->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	ctl->n_clients--;
	free(c->in);
	free(c->out);
	free(c);
}

static bool client_has_line(const struct control_client *c)
{
	return memchr(c->in, '\n', c->in_len) != NULL;
}

/* What to wait for: the reply's room, the next request, or nothing while a
 * worker has the request (a client cannot queue requests up). A line already
 * read waits for the next wake-up (EPOLLOUT fires at once on a socket with
 * room): pipelined requests cannot hold the loop. */
static void client_rearm(struct control_client *c)
{
	uint32_t events = 0;

	if (c->out || (!c->work && client_has_line(c)))
		events = EPOLLOUT;
	else if (!c->work && !c->eof)
		events = EPOLLIN;
	(void)loop_modify(c->ctl->env.loop, c->source, events);
}

/* One non-blocking send (sending) or recv on the client's socket, again
 * after EINTR: the bytes moved, 0 when the socket has no room or nothing to
 * read now, -1 when it failed or (recv) reached the end. */
static ssize_t client_transfer(const struct control_client *c, bool sending, char *buf, size_t len)
{
	for (;;) {
		ssize_t n = sending ? send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT)
				    : recv(c->fd, buf, len, MSG_DONTWAIT);
		if (n > 0)
			return n;
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 && errno == EAGAIN ? 0 : -1;
	}
}

/* Writes what the socket takes now. */
static void client_flush(struct control_client *c)
{
	while (c->out && !c->dead) {
		ssize_t n = client_transfer(c, true, c->out + c->out_off, c->out_len - c->out_off);
		if (n == 0)
			break;
		if (n < 0) {
			c->dead = true;
			break;
		}
		c->out_off += (size_t)n;
		c->deadline = loop_now_ms() + CONTROL_IDLE_MS;
		if (c->out_off == c->out_len) {
			free(c->out);
			c->out = NULL;
			c->out_len = c->out_off = 0;
		}
	}
}

/* After anything happened to a client: drops it when it failed, was told to
 * go, or has sent all it will and has been answered; else waits for what
 * comes next. Every way into a client ends here, so nothing below frees one. */
static void client_settle(struct control_client *c)
{
	if (c->dead || (!c->out && !c->work && (c->closing || (c->eof && !client_has_line(c))))) {
		client_free(c);
		return;
	}
	client_rearm(c);
}

/* Queues the reply and writes what fits; takes reply. */
static void client_reply(struct control_client *c, cJSON *reply)
{
	if (!reply)
		log_oom();
	c->out = control_reply_line(reply, &c->out_len);
	cJSON_Delete(reply);
	if (!c->out)
		log_oom();
	c->out_off = 0;
	c->deadline = loop_now_ms() + CONTROL_IDLE_MS;
	client_flush(c);
}

static void client_error(struct control_client *c, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void client_error(struct control_client *c, const char *code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	client_reply(c, control_reply_error(code, msg));
}

static void client_process(struct control_client *c);

/* ---- looking things up -------------------------------------------------- */

static struct folder *find_folder(const struct control_env *env, const char *path)
{
	for (size_t i = 0; i < *env->n_folders; i++) {
		struct folder *f = (*env->folders)[i];
		if (!f->removed && strcmp(f->cfg->path, path) == 0)
			return f;
	}
	return NULL;
}

/* The folder a source path is in (the longest match), and the rest of it. */
static struct folder *find_source(const struct control_env *env, const char *path,
				  const char **ret_rel)
{
	struct folder *best = NULL;
	size_t best_len = 0;

	for (size_t i = 0; i < *env->n_folders; i++) {
		struct folder *f = (*env->folders)[i];
		size_t len = strlen(f->cfg->path);
		if (f->removed || strncmp(path, f->cfg->path, len) != 0 || path[len] != '/' ||
		    !path[len + 1] || len < best_len)
			continue;
		best = f;
		best_len = len;
	}
	if (best)
		*ret_rel = path + best_len + 1;
	return best;
}

/* false (with the error sent) when the request names a folder not watched. */
static bool folder_arg(struct control_client *c, const struct control_request *req,
		       struct folder **ret)
{
	*ret = NULL;
	if (!req->folder)
		return true;
	*ret = find_folder(&c->ctl->env, req->folder);
	if (*ret)
		return true;
	client_error(c, CONTROL_E_NO_FOLDER, "%s is not a watched folder", req->folder);
	return false;
}

static cJSON *add_obj(cJSON *array)
{
	cJSON *o = cJSON_CreateObject();

	if (!o || !cJSON_AddItemToArray(array, o))
		log_oom();
	return o;
}

static void add_str(cJSON *o, const char *key, const char *value)
{
	if (!sidecar_add_string(o, key, value))
		log_oom();
}

static void add_num(cJSON *o, const char *key, double value)
{
	if (!cJSON_AddNumberToObject(o, key, value))
		log_oom();
}

static void add_bool(cJSON *o, const char *key, bool value)
{
	if (!cJSON_AddBoolToObject(o, key, value))
		log_oom();
}

static cJSON *add_array(cJSON *o, const char *key)
{
	cJSON *a = cJSON_AddArrayToObject(o, key);

	if (!a)
		log_oom();
	return a;
}

static void add_time(cJSON *o, const char *key, int64_t epoch_s)
{
	char buf[64];

	if (epoch_s > 0 && sidecar_format_time(epoch_s, -1, buf, sizeof(buf)) == 0)
		add_str(o, key, buf);
	else if (!cJSON_AddNullToObject(o, key))
		log_oom();
}

/* ---- status ------------------------------------------------------------- */

struct folder_tally {
	const struct folder *folder;
	size_t settling, queued, waiting, in_flight, twin;
};

struct status_walk {
	struct folder_tally *tally;
	size_t n;
	const struct jobs_item *oldest; /* not kept past the walk: copied below */
	char *oldest_folder, *oldest_rel;
	uint64_t oldest_seen;
};

static void status_job(const struct jobs_item *item, void *userdata)
{
	struct status_walk *w = userdata;

	for (size_t i = 0; i < w->n; i++) {
		struct folder_tally *t = &w->tally[i];
		if (t->folder != item->folder)
			continue;
		switch (item->kind) {
		case JOBS_ITEM_SETTLING:
			t->settling++;
			break;
		case JOBS_ITEM_QUEUED:
			t->queued++;
			break;
		case JOBS_ITEM_WAITING:
			t->waiting++;
			break;
		case JOBS_ITEM_IN_FLIGHT:
			t->in_flight++;
			break;
		case JOBS_ITEM_TWIN:
			t->twin++;
			break;
		}
	}
	if (item->kind != JOBS_ITEM_IN_FLIGHT &&
	    (!w->oldest_rel || item->first_seen_ms < w->oldest_seen)) {
		free(w->oldest_rel);
		w->oldest_folder = item->folder->cfg->path; /* lives while the walk does */
		w->oldest_rel = strdup(item->rel);
		if (!w->oldest_rel)
			log_oom();
		w->oldest_seen = item->first_seen_ms;
	}
}

struct paid_count {
	int64_t day_start, month_start;
	uint64_t today, month, month_cost;
	const struct config *config;
};

static void count_paid(const struct index_entry *e, void *userdata)
{
	struct paid_count *p = userdata;
	/* As the daily limit counts them (spend.h): paid failures too. */
	uint64_t images = spend_entry_images(e);
	int64_t paid_at = spend_entry_paid_at(e);

	if (paid_at >= p->month_start) {
		p->month = sched_add_sat(p->month, images);
		p->month_cost = sched_add_sat(p->month_cost, spend_entry_cost(p->config, e));
	}
	if (paid_at >= p->day_start)
		p->today = sched_add_sat(p->today, images);
}

static void count_ledger_paid(const struct ledger_entry *e, void *userdata)
{
	struct paid_count *p = userdata;
	int64_t paid_at = e->paid_ms / 1000;

	if (paid_at >= p->month_start) {
		p->month = sched_add_sat(p->month, e->images);
		p->month_cost = sched_add_sat(
		    p->month_cost, sched_mul_sat(e->images, spend_price_of(p->config, e->model)));
	}
	if (paid_at >= p->day_start)
		p->today = sched_add_sat(p->today, e->images);
}

/* The estimated cost (price_per_image), when a price is known: today's as the
 * daily limit counts it (this run's answers at the price of the model that
 * answered, earlier ones at the price of the model their records name), this
 * month's from the done records, each at its model's price. */
static void add_spend(const struct control_env *env, cJSON *o, uint64_t month_cost)
{
	const struct config *config = *env->config;
	uint64_t price;
	cJSON *spend;

	if (config_price_of(config, config->api.model, &price) < 0)
		return;
	spend = cJSON_AddObjectToObject(o, "spend");
	if (!spend)
		log_oom();
	add_str(spend, "currency", config->currency ? config->currency : "");
	add_num(spend, "price_per_image", (double)price / CONFIG_MICROS);
	add_num(spend, "today", (double)jobs_spent_today(env->jobs) / CONFIG_MICROS);
	add_num(spend, "this_month", (double)month_cost / CONFIG_MICROS);
	add_num(spend, "max_per_day", (double)config->max_spend_per_day / CONFIG_MICROS);
}

/* Local midnight today and on the first of the month. */
static void local_starts(int64_t now, int64_t *ret_day, int64_t *ret_month)
{
	time_t t = (time_t)now;
	struct tm tm;

	*ret_day = *ret_month = now;
	if (!localtime_r(&t, &tm))
		return;
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	tm.tm_isdst = -1;
	*ret_day = (int64_t)mktime(&tm);
	tm.tm_mday = 1;
	tm.tm_isdst = -1;
	*ret_month = (int64_t)mktime(&tm);
}

static void folder_reasons(const struct control_env *env, const struct folder *f, cJSON *o)
{
	cJSON *why = add_array(o, "pause_reasons");
	uint64_t now = loop_now_ms();
	char buf[600];
	bool paused = false;

	if (f->user_paused || jobs_user_paused(env->jobs)) {
		paused = true;
		if (!cJSON_AddItemToArray(
			why,
			cJSON_CreateString(f->user_paused ? "paused by seedreamctl"
							  : "all folders paused by seedreamctl")))
			log_oom();
	}
	if (!f->present) {
		paused = true;
		(void)snprintf(buf, sizeof(buf), "%s",
			       f->pause_reason[0] ? f->pause_reason : "missing");
		if (!cJSON_AddItemToArray(why, cJSON_CreateString(buf)))
			log_oom();
	}
	if (f->storage_stalled_since || f->look_stalled_since) {
		uint64_t since =
		    f->storage_stalled_since ? f->storage_stalled_since : f->look_stalled_since;
		paused = true;
		(void)snprintf(buf, sizeof(buf), "storage not answering for %llu s",
			       (unsigned long long)(now - since) / 1000);
		if (!cJSON_AddItemToArray(why, cJSON_CreateString(buf)))
			log_oom();
	}
	if (f->storage_holds) {
		paused = true;
		if (!cJSON_AddItemToArray(why, cJSON_CreateString("output does not take writes")))
			log_oom();
	}
	add_bool(o, "paused", paused);
}

static void add_reason(cJSON *o, const char *key, const char *reason)
{
	if (reason)
		add_str(o, key, reason);
	else if (!cJSON_AddNullToObject(o, key))
		log_oom();
}

cJSON *control_status_json(const struct control_env *env)
{
	struct status_walk w = {0};
	struct paid_count paid = {0};
	struct jobs_counts c;
	cJSON *o = control_reply_ok(), *totals, *images, *folders, *oldest;

	if (!o)
		return NULL;
	jobs_counts(env->jobs, &c);
	w.tally = calloc(*env->n_folders + 1, sizeof(*w.tally));
	if (!w.tally)
		log_oom();
	for (size_t i = 0; i < *env->n_folders; i++)
		if (!(*env->folders)[i]->removed)
			w.tally[w.n++].folder = (*env->folders)[i];
	jobs_foreach(env->jobs, status_job, &w);

	add_str(o, "version", SEEDREAMD_VERSION);
	add_num(o, "pid", (double)getpid());
	add_bool(o, "stopping", *env->stopping);
	add_bool(o, "paused", jobs_user_paused(env->jobs));
	add_reason(o, "api_pause_reason", c.pause_reason);
	add_reason(o, "limit_reason", c.limit_reason);
	add_reason(o, "disk_reason", c.disk_reason);
	add_reason(o, "storage_reason", c.storage_reason);

	totals = cJSON_AddObjectToObject(o, "totals");
	if (!totals)
		log_oom();
	add_num(totals, "settling", (double)c.settling);
	add_num(totals, "queued", (double)(c.queued + c.fitting));
	add_num(totals, "waiting", (double)c.waiting);
	add_num(totals, "in_flight", (double)c.in_flight);
	add_num(totals, "twin", (double)c.twins);
	add_num(totals, "done", (double)c.done);
	add_num(totals, "failed", (double)c.failed);
	add_num(totals, "skipped", (double)c.skipped);

	/* From the done records in memory: this run's results and earlier ones. */
	local_starts(loop_wall_ms() / 1000, &paid.day_start, &paid.month_start);
	paid.config = *env->config;
	if (jobs_ledger(env->jobs))
		/* Every payment, its record deleted (a retry) or not. */
		ledger_foreach(jobs_ledger(env->jobs), count_ledger_paid, &paid);
	else
		for (size_t i = 0; i < w.n; i++)
			index_foreach(w.tally[i].folder->index, count_paid, &paid);
	images = cJSON_AddObjectToObject(o, "images_paid");
	if (!images)
		log_oom();
	add_num(images, "today", (double)paid.today);
	add_num(images, "this_month", (double)paid.month);
	add_spend(env, o, paid.month_cost);

	if (w.oldest_rel) {
		oldest = cJSON_AddObjectToObject(o, "oldest_pending");
		if (!oldest)
			log_oom();
		add_str(oldest, "folder", w.oldest_folder);
		add_str(oldest, "file", w.oldest_rel);
		add_num(oldest, "age_s", (double)((loop_now_ms() - w.oldest_seen) / 1000));
	} else if (!cJSON_AddNullToObject(o, "oldest_pending")) {
		log_oom();
	}

	folders = add_array(o, "folders");
	for (size_t i = 0; i < w.n; i++) {
		const struct folder_tally *t = &w.tally[i];
		cJSON *fo = add_obj(folders);
		add_str(fo, "path", t->folder->cfg->path);
		add_str(fo, "output", t->folder->cfg->output);
		add_num(fo, "settling", (double)t->settling);
		add_num(fo, "queued", (double)t->queued);
		add_num(fo, "waiting", (double)t->waiting);
		add_num(fo, "in_flight", (double)t->in_flight);
		add_num(fo, "twin", (double)t->twin);
		add_num(fo, "done", (double)t->folder->run_done);
		add_num(fo, "failed", (double)t->folder->run_failed);
		add_bool(fo, "user_paused", t->folder->user_paused);
		folder_reasons(env, t->folder, fo);
	}
	free(w.oldest_rel);
	free(w.tally);
	return o;
}

/* ---- queue and history -------------------------------------------------- */

struct queue_row {
	const char *folder;
	char *rel;
	const char *state;
	enum jobs_item_kind kind;
	uint64_t seen;
	unsigned attempts;
};

struct queue_walk {
	const struct folder *only; /* --folder: the rows and the total are its own */
	struct queue_row *rows;
	size_t n, cap, total;
};

static void queue_job(const struct jobs_item *item, void *userdata)
{
	struct queue_walk *w = userdata;
	struct queue_row *row;

	if (w->only && w->only != item->folder)
		return;
	w->total++;
	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 64;
		struct queue_row *rows = reallocarray(w->rows, cap, sizeof(*rows));
		if (!rows)
			log_oom();
		w->rows = rows;
		w->cap = cap;
	}
	row = &w->rows[w->n++];
	row->folder = item->folder->cfg->path;
	row->rel = strdup(item->rel);
	if (!row->rel)
		log_oom();
	row->state = item->state;
	row->kind = item->kind;
	row->seen = item->first_seen_ms;
	row->attempts = item->attempts;
}

static int queue_row_cmp(const void *a, const void *b)
{
	const struct queue_row *x = a, *y = b;

	return (x->seen > y->seen) - (x->seen < y->seen);
}

static cJSON *queue_json(const struct control_env *env, const struct folder *only)
{
	static const char *const kinds[] = {
	    [JOBS_ITEM_SETTLING] = "settling",
	    [JOBS_ITEM_QUEUED] = "queued",
	    [JOBS_ITEM_WAITING] = "waiting",
	    [JOBS_ITEM_IN_FLIGHT] = "in_flight",
	    [JOBS_ITEM_TWIN] = "twin",
	};
	struct queue_walk w = {.only = only};
	cJSON *o = control_reply_ok(), *items;
	uint64_t now = loop_now_ms();
	size_t shown = 0;

	if (!o)
		log_oom();
	jobs_foreach(env->jobs, queue_job, &w);
	if (w.n)
		qsort(w.rows, w.n, sizeof(*w.rows), queue_row_cmp);
	items = add_array(o, "items");
	for (size_t i = 0; i < w.n; i++) {
		const struct queue_row *r = &w.rows[i];
		cJSON *it;
		if (shown == CONTROL_LIST_MAX)
			break;
		shown++;
		it = add_obj(items);
		add_str(it, "folder", r->folder);
		add_str(it, "file", r->rel);
		add_str(it, "kind", kinds[r->kind]);
		add_str(it, "state", r->state);
		add_num(it, "age_s", (double)((now - r->seen) / 1000));
		add_num(it, "attempts", r->attempts);
	}
	add_num(o, "total", (double)w.total);
	add_bool(o, "truncated", shown == CONTROL_LIST_MAX && w.total > shown);
	for (size_t i = 0; i < w.n; i++)
		free(w.rows[i].rel);
	free(w.rows);
	return o;
}

/* The n most recent results, from the done records the daemon keeps in
 * memory (every sidecar in the output folders, updated as results come). */
struct history_walk {
	const struct folder *folder;
	const struct index_entry **top; /* newest first */
	const struct folder **top_folder;
	size_t n, want;
};

static void history_entry(const struct index_entry *e, void *userdata)
{
	struct history_walk *w = userdata;
	size_t at;

	if (w->n == w->want && e->finished_at <= w->top[w->n - 1]->finished_at)
		return;
	at = w->n < w->want ? w->n++ : w->n - 1;
	while (at > 0 && w->top[at - 1]->finished_at < e->finished_at) {
		w->top[at] = w->top[at - 1];
		w->top_folder[at] = w->top_folder[at - 1];
		at--;
	}
	w->top[at] = e;
	w->top_folder[at] = w->folder;
}

static cJSON *history_json(const struct control_env *env, const struct folder *only, unsigned n)
{
	struct history_walk w = {.want = n};
	cJSON *o = control_reply_ok(), *items;

	if (!o)
		log_oom();
	w.top = calloc(n, sizeof(*w.top));
	w.top_folder = calloc(n, sizeof(*w.top_folder));
	if (!w.top || !w.top_folder)
		log_oom();
	for (size_t i = 0; i < *env->n_folders; i++) {
		const struct folder *f = (*env->folders)[i];
		if (f->removed || (only && f != only))
			continue;
		w.folder = f;
		index_foreach(f->index, history_entry, &w);
	}
	items = add_array(o, "items");
	for (size_t i = 0; i < w.n; i++) {
		cJSON *it = add_obj(items);
		add_str(it, "folder", w.top_folder[i]->cfg->path);
		add_str(it, "file", w.top[i]->source);
		add_str(it, "result", w.top[i]->failed ? "failed" : "done");
		add_time(it, "finished_at", w.top[i]->finished_at);
		add_str(it, "record", w.top[i]->sidecar);
		/* The images paid, as counted (paid failures too, reused copies not). */
		add_num(it, "images", (double)spend_entry_images(w.top[i]));
	}
	free(w.top);
	free(w.top_folder);
	return o;
}

/* ---- failed and retry: on a worker ---------------------------------------- */

static void file_clear(struct control_file *f)
{
	free(f->folder);
	free(f->rel);
	free(f->sidecar);
	free(f->source);
	free(f->code);
	free(f->message);
	free(f->request_id);
	free(f->failed_at);
}

static void work_free(struct control_work *w)
{
	for (size_t i = 0; i < w->n; i++)
		file_clear(&w->files[i]);
	free(w->files);
	cJSON_Delete(w->errors);
	free(w);
}

static char *xasprintf_or_die(const char *fmt, const char *a, const char *b)
{
	char *s;

	if (asprintf(&s, fmt, a, b) < 0)
		log_oom();
	return s;
}

static char *xstrdup_or_die(const char *s)
{
	char *d = strdup(s);

	if (!d)
		log_oom();
	return d;
}

static struct control_file *work_add(struct control_work *w, const struct folder *f,
				     const struct index_entry *e)
{
	struct control_file *file;

	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 16;
		struct control_file *files = reallocarray(w->files, cap, sizeof(*files));
		if (!files)
			log_oom();
		w->files = files;
		w->cap = cap;
	}
	file = &w->files[w->n++];
	memset(file, 0, sizeof(*file));
	file->folder = xstrdup_or_die(f->cfg->path);
	file->rel = xstrdup_or_die(e->source);
	file->sidecar = xasprintf_or_die("%s/%s", f->cfg->output, e->sidecar);
	file->source = xasprintf_or_die("%s/%s", f->cfg->path, e->source);
	file->follow = f->cfg->follow_symlinks;
	file->group = f->cfg->group == GROUP_SUBFOLDER;
	return file;
}

struct failed_walk {
	struct control_work *work;
	const struct folder *folder;
};

static void failed_entry(const struct index_entry *e, void *userdata)
{
	struct failed_walk *fw = userdata;

	if (!e->failed)
		return;
	fw->work->total++;
	if (fw->work->n < fw->work->limit || fw->work->cmd == CONTROL_CMD_RETRY)
		(void)work_add(fw->work, fw->folder, e);
}

/* A string member of an error record, bounded. */
static char *record_string(const cJSON *obj, const char *key, size_t max)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
	char *s;

	if (!cJSON_IsString(v))
		return NULL;
	s = strndup(v->valuestring, max);
	return s;
}

/* On the worker: reads an error record. Never logs. */
static void read_record(struct control_file *f)
{
	char *buf = NULL;
	cJSON *doc = NULL;
	const cJSON *err;
	ssize_t n;
	size_t len = 0;
	int fd = open(f->sidecar, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW);

	if (fd < 0) {
		f->r = -errno;
		return;
	}
	buf = malloc(SIDECAR_RECORD_MAX + 1);
	if (!buf) {
		f->r = -ENOMEM;
		goto out;
	}
	while (len < SIDECAR_RECORD_MAX &&
	       (n = read(fd, buf + len, SIDECAR_RECORD_MAX - len)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			f->r = -errno;
			goto out;
		}
		len += (size_t)n;
	}
	doc = cJSON_ParseWithLength(buf, len);
	err = cJSON_GetObjectItemCaseSensitive(doc, "error");
	if (!cJSON_IsObject(err)) {
		f->r = -EINVAL;
		goto out;
	}
	f->code = record_string(err, "code", 256);
	f->message = record_string(err, "message", CONTROL_MESSAGE_MAX);
	f->request_id = record_string(doc, "request_id", 256);
	f->failed_at = record_string(doc, "failed_at", 64);
	if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(err, "http_status")))
		f->http_status =
		    (long)cJSON_GetObjectItemCaseSensitive(err, "http_status")->valuedouble;
out:
	cJSON_Delete(doc);
	free(buf);
	close(fd);
}

/* On the worker: the source is looked at (a file gone keeps its record), then
 * its error record goes (so the file is no longer known as failed). Never logs. */
static void retry_file(struct control_file *f)
{
	f->stat_r =
	    (f->follow ? stat(f->source, &f->st) : lstat(f->source, &f->st)) < 0 ? -errno : 0;
	if (!f->stat_r && !S_ISREG(f->st.st_mode) && !(f->group && S_ISDIR(f->st.st_mode)))
		f->stat_r = -EINVAL;
	if (f->stat_r)
		return;
	if (unlink(f->sidecar) < 0 && errno != ENOENT)
		f->r = -errno;
}

static void work_run(void *arg)
{
	struct control_work *w = arg;

	for (size_t i = 0; i < w->n; i++) {
		if (w->cmd == CONTROL_CMD_FAILED)
			read_record(&w->files[i]);
		else
			retry_file(&w->files[i]);
	}
}

/* Adds item to array while the items' JSON fits in *budget; else deletes it
 * and returns false, so that a reply is cut, not refused after the fact. */
static bool items_add_bounded(cJSON *array, cJSON *item, size_t *budget)
{
	char *text = cJSON_PrintUnformatted(item);
	size_t len;

	if (!text)
		log_oom();
	len = strlen(text) + 1; /* and its comma */
	free(text);
	if (len > *budget) {
		cJSON_Delete(item);
		return false;
	}
	*budget -= len;
	if (!cJSON_AddItemToArray(array, item))
		log_oom();
	return true;
}

static cJSON *new_obj(void)
{
	cJSON *o = cJSON_CreateObject();

	if (!o)
		log_oom();
	return o;
}

static cJSON *failed_reply(struct control_work *w)
{
	cJSON *o = control_reply_ok(), *items;
	size_t gone = 0, budget = CONTROL_ITEMS_BUDGET;
	bool cut = false;

	if (!o)
		log_oom();
	items = add_array(o, "items");
	for (size_t i = 0; i < w->n; i++) {
		const struct control_file *f = &w->files[i];
		cJSON *it;
		if (f->r == -ENOENT) {
			gone++; /* retried (or removed by hand) since */
			continue;
		}
		if (f->r == -ENOMEM)
			log_oom();
		if (cut)
			continue;
		it = new_obj();
		add_str(it, "folder", f->folder);
		add_str(it, "file", f->rel);
		add_str(it, "record", f->sidecar);
		if (f->r < 0) {
			add_str(it, "code", CONTROL_E_STORAGE);
			add_str(it, "message", strerror(-f->r));
		} else {
			add_str(it, "code", f->code ? f->code : "");
			add_str(it, "message", f->message ? f->message : "");
			add_num(it, "http_status", (double)f->http_status);
			add_str(it, "failed_at", f->failed_at);
			add_str(it, "request_id", f->request_id);
		}
		cut = !items_add_bounded(items, it, &budget);
	}
	add_num(o, "total", (double)(w->total - gone));
	add_bool(o, "truncated", cut || w->total > w->n);
	return o;
}

/* Every file is acted on; the reply lists the first CONTROL_LIST_MAX that fit
 * (truncated), the counts all of them: it is sent after the records are gone. */
static cJSON *retry_reply(struct control *ctl, struct control_work *w, bool cancelled)
{
	cJSON *o, *items, *it;
	size_t retried = 0, refused = (size_t)cJSON_GetArraySize(w->errors), shown = 0;
	size_t budget = CONTROL_ITEMS_BUDGET;
	bool cut = false;

	items = cJSON_CreateArray();
	if (!items)
		log_oom();
	for (size_t i = 0; i < w->n; i++) {
		struct control_file *f = &w->files[i];
		struct folder *folder = find_folder(&ctl->env, f->folder);
		const char *err = NULL;

		if (cancelled || *ctl->env.stopping)
			err = "the daemon is stopping";
		else if (f->r < 0)
			err = strerror(-f->r);
		else if (!folder)
			err = "its folder is no longer watched";
		else if (f->stat_r == -EINVAL)
			err = "not a regular file";
		else if (f->stat_r < 0)
			err = strerror(-f->stat_r);
		if (err) {
			refused++;
		} else {
			/* An offer like a file moved in: a job already queued or in
			 * flight for it absorbs it, so it is submitted once however
			 * often it is retried. */
			if (f->group) {
				/* A group is offered through a path inside its subfolder. */
				char *in_group = xasprintf_or_die("%s/%s", f->rel, "");
				jobs_offer(ctl->env.jobs, folder, in_group, &f->st, WATCH_MOVED);
				free(in_group);
			} else {
				jobs_offer(ctl->env.jobs, folder, f->rel, &f->st, WATCH_MOVED);
			}
			retried++;
			log_info("seedreamctl: retrying %s/%s", f->folder, f->rel);
		}
		if (cut || shown == CONTROL_LIST_MAX) {
			cut = true;
			continue;
		}
		it = new_obj();
		add_str(it, "folder", f->folder);
		add_str(it, "file", f->rel);
		add_str(it, "result", err ? "error" : "requeued");
		if (err)
			add_str(it, "message", err);
		cut = !items_add_bounded(items, it, &budget);
		shown += !cut;
	}
	if (refused) {
		o = control_reply_error(CONTROL_E_NOT_FAILED, "some files could not be retried");
	} else {
		o = control_reply_ok();
	}
	if (!o)
		log_oom();
	while ((it = cJSON_DetachItemFromArray(w->errors, 0))) {
		if (cut || shown == CONTROL_LIST_MAX) {
			cut = true;
			cJSON_Delete(it);
			continue;
		}
		cut = !items_add_bounded(items, it, &budget);
		shown += !cut;
	}
	if (!cJSON_AddItemToObject(o, "items", items))
		log_oom();
	add_num(o, "retried", (double)retried);
	add_num(o, "refused", (double)refused);
	add_bool(o, "truncated", cut);
	return o;
}

static void work_done(void *arg, bool cancelled)
{
	struct control_work *w = arg;
	struct control_client *c = w->client;
	cJSON *reply;

	w->ctl->n_work--;
	if (w->cmd == CONTROL_CMD_RETRY && !cancelled) {
		/* Applied even when the client went away: its records are gone. */
		reply = retry_reply(w->ctl, w, false);
	} else if (!c || cancelled) {
		reply = NULL;
	} else {
		reply = failed_reply(w);
	}
	if (c) {
		c->work = NULL;
		if (cancelled) {
			cJSON_Delete(reply);
			reply = control_reply_error(CONTROL_E_STOPPING, "the daemon is stopping");
		}
		client_reply(c, reply);
		client_process(c); /* a line already read waits */
		client_settle(c);
	} else {
		cJSON_Delete(reply);
	}
	work_free(w);
}

static struct control_work *work_new(struct control_client *c, enum control_cmd cmd)
{
	struct control_work *w = calloc(1, sizeof(*w));

	if (!w || !(w->errors = cJSON_CreateArray()))
		log_oom();
	w->ctl = c->ctl;
	w->client = c;
	w->cmd = cmd;
	return w;
}

static void work_start(struct control_client *c, struct control_work *w)
{
	int r = work_submit(c->ctl->pool, work_run, work_done, w);

	if (r < 0) {
		work_free(w);
		if (r == -ENOMEM)
			log_oom();
		client_error(c, CONTROL_E_STOPPING, "the daemon is stopping");
		return;
	}
	c->work = w;
	c->ctl->n_work++;
	c->deadline = 0; /* our time, not the client's */
}

/* false (with busy sent) when CONTROL_WORK_MAX requests are out on workers:
 * answered at once rather than queued behind them. */
static bool work_room(struct control_client *c)
{
	if (c->ctl->n_work < CONTROL_WORK_MAX)
		return true;
	client_error(c, CONTROL_E_WORK_BUSY, "%d failed or retry requests are under way; try again",
		     CONTROL_WORK_MAX);
	return false;
}

static void cmd_failed(struct control_client *c, const struct folder *only, unsigned n)
{
	struct control_work *w;
	struct failed_walk fw;

	if (!work_room(c))
		return;
	w = work_new(c, CONTROL_CMD_FAILED);
	w->limit = n;
	fw = (struct failed_walk){.work = w};

	for (size_t i = 0; i < *c->ctl->env.n_folders; i++) {
		const struct folder *f = (*c->ctl->env.folders)[i];
		if (f->removed || (only && f != only))
			continue;
		fw.folder = f;
		index_foreach(f->index, failed_entry, &fw);
	}
	work_start(c, w);
}

static void retry_refuse(struct control_work *w, const char *path, const char *why)
{
	cJSON *it = add_obj(w->errors);

	add_str(it, "file", path);
	add_str(it, "result", "error");
	add_str(it, "message", why);
}

static void cmd_retry(struct control_client *c, const struct control_request *req,
		      const struct folder *only)
{
	struct control_work *w;

	if (!work_room(c))
		return;
	w = work_new(c, CONTROL_CMD_RETRY);
	if (req->all_failed) {
		struct failed_walk fw = {.work = w};
		for (size_t i = 0; i < *c->ctl->env.n_folders; i++) {
			const struct folder *f = (*c->ctl->env.folders)[i];
			if (f->removed || (only && f != only))
				continue;
			fw.folder = f;
			index_foreach(f->index, failed_entry, &fw);
		}
	}
	for (size_t i = 0; i < req->n_files; i++) {
		const char *rel = NULL;
		const struct folder *f = find_source(&c->ctl->env, req->files[i], &rel);
		const struct index_entry *e = f ? index_get(f->index, rel) : NULL;

		if (!f)
			retry_refuse(w, req->files[i], "not in a watched folder");
		else if (!e || !e->failed)
			retry_refuse(w, req->files[i], "no error record for it (not failed)");
		else
			(void)work_add(w, f, e);
	}
	work_start(c, w);
}

/* ---- pauses kept across restarts ------------------------------------------- */

/* <state_dir>/paused.json: {"v":1,"all":bool,"folders":[paths]}, written on a
 * worker (tmp, fsync, rename) after each pause and resume, read at start. */
struct pauses_save {
	struct control *ctl;
	char *dir, *text;
	int r;
};

static void pauses_write(void *arg)
{
	struct pauses_save *ps = arg;
	char tmp[PATH_MAX], path[PATH_MAX];
	size_t len = strlen(ps->text), off = 0;
	int fd;

	(void)snprintf(tmp, sizeof(tmp), "%s/." CONTROL_PAUSES_FILE ".tmp", ps->dir);
	(void)snprintf(path, sizeof(path), "%s/" CONTROL_PAUSES_FILE, ps->dir);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		ps->r = -errno;
		return;
	}
	while (off < len) {
		ssize_t n = write(fd, ps->text + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ps->r = -errno;
			break;
		}
		off += (size_t)n;
	}
	if (!ps->r && fsync(fd) < 0)
		ps->r = -errno;
	if (close(fd) < 0 && !ps->r)
		ps->r = -errno;
	if (!ps->r && rename(tmp, path) < 0)
		ps->r = -errno;
	if (ps->r)
		(void)unlink(tmp);
}

static void pauses_save(struct control *ctl);

static void pauses_written(void *arg, bool cancelled)
{
	struct pauses_save *ps = arg;
	struct control *ctl = ps->ctl;

	if (!cancelled && ps->r < 0)
		log_warn("cannot keep the pauses in %s/" CONTROL_PAUSES_FILE
			 ": %s; a restart would end them",
			 ps->dir, strerror(-ps->r));
	free(ps->dir);
	free(ps->text);
	free(ps);
	ctl->saving = false;
	if (cancelled)
		ctl->save_again = true; /* control_free writes it */
	else if (ctl->save_again)
		pauses_save(ctl);
}

static struct pauses_save *pauses_snapshot(struct control *ctl)
{
	struct pauses_save *ps;
	cJSON *o, *folders;

	o = cJSON_CreateObject();
	if (!o)
		log_oom();
	add_num(o, "v", 1);
	add_bool(o, "all", jobs_user_paused(ctl->env.jobs));
	folders = add_array(o, "folders");
	for (size_t i = 0; i < *ctl->env.n_folders; i++) {
		const struct folder *f = (*ctl->env.folders)[i];
		if (f->user_paused && !f->removed &&
		    !cJSON_AddItemToArray(folders, cJSON_CreateString(f->cfg->path)))
			log_oom();
	}
	ps = calloc(1, sizeof(*ps));
	if (!ps || !(ps->text = cJSON_PrintUnformatted(o)) ||
	    !(ps->dir = strdup(ctl->env.state_dir)))
		log_oom();
	cJSON_Delete(o);
	ps->ctl = ctl;
	return ps;
}

static void pauses_save(struct control *ctl)
{
	struct pauses_save *ps;
	int r;

	if (!ctl->env.state_dir)
		return;
	if (ctl->saving) {
		ctl->save_again = true; /* after the one under way, with the state then */
		return;
	}
	ctl->save_again = false;
	ps = pauses_snapshot(ctl);
	r = work_submit(ctl->pool, pauses_write, pauses_written, ps);
	if (r == -ENOMEM)
		log_oom();
	if (r < 0) {
		free(ps->text);
		free(ps->dir);
		free(ps);
		ctl->save_again = true; /* stopping: control_free writes it */
		return;
	}
	ctl->saving = true;
}

/* At start (blocking is fine there), with or without the socket. */
void control_pauses_restore(const struct control_env *env)
{
	char path[PATH_MAX], *buf = NULL;
	const cJSON *folders, *f;
	cJSON *doc = NULL;
	ssize_t n;
	int fd;

	if (!env->state_dir)
		return;
	(void)snprintf(path, sizeof(path), "%s/" CONTROL_PAUSES_FILE, env->state_dir);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		if (errno != ENOENT)
			log_warn("cannot read %s: %s; no folder is paused", path, strerror(errno));
		return;
	}
	buf = malloc(CONTROL_PAUSES_MAX);
	if (!buf)
		log_oom();
	n = read(fd, buf, CONTROL_PAUSES_MAX);
	close(fd);
	if (n > 0)
		doc = cJSON_ParseWithLength(buf, (size_t)n);
	free(buf);
	if (!cJSON_IsObject(doc)) {
		log_warn("%s is not readable JSON; no folder is paused", path);
		goto out;
	}
	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "all"))) {
		log_warn("every folder stays paused, as seedreamctl left it before the restart "
			 "(seedreamctl resume)");
		jobs_set_user_pause(env->jobs, true);
	}
	folders = cJSON_GetObjectItemCaseSensitive(doc, "folders");
	cJSON_ArrayForEach(f, folders)
	{
		struct folder *folder = cJSON_IsString(f) ? find_folder(env, f->valuestring) : NULL;
		if (!folder)
			continue; /* no longer watched: its pause goes with it */
		folder->user_paused = true;
		jobs_folder_changed(env->jobs, folder);
		log_warn("folder %s stays paused, as seedreamctl left it before the restart "
			 "(seedreamctl resume %s)",
			 folder->cfg->path, folder->cfg->path);
	}
out:
	cJSON_Delete(doc);
}

/* ---- pause, resume, rescan ------------------------------------------------- */

static void cmd_pause(struct control_client *c, struct folder *f, bool pause)
{
	struct control *ctl = c->ctl;

	if (f) {
		f->user_paused = pause;
		jobs_folder_changed(ctl->env.jobs, f);
		log_info("seedreamctl (uid %u): folder %s %s", (unsigned)c->uid, f->cfg->path,
			 pause ? "paused: no new generation until resumed" : "resumed");
	} else {
		/* resume without a folder ends every pause, the folders' too. */
		if (!pause)
			for (size_t i = 0; i < *ctl->env.n_folders; i++)
				(*ctl->env.folders)[i]->user_paused = false;
		jobs_set_user_pause(ctl->env.jobs, pause);
		log_info("seedreamctl (uid %u): %s", (unsigned)c->uid,
			 pause ? "every folder paused: no new generation until resumed"
			       : "every folder resumed");
	}
	pauses_save(ctl);
	if (ctl->env.changed)
		ctl->env.changed(ctl->env.userdata);
	client_reply(c, control_status_json(&ctl->env));
}

static void cmd_rescan(struct control_client *c, struct folder *f)
{
	struct control *ctl = c->ctl;

	if (f)
		watch_rescan(ctl->env.watch, &f, 1);
	else
		watch_rescan(ctl->env.watch, *ctl->env.folders, *ctl->env.n_folders);
	log_info("seedreamctl (uid %u): rescanning %s", (unsigned)c->uid,
		 f ? f->cfg->path : "every folder");
	client_reply(c, control_reply_ok());
}

/* ---- reading requests ------------------------------------------------------ */

static void client_request(struct control_client *c, const char *line, size_t len)
{
	struct control_request req;
	struct folder *f;
	const char *code;
	char msg[256];
	int r = control_request_parse(line, len, &req, &code, msg, sizeof(msg));

	if (r == -ENOMEM)
		log_oom();
	if (r < 0) {
		client_error(c, code, "%s", msg);
		return;
	}
	if (!folder_arg(c, &req, &f))
		goto out;
	switch (req.cmd) {
	case CONTROL_CMD_STATUS: {
		cJSON *o = control_status_json(&c->ctl->env);
		if (!o)
			log_oom();
		add_num(o, "worker_requests", (double)c->ctl->n_work);
		client_reply(c, o);
		break;
	}
	case CONTROL_CMD_QUEUE:
		client_reply(c, queue_json(&c->ctl->env, f));
		break;
	case CONTROL_CMD_HISTORY:
		client_reply(c, history_json(&c->ctl->env, f, req.n));
		break;
	case CONTROL_CMD_FAILED:
		cmd_failed(c, f, req.n);
		break;
	case CONTROL_CMD_RETRY:
		if (*c->ctl->env.stopping)
			client_error(c, CONTROL_E_STOPPING, "the daemon is stopping");
		else
			cmd_retry(c, &req, f);
		break;
	case CONTROL_CMD_PAUSE:
	case CONTROL_CMD_RESUME:
		cmd_pause(c, f, req.cmd == CONTROL_CMD_PAUSE);
		break;
	case CONTROL_CMD_RESCAN:
		cmd_rescan(c, f);
		break;
	case CONTROL_CMD_COUNT:
		break;
	}
out:
	control_request_clear(&req);
}

/* Answers the lines read, one at a time: a line waits while the reply to the
 * one before is not written out or a worker has its request. */
static void client_process(struct control_client *c)
{
	for (int turn = 0;
	     turn < CONTROL_LINES_A_TURN && !c->dead && !c->out && !c->work && !c->closing;
	     turn++) {
		char *nl = memchr(c->in, '\n', c->in_len), *line;
		size_t len;

		if (!nl) {
			if (c->in_len < CONTROL_LINE_MAX)
				return;
			c->closing = true; /* the rest of the line cannot be told from a request */
			c->in_len = 0;
			client_error(c, CONTROL_E_TOO_LONG, "a request line is at most %d bytes",
				     CONTROL_LINE_MAX);
			return;
		}
		/* Copied out: the buffer moves on before the request is answered. */
		len = (size_t)(nl - c->in);
		line = malloc(len + 1);
		if (!line)
			log_oom();
		memcpy(line, c->in, len);
		line[len] = '\0';
		memmove(c->in, nl + 1, c->in_len - len - 1);
		c->in_len -= len + 1;
		if (len && line[len - 1] == '\r')
			len--;
		c->deadline = loop_now_ms() + CONTROL_IDLE_MS;
		client_request(c, line, len);
		free(line);
	}
}

static void client_read(struct control_client *c)
{
	while (c->in_len < CONTROL_LINE_MAX) {
		ssize_t n =
		    client_transfer(c, false, c->in + c->in_len, CONTROL_LINE_MAX - c->in_len);
		if (n == 0)
			break;
		if (n < 0) {
			c->eof = true;
			break;
		}
		c->in_len += (size_t)n;
		if (memchr(c->in + c->in_len - (size_t)n, '\n', (size_t)n))
			break;
	}
}

static void client_event(int fd, uint32_t events, void *userdata)
{
	struct control_client *c = userdata;

	(void)fd;
	if (events & EPOLLERR)
		c->dead = true;
	else if (events & EPOLLOUT)
		client_flush(c);
	else if (events & EPOLLIN)
		client_read(c);
	else if (events & EPOLLHUP)
		c->dead = true; /* gone while a worker has its request: nobody to answer */
	client_process(c);
	client_settle(c);
}

/* Root, our user, or a member of our group (the socket's group). The groups
 * come from the kernel (SO_PEERGROUPS), not from NSS: no lookup can block. */
static bool peer_allowed(int fd, uid_t *ret_uid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	gid_t groups[CONTROL_PEER_GROUPS];
	socklen_t glen = sizeof(groups);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	*ret_uid = cred.uid;
	if (cred.uid == 0 || cred.uid == geteuid() || cred.gid == getegid())
		return true;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) < 0)
		return false;
	for (size_t i = 0; i < glen / sizeof(gid_t); i++)
		if (groups[i] == getegid())
			return true;
	return false;
}

static void sweep_arm(struct control *ctl)
{
	if ((ctl->clients || ctl->accept_off) && !loop_timer_armed(ctl->sweep))
		(void)loop_timer_arm(ctl->sweep, CONTROL_SWEEP_MS);
}

static void control_accept_one(struct control *ctl, int fd)
{
	struct control_client *c;
	uid_t uid = (uid_t)-1;
	bool allowed = peer_allowed(fd, &uid);

	if (ctl->n_clients >= CONTROL_CLIENTS_MAX) {
		static const char busy[] =
		    "{\"v\":1,\"ok\":false,\"error\":{\"code\":\"" CONTROL_E_BUSY
		    "\",\"message\":\"too many clients at once; try again\"}}\n";
		/* A new socket's buffer is empty: this never blocks, and a short write is fine. */
		(void)!send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c || !(c->in = malloc(CONTROL_LINE_MAX)))
		log_oom();
	c->ctl = ctl;
	c->fd = fd;
	c->uid = uid;
	c->deadline = loop_now_ms() + CONTROL_IDLE_MS;
	if (loop_add(ctl->env.loop, fd, EPOLLIN, client_event, c, &c->source) < 0) {
		close(fd);
		free(c->in);
		free(c);
		return;
	}
	c->next = ctl->clients;
	if (ctl->clients)
		ctl->clients->prev = c;
	ctl->clients = c;
	ctl->n_clients++;
	sweep_arm(ctl);
	if (!allowed) {
		log_warn("control socket: refused uid %u (neither root, the daemon's user nor in "
			 "its group)",
			 (unsigned)uid);
		c->closing = true;
		client_error(c, CONTROL_E_DENIED,
			     "uid %u may not use this socket: only root, the daemon's user and "
			     "members of its group may",
			     (unsigned)uid);
		client_settle(c);
	}
}

static void control_accept(int fd, uint32_t events, void *userdata)
{
	struct control *ctl = userdata;

	(void)events;
	for (int i = 0; i < CONTROL_ACCEPT_BATCH; i++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE) {
				/* The connection stays pending, and the listener readable:
				 * rest it, or the loop would spin on it. */
				log_warn("control socket: cannot accept: %s; trying again in %d ms",
					 strerror(errno), CONTROL_SWEEP_MS);
				ctl->accept_off = true;
				(void)loop_modify(ctl->env.loop, ctl->source, 0);
				sweep_arm(ctl);
			}
			return;
		}
		control_accept_one(ctl, cfd);
	}
}

/* Clients that neither finish their request nor take their reply in time. */
static void control_sweep(void *userdata)
{
	struct control *ctl = userdata;
	uint64_t now = loop_now_ms();
	struct control_client *c = ctl->clients;

	if (ctl->accept_off) {
		ctl->accept_off = false;
		(void)loop_modify(ctl->env.loop, ctl->source, EPOLLIN);
	}
	while (c) {
		struct control_client *next = c->next;
		if (c->deadline && now > c->deadline) {
			log_debug("control socket: dropped a client (uid %u) idle for %d s",
				  (unsigned)c->uid, CONTROL_IDLE_MS / 1000);
			client_free(c);
		}
		c = next;
	}
	sweep_arm(ctl);
}

/* ---- the socket ------------------------------------------------------------- */

/* A socket file left by a run that was killed is replaced; one a live daemon
 * answers on, or anything that is not a socket, is not. */
static int control_clear_stale(const char *path, const struct sockaddr_un *addr)
{
	struct stat st;
	int fd, r;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	r = connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0 ? -EADDRINUSE : -errno;
	close(fd);
	if (r == -EADDRINUSE || r == -EAGAIN)
		return -EADDRINUSE;
	if (r != -ECONNREFUSED && r != -ENOENT)
		return r;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int control_new(const char *path, const struct control_env *env, struct control **ret_ctl)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct control *ctl;
	struct stat st;
	int r;

	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	memcpy(addr.sun_path, path, strlen(path) + 1);
	ctl = calloc(1, sizeof(*ctl));
	if (!ctl)
		return -ENOMEM;
	ctl->env = *env;
	ctl->fd = -1;
	ctl->path = strdup(path);
	ctl->state_dir = env->state_dir ? strdup(env->state_dir) : NULL;
	ctl->env.state_dir = ctl->state_dir;
	if (!ctl->path || (env->state_dir && !ctl->state_dir)) {
		r = -ENOMEM;
		goto fail;
	}
	r = control_clear_stale(path, &addr);
	if (r < 0)
		goto fail;
	ctl->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ctl->fd < 0 || bind(ctl->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		r = -errno;
		goto fail;
	}
	/* 0660 in our group: the peer check below is the real gate, the mode the first. */
	if (chmod(path, 0660) < 0 || lstat(path, &st) < 0 || listen(ctl->fd, 64) < 0) {
		r = -errno;
		(void)unlink(path);
		goto fail;
	}
	ctl->dev = st.st_dev;
	ctl->ino = st.st_ino;
	r = loop_add(env->loop, ctl->fd, EPOLLIN, control_accept, ctl, &ctl->source);
	if (r >= 0)
		r = loop_timer_new(env->loop, control_sweep, ctl, &ctl->sweep);
	/* Its requests may wait on a share that stopped answering: a growing pool. */
	if (r >= 0)
		r = work_pool_new_growing(env->loop, 1, 4, &ctl->pool);
	if (r < 0) {
		(void)unlink(path);
		goto fail;
	}
	*ret_ctl = ctl;
	return 0;
fail:
	control_free(ctl);
	return r;
}

void control_free(struct control *ctl)
{
	struct stat st;

	if (!ctl)
		return;
	while (ctl->clients)
		client_free(ctl->clients);
	work_pool_free(ctl->pool); /* their done runs now, with no client */
	if (ctl->save_again && ctl->env.state_dir && !work_threads_left_behind()) {
		/* A pause not yet written: at a stop the loop may wait for storage. */
		struct pauses_save *ps = pauses_snapshot(ctl);
		pauses_write(ps);
		if (ps->r < 0)
			log_warn("cannot keep the pauses in %s/" CONTROL_PAUSES_FILE ": %s",
				 ps->dir, strerror(-ps->r));
		free(ps->text);
		free(ps->dir);
		free(ps);
	}
	loop_timer_free(ctl->env.loop, ctl->sweep);
	loop_remove(ctl->env.loop, ctl->source);
	if (ctl->fd >= 0) {
		/* Only our own socket: a later daemon's must stay. */
		if (ctl->ino && lstat(ctl->path, &st) == 0 && st.st_dev == ctl->dev &&
		    st.st_ino == ctl->ino)
			(void)unlink(ctl->path);
		close(ctl->fd);
	}
	free(ctl->path);
	free(ctl->state_dir);
	free(ctl);
}
