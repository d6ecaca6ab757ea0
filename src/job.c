#include "job_private.h"
#include "metrics.h"
#include "spend.h"
#include "url.h"

/* ---- small helpers ---------------------------------------------------- */

void jobs_changed(struct jobs *jobs)
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
uint64_t jobs_backoff(struct jobs *jobs, unsigned failures, int64_t retry_after_ms)
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

bool same_mtime(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		log_oom();
	return p;
}

char *xasprintf(const char *fmt, ...)
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
char *rel_dir(const char *rel)
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

const char *rel_base(const char *rel)
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

static void job_hold_stem(struct jobs *jobs, struct job *job, char *stem, unsigned n_outputs)
{
	job->stem = stem;
	job->stem_outputs = n_outputs;
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
	/* Only when the earliest deadline moves: a syscall per change otherwise. */
	if (jobs->heap_len == 0) {
		if (jobs->armed_at)
			loop_timer_disarm(jobs->timer); /* idle: no wake-ups */
		jobs->armed_at = 0;
	} else if (jobs->heap[0]->deadline != jobs->armed_at || !loop_timer_armed(jobs->timer)) {
		jobs->armed_at = jobs->heap[0]->deadline;
		(void)loop_timer_arm_at(jobs->timer, jobs->armed_at);
	}
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
	uint64_t seed = FNV1A64_INIT ^ (uint64_t)(uintptr_t)folder;

	return (size_t)(fnv1a64_update(seed, rel, strlen(rel)) & (size - 1));
}

struct job *jobs_find(const struct jobs *jobs, const struct folder *folder, const char *rel)
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

struct job *jobs_create(struct jobs *jobs, struct folder *folder, const char *rel)
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

void job_release_transfers(struct jobs *jobs, struct job *job)
{
	if (job->gen) {
		if (job->state == JOB_GENERATING)
			http_cancel(jobs->http, job->gen->easy);
		if (job->gen->img.fd >= 0) {
			/* A b64_json image not handed on (see job_generated). */
			job_io_discard_tmp(jobs, job->folder, dup(job->out_dirfd), job->gen->img.fd,
					   job->gen->img.tmp_name);
			job->gen->img.fd = -1;
		}
		transfer_gen_clear(job->gen);
		free(job->gen);
		job->gen = NULL;
	}
	if (job->dl) {
		if (job->state == JOB_FETCHING && job->dl->easy)
			http_cancel(jobs->http, job->dl->easy);
		transfer_dl_clear(job->dl);
		if (job->dl->fd >= 0)
			job_io_discard_tmp(jobs, job->folder, dup(job->out_dirfd), job->dl->fd,
					   job->dl->tmp_name);
		free(job->dl);
		job->dl = NULL;
	}
}

/* Every state change passes here: one the core does not know is a bug,
 * logged (the job goes on: stopping a daemon for it would cost more). */
static void job_check_edge(const struct job *job, enum job_state to)
{
	if (!job_core_may_enter(job->state, to))
		log_error("%s/%s: from %s to %s is no transition of a job",
			  job->folder->cfg->path, job->rel, job_state_name(job->state),
			  job_state_name(to));
}

/* Readying a send, or sent and not answered: the job holds a slot of the
 * scheduler (counted in flight and against the daily limits). */
static bool job_state_holds_slot(enum job_state state)
{
	return state == JOB_PREPARING || state == JOB_GENERATING;
}

/* The job leaves a state that held a slot. A generation ends answered (or
 * given up unanswered: a stop); a preparation asked nothing of the API. */
static void job_release_slot(struct jobs *jobs, struct job *job)
{
	if (job->state == JOB_GENERATING)
		sched_answered_images(&jobs->sched, &job->folder->sched, job->sched_images);
	else
		sched_withdrawn_images(&jobs->sched, &job->folder->sched, job->sched_images);
}

/* Leaves whatever state the job is in, keeping the counters right. */
static void job_leave_state(struct jobs *jobs, struct job *job)
{
	heap_remove(jobs, job);
	if (job_state_holds_slot(job->state))
		job_release_slot(jobs, job);
	switch (job->state) {
	case JOB_SETTLING:
		jobs->n_settling--;
		break;
	case JOB_FITTING:
		jobs->n_fitting--;
		break;
	case JOB_QUEUED:
		list_remove(&jobs->queue, job);
		break;
	case JOB_WAITING:
		jobs->n_waiting--;
		if (job->retry_fetch)
			jobs->n_paid_waiting--;
		break;
	case JOB_CHECKING:
		jobs->n_checking--;
		break;
	case JOB_TWIN:
		jobs->n_twins--;
		break;
	case JOB_GENERATING:
	case JOB_FETCHING:
	case JOB_PREPARING:
	case JOB_COMMITTING:
		list_remove(&jobs->active, job);
		break;
	}
}

static bool job_state_active(enum job_state state)
{
	return state == JOB_GENERATING || state == JOB_FETCHING || state == JOB_PREPARING ||
	       state == JOB_COMMITTING;
}

static void job_free(struct jobs *jobs, struct job *job)
{
	struct job **pp = &jobs->table[job_hash(job->folder, job->rel, jobs->table_size)];

	job_twins_forget(jobs, job);
	job_leave_state(jobs, job);
	job_io_forget(job);
	job_set_undurable(jobs, job, false);
	job_set_storage_hold(jobs, job, false);
	while (*pp != job)
		pp = &(*pp)->hash_next;
	*pp = job->hash_next;
	jobs->n_jobs--;
	job_release_transfers(jobs, job);
	job_fit_release(job);
	job_refs_release(job);
	refs_free(job->members, job->n_members);
	api_result_clear(&job->result);
	job_outputs_clear(job);
	work_close(jobs->store_pool, job->out_dirfd);
	job_release_stem(jobs, job);
	job_prompt_forget(job);
	free(job->model_sent);
	free(job->twin_from);
	free(job->rel);
	free(job);
}

