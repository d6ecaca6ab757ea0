/* job_core: see job_core.h. */
#include "job_core.h"

#include <errno.h>

/* Which verdicts each state's stage can end in (bit per verdict). */
#define V(x) (1u << JOB_VERDICT_##x)
static const unsigned job_core_allowed[JOB_STATE_COUNT] = {
    /* deadlines and the pump drive these; a verdict arrives only as a
     * cancellation of what they had under way */
    [JOB_SETTLING] = V(CANCELLED) | V(DROP),
    [JOB_QUEUED] = V(CANCELLED) | V(DROP) | V(LEAVE) | V(RETRY) | V(FAIL),
    [JOB_WAITING] = V(CANCELLED) | V(DROP),
    [JOB_CHECKING] = V(CANCELLED) | V(DROP) | V(SKIP) | V(SETTLE) | V(QUEUE) | V(FAIL) | V(LEAVE) |
		     V(DONE) | V(TWIN),
    [JOB_FITTING] = V(CANCELLED) | V(DROP) | V(SETTLE) | V(QUEUE) | V(FAIL),
    [JOB_PREPARING] = V(CANCELLED) | V(DROP) | V(SETTLE) | V(RETRY) | V(FAIL) | V(LEAVE),
    [JOB_GENERATING] = V(CANCELLED) | V(SETTLE) | V(RETRY) | V(PAUSE) | V(PAID) | V(FAIL),
    [JOB_FETCHING] = V(CANCELLED) | V(FETCH_RETRY) | V(FAIL) | V(LEAVE),
    [JOB_COMMITTING] = V(CANCELLED) | V(DROP) | V(FETCH_RETRY) | V(FAIL) | V(LEAVE) | V(DONE),
    /* released by its twin's end (to settling), or gone */
    [JOB_TWIN] = V(CANCELLED) | V(DROP),
};
#undef V

/* Which states each state may move to (bit per state). Looking at a file
 * anew (settling) is always possible: it changed, or its job ends dirty. */
#define S(x) (1u << JOB_##x)
static const unsigned job_core_edges[JOB_STATE_COUNT] = {
    [JOB_SETTLING] =
	S(SETTLING) | S(CHECKING) | S(WAITING), /* waiting: restored from the journal */
    [JOB_CHECKING] = S(SETTLING) | S(QUEUED) | S(COMMITTING) | S(TWIN),
    [JOB_FITTING] = S(SETTLING) | S(QUEUED) | S(COMMITTING),
    [JOB_QUEUED] = S(SETTLING) | S(FITTING) | S(PREPARING) | S(WAITING) | S(COMMITTING),
    [JOB_WAITING] = S(SETTLING) | S(QUEUED) | S(COMMITTING),
    [JOB_PREPARING] = S(SETTLING) | S(PREPARING) | S(WAITING) | S(GENERATING) | S(COMMITTING),
    [JOB_GENERATING] = S(SETTLING) | S(WAITING) | S(QUEUED) | S(COMMITTING),
    [JOB_FETCHING] = S(SETTLING) | S(WAITING) | S(COMMITTING),
    [JOB_COMMITTING] = S(SETTLING) | S(WAITING) | S(FETCHING) | S(COMMITTING),
    [JOB_TWIN] = S(SETTLING),
};
#undef S

bool job_core_may_enter(enum job_state from, enum job_state to)
{
	return (unsigned)from < JOB_STATE_COUNT && (unsigned)to < JOB_STATE_COUNT &&
	       (job_core_edges[from] & (1u << to));
}

/* The stages before any money is spent that a stop ends at once. */
static bool job_core_ends_on_stop(enum job_state state)
{
	return state == JOB_CHECKING || state == JOB_FITTING || state == JOB_PREPARING;
}

int job_core_step(enum job_state state, enum job_verdict_kind v, bool stopping,
		  struct job_step *ret)
{
	struct job_step s = {.action = JOB_ACTION_NONE, .next = state};

