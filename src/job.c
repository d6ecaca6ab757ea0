#include "job.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "b64.h"
#include "image.h"
#include "journal.h"
#include "log.h"
#include "output.h"
#include "transfer.h"

#define JOBS_BACKOFF_BASE_MS 1000
#define JOBS_BACKOFF_CAP_MS  60000
#define JOBS_URL_VALID_MS    (24ull * 3600 * 1000) /* result URLs live 24 h */
#define JOBS_HASH_MIN        1024
#define JOBS_HASH_FOR_ERROR_MAX (256ull * 1024 * 1024)

enum job_state {
	JOB_SETTLING,   /* waiting for the file to stop changing */
	JOB_QUEUED,     /* valid, waiting for a generation slot */
	JOB_GENERATING, /* the API call is under way */
	JOB_FETCHING,   /* paid for: downloading or decoding the result */
	JOB_WAITING,    /* backing off before the next generation or fetch */
};

struct job {
	struct jobs *owner;
	struct folder *folder;
	char *rel;                 /* relative to the folder */
	enum job_state state;
	bool dirty;                /* changed while in flight: look again afterwards */
	bool retry_fetch;          /* the wait is for the fetch, not a new generation */
	uint64_t deadline;         /* settling and waiting, monotonic ms */
	size_t heap_pos;           /* SIZE_MAX when not in the deadline heap */
	uint64_t first_seen;       /* for incomplete_timeout */
	uint64_t size;             /* as last seen */
	struct timespec mtime;
	dev_t dev;                 /* the file validated: a swapped file is not it */
	ino_t ino;
	enum image_format format;
	unsigned attempts;         /* generation calls made */
	unsigned failures;         /* retryable failures so far */
	unsigned fetch_failures;
	uint64_t started;          /* first generation, monotonic ms */
	int64_t generated_at;      /* when the result arrived, epoch ms (URLs expire by the clock) */
	int64_t retry_after_ms;
	char *stem;                /* the output stem, while active */
	int out_dirfd;             /* the output folder, while active */
	char sha256[65];
	char request_id[128];
	struct transfer_gen *gen;
	struct transfer_dl *dl;
	struct api_result result;
	struct job *hash_next;
	struct job *prev, *next;   /* the queue (queued) or the active list (in flight) */
	struct job *stem_prev, *stem_next; /* jobs->stem_holders while stem is set */
};

struct job_list {
	struct job *head, *tail;
	size_t n;
};

struct jobs {
	struct loop *loop;
	struct http *http;
	const struct config *config;
	char *auth_header;
	bool once, stopping;
	struct job **table;        /* chained hash on (folder, rel) */
	size_t table_size, n_jobs;
	struct job **heap;         /* deadlines, min-heap */
	size_t heap_len, heap_cap;
	struct loop_timer *timer;  /* the earliest deadline */
	struct loop_timer *pause_timer;
	struct job_list queue, active;
	struct job *stem_holders;  /* every job holding an output stem not yet on disk */
	size_t n_settling, n_waiting;
	size_t n_paid_waiting;     /* waiting jobs whose result is already paid for */
	uint64_t done, failed, skipped, left_incomplete, generations;
	bool paused, probing;
	bool pumping, pump_again;  /* jobs_pump is not re-entered */
	char pause_reason[512];
	uint64_t rng;
	void (*on_change)(void *userdata);
	void *on_change_data;
	struct transfer_net net;
	char *gen_url;
	struct journal *journal;   /* may be NULL: no state_dir */
	/* Spend limits: images_per_minute as a token bucket (in milli-images,
	 * so refills need no floating point) and max_images_per_day. */
	uint64_t tokens_milli, tokens_at;
	int64_t day_end;           /* epoch s of the next local midnight */
	uint64_t images_today;     /* all folders */
	struct loop_timer *limit_timer;
	char limit_reason[256];
	bool limit_daily;          /* the reason is a daily limit (not a rate to wait out) */
	char disk_reason[256];     /* why writing outputs fails, while it does */
};

static void jobs_pump(struct jobs *jobs);
static void job_generate(struct jobs *jobs, struct job *job);
static void job_fetch(struct jobs *jobs, struct job *job);
static int copy_file(int src_fd, int dst_dirfd, const char *dst_name);
static int job_open_source(const struct job *job);
static bool job_source_unchanged(const struct job *job, int fd);
static void job_after_success(struct job *job);

/* ---- small helpers ---------------------------------------------------- */

static void jobs_changed(struct jobs *jobs)
{
	if (jobs->on_change)
		jobs->on_change(jobs->on_change_data);
}

static uint64_t jobs_random(struct jobs *jobs)
{
	/* xorshift64*: jitter only, nothing secret. */
	jobs->rng ^= jobs->rng >> 12;
	jobs->rng ^= jobs->rng << 25;
	jobs->rng ^= jobs->rng >> 27;
	return jobs->rng * 2685821657736338717ull;
}

/* Exponential backoff with full jitter; Retry-After is a floor. */
static uint64_t jobs_backoff(struct jobs *jobs, unsigned failures, int64_t retry_after_ms)
{
	uint64_t cap = JOBS_BACKOFF_BASE_MS;
	uint64_t delay;

	for (unsigned i = 1; i < failures && cap < JOBS_BACKOFF_CAP_MS; i++)
		cap *= 2;
	if (cap > JOBS_BACKOFF_CAP_MS)
		cap = JOBS_BACKOFF_CAP_MS;
	delay = jobs_random(jobs) % (cap + 1);
	if (retry_after_ms > 0 && (uint64_t)retry_after_ms > delay)
		delay = (uint64_t)retry_after_ms;
	return delay;
}

static bool same_mtime(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		log_oom();
	return p;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&p, fmt, ap);
	va_end(ap);
	if (r < 0)
		log_oom();
	return p;
}

/* The folder part of rel ("" at the top). */
static char *rel_dir(const char *rel)
{
	const char *slash = strrchr(rel, '/');
	char *d;

	if (!slash)
		return xstrdup("");
	d = strndup(rel, (size_t)(slash - rel));
	if (!d)
		log_oom();
	return d;
}

static const char *rel_base(const char *rel)
{
	const char *slash = strrchr(rel, '/');

	return slash ? slash + 1 : rel;
}

/* ---- lists ------------------------------------------------------------ */

static void list_append(struct job_list *l, struct job *job)
{
	job->next = NULL;
	job->prev = l->tail;
	if (l->tail)
		l->tail->next = job;
	else
		l->head = job;
	l->tail = job;
	l->n++;
}

static void list_prepend(struct job_list *l, struct job *job)
{
	job->prev = NULL;
	job->next = l->head;
	if (l->head)
		l->head->prev = job;
	else
		l->tail = job;
	l->head = job;
	l->n++;
}

static void list_remove(struct job_list *l, struct job *job)
{
	if (job->prev)
		job->prev->next = job->next;
	else
		l->head = job->next;
	if (job->next)
		job->next->prev = job->prev;
	else
		l->tail = job->prev;
	job->prev = job->next = NULL;
	l->n--;
}

/* ---- output stems held by jobs ---------------------------------------- */

static void job_hold_stem(struct jobs *jobs, struct job *job, char *stem)
{
	job->stem = stem;
	job->stem_prev = NULL;
	job->stem_next = jobs->stem_holders;
	if (jobs->stem_holders)
		jobs->stem_holders->stem_prev = job;
	jobs->stem_holders = job;
}

static void job_release_stem(struct jobs *jobs, struct job *job)
{
	if (!job->stem)
		return;
	if (job->stem_prev)
		job->stem_prev->stem_next = job->stem_next;
	else
		jobs->stem_holders = job->stem_next;
	if (job->stem_next)
		job->stem_next->stem_prev = job->stem_prev;
	job->stem_prev = job->stem_next = NULL;
	free(job->stem);
	job->stem = NULL;
}

/* ---- the deadline heap ------------------------------------------------ */

static void heap_swap(struct jobs *jobs, size_t a, size_t b)
{
	struct job *t = jobs->heap[a];

	jobs->heap[a] = jobs->heap[b];
	jobs->heap[b] = t;
	jobs->heap[a]->heap_pos = a;
	jobs->heap[b]->heap_pos = b;
}

static void heap_up(struct jobs *jobs, size_t i)
{
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (jobs->heap[parent]->deadline <= jobs->heap[i]->deadline)
			break;
		heap_swap(jobs, i, parent);
		i = parent;
	}
}

static void heap_down(struct jobs *jobs, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < jobs->heap_len && jobs->heap[l]->deadline < jobs->heap[m]->deadline)
			m = l;
		if (r < jobs->heap_len && jobs->heap[r]->deadline < jobs->heap[m]->deadline)
			m = r;
		if (m == i)
			return;
		heap_swap(jobs, i, m);
		i = m;
	}
}

static void jobs_rearm(struct jobs *jobs)
{
	if (jobs->heap_len == 0)
		loop_timer_disarm(jobs->timer); /* idle: no wake-ups */
	else
		(void)loop_timer_arm_at(jobs->timer, jobs->heap[0]->deadline);
}

static void heap_remove(struct jobs *jobs, struct job *job)
{
	size_t i = job->heap_pos;

	if (i == SIZE_MAX)
		return;
	job->heap_pos = SIZE_MAX;
	jobs->heap_len--;
	if (i != jobs->heap_len) {
		jobs->heap[i] = jobs->heap[jobs->heap_len];
		jobs->heap[i]->heap_pos = i;
		heap_up(jobs, i);
		heap_down(jobs, jobs->heap[i]->heap_pos);
	}
	jobs_rearm(jobs);
}

