/* events_store: the notifications kept in state_dir (see events_store.h). */
#include "events_store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "fdio.h"
#include "work.h"

struct events_store {
	struct loop *loop;
	struct work_pool *pool;
	char *dir;
	events_store_snapshot_fn snapshot;
	events_store_error_fn on_error;
	void *userdata;
	events_store_loaded_fn loaded;
	bool writing; /* a write is queued or running */
	bool dirty;   /* changed since the snapshot being written */
	bool failing; /* the last write failed (reported once) */
	/* The file read damaged and could not be renamed aside: writing it would
	 * destroy what a human may still read from it, so this run does not. */
	bool hands_off;
	bool freeing; /* events_store_free is under way: the loop is ending */
};

/* ---- the document ------------------------------------------------------ */

static void events_store_event_clear(struct events_store_event *e)
{
	for (size_t i = 0; i < e->n_fields; i++) {
		free(e->fields[i].name);
		free(e->fields[i].text);
	}
	free(e->fields);
	e->fields = NULL;
	e->n_fields = 0;
}

void events_store_state_clear(struct events_store_state *state)
{
	for (size_t i = 0; i < state->n_events; i++)
		events_store_event_clear(&state->events[i]);
	free(state->events);
	state->events = NULL;
	state->n_events = 0;
	state->summarised[0] = '\0';
}

static cJSON *events_store_event_json(const struct events_store_event *e)
{
	cJSON *o = cJSON_CreateObject(), *fields = cJSON_CreateArray();

	if (!o || !fields || !cJSON_AddStringToObject(o, "kind", e->kind) ||
	    !cJSON_AddNumberToObject(o, "time", (double)e->time) ||
	    !cJSON_AddBoolToObject(o, "webhook", e->webhook) ||
	    !cJSON_AddBoolToObject(o, "command", e->command))
		goto fail;
	for (size_t i = 0; i < e->n_fields; i++) {
		cJSON *f = cJSON_CreateObject();

		if (!f || !cJSON_AddItemToArray(fields, f)) {
			cJSON_Delete(f);
			goto fail;
		}
		if (!cJSON_AddStringToObject(f, "name", e->fields[i].name) ||
		    !cJSON_AddStringToObject(f, "text", e->fields[i].text) ||
		    (e->fields[i].number && !cJSON_AddBoolToObject(f, "number", true)))
			goto fail;
	}
	if (!cJSON_AddItemToObject(o, "fields", fields))
		goto fail;
	return o;
fail:
	cJSON_Delete(fields);
	cJSON_Delete(o);
	return NULL;
}

char *events_store_format(const struct events_store_state *state)
{
	cJSON *doc = cJSON_CreateObject(), *events = cJSON_CreateArray();
	char *text = NULL;

	if (!doc || !events || !cJSON_AddNumberToObject(doc, "version", EVENTS_STORE_VERSION) ||
	    !cJSON_AddStringToObject(doc, "summarised", state->summarised)) {
		cJSON_Delete(events);
		goto out;
	}
	if (!cJSON_AddItemToObject(doc, "events", events)) {
		cJSON_Delete(events);
		goto out;
	}
	for (size_t i = 0; i < state->n_events; i++) {
		cJSON *e = events_store_event_json(&state->events[i]);

		if (!e || !cJSON_AddItemToArray(events, e)) {
			cJSON_Delete(e);
			goto out;
		}
	}
	text = cJSON_PrintUnformatted(doc);
out:
	cJSON_Delete(doc);
	return text;
}

