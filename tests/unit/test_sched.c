/* sched: the per-minute bucket (burst and refill), the daily limits (global
 * and per folder, generations in flight counted, reset at local midnight),
 * the in-flight limit (preparations and undurable paid results hold slots)
 * and the pause, and the waits it returns. The clocks are numbers passed in;
 * the time zone is a POSIX TZ string (no tzdata). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <time.h>

#include "schedule.h"

/* 2026-01-10 20:30:00 UTC: 23:30 local in UTC+3 (date -d ... +%s). */
#define JAN10_2030_UTC 1768077000
#define JAN10_2100_UTC 1768078800 /* local midnight in UTC+3 */
/* 2026-03-08, the day summer time starts in EST5EDT (23 hours long). */
#define MAR08_0530_UTC 1772947800 /* 00:30 EST */
#define MAR09_0400_UTC 1773028800 /* 00:00 EDT, the next midnight */

static void set_tz(const char *tz)
{
	assert_int_equal(setenv("TZ", tz, 1), 0);
	tzset();
}

static struct sched_limits limits(unsigned in_flight, uint64_t per_day, uint64_t per_minute)
{
	return (struct sched_limits){
	    .max_in_flight = in_flight, .max_images_per_day = per_day, .images_per_minute = per_minute};
}

/* Starts and answers one generation of n images right away, at now_epoch_s. */
static void spend(struct sched *s, struct sched_folder *f, uint64_t n, int64_t now_epoch_s)
{
	sched_started(s, f);
	sched_answered(s, f);
	sched_paid(s, f, n, now_epoch_s);
}

static void test_bucket_burst_then_refill(void **state)
{
	struct sched s;
	struct sched_folder f = {0};
	struct sched_limits lim = limits(100, 0, 6);
	struct sched_verdict v;
	uint64_t t = 1000000;

	(void)state;
	sched_init(&s, &lim, t);
	/* A full bucket: a burst of 6 at once, then 10 s per image. */
	for (int i = 0; i < 6; i++) {
		v = sched_may_start(&s, &f, t, JAN10_2030_UTC);
		assert_int_equal(v.answer, SCHED_YES);
		spend(&s, &f, 1, JAN10_2030_UTC);
	}
	v = sched_may_start(&s, &f, t, JAN10_2030_UTC);
	assert_int_equal(v.answer, SCHED_NO_UNTIL);
	assert_int_equal(v.reason, SCHED_REASON_MINUTE);
	assert_int_equal(v.limit, 6);
	assert_int_equal(v.wait_ms, 10001);
	/* Just short of the wait: still no, with the rest of the wait. */
	v = sched_may_start(&s, &f, t + 9990, JAN10_2030_UTC);
	assert_int_equal(v.answer, SCHED_NO_UNTIL);
	assert_true(v.wait_ms >= 10 && v.wait_ms <= 12);
	t += 9990 + v.wait_ms;
	v = sched_may_start(&s, &f, t, JAN10_2030_UTC);
	assert_int_equal(v.answer, SCHED_YES);
	spend(&s, &f, 1, JAN10_2030_UTC);
	assert_int_equal(sched_may_start(&s, &f, t, JAN10_2030_UTC).answer, SCHED_NO_UNTIL);

	/* An idle hour refills to the cap, not beyond: a burst of 6 again. */
	t += 3600 * 1000;
	for (int i = 0; i < 6; i++) {
		assert_int_equal(sched_may_start(&s, &f, t, JAN10_2030_UTC).answer, SCHED_YES);
		spend(&s, &f, 1, JAN10_2030_UTC);
	}
	assert_int_equal(sched_may_start(&s, &f, t, JAN10_2030_UTC).answer, SCHED_NO_UNTIL);
}

static void test_bucket_only_slots_taken_pay(void **state)
{
	struct sched s;
	struct sched_folder f = {0};
	struct sched_limits lim = limits(100, 0, 1);

	(void)state;
	sched_init(&s, &lim, 0);
	/* Asking does not take a token; only a slot taken does. */
	for (int i = 0; i < 5; i++)
		assert_int_equal(sched_may_start(&s, &f, 0, JAN10_2030_UTC).answer, SCHED_YES);
	spend(&s, &f, 1, JAN10_2030_UTC);
	struct sched_verdict v = sched_may_start(&s, &f, 0, JAN10_2030_UTC);
	assert_int_equal(v.answer, SCHED_NO_UNTIL);
	assert_int_equal(v.wait_ms, 60001);
}

