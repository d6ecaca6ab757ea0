#include "ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "api.h"
#include "fdio.h"
#include "journal.h"
#include "output.h"
#include "sidecar.h"

/* One line per payment, framed like the journal's (journal.c):
 * "SL1 P <length> <crc32> <payload>\n", payload {"folder","source","model",
 * "paid_ms","images"} as cJSON prints it unformatted (never a raw newline). */
#define LEDGER_LOG	"paid.log"
#define LEDGER_MAGIC	"SL1 "
#define LEDGER_KIND	'P'
#define LEDGER_READ_MAX ((size_t)1 << 30)

struct ledger {
	int dirfd;
	int fd; /* paid.log, O_APPEND */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t appended;    /* writes appended so far */
	uint64_t synced;      /* of which durable */
	uint64_t failed_upto; /* a failed sync covered writes up to this one */
	int failed_err;
	bool syncing;		      /* a writer is in fdatasync outside the lock */
	struct ledger_entry *entries; /* the loop thread's */
	size_t n, cap;
	char **seeded; /* folders whose records were taken in (ledger_first_seed) */
	size_t n_seeded;
};

static uint32_t line_crc(const char *payload, size_t len)
{
	char kind = LEDGER_KIND;

	return journal_crc32(journal_crc32(0, &kind, 1), payload, len);
}

static void entry_clear(struct ledger_entry *e)
{
	free(e->folder);
	free(e->source);
	free(e->model);
	memset(e, 0, sizeof(*e));
}

static char *entry_json(const struct ledger_entry *e)
{
	cJSON *o = cJSON_CreateObject();
	char *out = NULL;

	if (!o)
		return NULL;
	if (cJSON_AddStringToObject(o, "folder", e->folder) &&
	    cJSON_AddStringToObject(o, "source", e->source) &&
	    (e->model ? cJSON_AddStringToObject(o, "model", e->model)
		      : cJSON_AddNullToObject(o, "model")) &&
	    cJSON_AddNumberToObject(o, "paid_ms", (double)e->paid_ms) &&
	    cJSON_AddNumberToObject(o, "images", e->images))
		out = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return out;
}

static char *line_new(const struct ledger_entry *e, size_t *ret_len)
{
	char *payload = entry_json(e), *line = NULL;
	size_t len;
	int n;

	if (!payload)
		return NULL;
	len = strlen(payload);
	n = asprintf(&line, LEDGER_MAGIC "%c %zu %08" PRIx32 " %s\n", LEDGER_KIND, len,
		     line_crc(payload, len), payload);
	free(payload);
	if (n < 0)
		return NULL;
	*ret_len = (size_t)n;
	return line;
}

static char *dup_member(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) && v->valuestring[0] ? strdup(v->valuestring) : NULL;
}

/* One line without its '\n': 0 and *e filled, -EINVAL, or -ENOMEM. */
static int line_parse(const char *line, size_t len, struct ledger_entry *e)
{
	char head[64], *end;
	unsigned long long plen;
	unsigned long crc;
	const char *p;
	const cJSON *paid, *images;
	cJSON *o;
	int r = -EINVAL;

	if (len < 8 || memcmp(line, LEDGER_MAGIC, 4) != 0 || line[4] != LEDGER_KIND ||
	    line[5] != ' ')
		return -EINVAL;
	(void)snprintf(head, sizeof(head), "%.*s", (int)(len - 6 < 40 ? len - 6 : 40), line + 6);
	errno = 0;
	plen = strtoull(head, &end, 10);
	if (errno || end == head || *end != ' ')
		return -EINVAL;
	crc = strtoul(end + 1, &end, 16);
	if (errno || *end != ' ')
		return -EINVAL;
	p = line + 6 + (size_t)(end - head) + 1;
	if (p > line + len || (size_t)(line + len - p) != plen || line_crc(p, plen) != crc)
		return -EINVAL;
	o = cJSON_ParseWithLength(p, plen);
	if (!o)
		return -EINVAL;
	paid = cJSON_GetObjectItemCaseSensitive(o, "paid_ms");
	images = cJSON_GetObjectItemCaseSensitive(o, "images");
	if (!cJSON_IsNumber(paid) || paid->valuedouble < 0 || paid->valuedouble > 9e15 ||
	    !cJSON_IsNumber(images) || images->valuedouble < 0 ||
	    images->valuedouble > API_IMAGES_MAX)
		goto out;
	memset(e, 0, sizeof(*e));
	e->paid_ms = (int64_t)paid->valuedouble;
	e->images = (unsigned)images->valuedouble;
	e->folder = dup_member(o, "folder");
	e->source = dup_member(o, "source");
	e->model = dup_member(o, "model");
	if (!e->folder || !e->source) {
		r = -EINVAL;
		entry_clear(e);
		goto out;
	}
	r = 0;
out:
	cJSON_Delete(o);
	return r;
}

