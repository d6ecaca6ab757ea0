/* job_core: every verdict in every state, without a network or a disk. The
 * table below is the contract, written out by hand: which verdicts a state's
 * stage can end in, and what the core does with each, also while stopping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "job_core.h"

#define ALL_STATES   JOB_STATE_COUNT
#define ALL_VERDICTS JOB_VERDICT_COUNT

struct expect {
	enum job_state state;
	enum job_verdict_kind v;
	enum job_action action;
	enum job_state next; /* ignored for NONE and END */
	enum job_action action_stopping;
};

/* Every (state, verdict) pair that may arrive; anything else is -EINVAL. */
static const struct expect table[] = {
    {JOB_SETTLING, JOB_VERDICT_CANCELLED, JOB_ACTION_NONE, JOB_SETTLING, JOB_ACTION_NONE},
    {JOB_SETTLING, JOB_VERDICT_DROP, JOB_ACTION_END, JOB_SETTLING, JOB_ACTION_END},
    {JOB_QUEUED, JOB_VERDICT_CANCELLED, JOB_ACTION_NONE, JOB_QUEUED, JOB_ACTION_NONE},
    {JOB_QUEUED, JOB_VERDICT_DROP, JOB_ACTION_END, JOB_QUEUED, JOB_ACTION_END},
    {JOB_QUEUED, JOB_VERDICT_LEAVE, JOB_ACTION_END, JOB_QUEUED, JOB_ACTION_END},
    {JOB_QUEUED, JOB_VERDICT_RETRY, JOB_ACTION_WAIT, JOB_WAITING, JOB_ACTION_WAIT},
    {JOB_QUEUED, JOB_VERDICT_FAIL, JOB_ACTION_RECORD_FAIL, JOB_COMMITTING, JOB_ACTION_RECORD_FAIL},
    {JOB_WAITING, JOB_VERDICT_CANCELLED, JOB_ACTION_NONE, JOB_WAITING, JOB_ACTION_NONE},
    {JOB_WAITING, JOB_VERDICT_DROP, JOB_ACTION_END, JOB_WAITING, JOB_ACTION_END},
    {JOB_CHECKING, JOB_VERDICT_CANCELLED, JOB_ACTION_NONE, JOB_CHECKING, JOB_ACTION_NONE},
    {JOB_CHECKING, JOB_VERDICT_DROP, JOB_ACTION_END, JOB_CHECKING, JOB_ACTION_END},
    {JOB_CHECKING, JOB_VERDICT_SKIP, JOB_ACTION_END, JOB_CHECKING, JOB_ACTION_END},
    {JOB_CHECKING, JOB_VERDICT_SETTLE, JOB_ACTION_SETTLE, JOB_SETTLING, JOB_ACTION_END},
    {JOB_CHECKING, JOB_VERDICT_QUEUE, JOB_ACTION_QUEUE, JOB_QUEUED, JOB_ACTION_END},
    {JOB_CHECKING, JOB_VERDICT_FAIL, JOB_ACTION_RECORD_FAIL, JOB_COMMITTING,
     JOB_ACTION_RECORD_FAIL},
    {JOB_CHECKING, JOB_VERDICT_LEAVE, JOB_ACTION_END, JOB_CHECKING, JOB_ACTION_END},
    {JOB_CHECKING, JOB_VERDICT_DONE, JOB_ACTION_END, JOB_CHECKING, JOB_ACTION_END},
    {JOB_FITTING, JOB_VERDICT_CANCELLED, JOB_ACTION_NONE, JOB_FITTING, JOB_ACTION_NONE},
    {JOB_FITTING, JOB_VERDICT_DROP, JOB_ACTION_END, JOB_FITTING, JOB_ACTION_END},
    {JOB_FITTING, JOB_VERDICT_SETTLE, JOB_ACTION_SETTLE, JOB_SETTLING, JOB_ACTION_END},
    {JOB_FITTING, JOB_VERDICT_QUEUE, JOB_ACTION_QUEUE, JOB_QUEUED, JOB_ACTION_END},
    {JOB_FITTING, JOB_VERDICT_FAIL, JOB_ACTION_RECORD_FAIL, JOB_COMMITTING, JOB_ACTION_RECORD_FAIL},
    {JOB_PREPARING, JOB_VERDICT_CANCELLED, JOB_ACTION_NONE, JOB_PREPARING, JOB_ACTION_NONE},
    {JOB_PREPARING, JOB_VERDICT_DROP, JOB_ACTION_END, JOB_PREPARING, JOB_ACTION_END},
    {JOB_PREPARING, JOB_VERDICT_SETTLE, JOB_ACTION_SETTLE, JOB_SETTLING, JOB_ACTION_END},
    {JOB_PREPARING, JOB_VERDICT_RETRY, JOB_ACTION_WAIT, JOB_WAITING, JOB_ACTION_END},
    {JOB_PREPARING, JOB_VERDICT_FAIL, JOB_ACTION_RECORD_FAIL, JOB_COMMITTING,
     JOB_ACTION_RECORD_FAIL},
    {JOB_PREPARING, JOB_VERDICT_LEAVE, JOB_ACTION_END, JOB_PREPARING, JOB_ACTION_END},
    /* The answer's stage: what was sent is paid or not by now; a stop does
     * not change how it ends. */
    {JOB_GENERATING, JOB_VERDICT_CANCELLED, JOB_ACTION_NONE, JOB_GENERATING, JOB_ACTION_NONE},
    {JOB_GENERATING, JOB_VERDICT_SETTLE, JOB_ACTION_SETTLE, JOB_SETTLING, JOB_ACTION_SETTLE},
    {JOB_GENERATING, JOB_VERDICT_RETRY, JOB_ACTION_WAIT, JOB_WAITING, JOB_ACTION_WAIT},
    {JOB_GENERATING, JOB_VERDICT_PAUSE, JOB_ACTION_QUEUE, JOB_QUEUED, JOB_ACTION_QUEUE},
    {JOB_GENERATING, JOB_VERDICT_PAID, JOB_ACTION_FETCH, JOB_COMMITTING, JOB_ACTION_FETCH},
    {JOB_GENERATING, JOB_VERDICT_FAIL, JOB_ACTION_RECORD_FAIL, JOB_COMMITTING,
     JOB_ACTION_RECORD_FAIL},
    /* Paid: fetched and written also while stopping. */
    {JOB_FETCHING, JOB_VERDICT_CANCELLED, JOB_ACTION_NONE, JOB_FETCHING, JOB_ACTION_NONE},
    {JOB_FETCHING, JOB_VERDICT_FETCH_RETRY, JOB_ACTION_WAIT_FETCH, JOB_WAITING,
     JOB_ACTION_WAIT_FETCH},
    {JOB_FETCHING, JOB_VERDICT_FAIL, JOB_ACTION_RECORD_FAIL, JOB_COMMITTING,
     JOB_ACTION_RECORD_FAIL},
    {JOB_FETCHING, JOB_VERDICT_LEAVE, JOB_ACTION_END, JOB_FETCHING, JOB_ACTION_END},
    {JOB_COMMITTING, JOB_VERDICT_CANCELLED, JOB_ACTION_NONE, JOB_COMMITTING, JOB_ACTION_NONE},
    {JOB_COMMITTING, JOB_VERDICT_DROP, JOB_ACTION_END, JOB_COMMITTING, JOB_ACTION_END},
    {JOB_COMMITTING, JOB_VERDICT_FETCH_RETRY, JOB_ACTION_WAIT_FETCH, JOB_WAITING,
     JOB_ACTION_WAIT_FETCH},
    {JOB_COMMITTING, JOB_VERDICT_FAIL, JOB_ACTION_RECORD_FAIL, JOB_COMMITTING,
     JOB_ACTION_RECORD_FAIL},
    {JOB_COMMITTING, JOB_VERDICT_LEAVE, JOB_ACTION_END, JOB_COMMITTING, JOB_ACTION_END},
    {JOB_COMMITTING, JOB_VERDICT_DONE, JOB_ACTION_END, JOB_COMMITTING, JOB_ACTION_END},
    /* A copy of an image another job pays for waits for it, unless stopping. */
    {JOB_CHECKING, JOB_VERDICT_TWIN, JOB_ACTION_TWIN, JOB_TWIN, JOB_ACTION_END},
    {JOB_TWIN, JOB_VERDICT_CANCELLED, JOB_ACTION_NONE, JOB_TWIN, JOB_ACTION_NONE},
    {JOB_TWIN, JOB_VERDICT_DROP, JOB_ACTION_END, JOB_TWIN, JOB_ACTION_END},
};

