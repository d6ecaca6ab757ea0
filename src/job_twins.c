/* job_twins: a copy of an image that another job of the same folder is
 * already paying for (checked, not yet done) waits for that result instead of
 * being sent too. The folder's index learns of a result only once its commit
 * is done, so two copies dropped together, or a subfolder renamed while its
 * result was being written, were both paid for. The loop keeps a map from
 * (folder, size, sha256, prompt) to the job that leads (twin_map.h); a copy
 * checked while it leads waits in JOB_TWIN (no slot, no budget) and is looked
 * at anew when the leader ends: the reuse of job_check.c then finds the done
 * record, or, if the leader failed or was dropped, the copy is judged on its
 * own (the first copy to be checked again leads the others). */
#include "job_private.h"

/* What a reuse requires beyond the content (job_reuse_work): one output, and
 * the prompt (part of the key). The rest of the settings are the folder's:
 * the same for both, and compared against the sidecar by the reuse itself. */
static bool job_twins_eligible(const struct job *job)
{
	return !job->group && job->sha256[0] && job->folder->cfg->max_images <= 1;
}

/* 0: job leads its content now; -EEXIST: another does (*ret_entry); else
 * it cannot be a twin. */
static int job_twins_try_lead(struct jobs *jobs, struct job *job, struct twin_entry **ret_entry)
{
	int r;

	if (job->twin || !job_twins_eligible(job))
		return -EINVAL;
	r = twin_map_lead(jobs->twins, job->folder, job->size, job->sha256, job_prompt(job), job,
			  ret_entry);
	if (r == -ENOMEM)
		log_oom();
	if (r == 0) {
		job->twin = *ret_entry;
		job->twin_leads = true;
	}
	return r;
}

void job_twins_lead(struct jobs *jobs, struct job *job)
{
	struct twin_entry *e;

	(void)job_twins_try_lead(jobs, job, &e);
}

bool job_twins_hold(struct jobs *jobs, struct job *job)
{
	struct twin_entry *e;
	const struct job *leader;

	if (job_twins_try_lead(jobs, job, &e) != -EEXIST)
		return false;
	if (twin_entry_follow(e, job) == -ENOMEM)
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

void job_twins_forget(struct jobs *jobs, struct job *job)
{
	struct twin_entry *e = job->twin;
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
	n = twin_map_end(jobs->twins, e, &followers);
	for (size_t i = 0; i < n; i++) {
		struct job *t = followers[i];
		t->twin = NULL;
		/* Looked at anew now: only settling, never freeing, so that a
		 * caller walking the table keeps its place. */
		job_settle(jobs, t, 0);
	}
	free(followers);
}