/* A JSON number by the grammar of RFC 8259 (the text goes raw into the
 * webhook's body): -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool events_store_number_ok(const char *s)
{
	if (strlen(s) > 32)
		return false;
	if (*s == '-')
		s++;
	if (*s == '0')
		s++;
	else if (*s >= '1' && *s <= '9')
		while (*s >= '0' && *s <= '9')
			s++;
	else
		return false;
	if (*s == '.') {
		if (*++s < '0' || *s > '9')
			return false;
		while (*s >= '0' && *s <= '9')
			s++;
	}
	if (*s == 'e' || *s == 'E') {
		if (*++s == '+' || *s == '-')
			s++;
		if (*s < '0' || *s > '9')
			return false;
		while (*s >= '0' && *s <= '9')
			s++;
	}
	return !*s;
}

/* The fields each kind of event has (events.c builds them): a name outside
 * these would become a duplicate or foreign member of the webhook's body and
 * a foreign SEEDREAMD_* variable of the command. */
static const struct {
	const char *kind;
	const char *strings[5], *numbers[5];
} events_store_kinds[] = {
    {"file_failed", {"folder", "file", "code", "message"}, {"http_status"}},
    {"paused", {"message"}, {NULL}},
    {"resumed", {"message"}, {NULL}},
    {"spend_limit", {"limit", "folder", "message"}, {NULL}},
    {"daily_summary", {"date", "currency"}, {"done", "failed", "images", "cost"}},
};

/* The index of kind in events_store_kinds, or -1. */
static int events_store_kind(const char *kind)
{
	for (size_t i = 0; i < sizeof(events_store_kinds) / sizeof(events_store_kinds[0]); i++)
		if (!strcmp(events_store_kinds[i].kind, kind))
			return (int)i;
	return -1;
}

static bool events_store_field_known(int kind, const char *name, bool number)
{
	const char *const *names =
	    number ? events_store_kinds[kind].numbers : events_store_kinds[kind].strings;

	for (size_t i = 0; i < 5 && names[i]; i++)
		if (!strcmp(names[i], name))
			return true;
	return false;
}

static bool events_store_date_ok(const char *s)
{
	static const char shape[] = "dddd-dd-dd";

	if (strlen(s) != sizeof(shape) - 1)
		return false;
	for (size_t i = 0; shape[i]; i++)
		if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
			return false;
	return true;
}

bool events_store_date_ahead(const char *date, int64_t now)
{
	time_t t = (time_t)now;
	char tomorrow[EVENTS_STORE_DATE_LEN];
	struct tm tm;

	if (!localtime_r(&t, &tm))
		return false;
	tm.tm_mday++;
	tm.tm_hour = 12; /* clear of a daylight-saving change */
	tm.tm_isdst = -1;
	t = mktime(&tm);
	if (t == (time_t)-1 || !localtime_r(&t, &tm) ||
	    !strftime(tomorrow, sizeof(tomorrow), "%Y-%m-%d", &tm))
		return false;
	return strcmp(date, tomorrow) > 0;
}

/* 0, -EINVAL (the event does not read), -ENOMEM. */
static int events_store_event_parse(const cJSON *o, int64_t now, struct events_store_event *e)
{
	const cJSON *kind = cJSON_GetObjectItemCaseSensitive(o, "kind");
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "time");
	const cJSON *hook = cJSON_GetObjectItemCaseSensitive(o, "webhook");
	const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(o, "command");
	const cJSON *fields = cJSON_GetObjectItemCaseSensitive(o, "fields");
	const cJSON *f;
	int n, k;

	memset(e, 0, sizeof(*e));
	if (!cJSON_IsString(kind) || (k = events_store_kind(kind->valuestring)) < 0 ||
	    !cJSON_IsNumber(t) || t->valuedouble < 0 ||
	    t->valuedouble > (double)(now + EVENTS_STORE_AHEAD_S) || !cJSON_IsBool(hook) ||
	    !cJSON_IsBool(cmd) || !cJSON_IsArray(fields))
		return -EINVAL;
	n = cJSON_GetArraySize(fields);
	if (n < 0 || n > EVENTS_STORE_FIELDS_MAX)
		return -EINVAL;
	memcpy(e->kind, kind->valuestring, strlen(kind->valuestring) + 1);
	e->time = (int64_t)t->valuedouble;
	e->webhook = cJSON_IsTrue(hook);
	e->command = cJSON_IsTrue(cmd);
	if (n && !(e->fields = calloc((size_t)n, sizeof(*e->fields))))
		return -ENOMEM;
	cJSON_ArrayForEach(f, fields)
	{
		const cJSON *name = cJSON_GetObjectItemCaseSensitive(f, "name");
		const cJSON *text = cJSON_GetObjectItemCaseSensitive(f, "text");
		const cJSON *number = cJSON_GetObjectItemCaseSensitive(f, "number");
		struct events_store_field *ef = &e->fields[e->n_fields];

		if (!cJSON_IsString(name) || !cJSON_IsString(text) ||
		    (number && !cJSON_IsBool(number)))
			goto bad;
		ef->number = cJSON_IsTrue(number);
		if (!events_store_field_known(k, name->valuestring, ef->number) ||
		    (ef->number && !events_store_number_ok(text->valuestring)))
			goto bad;
		for (size_t i = 0; i < e->n_fields; i++)
			if (!strcmp(e->fields[i].name, name->valuestring))
				goto bad; /* a duplicate member */
		ef->name = strdup(name->valuestring);
		ef->text = strdup(text->valuestring);
		e->n_fields++;
		if (!ef->name || !ef->text) {
			events_store_event_clear(e);
			return -ENOMEM;
		}
	}
	return 0;