static void test_bucket_refills_when_asked_often(void **state)
{
	struct sched s;
	struct sched_folder f = {0};
	struct sched_limits lim = limits(100, 0, 1);
	uint64_t t = 0;

	(void)state;
	sched_init(&s, &lim, t);
	spend(&s, &f, 1, JAN10_2030_UTC);
	/* Asked every 10 ms (a pump per event): one image a minute still comes. */
	while (sched_may_start(&s, &f, t, JAN10_2030_UTC).answer != SCHED_YES && t < 120000)
		t += 10;
	assert_in_range(t, 59990, 60010);
}

static void test_daily_limit_resets_at_local_midnight(void **state)
{
	struct sched s;
	struct sched_folder f = {0};
	struct sched_limits lim = limits(10, 3, 0);
	struct sched_verdict v;
	int64_t now = JAN10_2030_UTC;

	(void)state;
	set_tz("XYZ-3"); /* UTC+3: local midnight is 21:00 UTC */
	sched_init(&s, &lim, 0);
	/* Answers count into the day the last check started (as in job.c). */
	sched_roll_day(&s, &f, now);
	spend(&s, &f, 1, JAN10_2030_UTC);
	spend(&s, &f, 1, JAN10_2030_UTC);
	assert_int_equal(sched_may_start(&s, &f, 0, now).answer, SCHED_YES);
	sched_started(&s, &f);
	/* Two paid and one in flight: the third may be paid, so no fourth. */
	v = sched_may_start(&s, &f, 0, now);
	assert_int_equal(v.answer, SCHED_NO_TODAY);
	assert_int_equal(v.reason, SCHED_REASON_DAY);
	assert_int_equal(v.count, 2);
	assert_int_equal(v.limit, 3);
	assert_int_equal(s.day.day_end, JAN10_2100_UTC);
	assert_int_equal(v.wait_ms, (uint64_t)(JAN10_2100_UTC - now) * 1000 + 1000);
	/* The one in flight failed, unpaid: room again. */
	sched_answered(&s, &f);
	assert_int_equal(sched_may_start(&s, &f, 0, now).answer, SCHED_YES);
	/* An answer of two images counts two. */
	spend(&s, &f, 2, JAN10_2030_UTC);
	assert_int_equal(s.day.images_today, 4);
	assert_int_equal(sched_may_start(&s, &f, 0, now + 1799).answer, SCHED_NO_TODAY);
	/* At local midnight (21:00 UTC) the day starts over. */
	v = sched_may_start(&s, &f, 0, JAN10_2100_UTC);
	assert_int_equal(v.answer, SCHED_YES);
	assert_int_equal(s.day.images_today, 0);
	assert_int_equal(s.day.day_end, JAN10_2100_UTC + 86400);
}

/* max_spend_per_day in micros: 0.03 per image and 0.10 a day allow three
 * images (0.09 + 0.03 would pass 0.10), generations in flight counted at
 * the price; a day's cost rebuilt at start counts; midnight starts over. */
/* A request that may make several images (max_images) is held by the money
 * limit for all of them, and counts as all of them while in flight. */