	if ((unsigned)state >= JOB_STATE_COUNT || (unsigned)v >= JOB_VERDICT_COUNT ||
	    !(job_core_allowed[state] & (1u << v)))
		return -EINVAL;
	switch (v) {
	case JOB_VERDICT_CANCELLED:
		break;
	case JOB_VERDICT_DROP:
		s.action = JOB_ACTION_END;
		break;
	case JOB_VERDICT_SKIP:
		s.action = JOB_ACTION_END;
		s.count_skipped = true;
		break;
	case JOB_VERDICT_LEAVE:
		s.action = JOB_ACTION_END;
		s.count_left = true;
		break;
	case JOB_VERDICT_DONE:
		s.action = JOB_ACTION_END;
		s.count_done = true; /* (an error record ends with DROP: counted failed) */
		break;
	case JOB_VERDICT_SETTLE:
		s.action = JOB_ACTION_SETTLE;
		s.next = JOB_SETTLING;
		break;
	case JOB_VERDICT_QUEUE:
	case JOB_VERDICT_PAUSE:
		s.action = JOB_ACTION_QUEUE;
		s.next = JOB_QUEUED;
		break;
	case JOB_VERDICT_RETRY:
		s.action = JOB_ACTION_WAIT;
		s.next = JOB_WAITING;
		break;
	case JOB_VERDICT_PAID:
		s.action = JOB_ACTION_FETCH;
		s.next = JOB_COMMITTING;
		break;
	case JOB_VERDICT_FETCH_RETRY:
		s.action = JOB_ACTION_WAIT_FETCH;
		s.next = JOB_WAITING;
		break;
	case JOB_VERDICT_FAIL:
		s.action = JOB_ACTION_RECORD_FAIL;
		s.next = JOB_COMMITTING;
		break;
	case JOB_VERDICT_TWIN:
		s.action = JOB_ACTION_TWIN;
		s.next = JOB_TWIN;
		break;
	}
	/* Stopping: nothing unpaid waits or starts again; paid results go on. */
	if (stopping && job_core_ends_on_stop(state) &&
	    (s.action == JOB_ACTION_SETTLE || s.action == JOB_ACTION_QUEUE ||
	     s.action == JOB_ACTION_WAIT || s.action == JOB_ACTION_TWIN)) {
		s.action = JOB_ACTION_END;
		s.next = state;
	}
	*ret = s;
	return 0;
}

const char *job_state_name(enum job_state state)
{
	static const char *const names[JOB_STATE_COUNT] = {
	    [JOB_SETTLING] = "settling",     [JOB_FITTING] = "fitting",
	    [JOB_QUEUED] = "queued",	     [JOB_GENERATING] = "generating",
	    [JOB_FETCHING] = "fetching",     [JOB_WAITING] = "waiting",
	    [JOB_CHECKING] = "checking",     [JOB_PREPARING] = "preparing",
	    [JOB_COMMITTING] = "committing", [JOB_TWIN] = "twin",
	};

	return (unsigned)state < JOB_STATE_COUNT ? names[state] : "?";
}

const char *job_verdict_name(enum job_verdict_kind v)
{
	static const char *const names[JOB_VERDICT_COUNT] = {
	    [JOB_VERDICT_CANCELLED] = "cancelled",
	    [JOB_VERDICT_DROP] = "drop",
	    [JOB_VERDICT_SKIP] = "skip",
	    [JOB_VERDICT_SETTLE] = "settle",
	    [JOB_VERDICT_QUEUE] = "queue",
	    [JOB_VERDICT_RETRY] = "retry",
	    [JOB_VERDICT_PAUSE] = "pause",
	    [JOB_VERDICT_PAID] = "paid",
	    [JOB_VERDICT_FETCH_RETRY] = "fetch-retry",
	    [JOB_VERDICT_FAIL] = "fail",
	    [JOB_VERDICT_LEAVE] = "leave",
	    [JOB_VERDICT_DONE] = "done",
	    [JOB_VERDICT_TWIN] = "twin",
	};

	return (unsigned)v < JOB_VERDICT_COUNT ? names[v] : "?";
}