static void heap_set(struct jobs *jobs, struct job *job, uint64_t deadline)
{
	heap_remove(jobs, job);
	if (jobs->heap_len == jobs->heap_cap) {
		size_t cap = jobs->heap_cap ? jobs->heap_cap * 2 : 64;
		struct job **h = reallocarray(jobs->heap, cap, sizeof(*h));
		if (!h)
			log_oom();
		jobs->heap = h;
		jobs->heap_cap = cap;
	}
	job->deadline = deadline;
	job->heap_pos = jobs->heap_len;
	jobs->heap[jobs->heap_len++] = job;
	heap_up(jobs, job->heap_pos);
	jobs_rearm(jobs);
}

/* ---- the job table ---------------------------------------------------- */

static size_t job_hash(const struct folder *folder, const char *rel, size_t size)
{
	uint64_t h = 1469598103934665603ull ^ (uint64_t)(uintptr_t)folder;

	for (const unsigned char *p = (const unsigned char *)rel; *p; p++)
		h = (h ^ *p) * 1099511628211ull;
	return (size_t)(h & (size - 1));
}

static struct job *jobs_find(const struct jobs *jobs, const struct folder *folder,
			     const char *rel)
{
	for (struct job *j = jobs->table[job_hash(folder, rel, jobs->table_size)]; j;
	     j = j->hash_next)
		if (j->folder == folder && strcmp(j->rel, rel) == 0)
			return j;
	return NULL;
}

static void jobs_grow_table(struct jobs *jobs)
{
	size_t size = jobs->table_size * 2;
	struct job **t = calloc(size, sizeof(*t));

	if (!t)
		log_oom();
	for (size_t i = 0; i < jobs->table_size; i++) {
		struct job *j = jobs->table[i];
		while (j) {
			struct job *next = j->hash_next;
			size_t b = job_hash(j->folder, j->rel, size);
			j->hash_next = t[b];
			t[b] = j;
			j = next;
		}
	}
	free(jobs->table);
	jobs->table = t;
	jobs->table_size = size;
}

static struct job *jobs_create(struct jobs *jobs, struct folder *folder, const char *rel)
{
	struct job *job = calloc(1, sizeof(*job));
	size_t b;

	if (!job)
		log_oom();
	if (jobs->n_jobs >= jobs->table_size)
		jobs_grow_table(jobs);
	job->owner = jobs;
	job->folder = folder;
	job->rel = xstrdup(rel);
	job->heap_pos = SIZE_MAX;
	job->out_dirfd = -1;
	job->first_seen = loop_now_ms();
	job->state = JOB_SETTLING;
	jobs->n_settling++;
	b = job_hash(folder, rel, jobs->table_size);
	job->hash_next = jobs->table[b];
	jobs->table[b] = job;
	jobs->n_jobs++;
	return job;
}

static void job_release_transfers(struct jobs *jobs, struct job *job)
{
	if (job->gen) {
		if (job->state == JOB_GENERATING)
			http_cancel(jobs->http, job->gen->easy);
		transfer_gen_clear(job->gen);
		free(job->gen);
		job->gen = NULL;
	}
	if (job->dl) {
		if (job->state == JOB_FETCHING && job->dl->easy)
			http_cancel(jobs->http, job->dl->easy);
		transfer_dl_clear(job->dl);
		if (job->dl->fd >= 0)
			output_tmp_abort(job->out_dirfd, job->dl->fd, job->dl->tmp_name);
		free(job->dl);
		job->dl = NULL;
	}
}

/* Leaves whatever state the job is in, keeping the counters right. */
static void job_leave_state(struct jobs *jobs, struct job *job)
{
	heap_remove(jobs, job);
	switch (job->state) {
	case JOB_SETTLING:
		jobs->n_settling--;
		break;
	case JOB_QUEUED:
		list_remove(&jobs->queue, job);
		break;
	case JOB_WAITING:
		jobs->n_waiting--;
		if (job->retry_fetch)
			jobs->n_paid_waiting--;
		break;
	case JOB_GENERATING:
	case JOB_FETCHING:
		list_remove(&jobs->active, job);
		break;
	}
}

static void job_free(struct jobs *jobs, struct job *job)
{
	struct job **pp = &jobs->table[job_hash(job->folder, job->rel, jobs->table_size)];

	job_leave_state(jobs, job);
	while (*pp != job)
		pp = &(*pp)->hash_next;
	*pp = job->hash_next;
	jobs->n_jobs--;
	job_release_transfers(jobs, job);
	api_result_clear(&job->result);
	if (job->out_dirfd >= 0)
		close(job->out_dirfd);
	job_release_stem(jobs, job);
	free(job->rel);
	free(job);
}

static void job_settle(struct jobs *jobs, struct job *job, uint64_t delay_ms)
{
	job_leave_state(jobs, job);
	job->state = JOB_SETTLING;
	jobs->n_settling++;
	heap_set(jobs, job, loop_now_ms() + delay_ms);
}

static void job_wait(struct jobs *jobs, struct job *job, uint64_t delay_ms, bool fetch)
{
	job_leave_state(jobs, job);
	job->state = JOB_WAITING;
	job->retry_fetch = fetch;
	jobs->n_waiting++;
	if (fetch)
		jobs->n_paid_waiting++;
	heap_set(jobs, job, loop_now_ms() + delay_ms);
}

static void job_queue(struct jobs *jobs, struct job *job, bool front)
{
	job_leave_state(jobs, job);
	job->state = JOB_QUEUED;
	if (front)
		list_prepend(&jobs->queue, job);
	else
		list_append(&jobs->queue, job);
}

static void job_activate(struct jobs *jobs, struct job *job, enum job_state state)
{
	if (job->state != JOB_GENERATING && job->state != JOB_FETCHING) {
		job_leave_state(jobs, job);
		list_append(&jobs->active, job);
	}
	job->state = state;
}

/* ---- endings ---------------------------------------------------------- */

static char *job_output_dir(const struct job *job)
{
	char *dir = rel_dir(job->rel);
	char *path = dir[0] ? xasprintf("%s/%s", job->folder->cfg->output, dir)
			    : xstrdup(job->folder->cfg->output);

	free(dir);
	return path;
}

/* A job is over: free it, or look again if the file changed meanwhile. */
static void job_finish(struct jobs *jobs, struct job *job)
{
	if (job->dirty && !jobs->stopping) {
		job_release_transfers(jobs, job);
		api_result_clear(&job->result);
		if (job->out_dirfd >= 0)
			close(job->out_dirfd);
		job->out_dirfd = -1;
		job_release_stem(jobs, job);
		job->dirty = false;
		job->retry_fetch = false;
		job->attempts = job->failures = job->fetch_failures = 0;
		job->started = 0;
		job->generated_at = 0;
		job->retry_after_ms = 0;
		job->sha256[0] = '\0';
		job->request_id[0] = '\0';
		job->first_seen = loop_now_ms();
		job_settle(jobs, job, job->folder->cfg->settle_ms);
	} else {
		job_free(jobs, job);
	}
	jobs_changed(jobs);
	jobs_pump(jobs);
}

static size_t rel_dir_len(const char *rel)
{
	const char *slash = strrchr(rel, '/');

	return slash ? (size_t)(slash - rel) : 0;
}

struct stem_query {
	const struct jobs *jobs;
	const struct job *self;
};

/* Whether another job holds the stem in the same output folder: in flight,
 * waiting to fetch a paid result, or restored from the journal. */
static bool stem_reserved(const char *candidate, void *userdata)
{
	const struct stem_query *q = userdata;
	const char *out = q->self->folder->cfg->output;
	size_t dlen = rel_dir_len(q->self->rel);

	for (const struct job *j = q->jobs->stem_holders; j; j = j->stem_next) {
		if (j == q->self || strcmp(j->stem, candidate) != 0)
			continue;
		if (strcmp(j->folder->cfg->output, out) == 0 && rel_dir_len(j->rel) == dlen &&
		    strncmp(j->rel, q->self->rel, dlen) == 0)
			return true;
	}
	return false;
}

static int job_choose_stem(struct jobs *jobs, struct job *job)
{
	char stem[OUTPUT_STEM_MAX + 1], chosen[OUTPUT_NAME_MAX];
	struct stem_query q = {jobs, job};
	int r;

	if (job->stem)
		return 0;
	r = output_safe_stem(rel_base(job->rel), stem, sizeof(stem));
	if (r < 0)
		return r;
	r = output_choose_stem(job->out_dirfd, stem, job->rel, stem_reserved, &q, chosen,
			       sizeof(chosen));
	if (r < 0)
		return r;
	job_hold_stem(jobs, job, xstrdup(chosen));
	return 0;
}

static int job_open_output_dir(struct job *job)
{
	char *path;
	int r = 0;

	if (job->out_dirfd >= 0)
		return 0;
	path = job_output_dir(job);
	r = output_mkdir_parents(path, 0755);
	if (r < 0)
		goto out;
	job->out_dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (job->out_dirfd < 0)
		r = -errno;
out:
	free(path);
	return r;
}