static void test_spend_limit_several(void **state)
{
	struct sched s;
	struct sched_folder f = {.images_per_request = 4}, one = {0};
	struct sched_limits lim = limits(10, 0, 0);
	struct sched_verdict v;
	int64_t now = JAN10_2030_UTC;

	(void)state;
	set_tz("XYZ-3");
	lim.max_spend_per_day = 100000; /* 0.10 */
	lim.image_price = 30000;	/* 0.03: 4 images would cost 0.12 */
	sched_init(&s, &lim, 0);
	sched_roll_day(&s, &f, now);
	v = sched_may_start(&s, &f, 0, now);
	assert_int_equal(v.answer, SCHED_NO_TODAY);
	assert_int_equal(v.reason, SCHED_REASON_SPEND);
	/* A folder of one image a request still fits. */
	assert_int_equal(sched_may_start(&s, &one, 0, now).answer, SCHED_YES);
	lim.max_spend_per_day = 150000; /* 0.15: one request of 4 fits, with 1 more */
	sched_set_limits(&s, &lim);
	assert_int_equal(sched_may_start(&s, &f, 0, now).answer, SCHED_YES);
	sched_started_images(&s, &f, 4);
	/* In flight it may cost 0.12: a second request of 4 would pass 0.15, one image not. */
	assert_int_equal(sched_may_start(&s, &f, 0, now).reason, SCHED_REASON_SPEND);
	assert_int_equal(sched_may_start(&s, &one, 0, now).answer, SCHED_YES);
	sched_started(&s, &one);
	assert_int_equal(sched_may_start(&s, &one, 0, now).reason, SCHED_REASON_SPEND);
}

static void test_spend_limit(void **state)
{
	struct sched s;
	struct sched_folder f = {0};
	struct sched_limits lim = limits(10, 0, 0);
	struct sched_verdict v;
	int64_t now = JAN10_2030_UTC;

	(void)state;
	set_tz("XYZ-3");
	lim.max_spend_per_day = 100000;
	lim.image_price = 30000;
	sched_init(&s, &lim, 0);
	sched_roll_day(&s, &f, now);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(sched_may_start(&s, &f, 0, now).answer, SCHED_YES);
		sched_started(&s, &f);
	}
	/* Three in flight may cost 0.09: a fourth would pass 0.10. */
	v = sched_may_start(&s, &f, 0, now);
	assert_int_equal(v.answer, SCHED_NO_TODAY);
	assert_int_equal(v.reason, SCHED_REASON_SPEND);
	assert_int_equal(v.limit, 100000);
	assert_int_equal(v.wait_ms, (uint64_t)(JAN10_2100_UTC - now) * 1000 + 1000);
	/* One answered unpaid: room for one more. */
	sched_answered(&s, &f);
	assert_int_equal(sched_may_start(&s, &f, 0, now).answer, SCHED_YES);
	sched_answered(&s, &f);
	sched_answered(&s, &f);
	sched_paid(&s, &f, 3, JAN10_2030_UTC);
	sched_spent(&s, 90000, now);
	v = sched_may_start(&s, &f, 0, now);
	assert_int_equal(v.answer, SCHED_NO_TODAY);
	assert_int_equal(v.count, 90000);
	/* Exactly at the limit is allowed: 0.07 + 0.03 = 0.10. */
	sched_init(&s, &lim, 0);
	sched_roll_day(&s, &f, now);
	sched_count_spent_today(&s, 70000);
	assert_int_equal(sched_may_start(&s, &f, 0, now).answer, SCHED_YES);
	sched_count_spent_today(&s, 1);
	assert_int_equal(sched_may_start(&s, &f, 0, now).reason, SCHED_REASON_SPEND);
	/* A new day: nothing spent. */
	v = sched_may_start(&s, &f, 0, JAN10_2100_UTC);
	assert_int_equal(v.answer, SCHED_YES);
	assert_int_equal(s.day.spent_today, 0);
	/* No limit: spend is counted but never holds anything back. */
	lim.max_spend_per_day = 0;
	sched_set_limits(&s, &lim);
	sched_spent(&s, 5000000, JAN10_2100_UTC);
	assert_int_equal(sched_may_start(&s, &f, 0, JAN10_2100_UTC).answer, SCHED_YES);
}

