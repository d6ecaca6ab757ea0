/* metrics_jobs: the gauges, computed from the jobs and folders when a scrape
 * or a textfile write asks, then rendered with the counters. */
#include <errno.h>
#include <stdlib.h>

#include "folder.h"
#include "job.h"
#include "loop.h"
#include "metrics.h"
#include "metrics_serve.h"

struct metrics_collect {
	struct folder *const *folders;
	struct metrics_folder_state *states;
	uint64_t *oldest; /* first_seen per folder, 0 if none */
	size_t n_folders;
	uint64_t oldest_any;
};

static void metrics_collect_job(void *userdata, const struct folder *folder, bool queued,
				uint64_t first_seen)
{
	struct metrics_collect *mc = userdata;

	if (!mc->oldest_any || first_seen < mc->oldest_any)
		mc->oldest_any = first_seen;
	for (size_t i = 0; i < mc->n_folders; i++) {
		if (mc->folders[i] != folder)
			continue;
		mc->states[i].pending++;
		if (queued)
			mc->states[i].queued++;
		if (!mc->oldest[i] || first_seen < mc->oldest[i])
			mc->oldest[i] = first_seen;
		return;
	}
}

static double metrics_age_s(uint64_t now, uint64_t since)
{
	return since && since < now ? (double)(now - since) / 1000.0 : 0;
}

int metrics_jobs_render(struct metrics *m, const struct jobs *jobs, struct folder *const *folders,
			size_t n_folders, bool stopping, double start_time_s, char **ret_text,
			size_t *ret_len)
{
	struct metrics_collect mc = {.folders = folders, .n_folders = n_folders};
	struct metrics_state st = {.start_time_s = start_time_s, .version = SEEDREAMD_VERSION};
	struct jobs_counts c;
	uint64_t now = loop_now_ms();
	size_t shown = 0;
	int r;

	mc.states = calloc(n_folders ? n_folders : 1, sizeof(*mc.states));
	mc.oldest = calloc(n_folders ? n_folders : 1, sizeof(*mc.oldest));
	if (!mc.states || !mc.oldest) {
		r = -ENOMEM;
		goto out;
	}
	jobs_each(jobs, metrics_collect_job, &mc);
	/* Removed folders (a reload) are kept until idle: not shown. */
	for (size_t i = 0; i < n_folders; i++) {
		const struct folder *f = folders[i];
		if (f->removed)
			continue;
		mc.states[shown] = mc.states[i];
		mc.states[shown].path = f->cfg->path;
		mc.states[shown].oldest_age_s = metrics_age_s(now, mc.oldest[i]);
		mc.states[shown].paused = !f->present || f->user_paused;
		mc.states[shown].stalled = f->look_stalled_since != 0;
		shown++;
	}
	jobs_counts(jobs, &c);
	st.queued = c.queued;
	st.in_flight = c.in_flight;
	st.waiting = c.waiting;
	st.settling = c.settling;
	st.fitting = c.fitting;
	st.twins = c.twins;
	st.oldest_pending_age_s = metrics_age_s(now, mc.oldest_any);
	st.paused[METRICS_PAUSE_API] = c.paused;
	st.paused[METRICS_PAUSE_SPEND_LIMIT] = c.limit_reason != NULL;
	st.paused[METRICS_PAUSE_DISK] = c.disk_reason != NULL;
	st.paused[METRICS_PAUSE_STORAGE] = c.storage_reason != NULL;
	st.paused[METRICS_PAUSE_STOPPING] = stopping;
	st.paused[METRICS_PAUSE_USER] = jobs_user_paused(jobs);
	st.folders = mc.states;
	st.n_folders = shown;
	r = metrics_render(m, &st, ret_text, ret_len);
out:
	free(mc.states);
	free(mc.oldest);
	return r;
}