static void job_fill_source(const struct job *job, struct sidecar_source *src)
{
	src->source = job->rel;
	src->sha256_hex = job->sha256[0] ? job->sha256 : NULL;
	src->size = job->size;
	src->mtime_sec = job->mtime.tv_sec;
	src->mtime_nsec = job->mtime.tv_nsec;
}

static void job_index_put(struct job *job, const char *sidecar_name, bool failed,
			  int64_t finished_at, int64_t generated_images)
{
	char *dir = rel_dir(job->rel);
	char *sidecar = dir[0] ? xasprintf("%s/%s", dir, sidecar_name) : xstrdup(sidecar_name);
	struct index_entry e = {
		.source = job->rel,
		.sidecar = sidecar,
		.size = job->size,
		.mtime_sec = job->mtime.tv_sec,
		.mtime_nsec = job->mtime.tv_nsec,
		.failed = failed,
		.finished_at = finished_at,
		.generated_images = generated_images,
	};

	memcpy(e.sha256, job->sha256, sizeof(e.sha256));
	if (index_put(job->folder->index, &e) < 0)
		log_oom();
	free(sidecar);
	free(dir);
}

static void job_journal_write(struct jobs *jobs, struct job *job)
{
	struct journal_record rec = {
		.folder = (char *)job->folder->cfg->path,
		.source = job->rel,
		.stem = job->stem,
		.url = job->result.url,
		.model = job->result.model,
		.result_size = job->result.size,
		.request_id = job->request_id[0] ? job->request_id : NULL,
		.usage = job->result.usage,
		.size = job->size,
		.mtime_sec = job->mtime.tv_sec,
		.mtime_nsec = job->mtime.tv_nsec,
		.created = job->result.created,
		.generated_at = job->generated_at,
		.elapsed_ms = loop_now_ms() - job->started,
		.attempts = job->attempts,
	};
	int r;

	if (!jobs->journal || !job->result.url)
		return; /* b64_json results are written out at once: nothing to resume */
	memcpy(rec.sha256, job->sha256, sizeof(rec.sha256));
	r = journal_write(jobs->journal, &rec);
	if (r < 0)
		log_warn("cannot journal the result of %s/%s: %s; a crash now would cost a "
			 "second generation",
			 job->folder->cfg->path, job->rel, strerror(-r));
}

static void job_journal_remove(struct jobs *jobs, struct job *job)
{
	int r;

	if (!jobs->journal)
		return;
	r = journal_remove(jobs->journal, job->folder->cfg->path, job->rel);
	if (r < 0)
		log_warn("cannot remove the journal record of %s/%s: %s", job->folder->cfg->path,
			 job->rel, strerror(-r));
}

/* The file fails for good: an .error.json next to where the output would be. */
static void job_fail(struct jobs *jobs, struct job *job, long http_status, const char *code,
		     const char *message)
{
	struct sidecar_error e = {0};
	char name[OUTPUT_NAME_MAX];
	char *doc = NULL;
	int r;

	jobs->failed++;
	log_job(LOG_WARNING, job->folder->cfg->path, job->rel,
		job->request_id[0] ? job->request_id : NULL, code, "failed %s/%s: %s: %s",
		job->folder->cfg->path, job->rel, code, message);
	r = job_open_output_dir(job);
	if (r < 0)
		goto out;
	r = job_choose_stem(jobs, job);
	if (r < 0)
		goto out;
	/* A huge file (a 16 GiB sparse "photo") must not hold the loop, and the
	 * watchdog, for the sake of an error record: hash up to ~150 ms worth. */
	if (!job->sha256[0] && job->size <= JOBS_HASH_FOR_ERROR_MAX) {
		int in = job_open_source(job);
		if (in >= 0) {
			if (job_source_unchanged(job, in))
				(void)transfer_sha256_fd(in, job->sha256);
			close(in);
		}
	}
	job_fill_source(job, &e.src);
	e.http_status = http_status;
	e.code = code;
	e.message = message;
	e.request_id = job->request_id[0] ? job->request_id : NULL;
	e.attempts = job->attempts;
	e.failed_at = loop_wall_ms() / 1000;
	e.version = SEEDREAMD_VERSION;
	doc = output_error_json(&e);
	if (!doc)
		log_oom();
	(void)snprintf(name, sizeof(name), "%s.error.json", job->stem);
	r = output_write_atomic(job->out_dirfd, name, doc, strlen(doc));
	if (r < 0)
		goto out;
	job_index_put(job, name, true, e.failed_at, 0);
	job_journal_remove(jobs, job);
out:
	if (r < 0)
		log_job(LOG_ERR, job->folder->cfg->path, job->rel, NULL, code,
			"cannot write the error sidecar for %s/%s: %s", job->folder->cfg->path,
			job->rel, strerror(-r));
	free(doc);
	job_finish(jobs, job);
}

/* ---- validation: before any money is spent ----------------------------- */

/* Opens path below dirfd without following any symbolic link on the way
 * (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), so a subfolder swapped for
 * a link cannot lead a read, a move or a delete out of the tree. Kernels or
 * seccomp filters without openat2 get openat with O_NOFOLLOW on the last part. */
static int open_beneath(int dirfd, const char *path, int flags)
{
	struct open_how how = {
		.flags = (uint64_t)(unsigned)(flags | O_NOFOLLOW | O_CLOEXEC),
		.resolve = (uint64_t)(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS),
	};
	long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));

	if (fd < 0 && (errno == ENOSYS || errno == EPERM))
		fd = openat(dirfd, path, flags | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : (int)fd;
}