static void test_day_of_summer_time_change(void **state)
{
	struct sched s;
	struct sched_folder f = {.max_images_per_day = 1};
	struct sched_limits lim = limits(10, 0, 0);
	struct sched_verdict v;

	(void)state;
	set_tz("EST5EDT,M3.2.0,M11.1.0");
	assert_int_equal(sched_next_midnight(MAR08_0530_UTC), MAR09_0400_UTC);
	sched_init(&s, &lim, 0);
	assert_int_equal(sched_day_start(&s, &f, MAR08_0530_UTC), MAR09_0400_UTC - 86400);
	spend(&s, &f, 1, MAR08_0530_UTC);
	v = sched_folder_allows(&s, &f, MAR08_0530_UTC);
	assert_int_equal(v.answer, SCHED_NO_TODAY);
	/* 22.5 hours to the next midnight, not 23.5. */
	assert_int_equal(v.wait_ms, (uint64_t)(MAR09_0400_UTC - MAR08_0530_UTC) * 1000 + 1000);
	assert_int_equal(v.wait_ms, 22 * 3600 * 1000 + 1800 * 1000 + 1000);
	assert_int_equal(sched_folder_allows(&s, &f, MAR09_0400_UTC).answer, SCHED_YES);
}

static void test_folder_limit_against_global(void **state)
{
	struct sched s;
	struct sched_folder a = {.max_images_per_day = 2}, b = {0};
	struct sched_limits lim = limits(10, 5, 0);
	struct sched_verdict v;
	int64_t now = JAN10_2030_UTC;

	(void)state;
	set_tz("XYZ-3");
	sched_init(&s, &lim, 0);
	sched_roll_day(&s, &a, now);
	sched_roll_day(&s, &b, now);
	spend(&s, &a, 1, JAN10_2030_UTC);
	sched_started(&s, &a);
	/* a: one paid and one in flight reach its 2; b and the global go on. */
	v = sched_may_start(&s, &a, 0, now);
	assert_int_equal(v.answer, SCHED_NO_TODAY);
	assert_int_equal(v.reason, SCHED_REASON_FOLDER_DAY);
	assert_int_equal(v.count, 1);
	assert_int_equal(v.limit, 2);
	assert_int_equal(v.wait_ms, (uint64_t)(JAN10_2100_UTC - now) * 1000 + 1000);
	assert_int_equal(sched_may_start(&s, &b, 0, now).answer, SCHED_YES);
	sched_answered(&s, &a);
	sched_paid(&s, &a, 1, JAN10_2030_UTC);
	spend(&s, &b, 1, JAN10_2030_UTC);
	spend(&s, &b, 1, JAN10_2030_UTC);
	/* Global 4 of 5: b may start one more, then the global limit holds b. */
	assert_int_equal(sched_may_start(&s, &b, 0, now).answer, SCHED_YES);
	sched_started(&s, &b);
	v = sched_may_start(&s, &b, 0, now);
	assert_int_equal(v.answer, SCHED_NO_TODAY);
	assert_int_equal(v.reason, SCHED_REASON_DAY);
	assert_int_equal(v.count, 4);
	/* The global check comes first, also for a folder with its own limit. */
	assert_int_equal(sched_may_start(&s, &a, 0, now).reason, SCHED_REASON_DAY);
	/* Without a limit of its own a folder is never held by the folder check. */
	assert_int_equal(sched_folder_allows(&s, &b, now).answer, SCHED_YES);
	/* Counts read from the records at start add to both. */
	sched_count_today(&s, &b, 7);
	assert_int_equal(b.day.images_today, 7);
	assert_int_equal(s.day.images_today, 11);
}

static void test_in_flight_limit(void **state)
{
	struct sched s;
	struct sched_folder f = {0}, g = {0};
	struct sched_limits lim = limits(2, 0, 0);
	struct sched_verdict v;

	(void)state;
	sched_init(&s, &lim, 0);
	sched_started(&s, &f);
	assert_int_equal(sched_may_start(&s, &g, 0, JAN10_2030_UTC).answer, SCHED_YES);
	sched_started(&s, &g);
	v = sched_may_start(&s, &g, 0, JAN10_2030_UTC);
	assert_int_equal(v.answer, SCHED_NO);
	assert_int_equal(v.reason, SCHED_REASON_IN_FLIGHT);
	assert_int_equal(v.wait_ms, 0);
	sched_answered(&s, &f);
	sched_paid(&s, &f, 1, JAN10_2030_UTC);
	assert_int_equal(sched_may_start(&s, &g, 0, JAN10_2030_UTC).answer, SCHED_YES);
	/* A reload to a lower limit holds new starts until enough answered. */
	lim.max_in_flight = 1;
	sched_set_limits(&s, &lim);
	assert_int_equal(sched_may_start(&s, &f, 0, JAN10_2030_UTC).reason, SCHED_REASON_IN_FLIGHT);
}

