/* job_ledger: the daemon's side of the paid ledger (ledger.h): every paid
 * answer noted there as it is counted, the start-up count taken from it, and
 * an install without one yet seeded from its records. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "job_private.h"
#include "ledger.h"
#include "log.h"
#include "spend.h"

struct job_ledger_io {
	struct job_io io;
	struct ledger *ledger;
	char *lines;
	size_t len;
	int r;
};

static void job_ledger_work(struct job_io *io)
{
	struct job_ledger_io *w = (struct job_ledger_io *)io;

	w->r = ledger_write(w->ledger, w->lines, w->len);
}

static void job_ledger_done(struct jobs *jobs, struct job *job, struct job_io *io)
{
	struct job_ledger_io *w = (struct job_ledger_io *)io;

	(void)job;
	/* Never started (a stop): written here, at the stop, rather than lost. */
	if (!io->ran)
		w->r = ledger_write(w->ledger, w->lines, w->len);
	if (w->r < 0 && !jobs->warned_ledger) {
		jobs->warned_ledger = true;
		log_warn("cannot append to the paid ledger in %s: %s (a restart may count less "
			 "than was paid today; logged once)",
			 jobs->config->state_dir, strerror(-w->r));
	}
	free(w->lines);
	free(w);
}

/* Appends lines (taken) to the ledger on state_dir's storage. */
static void job_ledger_submit(struct jobs *jobs, char *lines, size_t len)
{
	struct job_ledger_io *w = calloc(1, sizeof(*w));

	if (!w)
		log_oom();
	w->ledger = jobs->ledger;
	w->lines = lines;
	w->len = len;
	w->io.work = job_ledger_work;
	w->io.done = job_ledger_done;
	job_io_submit(jobs, NULL, NULL, &w->io);
}

void job_ledger_note(struct jobs *jobs, const char *folder, const char *source, const char *model,
		     int64_t paid_ms, uint64_t images)
{
	struct ledger_entry e = {
	    .folder = (char *)folder,
	    .source = (char *)source,
	    .model = (char *)model,
	    .paid_ms = paid_ms,
	    .images = images > API_IMAGES_MAX ? API_IMAGES_MAX : (unsigned)images,
	};
	char *line;
	size_t len;

	/* A new answer's paid_ms is its own; a restored one is looked up first
	 * (jobs_ledger_counted). */
	if (!jobs->ledger)
		return;
	if (ledger_add(jobs->ledger, &e, &line, &len) < 0)
		log_oom();
	job_ledger_submit(jobs, line, len);
}

void jobs_set_ledger(struct jobs *jobs, struct ledger *ledger, bool created)
{
	jobs->ledger = ledger;
	jobs->ledger_created = created;
}

const struct ledger *jobs_ledger(const struct jobs *jobs)
{
	return jobs->ledger;
}

bool jobs_ledger_counted(const struct jobs *jobs, const char *folder, const char *source,
			 int64_t paid_ms)
{
	return jobs->ledger && ledger_has(jobs->ledger, folder, source, paid_ms);
}

struct seed {
	struct jobs *jobs;
	const char *folder;
	int64_t since;
	char *lines;
	size_t len, cap;
};

static void seed_entry(const struct index_entry *e, void *userdata)
{
	struct seed *s = userdata;
	uint64_t images = spend_entry_images(e);
	int64_t paid_ms = spend_entry_paid_at(e) * 1000;
	struct ledger_entry le = {
	    .folder = (char *)s->folder,
	    .source = e->source,
	    .model = (char *)e->model,
	    .paid_ms = paid_ms,
	    .images = (unsigned)images,
	};
	char *line;
	size_t len;

	if (!images || spend_entry_paid_at(e) < s->since)
		return;
	if (ledger_add(s->jobs->ledger, &le, &line, &len) < 0)
		log_oom();
	if (s->len + len > s->cap) {
		size_t cap = (s->len + len) * 2;
		char *p = realloc(s->lines, cap);

		if (!p)
			log_oom();
		s->lines = p;
		s->cap = cap;
	}
	memcpy(s->lines + s->len, line, len);
	s->len += len;
	free(line);
}

void job_ledger_seed(struct jobs *jobs, struct folder *folder)
{
	struct seed s = {.jobs = jobs, .folder = folder->cfg->path};
	int r;

	if (!jobs->ledger || !jobs->ledger_created)
		return;
	/* Once per folder: its records are counted again after a reload. */
	if (!ledger_first_seed(jobs->ledger, folder->cfg->path, &r)) {
		if (r == -ENOMEM)
			log_oom();
		return;
	}
	/* The first run with a ledger: this month's payments are only in the
	 * records; from now on they are in the ledger too. */
	s.since = ledger_month_start(loop_wall_ms() / 1000);
	index_foreach(folder->index, seed_entry, &s);
	if (s.len)
		job_ledger_submit(jobs, s.lines, s.len);
	else
		free(s.lines);
}

struct ledger_today {
	const char *folder;
	int64_t since;
	uint64_t images, spent;
	const struct config *config;
};

static void count_entry(const struct ledger_entry *e, void *userdata)
{
	struct ledger_today *t = userdata;

	if (strcmp(e->folder, t->folder) != 0 || e->paid_ms / 1000 < t->since)
		return;
	t->images = sched_add_sat(t->images, e->images);
	t->spent =
	    sched_add_sat(t->spent, sched_mul_sat(e->images, spend_price_of(t->config, e->model)));
}

bool job_ledger_count_today(struct jobs *jobs, struct folder *folder, int64_t since,
			    uint64_t *ret_images, uint64_t *ret_spent)
{
	struct ledger_today t = {
	    .folder = folder->cfg->path, .since = since, .config = jobs->config};

	if (!jobs->ledger)
		return false;
	job_ledger_seed(jobs, folder);
	ledger_foreach(jobs->ledger, count_entry, &t);
	*ret_images = t.images;
	*ret_spent = t.spent;
	return true;
}
