/* job_core: the transitions of a job, as a pure function. A stage (check,
 * send, fetch, commit) ends in a verdict; job_core_step maps the job's state
 * and that verdict to what the core does next (job.c's job_advance applies
 * it). No I/O, no clock: unit tested on its own. */
#ifndef SEEDREAMD_JOB_CORE_H
#define SEEDREAMD_JOB_CORE_H

#include <stdbool.h>

enum job_state {
	JOB_SETTLING,	/* waiting for the file to stop changing */
	JOB_FITTING,	/* valid once converted: a fit worker has it */
	JOB_QUEUED,	/* valid, waiting for a generation slot */
	JOB_GENERATING, /* the API call is under way (and its answer looked at) */
	JOB_FETCHING,	/* paid for: downloading the result */
	JOB_WAITING,	/* backing off before the next generation or fetch */
	JOB_CHECKING,	/* a storage worker opens, reads and checks the file */
	JOB_PREPARING,	/* a storage worker readies the send (holds a generation slot) */
	JOB_COMMITTING, /* a storage worker records, fetches into or writes the result or
			 * the error record */
	JOB_TWIN,	/* checked: the same image is being paid for by another job of the
			 * folder (its twin); waits for that result (job_twins.c) */
};
#define JOB_STATE_COUNT (JOB_TWIN + 1)

enum job_verdict_kind {
	JOB_VERDICT_CANCELLED,	 /* the job went away or looks anew: nothing to apply */
	JOB_VERDICT_DROP,	 /* nothing to do (gone, or done and known): ends quietly */
	JOB_VERDICT_SKIP,	 /* the same image is done already: ends, counted skipped */
	JOB_VERDICT_SETTLE,	 /* look at the file again after delay_ms */
	JOB_VERDICT_QUEUE,	 /* valid: wait for a generation slot */
	JOB_VERDICT_RETRY,	 /* not paid: back off delay_ms, then queue again */
	JOB_VERDICT_PAUSE,	 /* the API refused the account: to the head of the queue */
	JOB_VERDICT_PAID,	 /* paid: fetch and commit the result */
	JOB_VERDICT_FETCH_RETRY, /* paid, not written: back off delay_ms, fetch again */
	JOB_VERDICT_FAIL,	 /* fails for good: its error record is written */
	JOB_VERDICT_LEAVE,	 /* --once: left for a later run */
	JOB_VERDICT_DONE,	 /* its result is on disk: ends, counted done */
	JOB_VERDICT_TWIN,	 /* another job pays for the same image: wait for it */
};
#define JOB_VERDICT_COUNT (JOB_VERDICT_TWIN + 1)

enum job_action {
	JOB_ACTION_NONE,	/* nothing (a cancelled completion) */
	JOB_ACTION_END,		/* the job ends (freed, or settles anew if it changed) */
	JOB_ACTION_SETTLE,	/* to settling, with a deadline */
	JOB_ACTION_QUEUE,	/* to the queue (front for a pause) */
	JOB_ACTION_WAIT,	/* to waiting, then the queue */
	JOB_ACTION_WAIT_FETCH,	/* to waiting, then the fetch */
	JOB_ACTION_FETCH,	/* to committing: the journal, the fetch */
	JOB_ACTION_RECORD_FAIL, /* to committing: the error record */
	JOB_ACTION_TWIN,	/* to waiting for its twin (no deadline) */
};

struct job_step {
	enum job_action action;
	enum job_state next; /* meaningful unless NONE or END */
	bool count_skipped, count_done, count_left;
};

/* What follows verdict v in state. stopping: SIGTERM or the end of a --once
 * run; a job being checked, fitted or readied for sending then ends instead
 * of waiting or queueing again (nothing new is paid), while a paid result is
 * still fetched and written. Returns 0, or -EINVAL for a
 * verdict that cannot arrive in that state (a bug: the caller logs it). */
int job_core_step(enum job_state state, enum job_verdict_kind v, bool stopping,
		  struct job_step *ret);

/* Whether a job may move from one state to another: nothing reaches
 * generating except through preparing (free space, the output folder and the
 * stem are known before paying), and fetching only from committing (the
 * result is journalled first). */
bool job_core_may_enter(enum job_state from, enum job_state to);

const char *job_state_name(enum job_state state);
const char *job_verdict_name(enum job_verdict_kind v);

#endif