void job_settle(struct jobs *jobs, struct job *job, uint64_t delay_ms)
{
	job_twins_forget(jobs, job); /* before its hash is forgotten below */
	job_leave_state(jobs, job);
	job_io_forget(job); /* looked at anew: a request under way is of the old version */
	job->fit_reasons = 0; /* validation decides again */
	/* Settling means the file is looked at anew: a hash of what it was no
	 * longer describes it. */
	job->sha256[0] = '\0';
	job_fit_release(job);
	job_check_edge(job, JOB_SETTLING);
	job->state = JOB_SETTLING;
	jobs->n_settling++;
	heap_set(jobs, job, loop_now_ms() + delay_ms);
}

void job_activate_checking(struct jobs *jobs, struct job *job)
{
	job_check_edge(job, JOB_CHECKING);
	job_leave_state(jobs, job);
	job->state = JOB_CHECKING;
	jobs->n_checking++;
}

void job_activate_fitting(struct jobs *jobs, struct job *job)
{
	job_check_edge(job, JOB_FITTING);
	job_leave_state(jobs, job);
	job->state = JOB_FITTING;
	jobs->n_fitting++;
}

void job_wait(struct jobs *jobs, struct job *job, uint64_t delay_ms, bool fetch)
{
	job_check_edge(job, JOB_WAITING);
	job_leave_state(jobs, job);
	job->state = JOB_WAITING;
	job->retry_fetch = fetch;
	jobs->n_waiting++;
	if (fetch)
		jobs->n_paid_waiting++;
	heap_set(jobs, job, loop_now_ms() + delay_ms);
}

/* Waits for the job paying for the same image (job_twins.c): no deadline,
 * no slot; that job's end settles it. */
static void job_wait_twin(struct jobs *jobs, struct job *job)
{
	job_check_edge(job, JOB_TWIN);
	job_leave_state(jobs, job);
	job->state = JOB_TWIN;
	jobs->n_twins++;
}

void job_queue(struct jobs *jobs, struct job *job, bool front)
{
	job_check_edge(job, JOB_QUEUED);
	job_leave_state(jobs, job);
	job->state = JOB_QUEUED;
	if (front)
		list_prepend(&jobs->queue, job);
	else
		list_append(&jobs->queue, job);
}

void job_activate(struct jobs *jobs, struct job *job, enum job_state state)
{
	bool held = job_state_holds_slot(job->state);

	job_check_edge(job, state);
	if (!job_state_active(job->state)) {
		job_leave_state(jobs, job);
		list_append(&jobs->active, job);
	} else if (held && !job_state_holds_slot(state)) {
		job_release_slot(jobs, job);
	}
	/* Only the pump's job_generate enters PREPARING from a state without a
	 * slot, after the scheduler said yes; a preparation submitted again
	 * (PREPARING to PREPARING) and the send (to GENERATING) keep it. */
	if (!held && job_state_holds_slot(state)) {
		/* Counted as the images it may make, until answered. */
		job->sched_images = job->folder->cfg->max_images ? job->folder->cfg->max_images : 1;
		sched_started_images(&jobs->sched, &job->folder->sched, job->sched_images);
	}
	job->state = state;
}

/* ---- the core: every verdict of a stage is applied here ------------------ */

void job_advance(struct jobs *jobs, struct job *job, const struct job_verdict *v)
{
	struct job_step step;

	if (job_core_step(job->state, v->kind, jobs->stopping, &step) < 0) {
		/* A stage ended in a verdict its state cannot have: a bug. The job
		 * ends rather than run on in a state nobody expects. */
		log_error("%s/%s: verdict %s in state %s; the job ends", job->folder->cfg->path,
			  job->rel, job_verdict_name(v->kind), job_state_name(job->state));
		step = (struct job_step){.action = JOB_ACTION_END};
	}
	if (step.count_skipped)
		jobs->skipped++;
	if (step.count_done) {
		jobs->done++;
		events_file_done(jobs->events);
		job->folder->run_done++;
	}
	if (step.count_left)
		jobs->left_incomplete++;
	if (step.count_done)
		metrics_note_file(job->folder->cfg->path, "done", NULL);
	else if (step.count_skipped)
		metrics_note_file(job->folder->cfg->path, "skipped", NULL);
	else if (step.count_left)
		metrics_note_file(job->folder->cfg->path, "left", NULL);
	switch (step.action) {
	case JOB_ACTION_NONE:
		return;
	case JOB_ACTION_END:
		job_finish(jobs, job); /* pumps */
		return;
	case JOB_ACTION_SETTLE:
		job_settle(jobs, job, v->delay_ms);
		break;
	case JOB_ACTION_QUEUE:
		/* A paused job was at the head; a checked one joins the end; a
		 * fitted one was near the head when its fit started. */
		job_queue(jobs, job, v->kind == JOB_VERDICT_PAUSE || job->state == JOB_FITTING);
		break;
	case JOB_ACTION_WAIT:
		job_wait(jobs, job, v->delay_ms, false);
		break;
	case JOB_ACTION_WAIT_FETCH:
		job_wait(jobs, job, v->delay_ms, true);
		break;
	case JOB_ACTION_TWIN:
		job_wait_twin(jobs, job);
		break;
	case JOB_ACTION_FETCH:
		job_fetch(jobs, job);
		return;
	case JOB_ACTION_RECORD_FAIL:
		job_fail(jobs, job, v->http_status, v->code, v->message ? v->message : "");
		return;
	}
	jobs_changed(jobs);
	jobs_pump(jobs);
}

/* ---- paid results and storage ------------------------------------------ */

void job_set_undurable(struct jobs *jobs, struct job *job, bool undurable)
{
	if (job->undurable == undurable)
		return;
	job->undurable = undurable;
	if (undurable)
		sched_hold(&jobs->sched);
	else
		sched_unhold(&jobs->sched);
}