static int push(struct ledger *l, struct ledger_entry *e)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct ledger_entry *p = reallocarray(l->entries, cap, sizeof(*p));

		if (!p)
			return -ENOMEM;
		l->entries = p;
		l->cap = cap;
	}
	l->entries[l->n++] = *e;
	memset(e, 0, sizeof(*e));
	return 0;
}

/* Reads paid.log into l, keeping what was paid since keep_since_s; *ret_dropped:
 * lines left out (older, damaged or torn). */
static int load(struct ledger *l, int fd, int64_t keep_since_s, size_t *ret_dropped)
{
	char *buf = NULL, *line, *nl;
	size_t len = 0;
	int r;

	*ret_dropped = 0;
	r = fdio_read_file(fd, LEDGER_READ_MAX, &buf, &len);
	if (r < 0)
		return r;
	for (line = buf; line < buf + len; line = nl + 1) {
		struct ledger_entry e;

		nl = memchr(line, '\n', (size_t)(buf + len - line));
		if (!nl) {
			(*ret_dropped)++; /* torn: its writer never heard "durable" */
			break;
		}
		r = line_parse(line, (size_t)(nl - line), &e);
		if (r == -ENOMEM)
			goto out;
		if (r < 0 || e.paid_ms / 1000 < keep_since_s) {
			if (r == 0)
				entry_clear(&e);
			(*ret_dropped)++;
			continue;
		}
		r = push(l, &e);
		if (r < 0) {
			entry_clear(&e);
			goto out;
		}
	}
	r = 0;
out:
	free(buf);
	return r;
}