bad:
	events_store_event_clear(e);
	return -EINVAL;
}

int events_store_parse(const char *text, int64_t now, struct events_store_state *ret_state,
		       size_t *ret_bad)
{
	cJSON *doc = cJSON_Parse(text);
	const cJSON *version, *summarised, *events, *o;
	struct events_store_state st = {0};
	size_t bad = 0;
	int r = -EINVAL, n;

	*ret_bad = 0;
	memset(ret_state, 0, sizeof(*ret_state));
	if (!doc)
		return -EINVAL; /* cJSON cannot tell out of memory from a syntax error */
	version = cJSON_GetObjectItemCaseSensitive(doc, "version");
	summarised = cJSON_GetObjectItemCaseSensitive(doc, "summarised");
	events = cJSON_GetObjectItemCaseSensitive(doc, "events");
	if (!cJSON_IsObject(doc) || !cJSON_IsNumber(version) ||
	    version->valuedouble != EVENTS_STORE_VERSION || !cJSON_IsString(summarised) ||
	    !cJSON_IsArray(events))
		goto out;
	if (summarised->valuestring[0]) {
		if (events_store_date_ok(summarised->valuestring))
			memcpy(st.summarised, summarised->valuestring, EVENTS_STORE_DATE_LEN);
		else
			bad++;
	}
	n = cJSON_GetArraySize(events);
	if (n > 0 &&
	    !(st.events =
		  calloc((size_t)n < EVENTS_STORE_EVENTS_MAX ? (size_t)n : EVENTS_STORE_EVENTS_MAX,
			 sizeof(*st.events)))) {
		r = -ENOMEM;
		goto out;
	}
	cJSON_ArrayForEach(o, events)
	{
		int k;

		if (st.n_events == EVENTS_STORE_EVENTS_MAX) {
			bad++; /* more than the daemon ever keeps */
			continue;
		}
		k = events_store_event_parse(o, now, &st.events[st.n_events]);
		if (k == -ENOMEM) {
			r = k;
			goto out;
		}
		if (k < 0)
			bad++;
		else
			st.n_events++;
	}
	*ret_state = st;
	memset(&st, 0, sizeof(st));
	*ret_bad = bad;
	r = 0;
out:
	events_store_state_clear(&st);
	cJSON_Delete(doc);
	return r;
}

/* ---- the worker's side ------------------------------------------------- */

/* Requests are self-contained: the worker touches only what they hold. */
struct events_store_req {
	struct events_store *store; /* for the loop thread's completion only */
	char *dir;
	char *text; /* a write: the document */
	int r;
	struct events_store_loaded loaded; /* a load: what was found */
};