static int job_open_source(const struct job *job)
{
	int dirfd, fd, flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC;

	dirfd = open(job->folder->cfg->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return -errno;
	/* O_NONBLOCK: a FIFO dropped in must not block the loop on open. */
	if (job->folder->cfg->follow_symlinks) {
		fd = openat(dirfd, job->rel, flags);
		if (fd < 0)
			fd = -errno;
	} else {
		fd = open_beneath(dirfd, job->rel, flags);
	}
	close(dirfd);
	return fd;
}

/* The folder holding the source, opened the same safe way, for on_success. */
static int job_open_source_dir(const struct job *job)
{
	int dirfd = open(job->folder->cfg->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), fd;
	char *dir;

	if (dirfd < 0)
		return -errno;
	dir = rel_dir(job->rel);
	fd = dir[0] ? open_beneath(dirfd, dir, O_RDONLY | O_DIRECTORY) : dup(dirfd);
	if (fd < 0 && !dir[0])
		fd = -errno;
	free(dir);
	close(dirfd);
	return fd;
}

static ssize_t read_at(int fd, uint8_t *buf, size_t len, off_t off)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = pread(fd, buf + got, len - got, off + (off_t)got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* Whether the done record (a sidecar that still exists) covers this version. */
static bool job_already_done(const struct folder *folder, const char *rel, const struct stat *st)
{
	const struct index_entry *e = index_get(folder->index, rel);
	char *path;
	bool exists;

	if (!e || e->size != (uint64_t)st->st_size || e->mtime_sec != st->st_mtim.tv_sec ||
	    e->mtime_nsec != st->st_mtim.tv_nsec)
		return false;
	path = xasprintf("%s/%s", folder->cfg->output, e->sidecar);
	exists = access(path, F_OK) == 0; /* a deleted .error.json means: try again */
	free(path);
	return exists;
}

/* Same bytes under a new mtime (copied again, touched): done already. */
static bool job_same_content_done(const struct job *job, int fd)
{
	const struct index_entry *e = index_get(job->folder->index, job->rel);
	char hex[65], *path;
	bool exists;

	if (!e || e->failed || e->size != job->size || !e->sha256[0])
		return false;
	if (transfer_sha256_fd(fd, hex) < 0 || strcmp(hex, e->sha256) != 0)
		return false;
	path = xasprintf("%s/%s", job->folder->cfg->output, e->sidecar);
	exists = access(path, F_OK) == 0;
	free(path);
	return exists;
}

static uint8_t *validate_buffer(void)
{
	/* One head buffer for the whole process: validation is synchronous. */
	static uint8_t *buf;

	if (!buf) {
		buf = malloc(IMAGE_HEAD_MAX);
		if (!buf)
			log_oom();
	}
	return buf;
}

/* A TIFF whose first directory lies beyond the head: read it where it is. */
static enum image_probe_result job_probe_tiff_tail(const struct job *job, size_t head_len,
						   struct image_info *info)
{
	uint64_t off = image_tiff_ifd_offset(validate_buffer(), head_len);
	uint8_t *window = malloc(IMAGE_TIFF_IFD_WINDOW);
	enum image_probe_result r = IMAGE_PROBE_CORRUPT;
	ssize_t n;
	int fd;

	if (!window)
		log_oom();
	fd = job_open_source(job);
	if (fd >= 0 && off < job->size) {
		n = read_at(fd, window, IMAGE_TIFF_IFD_WINDOW, (off_t)off);
		if (n >= 0)
			r = image_probe_tiff_ifd(validate_buffer(), head_len, window, (size_t)n, off,
						 job->size, info);
	}
	if (fd >= 0)
		close(fd);
	free(window);
	return r;
}

static const char *json_string(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Links (or copies) an output file into the job's output folder. */
static int job_link_output(struct job *job, const char *old_path, const char *new_name)
{
	int src = open(old_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), r;
	char tmp[300];
	int fd;

	if (src < 0)
		return -errno;
	fd = output_tmp_open(job->out_dirfd, new_name, tmp, sizeof(tmp));
	if (fd < 0) {
		close(src);
		return fd;
	}
	close(fd);
	(void)unlinkat(job->out_dirfd, tmp, 0);
	/* A hard link under the temporary name, renamed in: atomic like any output. */
	if (linkat(src, "", job->out_dirfd, tmp, AT_EMPTY_PATH) < 0 &&
	    linkat(AT_FDCWD, old_path, job->out_dirfd, tmp, 0) < 0) {
		r = copy_file(src, job->out_dirfd, tmp);
		if (r < 0) {
			close(src);
			return r;
		}
	}
	close(src);
	fd = openat(job->out_dirfd, tmp, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		(void)unlinkat(job->out_dirfd, tmp, 0);
		return r;
	}
	return output_tmp_commit(job->out_dirfd, fd, tmp, new_name);
}

/* The same bytes were already paid for under another name in this folder
 * (a file copied, or a subfolder renamed): reuse that result instead of
 * generating again, if it was made with the settings this file would get.
 * Returns true when the job was finished that way. */
static bool job_reuse(struct jobs *jobs, struct job *job, const struct index_entry *e)
{
	const struct folder_config *cfg = job->folder->cfg;
	char *path = xasprintf("%s/%s", cfg->output, e->sidecar), *text = NULL, *old_out = NULL;
	char out_name[OUTPUT_NAME_MAX], side_name[OUTPUT_NAME_MAX], *doc = NULL, *rel_out = NULL;
	struct sidecar_success s = {0};
	const char *output, *ext;
	cJSON *old = NULL, *wm;
	bool done = false;
	int fd, r;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0) {
		struct stat st;
		if (fstat(fd, &st) == 0 && st.st_size > 0 && st.st_size < 1024 * 1024) {
			text = calloc(1, (size_t)st.st_size + 1);
			if (!text)
				log_oom();
			if (read_at(fd, (uint8_t *)text, (size_t)st.st_size, 0) == st.st_size)
				old = cJSON_Parse(text);
		}
		close(fd);
	}
	output = old ? json_string(old, "output") : NULL;
	wm = old ? cJSON_GetObjectItemCaseSensitive(old, "watermark") : NULL;
	if (!output || json_string(old, "output_hex") || strstr(output, "..") ||
	    !json_string(old, "prompt") || strcmp(json_string(old, "prompt"), cfg->prompt) != 0 ||
	    !json_string(old, "size") || strcmp(json_string(old, "size"), cfg->size) != 0 ||
	    !cJSON_IsBool(wm) || cJSON_IsTrue(wm) != cfg->watermark)
		goto out; /* other settings (or not ours to read): generate anew */
	old_out = xasprintf("%s/%s", cfg->output, output);
	ext = strrchr(output, '.');
	if (job_open_output_dir(job) < 0 || job_choose_stem(jobs, job) < 0)
		goto out;
	(void)snprintf(out_name, sizeof(out_name), "%s%s", job->stem, ext ? ext : ".jpeg");
	r = job_link_output(job, old_out, out_name);
	if (r < 0)
		goto out;
	{
		char *dir = rel_dir(job->rel);
		rel_out = dir[0] ? xasprintf("%s/%s", dir, out_name) : xstrdup(out_name);
		free(dir);
	}
	job_fill_source(job, &s.src);
	s.output = rel_out;
	s.model = json_string(old, "model");
	s.prompt = cfg->prompt;
	s.size = cfg->size;
	s.result_size = json_string(old, "result_size");
	s.watermark = cfg->watermark;
	s.response_format = json_string(old, "response_format");
	s.created = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(old, "created"));
	s.usage = cJSON_GetObjectItemCaseSensitive(old, "usage");
	s.request_id = json_string(old, "request_id");
	s.attempts = 0;
	s.elapsed_ms = 0;
	s.completed_at = loop_wall_ms() / 1000;
	s.version = SEEDREAMD_VERSION;
	s.reused_from = e->source;
	doc = output_sidecar_json(&s);
	if (!doc)
		log_oom();
	(void)snprintf(side_name, sizeof(side_name), "%s.json", job->stem);
	if (output_write_atomic(job->out_dirfd, side_name, doc, strlen(doc)) < 0)
		goto out;
	log_job(LOG_INFO, cfg->path, job->rel, NULL, NULL,
		"done %s/%s -> %s/%s (the same image as %s: its result reused, no API call)",
		cfg->path, job->rel, cfg->output, rel_out, e->source);
	job_index_put(job, side_name, false, s.completed_at, 0);
	jobs->done++;
	done = true;
out:
	free(doc);
	free(rel_out);
	free(old_out);
	cJSON_Delete(old);
	free(text);
	free(path);
	if (done) {
		job_after_success(job);
		job_finish(jobs, job);
	}
	return done;
}

/* A copy of something already paid for in this folder, by content. */
static const struct index_entry *job_find_copy(struct job *job, int fd)
{
	const struct index_entry *e;
	char *path;
	bool exists;

	if (!index_may_have_size(job->folder->index, job->size))
		return NULL;
	if (!job->sha256[0] && transfer_sha256_fd(fd, job->sha256) < 0)
		return NULL;
	e = index_find_content(job->folder->index, job->size, job->sha256, job->rel);
	if (!e)
		return NULL;
	path = xasprintf("%s/%s", job->folder->cfg->output, e->sidecar);
	exists = access(path, F_OK) == 0;
	free(path);
	return exists ? e : NULL;
}

static void job_validate(struct jobs *jobs, struct job *job)
{
	const struct folder_config *cfg = job->folder->cfg;
	uint8_t tail[IMAGE_TAIL_MAX];
	struct image_info info = {0};
	enum image_probe_result pr;
	char msg[256];
	const char *code;
	struct stat st;
	ssize_t head_len, tail_len;
	bool complete;
	int fd;

	fd = job_open_source(job);
	if (fd < 0) {
		/* Deleted before submission, or a symlink we do not follow: nothing to do. */
		log_debug("dropped %s/%s: %s", cfg->path, job->rel, strerror(-fd));
		job_finish(jobs, job);
		return;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		job_finish(jobs, job);
		return;
	}
	if ((uint64_t)st.st_size != job->size || !same_mtime(&st.st_mtim, &job->mtime) ||
	    st.st_dev != job->dev || st.st_ino != job->ino) {
		/* Still being written (or replaced): wait for it to be quiet for a
		 * whole settle. */
		job->dev = st.st_dev;
		job->ino = st.st_ino;
		job->size = (uint64_t)st.st_size;
		job->mtime = st.st_mtim;
		close(fd);
		job_settle(jobs, job, cfg->settle_ms);
		return;
	}
	if (job_already_done(job->folder, job->rel, &st) || job_same_content_done(job, fd)) {
		jobs->skipped++;
		close(fd);
		job_finish(jobs, job);
		return;
	}
	{
		const struct index_entry *copy = job_find_copy(job, fd);
		if (copy && job_reuse(jobs, job, copy)) {
			close(fd);
			return;
		}
	}
	head_len = read_at(fd, validate_buffer(), IMAGE_HEAD_MAX, 0);
	tail_len = st.st_size > 0 ? read_at(fd, tail, sizeof(tail),
					    st.st_size > (off_t)sizeof(tail)
						    ? st.st_size - (off_t)sizeof(tail)
						    : 0)
				  : 0;
	close(fd);
	if (head_len < 0 || tail_len < 0) {
		job_fail(jobs, job, 0, "LocalValidation.Unreadable",
			 strerror(-(int)(head_len < 0 ? head_len : tail_len)));
		return;
	}
	pr = image_probe(validate_buffer(), (size_t)head_len, job->size, &info);
	if (pr == IMAGE_PROBE_CORRUPT && info.format == IMAGE_FORMAT_TIFF &&
	    image_tiff_ifd_offset(validate_buffer(), (size_t)head_len) >= (uint64_t)head_len)
		pr = job_probe_tiff_tail(job, (size_t)head_len, &info);
	complete = pr == IMAGE_PROBE_OK && image_tail_complete(info.format, tail, (size_t)tail_len);
	if (pr == IMAGE_PROBE_TRUNCATED || (pr == IMAGE_PROBE_OK && !complete)) {
		/* Maybe still arriving (a slow copy that closes between chunks). */
		if (loop_now_ms() - job->first_seen < cfg->incomplete_timeout_ms && !jobs->once) {
			job_settle(jobs, job, cfg->settle_ms > 1000 ? cfg->settle_ms : 1000);
			return;
		}
		if (jobs->once && loop_now_ms() - job->first_seen < cfg->incomplete_timeout_ms) {
			log_warn("%s/%s looks incomplete; left for a later run", cfg->path, job->rel);
			jobs->left_incomplete++;
			job_finish(jobs, job);
			return;
		}
		job_fail(jobs, job, 0, "LocalValidation.Truncated",
			 "the image is incomplete (its header or its end is missing) and did not "
			 "change within incomplete_timeout");
		return;
	}
	if (pr != IMAGE_PROBE_OK) {
		job_fail(jobs, job, 0, image_probe_code(pr), image_probe_message(pr));
		return;
	}
	code = image_check_limits(&info, job->size, cfg->max_input_bytes, msg, sizeof(msg));
	if (code) {
		job_fail(jobs, job, 0, code, msg);
		return;
	}
	job->format = info.format;
	job_queue(jobs, job, false);
	jobs_changed(jobs);
	jobs_pump(jobs);
}

/* ---- generation ------------------------------------------------------- */

static void jobs_pause(struct jobs *jobs, const struct api_result *res)
{
	(void)snprintf(jobs->pause_reason, sizeof(jobs->pause_reason),
		       "paused: the API refused the account or configuration (HTTP %ld %s: %s)",
		       res->http_status, res->error_code ? res->error_code : "?",
		       res->error_message ? res->error_message : "");
	if (!jobs->paused)
		log_error("%s; no file is marked failed; trying again in %llu s",
			  jobs->pause_reason,
			  (unsigned long long)jobs->config->api.pause_retry_ms / 1000);
	jobs->paused = true;
	jobs->probing = false;
	if (jobs->once) {
		/* A batch run cannot wait it out: stop, leaving the files for later. */
		jobs->stopping = true;
		return;
	}
	(void)loop_timer_arm(jobs->pause_timer, jobs->config->api.pause_retry_ms);
}

static void jobs_pause_timer(void *userdata)
{
	struct jobs *jobs = userdata;

	/* One request probes whether the account works again. */
	jobs->probing = true;
	jobs_pump(jobs);
}

static void job_retry_or_fail(struct jobs *jobs, struct job *job, long status, const char *code,
			      const char *message, int64_t retry_after_ms)
{
	uint64_t delay;

	job->failures++;
	if (job->failures > jobs->config->api.retries) {
		char text[512];
		(void)snprintf(text, sizeof(text), "%s (gave up after %u attempts)", message,
			       job->attempts);
		job_fail(jobs, job, status, code, text);
		return;
	}
	delay = jobs_backoff(jobs, job->failures, retry_after_ms);
	log_job(LOG_INFO, job->folder->cfg->path, job->rel,
		job->request_id[0] ? job->request_id : NULL, code,
		"retrying %s/%s in %llu ms: %s: %s", job->folder->cfg->path, job->rel,
		(unsigned long long)delay, code, message);
	job_wait(jobs, job, delay, false);
	jobs_changed(jobs);
	jobs_pump(jobs);
}

static bool job_source_unchanged(const struct job *job, int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_dev == job->dev &&
	       st.st_ino == job->ino && (uint64_t)st.st_size == job->size &&
	       same_mtime(&st.st_mtim, &job->mtime);
}

static void job_generated(CURL *easy, CURLcode result, void *userdata)
{
	struct job *job = userdata;
	struct jobs *jobs = job->owner;
	struct transfer_gen *g = job->gen;
	struct api_result *res = &job->result;
	long status = 0;

	(void)curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	memcpy(job->request_id, g->request_id, sizeof(job->request_id));
	job->folder->images_reserved--;
	if (g->sha256_hex[0])
		memcpy(job->sha256, g->sha256_hex, sizeof(job->sha256));
	jobs->probing = false;
	if (jobs->paused)
		/* Unless this answer settles it, probe again later. */
		(void)loop_timer_arm(jobs->pause_timer, jobs->config->api.pause_retry_ms);

	if (!g->file_changed && !job_source_unchanged(job, g->fd) && result == CURLE_OK &&
	    g->sha256_hex[0]) {
		/* Changed after being read in full: what was sent is one whole
		 * version (its SHA-256 is in the sidecar). A paid answer is kept;
		 * the new version is looked at afterwards. */
		job->dirty = true;
	} else if (g->file_changed || !job_source_unchanged(job, g->fd)) {
		/* The file changed while it was being sent: what was sent is not the
		 * file. Look at the new version once it settles. */
		log_warn("%s/%s changed while it was being sent; waiting for it to settle",
			 job->folder->cfg->path, job->rel);
		job_release_transfers(jobs, job);
		job_settle(jobs, job, job->folder->cfg->settle_ms);
		jobs_pump(jobs);
		return;
	}
	if (result != CURLE_OK) {
		char msg[256];
		const char *code = g->body_too_large ? "ResponseTooLarge" : "NetworkError";
		(void)snprintf(msg, sizeof(msg), "%s", curl_easy_strerror(result));
		job_release_transfers(jobs, job);
		job_retry_or_fail(jobs, job, status, code, msg, -1);
		return;
	}
	api_result_clear(res);
	if (api_parse_response(status, g->body ? g->body : "", g->body_len, res) < 0)
		log_oom();
	{
		int64_t ra = api_parse_retry_after(g->retry_after[0] ? g->retry_after : NULL,
						   loop_wall_ms() / 1000);
		job->retry_after_ms = ra;
	}
	job_release_transfers(jobs, job);
	if (jobs->paused && res->outcome != API_OUTCOME_PAUSE) {
		log_info("the API answers again (HTTP %ld); resuming", status);
		jobs->paused = false;
		loop_timer_disarm(jobs->pause_timer);
	}

	switch (res->outcome) {
	case API_OUTCOME_OK: {
		uint64_t images = res->generated_images > 0 ? (uint64_t)res->generated_images : 1;
		jobs->generations += images;
		jobs->images_today += images;
		job->folder->images_today += images;
		job->generated_at = loop_wall_ms();
		job_journal_write(jobs, job);
		job_fetch(jobs, job);
		break;
	}
	case API_OUTCOME_FILE_FAIL:
		job_fail(jobs, job, status, res->error_code ? res->error_code : "Unknown",
			 res->error_message ? res->error_message : "");
		break;
	case API_OUTCOME_RETRY:
		job_retry_or_fail(jobs, job, status,
				  res->error_code ? res->error_code : "Unknown",
				  res->error_message ? res->error_message : "", job->retry_after_ms);
		break;
	case API_OUTCOME_PAUSE:
		/* Not this file's fault: it goes back to the front of the queue. */
		jobs_pause(jobs, res);
		job_queue(jobs, job, true);
		jobs_changed(jobs);
		jobs_pump(jobs);
		break;
	}
}

static void job_generate(struct jobs *jobs, struct job *job)
{
	const struct folder_config *cfg = job->folder->cfg;
	struct api_request req = {
		.model = jobs->config->api.model,
		.prompt = cfg->prompt,
		.size = cfg->size,
		.watermark = cfg->watermark,
		.response_format =
			jobs->config->api.response_format == RESPONSE_FORMAT_B64_JSON ? "b64_json"
											: "url",
		.image_format = image_format_name(job->format),
	};
	char *prefix = NULL, *suffix = NULL;
	int fd, r;

	fd = job_open_source(job);
	if (fd < 0) {
		job_finish(jobs, job); /* gone since it was queued */
		return;
	}
	if (!job_source_unchanged(job, fd)) {
		close(fd);
		job_settle(jobs, job, cfg->settle_ms);
		return;
	}
	r = job_open_output_dir(job);
	if (r >= 0)
		r = job_choose_stem(jobs, job);
	if (r < 0) {
		close(fd);
		job_retry_or_fail(jobs, job, 0, "OutputFolder", strerror(-r), -1);
		return;
	}
	r = api_request_frame(&req, &prefix, &suffix);
	if (r < 0)
		log_oom();
	job->gen = calloc(1, sizeof(*job->gen));
	if (!job->gen)
		log_oom();
	job->gen->fd = -1;
	r = transfer_gen_setup(job->gen, jobs->gen_url, jobs->auth_header, prefix, suffix, fd,
			       job->size, &jobs->net);
	if (r >= 0)
		r = http_start(jobs->http, job->gen->easy, job_generated, job);
	if (r < 0)
		log_oom();
	if (!job->started)
		job->started = loop_now_ms();
	job->attempts++;
	job->folder->images_reserved++;
	job->request_id[0] = '\0';
	job_activate(jobs, job, JOB_GENERATING);
	log_debug("submitting %s/%s (%s, %llu bytes, attempt %u)", cfg->path, job->rel,
		  req.image_format, (unsigned long long)job->size, job->attempts);
}

/* ---- the paid-for result: fetch and commit ---------------------------- */

static bool disk_space_ok(const struct jobs *jobs, int dirfd)
{
	struct statvfs sv;

	if (fstatvfs(dirfd, &sv) < 0)
		return true;
	return (uint64_t)sv.f_bavail * sv.f_frsize >= jobs->config->min_free_space;
}

static void job_fetch_failed(struct jobs *jobs, struct job *job, const char *why)
{
	uint64_t delay;

	job->fetch_failures++;
	/* The URL lives 24 h: keep trying within that, never generate again.
	 * A batch run (--once) gives up after api.retries. */
	if (loop_wall_ms() - job->generated_at > (int64_t)JOBS_URL_VALID_MS ||
	    (jobs->once && job->fetch_failures > jobs->config->api.retries)) {
		job_fail(jobs, job, 0, "FetchFailed", why);
		return;
	}
	delay = jobs_backoff(jobs, job->fetch_failures, -1);
	(void)snprintf(jobs->disk_reason, sizeof(jobs->disk_reason),
		       "writing results is failing (%s/%s: %s); kept and retried",
		       job->folder->cfg->output, job->rel, why);
	log_job(LOG_WARNING, job->folder->cfg->path, job->rel,
		job->request_id[0] ? job->request_id : NULL, NULL,
		"fetching the result of %s/%s failed (%s); trying again in %llu ms",
		job->folder->cfg->path, job->rel, why, (unsigned long long)delay);
	job_wait(jobs, job, delay, true);
	jobs_changed(jobs);
	jobs_pump(jobs); /* a download waiting to retry holds no generation slot */
}

/* Copies src to dst (O_EXCL) and fsyncs it: moves across filesystems. */
static int copy_file(int src_fd, int dst_dirfd, const char *dst_name)
{
	char buf[64 * 1024];
	int out = openat(dst_dirfd, dst_name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644), r = 0;
	off_t off = 0;

	if (out < 0)
		return -errno;
	for (;;) {
		ssize_t n = pread(src_fd, buf, sizeof(buf), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : 0;
			break;
		}
		for (ssize_t done = 0; done < n;) {
			ssize_t w = write(out, buf + done, (size_t)(n - done));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				r = -errno;
				goto out;
			}
			done += w;
		}
		off += n;
	}
	if (r == 0 && fsync(out) < 0)
		r = -errno;
out:
	close(out);
	if (r < 0)
		(void)unlinkat(dst_dirfd, dst_name, 0);
	return r;
}