static const struct expect *find(enum job_state s, enum job_verdict_kind v)
{
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (table[i].state == s && table[i].v == v)
			return &table[i];
	return NULL;
}

static void test_every_pair(void **state)
{
	(void)state;
	for (unsigned s = 0; s < ALL_STATES; s++) {
		for (unsigned v = 0; v < ALL_VERDICTS; v++) {
			const struct expect *e = find((enum job_state)s, (enum job_verdict_kind)v);
			for (int stopping = 0; stopping < 2; stopping++) {
				struct job_step step;
				int r = job_core_step((enum job_state)s, (enum job_verdict_kind)v,
						      stopping, &step);
				if (!e) {
					print_message("%s + %s\n", job_state_name(s),
						      job_verdict_name(v));
					assert_int_equal(r, -EINVAL);
					continue;
				}
				assert_int_equal(r, 0);
				assert_int_equal(step.action,
						 stopping ? e->action_stopping : e->action);
				if (step.action != JOB_ACTION_NONE && step.action != JOB_ACTION_END)
					assert_int_equal(step.next, e->next);
				if (step.action == JOB_ACTION_NONE)
					assert_int_equal(step.next,
							 s); /* a cancellation changes nothing */
			}
		}
	}
}

static void test_counters(void **state)
{
	struct job_step step;

	(void)state;
	assert_int_equal(job_core_step(JOB_CHECKING, JOB_VERDICT_SKIP, false, &step), 0);
	assert_true(step.count_skipped && !step.count_done && !step.count_left);
	assert_int_equal(job_core_step(JOB_CHECKING, JOB_VERDICT_DROP, false, &step), 0);
	assert_true(!step.count_skipped && !step.count_done && !step.count_left);
	assert_int_equal(job_core_step(JOB_COMMITTING, JOB_VERDICT_DONE, true, &step), 0);
	assert_true(step.count_done && !step.count_skipped);
	assert_int_equal(job_core_step(JOB_CHECKING, JOB_VERDICT_DONE, false, &step), 0);
	assert_true(step.count_done); /* a reused result */
	assert_int_equal(job_core_step(JOB_COMMITTING, JOB_VERDICT_LEAVE, false, &step), 0);
	assert_true(step.count_left && !step.count_done);
	/* The end of an error record is not a second count. */
	assert_int_equal(job_core_step(JOB_COMMITTING, JOB_VERDICT_DROP, false, &step), 0);
	assert_true(!step.count_done && !step.count_skipped && !step.count_left);
	/* A stop turns an unpaid wait into an end, with nothing counted. */
	assert_int_equal(job_core_step(JOB_PREPARING, JOB_VERDICT_RETRY, true, &step), 0);
	assert_int_equal(step.action, JOB_ACTION_END);
	assert_true(!step.count_done && !step.count_skipped && !step.count_left);
}

