/* folder_intake: a folder added by a reload is swept and its done records
 * read on a worker; see include/folder_intake.h. */
#include "folder_intake.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "folder.h"
#include "loop.h"
#include "output.h"
#include "work.h"

struct folder_intake {
	struct folder *folder; /* only on the loop thread */
	folder_intake_done_fn done;
	void *userdata;
	char *output;
	char *done_dir;
	char cache[PATH_MAX + 64];
	struct index *index; /* built by the worker */
	uint64_t epoch;	     /* the folder's index_epoch at the start */
	_Atomic uint64_t progress_at; /* stored by the worker as it reads */
	struct folder_intake_result res;
};

static void folder_intake_free(struct folder_intake *in)
{
	index_free(in->index);
	free(in->output);
	free(in->done_dir);
	free(in);
}

/* On a worker: blocking is fine here, logging and folder state are not. */
static void folder_intake_work(void *arg)
{
	struct folder_intake *in = arg;

	/* Before the records are read: the results that replace these files
	 * are not done, and a scan must not find them. */
	in->res.sweep_result = output_sweep_tmp(in->output, &in->res.swept);
	in->res.result = index_new(&in->index);
	if (in->res.result < 0)
		return;
	in->res.result = index_load_tree_progress(in->index, in->output, in->done_dir,
						  in->cache[0] ? in->cache : NULL, &in->res.skipped,
						  &in->res.stats, &in->progress_at);
}

static void folder_intake_done(void *arg, bool cancelled)
{
	struct folder_intake *in = arg;
	struct folder *f = in->folder;

	if (cancelled)
		in->res.result = -ECANCELED;
	else if (in->res.result == 0 && strcmp(in->output, f->cfg->output) != 0)
		in->res.result = -ESTALE; /* another output now: its records are still to be read */
	else if (in->res.result == 0 && f->index_epoch != in->epoch)
		in->res.result = -EAGAIN; /* judged away or replaced meanwhile: maybe read half */
	f->index_reloading = false;
	f->records_loading_since = 0;
	f->records_progress_at = NULL;
	if (in->res.result == 0) {
		index_free(f->index);
		f->index = in->index;
		in->index = NULL;
		f->index_stale = false;
		f->index_changes_saved = index_changes(f->index);
	}
	in->done(f, &in->res, in->userdata);
	folder_intake_free(in);
}

int folder_intake_start(struct folder *f, struct work_pool *pool, folder_intake_done_fn done,
			void *userdata)
{
	struct folder_intake *in;
	int r;

	if (f->index_reloading)
		return -EBUSY;
	in = calloc(1, sizeof(*in));
	if (!in)
		return -ENOMEM;
	in->folder = f;
	in->done = done;
	in->userdata = userdata;
	in->output = strdup(f->cfg->output);
	in->done_dir = f->cfg->done_dir ? strdup(f->cfg->done_dir) : NULL;
	if (!in->output || (f->cfg->done_dir && !in->done_dir)) {
		r = -ENOMEM;
		goto fail;
	}
	folder_index_cache_file(f, in->cache, sizeof(in->cache));
	in->epoch = f->index_epoch;
	r = work_submit(pool, folder_intake_work, folder_intake_done, in);
	if (r < 0)
		goto fail;
	f->index_reloading = true;
	f->index_stale = true;
	f->records_loading_since = loop_now_ms();
	f->records_progress_at = &in->progress_at;
	return 0;
fail:
	folder_intake_free(in);
	return r;
}
