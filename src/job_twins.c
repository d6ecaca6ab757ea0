/* job_twins: a copy of an image that another job of the same folder is
 * already paying for (checked, not yet done) waits for that result instead of
 * being sent too. The folder's index learns of a result only once its commit
 * is done, so two copies dropped together, or a subfolder renamed while its
 * result was being written, were both paid for. The loop keeps a map from
 * (folder, size, sha256) to the jobs that lead, told apart by their prompt
 * (twin_map.h); a copy checked while one leads waits in JOB_TWIN (no slot, no budget) and is looked
 * at anew when the leader ends: the reuse of job_check.c then finds the done
 * record, or, if the leader failed or was dropped, the first copy is judged
 * on its own and leads the others, which go on waiting. A copy is held only
 * once it is valid (where it would be queued): a copy that fails its own
 * check fails without waiting. */
#include "job_private.h"

/* What a reuse requires beyond the content (job_reuse_work): one output, and
 * the prompt (compared with the leader's). The rest of the settings are the
 * folder's: the same for both, and compared against the sidecar by the reuse
 * itself. */
static bool job_twins_eligible(const struct job *job)
{
	return !job->group && job->sha256[0] && job->folder->cfg->max_images <= 1;
}

/* The entry of job's content whose leader would be sent with job's prompt.
 * Compared now, not when the leader was checked: a reload changes the
 * folder's prompt for the leader too (job_prompt reads it when it is sent). */
static struct twin_entry *job_twins_find(const struct jobs *jobs, const struct job *job)
{
	const char *prompt = job_prompt(job);

	for (struct twin_entry *e = twin_map_find(jobs->twins, job->folder, job->size, job->sha256);
	     e; e = twin_map_next(e)) {
		const struct job *leader = twin_entry_leader(e);
		if (leader != job && strcmp(job_prompt(leader), prompt) == 0)
			return e;
	}
	return NULL;
}

static void job_twins_start(struct jobs *jobs, struct job *job)
{
	struct twin_entry *e;

	if (twin_map_lead(jobs->twins, job->folder, job->size, job->sha256, job, &e) < 0)
		log_oom(); /* -EINVAL is ruled out by job_twins_eligible */
	job->twin = e;
	job->twin_leads = true;
}

void job_twins_lead(struct jobs *jobs, struct job *job)
{
	if (!job->twin && job_twins_eligible(job) && !job_twins_find(jobs, job))
		job_twins_start(jobs, job);
}

bool job_twins_hold(struct jobs *jobs, struct job *job)
{
	struct twin_entry *e;
	const struct job *leader;

	/* Handed the lead by one that ended without a result, and still the
	 * same bytes: it goes on leading the copies that wait. */
	if (job->twin && job->twin_leads && job_twins_eligible(job) &&
	    twin_entry_is(job->twin, job->folder, job->size, job->sha256))
		return false;
	job_twins_forget(jobs, job); /* another content now: its copies look again */
	if (!job_twins_eligible(job))
		return false;
	e = job_twins_find(jobs, job);
	if (!e) {
		job_twins_start(jobs, job);
		return false;
	}
	if (twin_entry_follow(e, job) < 0)
		log_oom();
	job->twin = e;
	job->twin_leads = false;
	leader = twin_entry_leader(e);
	log_info("%s/%s: the same image as %s, already on its way: waiting for its result "
		 "(paid once)",
		 job->folder->cfg->path, job->rel, leader->rel);
	job_advance(jobs, job, JOB_VERDICT(TWIN));
	return true;
}

/* Whether the folder's records hold a result of job's own bytes: its
 * copies can reuse it. */
static bool job_twins_paid(const struct job *job)
{
	const struct index_entry *d = index_get(job->folder->index, job->rel);

	return d && !d->failed && d->size == job->size && strcmp(d->sha256, job->sha256) == 0;
}

/* Looked at anew now, preferring the result of leader (job_reuse_submit):
 * only settling, never freeing, so that a caller walking the table keeps its
 * place. */
static void job_twins_release(struct jobs *jobs, struct job *t, const struct job *leader)
{
	free(t->twin_from);
	t->twin_from = xstrdup(leader->rel);
	job_settle(jobs, t, 0);
}

void job_twins_forget(struct jobs *jobs, struct job *job)
{
	struct twin_entry *e = job->twin;
	struct job *next;
	void **followers = NULL;
	size_t n;

	if (!e)
		return;
	job->twin = NULL;
	if (!job->twin_leads) {
		(void)twin_entry_unfollow(e, job);
		return;
	}
	job->twin_leads = false;
	if (!job_twins_paid(job) && (next = twin_entry_promote(e)) != NULL) {
		/* Nothing to reuse (failed, dropped, changed): the first copy is
		 * checked on its own and leads the others meanwhile, so a failing
		 * image is read once per failure, not once per copy each time. */
		next->twin = NULL; /* its settle leaves no entry */
		job_twins_release(jobs, next, job);
		next->twin = e;
		next->twin_leads = true;
		return;
	}
	n = twin_map_end(jobs->twins, e, &followers);
	for (size_t i = 0; i < n; i++) {
		struct job *t = followers[i];
		t->twin = NULL;
		job_twins_release(jobs, t, job);
	}
	free(followers);
}