static void test_pause_blocks_all_but_one_probe(void **state)
{
	struct sched s;
	struct sched_folder f = {0}, g = {0};
	struct sched_limits lim = limits(4, 0, 0);
	struct sched_verdict v;

	(void)state;
	sched_init(&s, &lim, 0);
	sched_pause(&s);
	v = sched_may_start(&s, &f, 0, JAN10_2030_UTC);
	assert_int_equal(v.answer, SCHED_NO);
	assert_int_equal(v.reason, SCHED_REASON_PAUSED);
	assert_int_equal(sched_may_start(&s, &g, 0, JAN10_2030_UTC).answer, SCHED_NO);
	/* The retry time: exactly one probe. */
	sched_probe(&s);
	assert_int_equal(sched_may_start(&s, &f, 0, JAN10_2030_UTC).answer, SCHED_YES);
	sched_started(&s, &f);
	assert_int_equal(sched_may_start(&s, &g, 0, JAN10_2030_UTC).reason, SCHED_REASON_PAUSED);
	/* Refused again: still paused, no probe until the next retry time. */
	sched_answered(&s, &f);
	assert_int_equal(sched_may_start(&s, &g, 0, JAN10_2030_UTC).reason, SCHED_REASON_PAUSED);
	/* A probe while another generation from before the pause is in flight waits. */
	sched_resume(&s);
	sched_started(&s, &g);
	sched_pause(&s);
	sched_probe(&s);
	assert_int_equal(sched_may_start(&s, &f, 0, JAN10_2030_UTC).reason, SCHED_REASON_PAUSED);
	sched_answered(&s, &g);
	sched_paid(&s, &g, 1, JAN10_2030_UTC);
	sched_probe(&s);
	sched_started(&s, &f);
	sched_answered(&s, &f);
	sched_paid(&s, &f, 1, JAN10_2030_UTC);
	sched_resume(&s);
	assert_int_equal(sched_may_start(&s, &g, 0, JAN10_2030_UTC).answer, SCHED_YES);
	assert_int_equal(s.in_flight, 0);
}

/* The job core takes the slot when a send starts being readied: a preparation
 * that ends without sending frees it, keeps the token spent and the probe due. */
static void test_preparation_withdrawn(void **state)
{
	struct sched s;
	struct sched_folder f = {.max_images_per_day = 1}, g = {0};
	struct sched_limits lim = limits(1, 0, 1);
	struct sched_verdict v;
	int64_t now = JAN10_2030_UTC;

	(void)state;
	sched_init(&s, &lim, 0);
	sched_roll_day(&s, &f, now);
	assert_int_equal(sched_may_start(&s, &f, 0, now).answer, SCHED_YES);
	sched_started(&s, &f);
	/* Being readied: it holds the one slot and counts against f's day. */
	assert_int_equal(sched_may_start(&s, &g, 0, now).reason, SCHED_REASON_IN_FLIGHT);
	assert_int_equal(sched_folder_allows(&s, &f, now).reason, SCHED_REASON_FOLDER_DAY);
	/* The source was gone: nothing was sent, nothing counted today. */
	sched_withdrawn(&s, &f);
	assert_int_equal(s.in_flight, 0);
	assert_int_equal(f.in_flight, 0);
	assert_int_equal(sched_folder_allows(&s, &f, now).answer, SCHED_YES);
	assert_int_equal(f.day.images_today, 0);
	/* Its token stays spent (one a minute). */
	v = sched_may_start(&s, &g, 0, now);
	assert_int_equal(v.reason, SCHED_REASON_MINUTE);
	assert_int_equal(v.wait_ms, 60001);

	/* Paused: the probe's preparation fails; the next job probes instead,
	 * without waiting for the next retry time. */
	lim = limits(4, 0, 0);
	sched_set_limits(&s, &lim);
	sched_pause(&s);
	sched_probe(&s);
	assert_int_equal(sched_may_start(&s, &f, 0, now).answer, SCHED_YES);
	sched_started(&s, &f);
	assert_int_equal(sched_may_start(&s, &g, 0, now).reason, SCHED_REASON_PAUSED);
	sched_withdrawn(&s, &f);
	assert_int_equal(sched_may_start(&s, &g, 0, now).answer, SCHED_YES);
	/* Whereas an answer (here: refused again) ends the probe. */
	sched_started(&s, &g);
	sched_answered(&s, &g);
	assert_int_equal(sched_may_start(&s, &g, 0, now).reason, SCHED_REASON_PAUSED);
}

