/* job_done: files whose done record matches what a scan saw (same size and
 * mtime) are most of what a start-up or a rescan offers: 100,000 of them over
 * a photo library. Each needs only a look that its sidecar is still there (a
 * deleted .error.json means "try again"), so they are checked in batches on a
 * storage worker, without a job each; only those whose sidecar is gone become
 * jobs. */
#include "job_private.h"

#define JOB_DONE_BATCH 512 /* files per worker request */

struct job_done_item {
	char *rel;
	char *sidecar; /* full path, as the record had it when offered */
	struct stat st; /* as the scan saw it */
	enum watch_how how;
	bool there;	/* the worker's answer */
};

struct job_done_batch {
	struct job_io io; /* first: the request */
	struct folder *folder;
	struct job_done_batch *next; /* jobs->done_batches while being filled */
	size_t n;
	struct job_done_item items[JOB_DONE_BATCH];
};

static void job_done_batch_free(struct job_done_batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		free(b->items[i].rel);
		free(b->items[i].sidecar);
	}
	free(b);
}

static void job_done_work(struct job_io *io)
{
	struct job_done_batch *b = (struct job_done_batch *)io;

	for (size_t i = 0; i < b->n; i++)
		b->items[i].there = access(b->items[i].sidecar, F_OK) == 0;
}

static void job_done_finished(struct jobs *jobs, struct job *job, struct job_io *io)
{
	struct job_done_batch *b = (struct job_done_batch *)io;
	struct folder *f = b->folder;

	(void)job;
	for (size_t i = 0; io->ran && !jobs->stopping && !f->removed && i < b->n; i++) {
		struct job_done_item *it = &b->items[i];
		if (!it->there)
			jobs_offer_checked(jobs, f, it->rel, &it->st, it->how);
	}
	job_done_batch_free(b);
	jobs_changed(jobs);
}

static void job_done_submit(struct jobs *jobs, struct job_done_batch *b)
{
	struct job_done_batch **link = &jobs->done_batches;

	while (*link && *link != b)
		link = &(*link)->next;
	if (*link)
		*link = b->next;
	b->next = NULL;
	b->io.work = job_done_work;
	b->io.done = job_done_finished;
	job_io_submit(jobs, NULL, b->folder, &b->io);
}

void jobs_done_flush(void *userdata)
{
	struct jobs *jobs = userdata;

	while (jobs->done_batches)
		job_done_submit(jobs, jobs->done_batches);
}

bool job_done_offer(struct jobs *jobs, struct folder *folder, const char *rel,
		    const struct stat *st, enum watch_how how, const struct index_entry *e)
{
	struct job_done_batch *b = jobs->done_batches;
	struct job_done_item *it;

	while (b && b->folder != folder)
		b = b->next;
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b)
			log_oom();
		b->folder = folder;
		b->next = jobs->done_batches;
		jobs->done_batches = b;
		/* The rest of this loop iteration's offers join it. */
		(void)loop_timer_arm(jobs->done_timer, 0);
	}
	it = &b->items[b->n++];
	it->rel = xstrdup(rel);
	it->sidecar = xasprintf("%s/%s", folder->cfg->output, e->sidecar);
	it->st = *st;
	it->how = how;
	if (b->n == JOB_DONE_BATCH)
		job_done_submit(jobs, b);
	return true;
}

void jobs_done_drop_folder(struct jobs *jobs, struct folder *folder)
{
	struct job_done_batch **link = &jobs->done_batches;

	while (*link) {
		struct job_done_batch *b = *link;
		if (!folder || b->folder == folder) {
			*link = b->next;
			job_done_batch_free(b);
		} else {
			link = &b->next;
		}
	}
}