void job_set_storage_hold(struct jobs *jobs, struct job *job, bool hold)
{
	(void)jobs;
	if (job->storage_hold == hold)
		return;
	job->storage_hold = hold;
	if (hold)
		job->folder->storage_holds++;
	else
		job->folder->storage_holds--;
}

/* The next try opens the output folder by its path again: a descriptor kept
 * across a failure may be a mount that has since been replaced (a read-only
 * bind mount removed, a share remounted). */
void job_close_output_dir(struct job *job)
{
	work_close(job->owner->store_pool, job->out_dirfd);
	job->out_dirfd = -1;
}

/* ---- endings ---------------------------------------------------------- */

/* A job is over: free it, or look again if the file changed meanwhile. */
void job_finish(struct jobs *jobs, struct job *job)
{
	if (job->dirty && !jobs->stopping) {
		job_release_transfers(jobs, job);
		api_result_clear(&job->result);
		job_outputs_clear(job);
		job_close_output_dir(job);
		job_release_stem(jobs, job);
		job_set_undurable(jobs, job, false);
		job_set_storage_hold(jobs, job, false);
		job->journalled = false;
		job->dirty = false;
		job->retry_fetch = false;
		job->attempts = job->failures = job->fetch_failures = 0;
		job->started = 0;
		job->generated_at = 0;
		job->images_paid = 0;
		job->retry_after_ms = 0;
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

/* Whether another job holds a stem in the same output folder whose names
 * meet those of the candidate (written with n_outputs images): in flight,
 * waiting to fetch a paid result, or restored from the journal. */
static bool stem_reserved(const char *candidate, unsigned n_outputs, const struct stem_query *q)
{
	const char *out = q->self->folder->cfg->output;
	size_t dlen = rel_dir_len(q->self->rel);

	for (const struct job *j = q->jobs->stem_holders; j; j = j->stem_next) {
		if (j == q->self ||
		    !stem_outputs_meet(j->stem, j->stem_outputs, candidate, n_outputs))
			continue;
		if (strcmp(j->folder->cfg->output, out) == 0 && rel_dir_len(j->rel) == dlen &&
		    strncmp(j->rel, q->self->rel, dlen) == 0)
			return true;
	}
	return false;
}

void job_stem_refit(struct jobs *jobs, struct job *job, unsigned n_outputs)
{
	/* Its wider names are checked as a new choice's are, against the other
	 * holders and on disk (cat-2.jpeg of a done cat-2.png); the same stem
	 * comes back when they are free. */
	if (job->stem && !job->images_paid && n_outputs > job->stem_outputs)
		job_release_stem(jobs, job);
}

void job_stem_fill(const struct jobs *jobs, const struct job *job, struct job_stem *st)
{
	job_stem_fill_n(jobs, job, job->folder->cfg->max_images, st);
}

void job_stem_fill_n(const struct jobs *jobs, const struct job *job, unsigned n_outputs,
		     struct job_stem *st)
{
	const char *out = job->folder->cfg->output;
	size_t dlen = rel_dir_len(job->rel), n = 0;

	memset(st, 0, sizeof(*st));
	st->n_outputs = n_outputs;
	if (job->stem) {
		st->held = true;
		(void)snprintf(st->chosen, sizeof(st->chosen), "%s", job->stem);
		return;
	}
	st->rel = xstrdup(job->rel);
	st->r = output_safe_stem(rel_base(job->rel), st->base, sizeof(st->base));
	/* A snapshot of the stems other jobs hold in the same output folder:
	 * the worker checks against it, the loop again when it takes one. */
	for (const struct job *j = jobs->stem_holders; j; j = j->stem_next)
		n++;
	if (n) {
		st->taken = calloc(n, sizeof(*st->taken));
		st->taken_outputs = calloc(n, sizeof(*st->taken_outputs));
		if (!st->taken || !st->taken_outputs)
			log_oom();
	}
	for (const struct job *j = jobs->stem_holders; j; j = j->stem_next) {
		if (j == job || strcmp(j->folder->cfg->output, out) != 0 ||
		    rel_dir_len(j->rel) != dlen || strncmp(j->rel, job->rel, dlen) != 0)
			continue;
		st->taken_outputs[st->n_taken] = j->stem_outputs;
		st->taken[st->n_taken++] = xstrdup(j->stem);
	}
}

static bool stem_in_snapshot(const char *candidate, void *userdata)
{
	const struct job_stem *st = userdata;

	for (size_t i = 0; i < st->n_taken; i++)
		if (stem_outputs_meet(st->taken[i], st->taken_outputs[i], candidate, st->n_outputs))
			return true;
	return false;
}

int job_stem_choose(int dirfd, struct job_stem *st)
{
	if (st->held)
		return 0;
	if (st->r < 0)
		return st->r;
	return output_choose_stem_n(dirfd, st->base, st->rel, st->n_outputs, stem_in_snapshot, st,
				    st->chosen, sizeof(st->chosen));
}

int job_stem_take(struct jobs *jobs, struct job *job, const struct job_stem *st)
{
	struct stem_query q = {jobs, job};

	if (job->stem) {
		/* Paid under it (it cannot move) and asked to write more: all
		 * of them reserved. */
		if (st->n_outputs > job->stem_outputs)
			job->stem_outputs = st->n_outputs;
		return 0;
	}
	if (stem_reserved(st->chosen, st->n_outputs, &q))
		return -EAGAIN; /* taken meanwhile by a job in the same folder: choose again */
	job_hold_stem(jobs, job, xstrdup(st->chosen), st->n_outputs);
	return 0;
}

void job_stem_clear(struct job_stem *st)
{
	for (size_t i = 0; i < st->n_taken; i++)
		free(st->taken[i]);
	free(st->taken);
	free(st->taken_outputs);
	free(st->rel);
	st->taken = NULL;
	st->taken_outputs = NULL;
	st->rel = NULL;
	st->n_taken = 0;
}

/* ---- scheduling ------------------------------------------------------- */

static int64_t jobs_epoch_s(void)
{
	return loop_wall_ms() / 1000;
}

static void jobs_sched_limits(const struct config *config, struct sched_limits *ret)
{
	*ret = (struct sched_limits){
	    .max_in_flight = config->api.max_in_flight,
	    .max_images_per_day = config->max_images_per_day,
	    .images_per_minute = config->images_per_minute,
	    .max_spend_per_day = config->max_spend_per_day,
	};
	/* The model in use sets the price of the next image; --check refuses
	 * a spend limit without one. */
	(void)config_price_of(config, config->api.model, &ret->image_price);
}

/* The folder's share of the schedule, with the limit of its current config
 * (a reload swaps folder->cfg in main.c at any time). */
static struct sched_folder *jobs_folder_sched(struct folder *folder)
{
	folder->sched.max_images_per_day = folder->cfg->max_images_per_day;
	folder->sched.images_per_request = folder->cfg->max_images;
	return &folder->sched;
}

/* Says why the scheduler holds generations back (STATUS=, the --once exit)
 * and, for a limit that ends with time, asks again then. */
static void jobs_held_back(struct jobs *jobs, const struct folder *folder,
			   const struct sched_verdict *v)
{
	switch (v->reason) {
	case SCHED_REASON_MINUTE:
		(void)snprintf(jobs->limit_reason, sizeof(jobs->limit_reason),
			       "images_per_minute %llu reached", (unsigned long long)v->limit);
		break;
	case SCHED_REASON_DAY:
		(void)snprintf(jobs->limit_reason, sizeof(jobs->limit_reason),
			       "daily limit reached (%llu of max_images_per_day %llu); resuming at "
			       "midnight",
			       (unsigned long long)v->count, (unsigned long long)v->limit);
		jobs->limit_daily = true;
		break;
	case SCHED_REASON_FOLDER_DAY:
		(void)snprintf(
		    jobs->limit_reason, sizeof(jobs->limit_reason),
		    "folder %s reached its daily limit (%llu images); resuming at midnight",
		    folder->cfg->path, (unsigned long long)v->limit);
		jobs->limit_daily = true;
		break;
	case SCHED_REASON_SPEND:
		(void)snprintf(jobs->limit_reason, sizeof(jobs->limit_reason),
			       "daily spend limit reached (%llu.%06llu of max_spend_per_day "
			       "%llu.%06llu%s%s); resuming at midnight",
			       (unsigned long long)(v->count / CONFIG_MICROS),
			       (unsigned long long)(v->count % CONFIG_MICROS),
			       (unsigned long long)(v->limit / CONFIG_MICROS),
			       (unsigned long long)(v->limit % CONFIG_MICROS),
			       jobs->config->currency ? " " : "",
			       jobs->config->currency ? jobs->config->currency : "");
		jobs->limit_daily = true;
		break;
	case SCHED_REASON_NONE:
	case SCHED_REASON_PAUSED:
	case SCHED_REASON_IN_FLIGHT:
		break; /* an answer or the pause's timer pumps again */
	}
	if (v->answer == SCHED_NO_TODAY)
		events_limit_reached(jobs->events,
				     v->reason == SCHED_REASON_SPEND ? "max_spend_per_day"
								     : "max_images_per_day",
				     v->reason == SCHED_REASON_FOLDER_DAY ? folder->cfg->path : NULL,
				     jobs->limit_reason,
				     jobs_epoch_s() + (int64_t)(v->wait_ms / 1000));
	if (v->answer == SCHED_NO_UNTIL || v->answer == SCHED_NO_TODAY)
		(void)loop_timer_arm(jobs->limit_timer, v->wait_ms);
}

/* Whether the folder's daily limit allows one more generation now. */
static bool jobs_folder_allows(struct jobs *jobs, struct folder *folder)
{
	struct sched_verdict v =
	    sched_folder_allows(&jobs->sched, jobs_folder_sched(folder), jobs_epoch_s());

	if (v.answer == SCHED_YES)
		return true;
	jobs_held_back(jobs, folder, &v);
	return false;
}

static bool job_needs_fit(const struct job *job)
{
	return job->fit_reasons && !job->fitted && !job_group_fit_ready(job);
}

/* Starts fits for the jobs near the head of the queue only: at most
 * max_in_flight + max_fits queued jobs hold fitted bytes or are being fitted,
 * so a long queue of photos (a slow API, a daily limit) does not fill
 * state_dir and the descriptor table with conversions waiting to be sent. */
static void jobs_fit_ahead(struct jobs *jobs)
{
	size_t window = jobs->config->api.max_in_flight + jobs->config->max_fits;
	size_t ahead = jobs->n_fitting;
	struct job *job = jobs->queue.head;

	for (size_t seen = 0; job && seen < window && ahead < window; seen++) {
		struct job *next = job->next;
		if (job->fitted || job_group_fit_ready(job)) {
			ahead++;
		} else if (job->fit_reasons && !job->folder->removed) {
			ahead++;
			job_fit_start(jobs, job, job->fit_reasons);
		}
		job = next;
	}
}

/* Whether a folder's storage can take a new paid result: present, no result
 * waiting for its output, and neither its output (job requests) nor the
 * watched folder (the watch's looks) stalled. */
static bool folder_storage_usable(const struct folder *f)
{
	return f->present && !f->storage_holds && !f->storage_stalled_since &&
	       !f->look_stalled_since && !f->user_paused; /* and not paused by seedreamctl */
}

void jobs_pump(struct jobs *jobs)
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
	if (!jobs->stopping)
		jobs_fit_ahead(jobs);
	job = jobs->queue.head;
	while (job && !jobs->stopping && !jobs->user_paused) {
		struct sched_verdict v =
		    sched_may_start_any(&jobs->sched, loop_now_ms(), jobs_epoch_s());

		if (v.answer != SCHED_YES) {
			jobs_held_back(jobs, job->folder, &v);
			break;
		}
		if (job->folder->removed) {
			struct job *next = job->next;
			job_free(jobs, job); /* a reload removed its folder: spend nothing more */
			job = next;
			continue;
		}
		if (job_needs_fit(job)) {
			job = job->next; /* fitted first (jobs_fit_ahead) */
			continue;
		}
		if (job->folder->gave_up_this_run) {
			struct job *next = job->next;
			jobs->left_incomplete++; /* --once: left for a later run */
			job_free(jobs, job);
			job = next;
			continue;
		}
		if (!folder_storage_usable(job->folder) || !jobs_folder_allows(jobs, job->folder)) {
			job = job->next; /* other folders may still spend */
			continue;
		}
		/* Its slot is taken when it enters PREPARING (job_activate): a job
		 * that turns out to be gone first takes none. While paused that
		 * slot is the one probe, and the scheduler says no to the next. */
		job_generate(jobs, job);
		if (jobs->pump_again)
			goto again;
		/* The job left the queue (or went back to settling): start over
		 * from the head, skipping folders held back by their limits. */
		job = jobs->queue.head;
		while (job && (job_needs_fit(job) || !folder_storage_usable(job->folder) ||
			       !jobs_folder_allows(jobs, job->folder)))
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

int jobs_new(struct loop *loop, struct http *http, const struct config *config, const char *api_key,
	     bool once, struct jobs **ret_jobs)
{
	struct jobs *jobs = calloc(1, sizeof(*jobs));
	struct sched_limits limits;
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
	jobs_sched_limits(config, &limits);
	sched_init(&jobs->sched, &limits, loop_now_ms()); /* a full bucket at start */
	r = loop_timer_new(loop, jobs_deadline, jobs, &jobs->timer);
	if (r >= 0)
		r = loop_timer_new(loop, jobs_pause_timer, jobs, &jobs->pause_timer);
	if (r >= 0)
		r = loop_timer_new(loop, jobs_limit_timer, jobs, &jobs->limit_timer);
	/* Its size is read at start only: a reload keeps the running pool. */
	if (r >= 0)
		r = loop_timer_new(loop, jobs_stall_timer, jobs, &jobs->stall_timer);
	if (r >= 0)
		r = loop_timer_new(loop, jobs_done_flush, jobs, &jobs->done_timer);
	if (r >= 0)
		r = twin_map_new(&jobs->twins);
	if (r >= 0)
		r = work_pool_new(loop, config->max_fits ? config->max_fits : 1, &jobs->fit_pool);
	if (r >= 0)
		r = work_pool_new_growing(loop, JOBS_STORE_THREADS, JOBS_STORE_THREADS_MAX,
					  &jobs->store_pool);
	/* The uploads' reads and the results' writes: one at a time per
	 * transfer, so at most as many as transfers are stuck on a share. */
	if (r >= 0)
		r = work_pool_new_growing(loop, 4, 64, &jobs->io_pool);
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
	jobs_done_drop_folder(jobs, NULL);
	job_prompt_arrivals_free(jobs);
	job_prompt_waiters_free(jobs);
	/* After the jobs: storage requests and fits still running are waited
	 * for, and dropped. */
	job_io_shutdown(jobs);
	work_pool_free(jobs->fit_pool);
	work_pool_free(jobs->io_pool);
	free(jobs->table);
	free(jobs->heap);
	twin_map_free(jobs->twins); /* empty: every job left it as it was freed */
	loop_timer_free(jobs->loop, jobs->timer);
	loop_timer_free(jobs->loop, jobs->pause_timer);
	loop_timer_free(jobs->loop, jobs->limit_timer);
	loop_timer_free(jobs->loop, jobs->stall_timer);
	loop_timer_free(jobs->loop, jobs->done_timer);
	if (jobs->auth_header) {
		/* The key should not outlive its use in a core dump. */
		explicit_bzero(jobs->auth_header, strlen(jobs->auth_header));
		free(jobs->auth_header);
	}
	free(jobs->gen_url);
	for (size_t i = 0; i < jobs->n_group_logged; i++)
		free(jobs->group_logged[i]);
	free(jobs->group_logged);
	free(jobs);
}

void jobs_set_config(struct jobs *jobs, const struct config *config)
{
	struct sched_limits limits;
	struct url_info base;

	jobs->config = config;
	/* The counters and the bucket's content are kept. */
	jobs_sched_limits(config, &limits);
	sched_set_limits(&jobs->sched, &limits);
	free(jobs->gen_url);
	jobs->gen_url = xasprintf("%s/images/generations", config->api.base_url);
	jobs->net.ca_file = config->api.ca_file;
	jobs->net.allow_insecure_http = config->api.allow_insecure_http;
	/* An API on loopback is this machine's own relay or stand-in: its result
	 * URLs may point anywhere it can. Otherwise a result URL into this
	 * machine or its network is a request forged for the API's owner. */
	jobs->net.allow_private = config->api.allow_private_result_urls ||
				  (url_inspect(config->api.base_url, &base) == 0 &&
				   base.host == URL_LOOPBACK);
	jobs->net.timeout_ms = config->api.timeout_ms;
	jobs->net.user_agent = "seedreamd/" SEEDREAMD_VERSION;
	jobs_pump(jobs);
}

void jobs_offer(struct jobs *jobs, struct folder *folder, const char *rel, const struct stat *st,
		enum watch_how how)
{
	const struct index_entry *e;

	if (folder->cfg->group == GROUP_SUBFOLDER) {
		/* Only subfolders are inputs there: a file beside them is not. */
		if (strchr(rel, '/'))
			job_group_offer(jobs, folder, rel, st, how);
		return;
	}
	if (!jobs->stopping && folder->present && !jobs_find(jobs, folder, rel) &&
	    (e = index_get(folder->index, rel)) && e->size == (uint64_t)st->st_size &&
	    e->mtime_sec == st->st_mtim.tv_sec && e->mtime_nsec == st->st_mtim.tv_nsec &&
	    job_done_offer(jobs, folder, rel, st, how, e))
		return;
	jobs_offer_checked(jobs, folder, rel, st, how);
}

void jobs_offer_checked(struct jobs *jobs, struct folder *folder, const char *rel,
			const struct stat *st, enum watch_how how)
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
		case JOB_CHECKING:
		case JOB_PREPARING:
		case JOB_COMMITTING:
		case JOB_FITTING: /* a fit of the old version is dropped when it ends */
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
		case JOB_TWIN:
		case JOB_QUEUED:
			if (!changed)
				return;
			job->attempts = job->failures = 0;
			break;
		}
	} else {
		const struct index_entry *e = index_get(folder->index, rel);
		job = jobs_create(jobs, folder, rel);
		/* The record says done: a worker checks its sidecar is still there,
		 * and if so the job ends without a word. */
		job->offered_done = e && e->size == (uint64_t)st->st_size &&
				    e->mtime_sec == st->st_mtim.tv_sec &&
				    e->mtime_nsec == st->st_mtim.tv_nsec;
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
	struct job *job;

	if (folder->cfg->group == GROUP_SUBFOLDER && strchr(rel, '/')) {
		job_group_fit_removed(jobs, folder, rel); /* an image of a group */
		return;
	}
	job = jobs_find(jobs, folder, rel);
	if (!job || job->state == JOB_GENERATING || job->state == JOB_FETCHING ||
	    job->state == JOB_COMMITTING)
		return; /* in flight: it finishes from the open file */
	if (job->state == JOB_WAITING && job->retry_fetch)
		return; /* paid for: keep the result */
	log_debug("%s/%s was removed before submission", folder->cfg->path, rel);
	job_free(jobs, job);
	jobs_changed(jobs);
}

void jobs_drop_folder(struct jobs *jobs, struct folder *folder)
{
	jobs_done_drop_folder(jobs, folder);
	job_prompt_arrivals_drop_folder(jobs, folder);
	for (size_t i = 0; i < jobs->table_size; i++) {
		struct job *j = jobs->table[i];
		while (j) {
			struct job *next = j->hash_next;
			if (j->folder == folder && j->state != JOB_GENERATING &&
			    j->state != JOB_FETCHING && j->state != JOB_COMMITTING &&
			    !(j->state == JOB_WAITING && j->retry_fetch))
				job_free(jobs, j);
			j = next;
		}
	}
	jobs_changed(jobs);
}

void jobs_leave_queued_for_later(struct jobs *jobs, struct folder *folder)
{
	struct job *j = jobs->queue.head;

	while (j) {
		struct job *next = j->next;
		if (j->folder == folder) {
			jobs->left_incomplete++;
			job_free(jobs, j);
		}
		j = next;
	}
	jobs_changed(jobs);
}

void jobs_folder_changed(struct jobs *jobs, struct folder *folder)
{
	(void)folder;
	jobs_pump(jobs);
}

bool jobs_folder_busy(const struct jobs *jobs, const struct folder *folder)
{
	if (job_io_folder_busy(jobs, folder))
		return true;
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
	return jobs->n_jobs == 0 && jobs->n_io == 0;
}

bool jobs_quiet(const struct jobs *jobs)
{
	/* Without a journal a paid result waiting to download would be lost at
	 * exit: wait for it too (stop_timeout still bounds the wait). */
	/* A paid result that is neither journalled nor written out (a full
	 * state_dir, a b64_json image held in memory) is waited for too. */
	/* A storage request out is waited for: a paid result is never left
	 * half written. */
	return jobs->active.n == 0 && jobs->sched.held == 0 && jobs->n_io == 0 &&
	       (jobs->journal || jobs->n_paid_waiting == 0);
}

bool jobs_held_by_limits(const struct jobs *jobs)
{
	return jobs->active.n == 0 && jobs->n_settling == 0 && jobs->n_waiting == 0 &&
	       jobs->n_fitting == 0 && jobs->n_checking == 0 &&
	       jobs->queue.n > 0 && jobs->limit_reason[0] && jobs->limit_daily;
}

void jobs_counts(const struct jobs *jobs, struct jobs_counts *c)
{
	c->settling = jobs->n_settling + jobs->n_checking;
	c->fitting = jobs->n_fitting;
	c->queued = jobs->queue.n;
	c->in_flight = jobs->active.n;
	c->waiting = jobs->n_waiting;
	c->twins = jobs->n_twins;
	c->undurable = jobs->sched.held;
	c->done = jobs->done;
	c->failed = jobs->failed;
	c->skipped = jobs->skipped;
	c->left_incomplete = jobs->left_incomplete;
	c->generations = jobs->generations;
	c->jobs = jobs->n_jobs;
	c->paused = jobs->sched.paused;
	c->pause_reason = jobs->sched.paused ? jobs->pause_reason : NULL;
	c->limit_reason = jobs->limit_reason[0] && jobs->queue.n ? jobs->limit_reason : NULL;
	c->disk_reason = jobs->disk_reason[0] ? jobs->disk_reason : NULL;
	c->storage_reason = jobs->storage_reason[0] ? jobs->storage_reason : NULL;
}

void jobs_each(const struct jobs *jobs,
	       void (*fn)(void *userdata, const struct folder *folder, bool queued,
			  uint64_t first_seen),
	       void *userdata)
{
	for (size_t i = 0; i < jobs->table_size; i++)
		for (const struct job *job = jobs->table[i]; job; job = job->hash_next)
			fn(userdata, job->folder, job->state == JOB_QUEUED, job->first_seen);
}

void jobs_foreach(const struct jobs *jobs, void (*fn)(const struct jobs_item *item, void *userdata),
		  void *userdata)
{
	for (size_t i = 0; i < jobs->table_size; i++) {
		for (const struct job *j = jobs->table[i]; j; j = j->hash_next) {
			struct jobs_item item = {
			    .folder = j->folder,
			    .rel = j->rel,
			    .state = job_state_name(j->state),
			    .first_seen_ms = j->first_seen,
			    .attempts = j->attempts,
			};
			switch (j->state) {
			case JOB_SETTLING:
			case JOB_CHECKING:
				item.kind = JOBS_ITEM_SETTLING;
				break;
			case JOB_FITTING:
			case JOB_QUEUED:
				item.kind = JOBS_ITEM_QUEUED;
				break;
			case JOB_WAITING:
				/* A paid result waiting to be fetched again is in flight. */
				item.kind = j->retry_fetch ? JOBS_ITEM_IN_FLIGHT : JOBS_ITEM_WAITING;
				break;
			case JOB_TWIN:
				item.kind = JOBS_ITEM_TWIN;
				break;
			case JOB_PREPARING:
			case JOB_GENERATING:
			case JOB_FETCHING:
			case JOB_COMMITTING:
				item.kind = JOBS_ITEM_IN_FLIGHT;
				break;
			}
			fn(&item, userdata);
		}
	}
}

void jobs_set_user_pause(struct jobs *jobs, bool paused)
{
	jobs->user_paused = paused;
	jobs_pump(jobs); /* resumed: the queue goes on; paused: says so (on_change) */
}

bool jobs_user_paused(const struct jobs *jobs)
{
	return jobs->user_paused;
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

/* Whether the done records show this version of the source as finished,
 * with its sidecar still there. At start-up only (jobs_restore). */
static bool sidecar_exists(const struct folder *folder, const struct index_entry *e)
{
	char *path = xasprintf("%s/%s", folder->cfg->output, e->sidecar);
	bool exists = access(path, F_OK) == 0;

	free(path);
	return exists;
}

static bool job_version_done(const struct folder *folder, const char *rel, uint64_t size,
		      int64_t mtime_sec, long mtime_nsec)
{
	const struct index_entry *done = index_get(folder->index, rel);

	return done && done->size == size && done->mtime_sec == mtime_sec &&
	       done->mtime_nsec == mtime_nsec && sidecar_exists(folder, done);
}

static const char *prompt_source_static(const char *name)
{
	static const char *const known[] = {"folder", "file", "folder+file"};

	for (size_t i = 0; name && i < sizeof(known) / sizeof(known[0]); i++)
		if (!strcmp(name, known[i]))
			return known[i];
	return NULL;
}

/* What the journal says was sent, back into the job as a send leaves it, so
 * that the sidecar (and the XMP's prompt hash) say what was paid for: a
 * group's images become its members and, after the first, the head of
 * refs_sent, followed by the references. */
static void job_restore_sent(struct job *job, const struct journal_record *rec)
{
	size_t n_sources = job->group ? rec->n_sources : 0;
	size_t n_others = n_sources ? n_sources - 1 : 0, k = 0;

	if (rec->prompt) {
		job->prompt = xstrdup(rec->prompt);
		job->prompt_source = prompt_source_static(rec->prompt_source);
		job->prompt_file = rec->prompt_file ? xstrdup(rec->prompt_file) : NULL;
		/* Recorded with the prompt: none means none was sent. */
		job->extra_sent = xstrdup(rec->extra_json ? rec->extra_json : "");
	}
	if (n_sources) {
		job->members = calloc(n_sources, sizeof(*job->members));
		if (!job->members)
			log_oom();
		job->n_members = n_sources;
		for (size_t i = 0; i < n_sources; i++) {
			job->members[i].path = xstrdup(rec->sources[i].name);
			job->members[i].size = rec->sources[i].size;
			job->members[i].mtime_sec = rec->sources[i].mtime_sec;
			job->members[i].mtime_nsec = rec->sources[i].mtime_nsec;
		}
	}
	if (n_others + rec->n_references == 0)
		return;
	job->refs_sent = calloc(n_others + rec->n_references, sizeof(*job->refs_sent));
	if (!job->refs_sent)
		log_oom();
	job->n_refs_sent = n_others + rec->n_references;
	for (size_t i = 1; i < n_sources; i++, k++) {
		job->refs_sent[k].path = xstrdup(rec->sources[i].name);
		memcpy(job->refs_sent[k].sha256, rec->sources[i].sha256, 65);
	}
	for (size_t i = 0; i < rec->n_references; i++, k++) {
		job->refs_sent[k].path = xstrdup(rec->references[i].path);
		memcpy(job->refs_sent[k].sha256, rec->references[i].sha256, 65);
	}
}

/* A result paid today before a crash counts against today's limits as it did
 * when its answer came: it has no done record yet for jobs_count_today. */
static void job_restore_count_today(struct jobs *jobs, struct job *job)
{
	int64_t now = jobs_epoch_s();
	uint64_t images, price = 0, cost;

	images = api_result_images_counted(&job->result, job->max_images);
	job->images_paid = (unsigned)images; /* paid, whatever the day: its record says so */
	if (jobs_ledger_counted(jobs, job->folder->cfg->path, job->rel, job->generated_at))
		return; /* noted when its answer came: counted with the ledger's */
	job_ledger_note(jobs, job->folder->cfg->path, job->rel, job->result.model,
			job->generated_at, images);
	if (job->generated_at / 1000 < sched_day_start(&jobs->sched, &job->folder->sched, now))
		return;
	if (config_price_of(jobs->config, job->result.model, &price) < 0)
		(void)config_price_of(jobs->config, jobs->config->api.model, &price);
	cost = sched_mul_sat(images, price);
	sched_paid(&jobs->sched, &job->folder->sched, images, now);
	sched_spent(&jobs->sched, cost, now);
	events_paid(jobs->events, images, cost);
}

void jobs_restore(struct jobs *jobs, struct folder *folder, const struct journal_record *rec)
{
	struct job *job = jobs_find(jobs, folder, rec->source);
	int64_t age_ms = loop_wall_ms() - rec->generated_at;

	int r;

	if (job)
		return; /* one record per source */
	if (job_version_done(folder, rec->source, rec->size, rec->mtime_sec, rec->mtime_nsec)) {
		/* Written out (or given up) before the crash; only the record's
		 * removal was lost. Fetching again could only do harm. */
		log_job(LOG_INFO, folder->cfg->path, rec->source, rec->request_id, NULL,
			"%s/%s: its paid-for result is already on disk; journal record removed",
			folder->cfg->path, rec->source);
		if (jobs->journal) {
			/* Under the journal's lock: storage workers may be writing it. */
			r = job_journal_drop(jobs->journal, folder->cfg->path, rec->source);
			if (r < 0)
				log_warn("cannot remove the journal record of %s/%s: %s",
					 folder->cfg->path, rec->source, strerror(-r));
		}
		return;
	}
	job = jobs_create(jobs, folder, rec->source);
	/* In a group folder every input is a subfolder (records of older
	 * versions have no sources list: the sidecar written from them has none). */
	job->group = folder->cfg->group == GROUP_SUBFOLDER;
	job_restore_sent(job, rec);
	job->journalled = true;
	job->size = rec->size;
	job->mtime.tv_sec = rec->mtime_sec;
	job->mtime.tv_nsec = rec->mtime_nsec;
	memcpy(job->sha256, rec->sha256, sizeof(job->sha256));
	if (rec->request_id)
		(void)snprintf(job->request_id, sizeof(job->request_id), "%s", rec->request_id);
	job_hold_stem(jobs, job, xstrdup(rec->stem), rec->max_images);
	job->attempts = rec->attempts;
	job->generated_at = rec->generated_at;
	/* Keep elapsed_ms honest across the restart: count from the first attempt. */
	job->started =
	    loop_now_ms() - (age_ms > 0 && (uint64_t)age_ms < loop_now_ms() ? (uint64_t)age_ms : 0);
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
	/* Several outputs: every URL is in the record; all are fetched again. */
	job_outputs_restore(job, rec->images, rec->max_images);
	if (job->result.n_images > job->stem_outputs)
		job->stem_outputs = (unsigned)job->result.n_images; /* a relay's extra images */
	job_restore_count_today(jobs, job);
	log_job(LOG_INFO, folder->cfg->path, rec->source, rec->request_id, NULL,
		"resuming the paid-for result of %s/%s (generated %lld s ago)", folder->cfg->path,
		rec->source, (long long)(age_ms / 1000));
	job_wait(jobs, job, 0, true);
	job_twins_lead(jobs, job);
	jobs_changed(jobs);
}

struct today_count {
	int64_t since;
	uint64_t images;
	uint64_t spent;
	const struct config *config;
	/* For the daily summary: today, and yesterday from since_yesterday. */
	int64_t since_yesterday;
	struct events_tally today, yesterday;
};

static void count_today(const struct index_entry *e, void *userdata)
{
	struct today_count *t = userdata;
	/* Failures count too when their answer was paid (spend.h), each at the
	 * price of the model it recorded (see README, "Spend"). */
	uint64_t images = spend_entry_images(e);
	uint64_t cost = spend_entry_cost(t->config, e);

	if (e->finished_at >= t->since_yesterday && e->finished_at < t->since) {
		if (e->failed)
			t->yesterday.failed++;
		else
			t->yesterday.done++;
		t->yesterday.images = sched_add_sat(t->yesterday.images, images);
		t->yesterday.micros = sched_add_sat(t->yesterday.micros, cost);
	}
	if (e->finished_at >= t->since) {
		if (e->failed)
			t->today.failed++;
		else
			t->today.done++;
	}
	/* Against the day it was paid: a fetch may end a day later. */
	if (spend_entry_paid_at(e) >= t->since) {
		t->images = sched_add_sat(t->images, images);
		t->spent = sched_add_sat(t->spent, cost);
	}
}

/* Local midnight of the day before the one starting at day_start. */
static int64_t day_before(int64_t day_start)
{
	time_t noon = (time_t)(day_start - 43200);
	struct tm tm;

	if (!localtime_r(&noon, &tm))
		return day_start - 86400;
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	tm.tm_isdst = -1;
	return (int64_t)mktime(&tm);
}

static void jobs_tally_today(struct jobs *jobs, struct folder *folder, struct today_count *t)
{
	memset(t, 0, sizeof(*t));
	t->since = sched_day_start(&jobs->sched, jobs_folder_sched(folder), jobs_epoch_s());
	t->since_yesterday = day_before(t->since);
	t->config = jobs->config;
	index_foreach(folder->index, count_today, t);
	t->today.images = t->images;
	t->today.micros = t->spent;
}

void jobs_count_today(struct jobs *jobs, struct folder *folder)
{
	struct sched_folder *sf = jobs_folder_sched(folder);
	struct today_count t;

	jobs_tally_today(jobs, folder, &t);
	/* The ledger keeps payments whose records are gone (a retried failure). */
	if (job_ledger_count_today(jobs, folder, t.since, &t.images, &t.spent)) {
		t.today.images = t.images;
		t.today.micros = t.spent;
	}
	sched_count_today(&jobs->sched, sf, t.images);
	sched_count_spent_today(&jobs->sched, t.spent);
	events_count_rebuilt(jobs->events, &t.today, &t.yesterday);
}

void jobs_count_today_events(struct jobs *jobs, struct folder *folder)
{
	struct today_count t;

	jobs_tally_today(jobs, folder, &t);
	events_count_rebuilt(jobs->events, &t.today, &t.yesterday);
}

uint64_t jobs_spent_today(struct jobs *jobs)
{
	return sched_spent_today(&jobs->sched, jobs_epoch_s());
}

uint64_t jobs_spent_total(const struct jobs *jobs)
{
	return jobs->spent_total;
}

void jobs_set_events(struct jobs *jobs, struct events *events)
{
	jobs->events = events;
}