/* A paid result not yet durable keeps its generation slot after its answer,
 * and only that: it is counted today once, and does not hold up a probe. */
static void test_undurable_result_holds_slot(void **state)
{
	struct sched s;
	struct sched_folder f = {0};
	struct sched_limits lim = limits(2, 3, 0);
	struct sched_verdict v;
	int64_t now = JAN10_2030_UTC;

	(void)state;
	sched_init(&s, &lim, 0);
	sched_roll_day(&s, &f, now);
	spend(&s, &f, 1, JAN10_2030_UTC);
	sched_hold(&s);
	assert_int_equal(sched_may_start(&s, &f, 0, now).answer, SCHED_YES);
	sched_started(&s, &f);
	/* One in flight and one held: max_in_flight 2 reached. */
	v = sched_may_start(&s, &f, 0, now);
	assert_int_equal(v.answer, SCHED_NO);
	assert_int_equal(v.reason, SCHED_REASON_IN_FLIGHT);
	sched_answered(&s, &f);
	sched_paid(&s, &f, 1, JAN10_2030_UTC);
	sched_hold(&s);
	assert_int_equal(sched_may_start(&s, &f, 0, now).reason, SCHED_REASON_IN_FLIGHT);
	/* One journalled: a slot again; the day counts the two paid, not four. */
	sched_unhold(&s);
	assert_int_equal(s.day.images_today, 2);
	assert_int_equal(sched_may_start(&s, &f, 0, now).answer, SCHED_YES);
	/* A held result does not stop the probe (only a generation in flight does). */
	sched_pause(&s);
	sched_probe(&s);
	assert_int_equal(sched_may_start(&s, &f, 0, now).answer, SCHED_YES);
	sched_unhold(&s);
	assert_int_equal(s.held, 0);
}

/* A folder whose requests may make 3 images (max_images 3): one starts only
 * when 3 fit the daily limits (folder and global) and the bucket; in flight
 * it counts as 3; answered, the images actually made count. */
static void test_images_per_request(void **state)
{
	struct sched s;
	struct sched_folder a = {.max_images_per_day = 5, .images_per_request = 3};
	struct sched_folder g = {.images_per_request = 3}, one = {0};
	struct sched_limits lim = limits(10, 0, 0);
	struct sched_verdict v;
	int64_t now = JAN10_2030_UTC;

	(void)state;
	set_tz("XYZ-3");
	sched_init(&s, &lim, 0);
	sched_roll_day(&s, &a, now);
	assert_int_equal(sched_may_start(&s, &a, 0, now).answer, SCHED_YES);
	sched_started_images(&s, &a, 3);
	assert_int_equal(a.in_flight_images, 3);
	assert_int_equal(s.in_flight_images, 3);
	/* 3 in flight + 3 more > 5: the second waits for midnight. */
	v = sched_may_start(&s, &a, 0, now);
	assert_int_equal(v.answer, SCHED_NO_TODAY);
	assert_int_equal(v.reason, SCHED_REASON_FOLDER_DAY);
	sched_answered_images(&s, &a, 3);
	assert_int_equal(a.in_flight_images, 0);
	/* A relay made only 2: 2 of 5 counted, and 2 + 3 fit. */
	sched_paid(&s, &a, 2, JAN10_2030_UTC);
	assert_int_equal(sched_may_start(&s, &a, 0, now).answer, SCHED_YES);
	sched_paid(&s, &a, 1, JAN10_2030_UTC);
	assert_int_equal(sched_may_start(&s, &a, 0, now).answer, SCHED_NO_TODAY);

	/* The global limit: 4 a day, one image made so far elsewhere. */
	lim = limits(10, 4, 0);
	sched_init(&s, &lim, 0);
	sched_roll_day(&s, &g, now);
	sched_roll_day(&s, &one, now);
	spend(&s, &one, 1, JAN10_2030_UTC);
	assert_int_equal(sched_may_start(&s, &g, 0, now).answer, SCHED_YES);
	spend(&s, &one, 1, JAN10_2030_UTC);
	/* 2 made + 3 > 4: held by the global limit, while one image still fits. */
	v = sched_may_start(&s, &g, 0, now);
	assert_int_equal(v.answer, SCHED_NO_TODAY);
	assert_int_equal(v.reason, SCHED_REASON_DAY);
	assert_int_equal(v.count, 2);
	assert_int_equal(sched_may_start(&s, &one, 0, now).answer, SCHED_YES);
	/* A request may not ask for more than the global limit: it needs it all. */
	g.images_per_request = 9;
	sched_init(&s, &lim, 0);
	sched_roll_day(&s, &g, now);
	assert_int_equal(sched_may_start(&s, &g, 0, now).answer, SCHED_YES);
}