/* The file again with only the entries in memory (tmp + fsync + rename). */
static int rewrite(struct ledger *l)
{
	char *all = NULL;
	size_t len = 0, cap = 0;
	int r = 0, fd;

	for (size_t i = 0; i < l->n; i++) {
		size_t n;
		char *line = line_new(&l->entries[i], &n);

		if (!line) {
			r = -ENOMEM;
			goto out;
		}
		if (len + n + 1 > cap) {
			size_t c = (len + n + 1) * 2;
			char *p = realloc(all, c);

			if (!p) {
				free(line);
				r = -ENOMEM;
				goto out;
			}
			all = p;
			cap = c;
		}
		memcpy(all + len, line, n);
		len += n;
		free(line);
	}
	r = output_write_atomic(l->dirfd, LEDGER_LOG, all ? all : "", len);
	if (r < 0)
		goto out;
	fd = openat(l->dirfd, LEDGER_LOG, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	(void)close(l->fd);
	l->fd = fd;
out:
	free(all);
	return r;
}

int ledger_open(const char *state_dir, int64_t keep_since_s, struct ledger **ret_ledger,
		bool *ret_created)
{
	struct ledger *l;
	size_t dropped = 0;
	int r, rfd;

	*ret_created = false;
	r = output_mkdir_parents(state_dir, 0700);
	if (r < 0)
		return r;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->fd = -1;
	l->dirfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (l->dirfd < 0) {
		r = -errno;
		goto fail;
	}
	l->fd = openat(l->dirfd, LEDGER_LOG,
		       O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (l->fd >= 0) {
		*ret_created = true;
		r = output_sync_dir(l->dirfd); /* its name durable before its lines */
		if (r < 0)
			goto fail;
	} else if (errno == EEXIST) {
		l->fd = openat(l->dirfd, LEDGER_LOG, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
		if (l->fd < 0) {
			r = -errno;
			goto fail;
		}
		rfd = openat(l->dirfd, LEDGER_LOG, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (rfd < 0) {
			r = -errno;
			goto fail;
		}
		r = load(l, rfd, keep_since_s, &dropped);
		(void)close(rfd);
		if (r < 0)
			goto fail;
		/* Compacted to the month; a damaged tail is not appended to. */
		if (dropped && (r = rewrite(l)) < 0)
			goto fail;
	} else {
		r = -errno;
		goto fail;
	}
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->cond, NULL);
	*ret_ledger = l;
	return 0;
fail:
	for (size_t i = 0; i < l->n; i++)
		entry_clear(&l->entries[i]);
	free(l->entries);
	if (l->fd >= 0)
		(void)close(l->fd);
	if (l->dirfd >= 0)
		(void)close(l->dirfd);
	free(l);
	return r;
}

void ledger_close(struct ledger *ledger)
{
	if (!ledger)
		return;
	for (size_t i = 0; i < ledger->n; i++)
		entry_clear(&ledger->entries[i]);
	free(ledger->entries);
	for (size_t i = 0; i < ledger->n_seeded; i++)
		free(ledger->seeded[i]);
	free(ledger->seeded);
	(void)close(ledger->fd);
	(void)close(ledger->dirfd);
	pthread_mutex_destroy(&ledger->lock);
	pthread_cond_destroy(&ledger->cond);
	free(ledger);
}

bool ledger_has(const struct ledger *ledger, const char *folder, const char *source,
		int64_t paid_ms)
{
	for (size_t i = 0; i < ledger->n; i++) {
		const struct ledger_entry *e = &ledger->entries[i];

		if (e->paid_ms == paid_ms && !strcmp(e->source, source) &&
		    !strcmp(e->folder, folder))
			return true;
	}
	return false;
}

int ledger_add(struct ledger *ledger, const struct ledger_entry *e, char **ret_line,
	       size_t *ret_len)
{
	struct ledger_entry copy = {
	    .folder = strdup(e->folder),
	    .source = strdup(e->source),
	    .model = e->model ? strdup(e->model) : NULL,
	    .paid_ms = e->paid_ms,
	    .images = e->images > API_IMAGES_MAX ? API_IMAGES_MAX : e->images,
	};
	char *line = NULL;
	int r = -ENOMEM;

	if (!copy.folder || !copy.source || (e->model && !copy.model))
		goto fail;
	line = line_new(&copy, ret_len);
	if (!line)
		goto fail;
	r = push(ledger, &copy);
	if (r < 0)
		goto fail;
	*ret_line = line;
	return 0;
fail:
	free(line);
	entry_clear(&copy);
	return r;
}

int ledger_write(struct ledger *ledger, const char *lines, size_t len)
{
	uint64_t seq;
	int r;

	pthread_mutex_lock(&ledger->lock);
	r = fdio_write_all(ledger->fd, lines, len, NULL);
	if (r < 0)
		goto out;
	seq = ++ledger->appended;
	/* Group commit, as the journal's: one fdatasync covers every write
	 * appended before it, so a slow disk does not serialise the payments. */
	for (;;) {
		if (ledger->synced >= seq)
			break;
		if (ledger->failed_upto >= seq) {
			r = ledger->failed_err;
			break;
		}
		if (ledger->syncing) {
			pthread_cond_wait(&ledger->cond, &ledger->lock);
			continue;
		}
		{
			uint64_t upto = ledger->appended;
			int s;

			ledger->syncing = true;
			pthread_mutex_unlock(&ledger->lock);
			s = fdatasync(ledger->fd) < 0 ? -errno : 0;
			pthread_mutex_lock(&ledger->lock);
			ledger->syncing = false;
			if (s == 0) {
				ledger->synced = upto;
			} else {
				ledger->failed_upto = upto;
				ledger->failed_err = s;
			}
			pthread_cond_broadcast(&ledger->cond);
		}
	}
out:
	pthread_mutex_unlock(&ledger->lock);
	return r;
}

bool ledger_first_seed(struct ledger *ledger, const char *folder, int *ret_r)
{
	char **p, *copy;

	*ret_r = 0;
	for (size_t i = 0; i < ledger->n_seeded; i++)
		if (!strcmp(ledger->seeded[i], folder))
			return false;
	copy = strdup(folder);
	p = copy ? reallocarray(ledger->seeded, ledger->n_seeded + 1, sizeof(*p)) : NULL;
	if (!p) {
		free(copy);
		*ret_r = -ENOMEM;
		return false;
	}
	ledger->seeded = p;
	ledger->seeded[ledger->n_seeded++] = copy;
	return true;
}

void ledger_foreach(const struct ledger *ledger,
		    void (*fn)(const struct ledger_entry *e, void *userdata), void *userdata)
{
	for (size_t i = 0; i < ledger->n; i++)
		fn(&ledger->entries[i], userdata);
}

int64_t ledger_month_start(int64_t now_s)
{
	time_t t = (time_t)now_s;
	struct tm tm;

	if (!localtime_r(&t, &tm))
		return 0;
	tm.tm_mday = 1;
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	tm.tm_isdst = -1;
	return (int64_t)mktime(&tm);
}