/* The temp file, created for writing. Whatever else holds its name (a
 * symlink, a directory, a FIFO: nothing the daemon makes) is removed once and
 * the open tried again, or every write would fail until a human came. The
 * open does not block on a FIFO (O_NONBLOCK: ENXIO). fd or -errno. */
static int events_store_open_tmp(const char *tmp)
{
	const int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
	int fd = open(tmp, flags, 0600);

	if (fd >= 0 || (errno != ELOOP && errno != EISDIR && errno != ENXIO))
		return fd >= 0 ? fd : -errno;
	if ((errno == EISDIR ? rmdir(tmp) : unlink(tmp)) < 0)
		return -errno;
	fd = open(tmp, flags, 0600);
	return fd >= 0 ? fd : -errno;
}

static int events_store_write_file(const char *dir, const char *text)
{
	char path[4096], tmp[4096];
	size_t len = strlen(text);
	int fd, dfd, r = 0;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, EVENTS_STORE_FILE) >= sizeof(path) ||
	    (size_t)snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, EVENTS_STORE_FILE) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = events_store_open_tmp(tmp);
	if (fd < 0)
		return fd;
	r = fdio_write_all(fd, text, len, NULL);
	if (r >= 0 && fdio_write_all(fd, "\n", 1, NULL) < 0)
		r = -EIO;
	if (r >= 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r >= 0)
		r = -errno;
	if (r >= 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		(void)unlink(tmp);
		return r;
	}
	/* The rename itself is durable only once the directory is. */
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	if (fsync(dfd) < 0)
		r = -errno;
	(void)close(dfd);
	return r;
}

static void events_store_write_work(void *arg)
{
	struct events_store_req *req = arg;

	req->r = events_store_write_file(req->dir, req->text);
}

static void events_store_load_work(void *arg)
{
	struct events_store_req *req = arg;
	struct events_store_loaded *l = &req->loaded;
	char path[4096], bad[4096], *text = NULL;
	size_t len = 0;
	int fd, r;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", req->dir, EVENTS_STORE_FILE) >=
		sizeof(path) ||
	    (size_t)snprintf(bad, sizeof(bad), "%s/%s", req->dir, EVENTS_STORE_BAD) >=
		sizeof(bad)) {
		l->read_error = -ENAMETOOLONG;
		return;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0 && errno == ENOENT)
		return;
	if (fd < 0) {
		/* A symlink (ELOOP) is not ours; whatever else, the start goes on
		 * and the file is kept for a human. */
		l->read_error = -errno;
		l->damaged = true;
		goto aside;
	}
	r = fdio_read_file(fd, EVENTS_STORE_BYTES_MAX, &text, &len);
	(void)close(fd);
	if (r == -ENOMEM) {
		l->read_error = r;
		return;
	}
	if (r < 0)
		l->read_error = r; /* too large, not a regular file, unreadable */
	if (r == 0 && strlen(text) == len) {
		r = events_store_parse(text, (int64_t)time(NULL), &l->state, &l->bad);
		if (r == -ENOMEM) {
			l->read_error = r;
			goto out;
		}
	} else if (r >= 0) {
		r = -EINVAL; /* a NUL inside */
	}
	l->damaged = r < 0 || l->bad > 0;
	if (!l->damaged)
		goto out;
aside:
	/* The good events (if any) are written again by the loop right after. */
	if (rename(path, bad) < 0)
		l->aside_error = -errno;
out:
	free(text);
}

static void events_store_req_free(struct events_store_req *req)
{
	events_store_state_clear(&req->loaded.state);
	free(req->text);
	free(req->dir);
	free(req);
}

static struct events_store_req *events_store_req_new(struct events_store *s)
{
	struct events_store_req *req = calloc(1, sizeof(*req));

	if (!req)
		return NULL;
	req->store = s;
	req->dir = strdup(s->dir);
	if (!req->dir) {
		free(req);
		return NULL;
	}
	return req;
}

/* ---- the loop's side --------------------------------------------------- */

static void events_store_flush(struct events_store *s);