/* The bucket: a request of 3 images needs 3 tokens and takes them. */
static void test_bucket_counts_images(void **state)
{
	struct sched s;
	struct sched_folder f = {.images_per_request = 3};
	struct sched_limits lim = limits(10, 0, 6);
	struct sched_verdict v;
	uint64_t t = 1000000;

	(void)state;
	sched_init(&s, &lim, t);
	assert_int_equal(sched_may_start(&s, &f, t, JAN10_2030_UTC).answer, SCHED_YES);
	sched_started_images(&s, &f, 3);
	assert_int_equal(sched_may_start(&s, &f, t, JAN10_2030_UTC).answer, SCHED_YES);
	sched_started_images(&s, &f, 3);
	v = sched_may_start(&s, &f, t, JAN10_2030_UTC);
	assert_int_equal(v.answer, SCHED_NO_UNTIL);
	assert_int_equal(v.reason, SCHED_REASON_MINUTE);
	/* Empty: asked again when the first token is back (10 s at 6 a minute). */
	assert_int_equal(v.wait_ms, 10001);
	/* After 20 s two tokens are back: enough for one image, not for 3. */
	v = sched_may_start(&s, &f, t + 20000, JAN10_2030_UTC);
	assert_int_equal(v.answer, SCHED_NO_UNTIL);
	assert_int_equal(v.wait_ms, 10001);
	assert_int_equal(sched_may_start(&s, &f, t + 30000, JAN10_2030_UTC).answer, SCHED_YES);
}

/* An answer paid after local midnight counts into the new day, though its
 * generation was started (and the day last rolled) before it; a reading of
 * today's spend after midnight does not show yesterday's. */
static void test_paid_across_midnight(void **state)
{
	struct sched s;
	struct sched_folder f = {0};
	struct sched_limits lim = limits(10, 3, 0);

	(void)state;
	set_tz("XYZ-3"); /* UTC+3: local midnight is 21:00 UTC */
	sched_init(&s, &lim, 0);
	assert_int_equal(sched_may_start(&s, &f, 0, JAN10_2030_UTC).answer, SCHED_YES);
	spend(&s, &f, 2, JAN10_2030_UTC);
	sched_spent(&s, 60000, JAN10_2030_UTC);
	assert_int_equal(sched_spent_today(&s, JAN10_2030_UTC), 60000);
	sched_started(&s, &f);
	sched_answered(&s, &f);
	/* Answered at 00:00:10 local: today's count is this image only. */
	sched_paid(&s, &f, 1, JAN10_2100_UTC + 10);
	sched_spent(&s, 30000, JAN10_2100_UTC + 10);
	assert_int_equal(s.day.images_today, 1);
	assert_int_equal(f.day.images_today, 1);
	assert_int_equal(sched_spent_today(&s, JAN10_2100_UTC + 10), 30000);
	assert_int_equal(sched_may_start(&s, &f, 0, JAN10_2100_UTC + 20).answer, SCHED_YES);
	assert_int_equal(s.day.images_today, 1);
	/* Nothing paid since: a reading the next day shows nothing spent. */
	assert_int_equal(sched_spent_today(&s, JAN10_2100_UTC + 86400 + 5), 0);
}