/* on_success: move the original to done_dir (mirroring its relative path,
 * never over another file) or delete it. Only after the output and its
 * sidecar are on disk, and only if the file is still the version sent. */
static void job_after_success(struct job *job)
{
	const struct folder_config *cfg = job->folder->cfg;
	char *dir = NULL, *dest_dir = NULL, name[OUTPUT_NAME_MAX + 16];
	const char *base = rel_base(job->rel), *dot;
	int src_dir = -1, fd = -1, dest_fd = -1, r = 0;
	struct stat st;

	if (cfg->on_success == ON_SUCCESS_KEEP)
		return;
	src_dir = job_open_source_dir(job);
	fd = job_open_source(job);
	/* The name must still be the very file that was sent, reached without
	 * a link on the way: never move or delete anything else. */
	if (src_dir < 0 || fd < 0 || !job_source_unchanged(job, fd) || job->dirty ||
	    fstatat(src_dir, base, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_ino != job->ino ||
	    st.st_dev != job->dev) {
		log_info("%s/%s changed or went away; left in place", cfg->path, job->rel);
		goto out;
	}
	if (cfg->on_success == ON_SUCCESS_DELETE) {
		if (unlinkat(src_dir, base, 0) < 0)
			r = -errno;
		goto out;
	}
	dir = rel_dir(job->rel);
	dest_dir = dir[0] ? xasprintf("%s/%s", cfg->done_dir, dir) : xstrdup(cfg->done_dir);
	r = output_mkdir_parents(dest_dir, 0755);
	if (r < 0)
		goto out;
	dest_fd = open(dest_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dest_fd < 0) {
		r = -errno;
		goto out;
	}
	dot = strrchr(base, '.');
	(void)snprintf(name, sizeof(name), "%s", base);
	for (unsigned n = 2; faccessat(dest_fd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0; n++) {
		if (n > 9999) {
			r = -EEXIST;
			goto out;
		}
		(void)snprintf(name, sizeof(name), "%.*s-%u%s",
			       (int)(dot ? dot - base : (long)strlen(base)), base, n, dot ? dot : "");
	}
	if (renameat(src_dir, base, dest_fd, name) < 0) {
		if (errno != EXDEV) {
			r = -errno;
			goto out;
		}
		r = copy_file(fd, dest_fd, name);
		if (r == 0 && unlinkat(src_dir, base, 0) < 0)
			r = -errno;
	}
	if (r == 0)
		(void)fsync(dest_fd);
out:
	if (r < 0)
		log_warn("on_success for %s/%s failed: %s; the original stays", cfg->path, job->rel,
			 strerror(-r));
	if (dest_fd >= 0)
		close(dest_fd);
	if (fd >= 0)
		close(fd);
	if (src_dir >= 0) {
		(void)fsync(src_dir);
		close(src_dir);
	}
	free(dest_dir);
	free(dir);
}

/* The output file is complete in a temporary file: rename it in, then the
 * sidecar, which is the "done" record. */
static void job_commit(struct jobs *jobs, struct job *job, int tmp_fd, const char *tmp_name,
		       const uint8_t *magic, size_t magic_len)
{
	const struct folder_config *cfg = job->folder->cfg;
	enum image_format fmt = image_sniff(magic, magic_len);
	char out_name[OUTPUT_NAME_MAX], side_name[OUTPUT_NAME_MAX], err_name[OUTPUT_NAME_MAX];
	struct sidecar_success s = {0};
	char *doc;
	int r;

	(void)snprintf(out_name, sizeof(out_name), "%s%s", job->stem, output_ext_for(fmt));
	r = output_tmp_commit(job->out_dirfd, tmp_fd, tmp_name, out_name);
	if (r < 0) {
		job_fetch_failed(jobs, job, strerror(-r));
		return;
	}
	job_fill_source(job, &s.src);
	s.output = NULL;
	{
		char *dir = rel_dir(job->rel);
		char *rel_out = dir[0] ? xasprintf("%s/%s", dir, out_name) : xstrdup(out_name);
		s.output = rel_out;
		free(dir);
	}
	s.model = job->result.model ? job->result.model : jobs->config->api.model;
	s.prompt = cfg->prompt;
	s.size = cfg->size;
	s.result_size = job->result.size;
	s.watermark = cfg->watermark;
	s.response_format =
		jobs->config->api.response_format == RESPONSE_FORMAT_B64_JSON ? "b64_json" : "url";
	s.created = job->result.created;
	s.usage = job->result.usage;
	s.request_id = job->request_id[0] ? job->request_id : NULL;
	s.attempts = job->attempts;
	s.elapsed_ms = loop_now_ms() - job->started;
	s.completed_at = loop_wall_ms() / 1000;
	s.version = SEEDREAMD_VERSION;
	doc = output_sidecar_json(&s);
	if (!doc)
		log_oom();
	(void)snprintf(side_name, sizeof(side_name), "%s.json", job->stem);
	r = output_write_atomic(job->out_dirfd, side_name, doc, strlen(doc));
	free(doc);
	if (r < 0) {
		free((char *)s.output);
		job_fetch_failed(jobs, job, strerror(-r));
		return;
	}
	(void)snprintf(err_name, sizeof(err_name), "%s.error.json", job->stem);
	(void)unlinkat(job->out_dirfd, err_name, 0); /* an old failure of this source */
	job_index_put(job, side_name, false, s.completed_at,
		      job->result.generated_images > 0 ? job->result.generated_images : 1);
	job_journal_remove(jobs, job);
	jobs->disk_reason[0] = '\0';
	job_after_success(job);
	jobs->done++;
	log_job(LOG_INFO, cfg->path, job->rel, s.request_id, NULL,
		"done %s/%s -> %s/%s (%u attempt%s, %llu ms)", cfg->path, job->rel, cfg->output,
		s.output, job->attempts, job->attempts == 1 ? "" : "s",
		(unsigned long long)s.elapsed_ms);
	free((char *)s.output);
	job_finish(jobs, job);
}

static void job_downloaded(CURL *easy, CURLcode result, void *userdata)
{
	struct job *job = userdata;
	struct jobs *jobs = job->owner;
	struct transfer_dl *d = job->dl;
	long status = 0;
	char why[256];

	(void)curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	transfer_dl_clear(d);
	if (result == CURLE_OK && status == 200 && d->written > 0) {
		int fd = d->fd;
		char tmp[sizeof(d->tmp_name)];
		uint8_t magic[sizeof(d->magic)];
		size_t magic_len = d->magic_len;

		memcpy(tmp, d->tmp_name, sizeof(tmp));
		memcpy(magic, d->magic, sizeof(magic));
		free(job->dl);
		job->dl = NULL;
		job_commit(jobs, job, fd, tmp, magic, magic_len);
		return;
	}
	if (d->write_errno)
		(void)snprintf(why, sizeof(why), "writing the output: %s", strerror(d->write_errno));
	else if (d->too_large)
		(void)snprintf(why, sizeof(why), "the image is larger than %u bytes",
			       TRANSFER_IMAGE_MAX);
	else if (result != CURLE_OK)
		(void)snprintf(why, sizeof(why), "%s", curl_easy_strerror(result));
	else
		(void)snprintf(why, sizeof(why), "HTTP %ld", status);
	job_release_transfers(jobs, job);
	job_fetch_failed(jobs, job, why);
}

static int job_decode_b64(struct job *job, int fd, uint8_t *magic, size_t *magic_len)
{
	const char *text = job->result.b64_json;
	size_t len = strlen(text), out_len = 0, off = 0;
	uint8_t *buf = malloc(len / 4 * 3 + 3);
	int r;

	if (!buf)
		return -ENOMEM;
	r = b64_decode(text, len, buf, &out_len);
	if (r < 0 || out_len == 0)
		goto out;
	*magic_len = out_len < 16 ? out_len : 16;
	memcpy(magic, buf, *magic_len);
	while (off < out_len) {
		ssize_t w = write(fd, buf + off, out_len - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out;
		}
		off += (size_t)w;
	}
	r = 0;
out:
	if (r == 0 && out_len == 0)
		r = -EINVAL;
	free(buf);
	return r;
}

static void job_fetch(struct jobs *jobs, struct job *job)
{
	char tmp[300], final_hint[OUTPUT_NAME_MAX];
	uint8_t magic[16];
	size_t magic_len = 0;
	int fd, r;

	job_activate(jobs, job, JOB_FETCHING);
	jobs_pump(jobs); /* the generation slot is free: fill it while this downloads */
	r = job_open_output_dir(job);
	if (r < 0) {
		job_fetch_failed(jobs, job, strerror(-r));
		return;
	}
	if (!disk_space_ok(jobs, job->out_dirfd)) {
		job_fetch_failed(jobs, job, "less free space than min_free_space");
		return;
	}
	(void)snprintf(final_hint, sizeof(final_hint), "%s.out", job->stem);
	fd = output_tmp_open(job->out_dirfd, final_hint, tmp, sizeof(tmp));
	if (fd < 0) {
		job_fetch_failed(jobs, job, strerror(-fd));
		return;
	}
	if (job->result.b64_json) {
		r = job_decode_b64(job, fd, magic, &magic_len);
		if (r == -EINVAL) {
			output_tmp_abort(job->out_dirfd, fd, tmp);
			job_fail(jobs, job, 200, "MalformedResponse",
				 "data[0].b64_json is not valid base64");
			return;
		}
		if (r < 0) {
			output_tmp_abort(job->out_dirfd, fd, tmp);
			job_fetch_failed(jobs, job, strerror(-r));
			return;
		}
		job_commit(jobs, job, fd, tmp, magic, magic_len);
		return;
	}
	if (!job->result.url || !transfer_url_allowed(job->result.url, &jobs->net)) {
		output_tmp_abort(job->out_dirfd, fd, tmp);
		job_fail(jobs, job, 200, "UnsafeResultURL",
			 "the result URL is missing or not https");
		return;
	}
	job->dl = calloc(1, sizeof(*job->dl));
	if (!job->dl)
		log_oom();
	job->dl->fd = fd;
	memcpy(job->dl->tmp_name, tmp, sizeof(job->dl->tmp_name));
	r = transfer_dl_setup(job->dl, job->result.url, &jobs->net);
	if (r >= 0)
		r = http_start(jobs->http, job->dl->easy, job_downloaded, job);
	if (r < 0)
		log_oom();
}

/* ---- scheduling ------------------------------------------------------- */

static size_t jobs_generating(const struct jobs *jobs)
{
	size_t n = 0;

	for (const struct job *j = jobs->active.head; j; j = j->next)
		if (j->state == JOB_GENERATING)
			n++;
	return n;
}

/* The epoch second of the next local midnight after t. */
static int64_t next_midnight(int64_t t)
{
	time_t now = (time_t)t;
	struct tm tm;

	if (!localtime_r(&now, &tm))
		return t + 86400;
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	tm.tm_mday++;
	tm.tm_isdst = -1;
	return (int64_t)mktime(&tm);
}

static void jobs_roll_day(struct jobs *jobs, struct folder *folder)
{
	int64_t now = loop_wall_ms() / 1000;

	if (now >= jobs->day_end) {
		jobs->images_today = 0;
		jobs->day_end = next_midnight(now);
	}
	if (folder && now >= folder->images_day_end) {
		folder->images_today = 0;
		folder->images_day_end = next_midnight(now);
	}
}

/* Whether the global spend limits allow one more generation now; if not,
 * the limit timer is armed for when they will. */
static bool jobs_spend_allows(struct jobs *jobs, size_t generating)
{
	const struct config *cfg = jobs->config;
	uint64_t now = loop_now_ms();

	jobs_roll_day(jobs, NULL);
	if (cfg->max_images_per_day && jobs->images_today + generating >= cfg->max_images_per_day) {
		(void)snprintf(jobs->limit_reason, sizeof(jobs->limit_reason),
			       "daily limit reached (%llu of max_images_per_day %llu); resuming at "
			       "midnight",
			       (unsigned long long)jobs->images_today,
			       (unsigned long long)cfg->max_images_per_day);
		jobs->limit_daily = true;
		(void)loop_timer_arm(jobs->limit_timer,
				     (uint64_t)(jobs->day_end - loop_wall_ms() / 1000) * 1000 + 1000);
		return false;
	}
	if (cfg->images_per_minute) {
		uint64_t cap = cfg->images_per_minute * 1000;
		jobs->tokens_milli += (now - jobs->tokens_at) * cfg->images_per_minute / 60;
		if (jobs->tokens_milli > cap)
			jobs->tokens_milli = cap;
		jobs->tokens_at = now;
		if (jobs->tokens_milli < 1000) {
			uint64_t wait = (1000 - jobs->tokens_milli) * 60 / cfg->images_per_minute + 1;
			(void)snprintf(jobs->limit_reason, sizeof(jobs->limit_reason),
				       "images_per_minute %llu reached",
				       (unsigned long long)cfg->images_per_minute);
			(void)loop_timer_arm(jobs->limit_timer, wait);
			return false;
		}
	}
	return true;
}

static bool folder_spend_allows(struct jobs *jobs, struct folder *folder)
{
	uint64_t limit = folder->cfg->max_images_per_day;

	if (!limit)
		return true;
	jobs_roll_day(jobs, folder);
	if (folder->images_today + folder->images_reserved < limit)
		return true;
	(void)snprintf(jobs->limit_reason, sizeof(jobs->limit_reason),
		       "folder %s reached its daily limit (%llu images); resuming at midnight",
		       folder->cfg->path, (unsigned long long)limit);
	jobs->limit_daily = true;
	(void)loop_timer_arm(jobs->limit_timer,
			     (uint64_t)(folder->images_day_end - loop_wall_ms() / 1000) * 1000 + 1000);
	return false;
}

static void jobs_pump(struct jobs *jobs)
{
	struct job *job;

	/* Starting a job can end another one, which pumps again: run the loop
	 * once, and go round again from the head instead of nesting. */
	if (jobs->pumping) {
		jobs->pump_again = true;
		return;
	}
	jobs->pumping = true;
again:
	jobs->pump_again = false;
	jobs->limit_reason[0] = '\0';
	jobs->limit_daily = false;
	job = jobs->queue.head;
	while (job && !jobs->stopping) {
		size_t generating = jobs_generating(jobs);

		if (jobs->paused && !jobs->probing)
			break;
		if (jobs->paused && generating > 0)
			break; /* the probe is under way */
		if (generating >= jobs->config->api.max_in_flight)
			break;
		if (!jobs_spend_allows(jobs, generating))
			break;
		if (job->folder->removed) {
			struct job *next = job->next;
			job_free(jobs, job); /* a reload removed its folder: spend nothing more */
			job = next;
			continue;
		}
		if (!folder_spend_allows(jobs, job->folder)) {
			job = job->next; /* other folders may still spend */
			continue;
		}
		if (jobs->config->images_per_minute)
			jobs->tokens_milli -= 1000;
		job_generate(jobs, job);
		if (jobs->paused)
			break; /* one probe at a time */
		if (jobs->pump_again)
			goto again;
		/* The job left the queue (or went back to settling): start over
		 * from the head, skipping folders held back by their limits. */
		job = jobs->queue.head;
		while (job && job->folder->cfg->max_images_per_day &&
		       !folder_spend_allows(jobs, job->folder))
			job = job->next;
	}
	if (jobs->pump_again)
		goto again;
	jobs->pumping = false;
	jobs_changed(jobs);
}

static void jobs_limit_timer(void *userdata)
{
	jobs_pump(userdata);
}

static void jobs_deadline(void *userdata)
{
	struct jobs *jobs = userdata;
	uint64_t now = loop_now_ms();

	while (jobs->heap_len > 0 && jobs->heap[0]->deadline <= now) {
		struct job *job = jobs->heap[0];
		heap_remove(jobs, job);
		if (job->folder->removed && !(job->state == JOB_WAITING && job->retry_fetch)) {
			job_free(jobs, job); /* a reload removed its folder: spend nothing more */
			continue;
		}
		if (job->state == JOB_SETTLING) {
			if (jobs->stopping) {
				job_free(jobs, job);
				continue;
			}
			job_validate(jobs, job);
		} else if (job->state == JOB_WAITING) {
			if (job->retry_fetch) {
				job_fetch(jobs, job);
			} else {
				job_queue(jobs, job, true);
				jobs_pump(jobs);
			}
		}
	}
	jobs_rearm(jobs);
	jobs_changed(jobs);
}

/* ---- the public side -------------------------------------------------- */

int jobs_new(struct loop *loop, struct http *http, const struct config *config,
	     const char *api_key, bool once, struct jobs **ret_jobs)
{
	struct jobs *jobs = calloc(1, sizeof(*jobs));
	int r;

	if (!jobs)
		return -ENOMEM;
	jobs->loop = loop;
	jobs->http = http;
	jobs->once = once;
	jobs->table_size = JOBS_HASH_MIN;
	jobs->table = calloc(jobs->table_size, sizeof(*jobs->table));
	if (!jobs->table) {
		free(jobs);
		return -ENOMEM;
	}
	if (getrandom(&jobs->rng, sizeof(jobs->rng), 0) != (ssize_t)sizeof(jobs->rng) || !jobs->rng)
		jobs->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)(unsigned)getpid();
	jobs->auth_header = xasprintf("Authorization: Bearer %s", api_key);
	jobs->tokens_at = loop_now_ms();
	jobs->tokens_milli = config->images_per_minute * 1000; /* a full bucket at start */
	r = loop_timer_new(loop, jobs_deadline, jobs, &jobs->timer);
	if (r >= 0)
		r = loop_timer_new(loop, jobs_pause_timer, jobs, &jobs->pause_timer);
	if (r >= 0)
		r = loop_timer_new(loop, jobs_limit_timer, jobs, &jobs->limit_timer);
	if (r < 0) {
		jobs_free(jobs);
		return r;
	}
	jobs_set_config(jobs, config);
	*ret_jobs = jobs;
	return 0;
}

void jobs_free(struct jobs *jobs)
{
	if (!jobs)
		return;
	for (size_t i = 0; i < jobs->table_size; i++)
		while (jobs->table[i])
			job_free(jobs, jobs->table[i]);
	free(jobs->table);
	free(jobs->heap);
	loop_timer_free(jobs->loop, jobs->timer);
	loop_timer_free(jobs->loop, jobs->pause_timer);
	loop_timer_free(jobs->loop, jobs->limit_timer);
	if (jobs->auth_header) {
		/* The key should not outlive its use in a core dump. */
		explicit_bzero(jobs->auth_header, strlen(jobs->auth_header));
		free(jobs->auth_header);
	}
	free(jobs->gen_url);
	free(jobs);
}

void jobs_set_config(struct jobs *jobs, const struct config *config)
{
	jobs->config = config;
	free(jobs->gen_url);
	jobs->gen_url = xasprintf("%s/images/generations", config->api.base_url);
	jobs->net.ca_file = config->api.ca_file;
	jobs->net.allow_insecure_http = config->api.allow_insecure_http;
	jobs->net.timeout_ms = config->api.timeout_ms;
	jobs->net.user_agent = "seedreamd/" SEEDREAMD_VERSION;
	jobs_pump(jobs);
}

void jobs_offer(struct jobs *jobs, struct folder *folder, const char *rel, const struct stat *st,
		enum watch_how how)
{
	const struct folder_config *cfg = folder->cfg;
	struct job *job = jobs_find(jobs, folder, rel);
	uint64_t delay = cfg->settle_ms;

	if (jobs->stopping)
		return;
	if (how == WATCH_MOVED) {
		delay = 0; /* renamed in: complete now */
	} else if (how == WATCH_SCAN) {
		int64_t age_ms = loop_wall_ms() - ((int64_t)st->st_mtim.tv_sec * 1000 +
						   st->st_mtim.tv_nsec / 1000000);
		if (age_ms >= (int64_t)cfg->settle_ms)
			delay = 0; /* untouched for a settle already */
	}
	if (job) {
		bool changed = job->size != (uint64_t)st->st_size ||
			       !same_mtime(&job->mtime, &st->st_mtim) || job->ino != st->st_ino ||
			       job->dev != st->st_dev;
		switch (job->state) {
		case JOB_GENERATING:
		case JOB_FETCHING:
			if (changed)
				job->dirty = true;
			return;
		case JOB_SETTLING:
			if (!changed && how == WATCH_SCAN)
				return; /* a poll that saw nothing new keeps the deadline */
			break;
		case JOB_WAITING:
			if (job->retry_fetch) {
				/* Paid for: finish it, then look at the new version. */
				if (changed)
					job->dirty = true;
				return;
			}
			/* fall through */
		case JOB_QUEUED:
			if (!changed)
				return;
			job->attempts = job->failures = 0;
			break;
		}
	} else {
		if (job_already_done(folder, rel, st))
			return; /* the sidecar says so: no job at all */
		job = jobs_create(jobs, folder, rel);
	}
	job->size = (uint64_t)st->st_size;
	job->mtime = st->st_mtim;
	job->dev = st->st_dev;
	job->ino = st->st_ino;
	job_settle(jobs, job, delay);
	jobs_changed(jobs);
}

void jobs_removed(struct jobs *jobs, struct folder *folder, const char *rel)
{
	struct job *job = jobs_find(jobs, folder, rel);

	if (!job || job->state == JOB_GENERATING || job->state == JOB_FETCHING)
		return; /* in flight: it finishes from the open file */
	if (job->state == JOB_WAITING && job->retry_fetch)
		return; /* paid for: keep the result */
	log_debug("%s/%s was removed before submission", folder->cfg->path, rel);
	job_free(jobs, job);
	jobs_changed(jobs);
}

void jobs_drop_folder(struct jobs *jobs, struct folder *folder)
{
	for (size_t i = 0; i < jobs->table_size; i++) {
		struct job *j = jobs->table[i];
		while (j) {
			struct job *next = j->hash_next;
			if (j->folder == folder && j->state != JOB_GENERATING &&
			    j->state != JOB_FETCHING && !(j->state == JOB_WAITING && j->retry_fetch))
				job_free(jobs, j);
			j = next;
		}
	}
	jobs_changed(jobs);
}

bool jobs_folder_busy(const struct jobs *jobs, const struct folder *folder)
{
	for (size_t i = 0; i < jobs->table_size; i++)
		for (const struct job *j = jobs->table[i]; j; j = j->hash_next)
			if (j->folder == folder)
				return true;
	return false;
}

void jobs_stop(struct jobs *jobs)
{
	jobs->stopping = true;
	jobs_changed(jobs);
}

bool jobs_idle(const struct jobs *jobs)
{
	return jobs->n_jobs == 0;
}

bool jobs_quiet(const struct jobs *jobs)
{
	/* Without a journal a paid result waiting to download would be lost at
	 * exit: wait for it too (stop_timeout still bounds the wait). */
	return jobs->active.n == 0 && (jobs->journal || jobs->n_paid_waiting == 0);
}

bool jobs_held_by_limits(const struct jobs *jobs)
{
	return jobs->active.n == 0 && jobs->n_settling == 0 && jobs->n_waiting == 0 &&
	       jobs->queue.n > 0 && jobs->limit_reason[0] && jobs->limit_daily;
}

void jobs_counts(const struct jobs *jobs, struct jobs_counts *c)
{
	c->settling = jobs->n_settling;
	c->queued = jobs->queue.n;
	c->in_flight = jobs->active.n;
	c->waiting = jobs->n_waiting;
	c->done = jobs->done;
	c->failed = jobs->failed;
	c->skipped = jobs->skipped;
	c->left_incomplete = jobs->left_incomplete;
	c->generations = jobs->generations;
	c->paused = jobs->paused;
	c->pause_reason = jobs->paused ? jobs->pause_reason : NULL;
	c->limit_reason = jobs->limit_reason[0] && jobs->queue.n ? jobs->limit_reason : NULL;
	c->disk_reason = jobs->disk_reason[0] ? jobs->disk_reason : NULL;
}

void jobs_on_change(struct jobs *jobs, void (*fn)(void *userdata), void *userdata)
{
	jobs->on_change = fn;
	jobs->on_change_data = userdata;
}

void jobs_set_api_key(struct jobs *jobs, const char *api_key)
{
	char *header = xasprintf("Authorization: Bearer %s", api_key);

	/* Transfers in flight keep curl's copy of the old header. */
	explicit_bzero(jobs->auth_header, strlen(jobs->auth_header));
	free(jobs->auth_header);
	jobs->auth_header = header;
}

void jobs_set_journal(struct jobs *jobs, struct journal *journal)
{
	jobs->journal = journal;
}

void jobs_restore(struct jobs *jobs, struct folder *folder, const struct journal_record *rec)
{
	struct job *job = jobs_find(jobs, folder, rec->source);
	int64_t age_ms = loop_wall_ms() - rec->generated_at;

	if (job)
		return; /* one record per source */
	job = jobs_create(jobs, folder, rec->source);
	job->size = rec->size;
	job->mtime.tv_sec = rec->mtime_sec;
	job->mtime.tv_nsec = rec->mtime_nsec;
	memcpy(job->sha256, rec->sha256, sizeof(job->sha256));
	if (rec->request_id)
		(void)snprintf(job->request_id, sizeof(job->request_id), "%s", rec->request_id);
	job_hold_stem(jobs, job, xstrdup(rec->stem));
	job->attempts = rec->attempts;
	job->generated_at = rec->generated_at;
	/* Keep elapsed_ms honest across the restart: count from the first attempt. */
	job->started = loop_now_ms() - (age_ms > 0 && (uint64_t)age_ms < loop_now_ms()
						? (uint64_t)age_ms
						: 0);
	if (job->started > rec->elapsed_ms)
		job->started -= rec->elapsed_ms;
	job->result.outcome = API_OUTCOME_OK;
	job->result.http_status = 200;
	job->result.url = xstrdup(rec->url);
	job->result.model = rec->model ? xstrdup(rec->model) : NULL;
	job->result.size = rec->result_size ? xstrdup(rec->result_size) : NULL;
	job->result.created = rec->created;
	if (rec->usage) {
		job->result.usage = cJSON_Duplicate(rec->usage, true);
		if (!job->result.usage)
			log_oom();
	}
	log_info("resuming the paid-for result of %s/%s (generated %lld s ago)", folder->cfg->path,
		 rec->source, (long long)(age_ms / 1000));
	job_wait(jobs, job, 0, true);
	jobs_changed(jobs);
}

struct today_count {
	int64_t since;
	uint64_t images;
};

static void count_today(const struct index_entry *e, void *userdata)
{
	struct today_count *t = userdata;

	if (!e->failed && e->finished_at >= t->since)
		t->images += e->generated_images > 0 ? (uint64_t)e->generated_images : 1;
}

void jobs_count_today(struct jobs *jobs, struct folder *folder)
{
	struct today_count t;

	jobs_roll_day(jobs, folder);
	/* The start of today: a day before the next midnight (DST days aside). */
	t.since = folder->images_day_end - 86400;
	t.images = 0;
	index_foreach(folder->index, count_today, &t);
	folder->images_today = t.images;
	jobs->images_today += t.images;
}