static void events_store_write_done(void *arg, bool cancelled)
{
	struct events_store_req *req = arg;
	struct events_store *s = req->store;

	s->writing = false;
	if (cancelled) {
		s->dirty = true; /* events_store_free writes it */
	} else if (req->r < 0 && !s->failing) {
		s->failing = true;
		s->on_error(s->userdata, req->r);
	} else if (req->r >= 0 && s->failing) {
		s->failing = false;
		s->on_error(s->userdata, 0);
	}
	events_store_req_free(req);
	if (!cancelled)
		events_store_flush(s);
}

static void events_store_flush(struct events_store *s)
{
	struct events_store_req *req;

	if (s->writing || !s->dirty || s->hands_off)
		return;
	req = events_store_req_new(s);
	if (!req || !(req->text = s->snapshot(s->userdata))) {
		if (req)
			events_store_req_free(req);
		return; /* out of memory: the caller's next change tries again */
	}
	s->dirty = false;
	if (work_submit(s->pool, events_store_write_work, events_store_write_done, req) < 0) {
		s->dirty = true;
		events_store_req_free(req);
		return;
	}
	s->writing = true;
}

void events_store_changed(struct events_store *s)
{
	if (!s)
		return;
	s->dirty = true;
	events_store_flush(s);
}

/* A load that renamed a damaged file aside completes while the daemon ends:
 * the caller restores nothing then, and the events read would be left only
 * in events.pending.bad. They are written back (as the loop would have right
 * after the load), here on the calling thread as events_store_free does. */
static void events_store_write_loaded(struct events_store *s,
				      const struct events_store_state *state)
{
	char *text;
	int r;

	if ((!state->n_events && !state->summarised[0]) || work_threads_left_behind())
		return;
	text = events_store_format(state);
	if (!text)
		return; /* out of memory: the events stay in events.pending.bad */
	r = events_store_write_file(s->dir, text);
	if (r < 0)
		s->on_error(s->userdata, r);
	free(text);
}

static void events_store_load_done(void *arg, bool cancelled)
{
	struct events_store_req *req = arg;
	struct events_store *s = req->store;

	if (cancelled)
		events_store_state_clear(&req->loaded.state);
	else if (req->loaded.damaged && req->loaded.aside_error)
		s->hands_off = true;
	else if (req->loaded.damaged && s->freeing)
		events_store_write_loaded(s, &req->loaded.state);
	s->loaded(s->userdata, &req->loaded);
	events_store_req_free(req);
}

int events_store_load(struct events_store *s, events_store_loaded_fn loaded)
{
	struct events_store_req *req = events_store_req_new(s);
	int r;

	if (!req)
		return -ENOMEM;
	s->loaded = loaded;
	r = work_submit(s->pool, events_store_load_work, events_store_load_done, req);
	if (r < 0)
		events_store_req_free(req);
	return r;
}

int events_store_new(struct loop *loop, const char *state_dir, events_store_snapshot_fn snapshot,
		     events_store_error_fn on_error, void *userdata,
		     struct events_store **ret_store)
{
	struct events_store *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->snapshot = snapshot;
	s->on_error = on_error;
	s->userdata = userdata;
	s->dir = strdup(state_dir);
	if (!s->dir) {
		free(s);
		return -ENOMEM;
	}
	r = work_pool_new(loop, 1, &s->pool);
	if (r < 0) {
		free(s->dir);
		free(s);
		return r;
	}
	*ret_store = s;
	return 0;
}

void events_store_free(struct events_store *s)
{
	char *text;

	if (!s)
		return;
	s->freeing = true;
	work_pool_free(s->pool);
	/* The daemon is ending and the loop with it: the last change is written
	 * here rather than lost (as the done-record caches are at a stop). */
	if (s->dirty && !s->hands_off && !work_threads_left_behind() &&
	    (text = s->snapshot(s->userdata))) {
		int r = events_store_write_file(s->dir, text);

		if (r < 0)
			s->on_error(s->userdata, r);
		free(text);
	}
	free(s->dir);
	free(s);
}