/* Counts from hostile answers saturate: a spend or image count near 2^64
 * does not wrap to a small one that lets the limits pass. */
static void test_saturating_counts(void **state)
{
	struct sched s;
	struct sched_folder f = {.max_images_per_day = 100};
	struct sched_limits lim = limits(10, 100, 0);
	int64_t now = JAN10_2030_UTC;

	(void)state;
	set_tz("UTC0");
	assert_true(sched_add_sat(UINT64_MAX - 1, 2) == UINT64_MAX);
	assert_true(sched_add_sat(2, 3) == 5);
	assert_true(sched_mul_sat(614891469123652ULL, 30000) == UINT64_MAX);
	assert_true(sched_mul_sat(1ULL << 32, 1ULL << 32) == UINT64_MAX);
	assert_true(sched_mul_sat(7, 30000) == 210000);
	lim.max_spend_per_day = 100000;
	lim.image_price = 30000;
	sched_init(&s, &lim, 0);
	sched_roll_day(&s, &f, now);
	/* 614891469123652 * 0.03 wraps uint64 to 8448 micros if not saturated. */
	sched_spent(&s, 614891469123652ULL * 30000ULL, now);
	assert_true(s.day.spent_today < 100000); /* the wrapped product itself */
	sched_init(&s, &lim, 0);
	sched_roll_day(&s, &f, now);
	sched_spent(&s, sched_mul_sat(614891469123652ULL, 30000), now);
	sched_spent(&s, 30000, now);
	assert_true(s.day.spent_today == UINT64_MAX);
	assert_int_equal(sched_may_start(&s, &f, 0, now).reason, SCHED_REASON_SPEND);
	/* Images: a huge count plus more stays at the top, not past it to 0. */
	sched_init(&s, &lim, 0);
	sched_roll_day(&s, &f, now);
	sched_paid(&s, &f, UINT64_MAX - 1, now);
	sched_paid(&s, &f, 5, now);
	assert_true(s.day.images_today == UINT64_MAX);
	assert_true(f.day.images_today == UINT64_MAX);
	assert_int_equal(sched_may_start(&s, &f, 0, now).reason, SCHED_REASON_DAY);
	sched_count_spent_today(&s, UINT64_MAX);
	sched_count_spent_today(&s, 1);
	assert_true(s.day.spent_today == UINT64_MAX);
	/* The price times the generations in flight saturates too. */
	lim = limits(10, 0, 0);
	lim.max_spend_per_day = UINT64_MAX - 1;
	lim.image_price = UINT64_MAX / 2 + 1;
	sched_init(&s, &lim, 0);
	sched_roll_day(&s, &f, now);
	f.max_images_per_day = 0;
	sched_started(&s, &f);
	assert_int_equal(sched_may_start(&s, &f, 0, now).reason, SCHED_REASON_SPEND);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bucket_burst_then_refill),
	    cmocka_unit_test(test_bucket_only_slots_taken_pay),
	    cmocka_unit_test(test_bucket_refills_when_asked_often),
	    cmocka_unit_test(test_daily_limit_resets_at_local_midnight),
	    cmocka_unit_test(test_spend_limit),
	    cmocka_unit_test(test_spend_limit_several),
	    cmocka_unit_test(test_paid_across_midnight),
	    cmocka_unit_test(test_day_of_summer_time_change),
	    cmocka_unit_test(test_folder_limit_against_global),
	    cmocka_unit_test(test_images_per_request),
	    cmocka_unit_test(test_bucket_counts_images),
	    cmocka_unit_test(test_in_flight_limit),
	    cmocka_unit_test(test_pause_blocks_all_but_one_probe),
	    cmocka_unit_test(test_preparation_withdrawn),
	    cmocka_unit_test(test_undurable_result_holds_slot),
	    cmocka_unit_test(test_saturating_counts),
	};

	set_tz("UTC0");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