static void test_edges(void **state)
{
	(void)state;
	/* Nothing is paid before the send was readied (space, folder, stem). */
	for (unsigned s = 0; s < ALL_STATES; s++)
		assert_int_equal(job_core_may_enter((enum job_state)s, JOB_GENERATING),
				 s == JOB_PREPARING);
	/* A download starts only after the journal write (committing). */
	for (unsigned s = 0; s < ALL_STATES; s++)
		assert_int_equal(job_core_may_enter((enum job_state)s, JOB_FETCHING),
				 s == JOB_COMMITTING);
	/* A file is checked only after it settled. */
	for (unsigned s = 0; s < ALL_STATES; s++)
		assert_int_equal(job_core_may_enter((enum job_state)s, JOB_CHECKING),
				 s == JOB_SETTLING);
	/* Looking anew is always possible. */
	for (unsigned s = 0; s < ALL_STATES; s++)
		assert_true(job_core_may_enter((enum job_state)s, JOB_SETTLING));
	/* Every step job_core_step can take is an edge. */
	for (unsigned s = 0; s < ALL_STATES; s++) {
		for (unsigned v = 0; v < ALL_VERDICTS; v++) {
			struct job_step step;
			if (job_core_step((enum job_state)s, (enum job_verdict_kind)v, false,
					  &step) < 0 ||
			    step.action == JOB_ACTION_NONE || step.action == JOB_ACTION_END)
				continue;
			assert_true(job_core_may_enter((enum job_state)s, step.next));
		}
	}
	/* Only a check holds a job for its twin, and only a new look releases it. */
	for (unsigned s = 0; s < ALL_STATES; s++) {
		assert_int_equal(job_core_may_enter((enum job_state)s, JOB_TWIN),
				 s == JOB_CHECKING);
		assert_int_equal(job_core_may_enter(JOB_TWIN, (enum job_state)s),
				 s == JOB_SETTLING);
	}
	assert_false(job_core_may_enter((enum job_state)JOB_STATE_COUNT, JOB_SETTLING));
}

static void test_out_of_range(void **state)
{
	struct job_step step;

	(void)state;
	assert_int_equal(
	    job_core_step((enum job_state)JOB_STATE_COUNT, JOB_VERDICT_DROP, false, &step),
	    -EINVAL);
	assert_int_equal(
	    job_core_step(JOB_CHECKING, (enum job_verdict_kind)JOB_VERDICT_COUNT, false, &step),
	    -EINVAL);
	assert_string_equal(job_state_name(JOB_COMMITTING), "committing");
	assert_string_equal(job_verdict_name(JOB_VERDICT_FETCH_RETRY), "fetch-retry");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_pair),
	    cmocka_unit_test(test_counters),
	    cmocka_unit_test(test_edges),
	    cmocka_unit_test(test_out_of_range),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
