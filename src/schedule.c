/* schedule: the spend and concurrency limits over a clock (see schedule.h). */
#include "schedule.h"

#include <time.h>

#define SCHED_MILLI 1000 /* thousandths of an image per image */

uint64_t sched_add_sat(uint64_t a, uint64_t b)
{
	uint64_t sum;

	return __builtin_add_overflow(a, b, &sum) ? UINT64_MAX : sum;
}

uint64_t sched_mul_sat(uint64_t a, uint64_t b)
{
	uint64_t product;

	return __builtin_mul_overflow(a, b, &product) ? UINT64_MAX : product;
}

void sched_init(struct sched *s, const struct sched_limits *limits, uint64_t now_mono_ms)
{
	*s = (struct sched){0};
	s->limits = *limits;
	s->tokens_at = now_mono_ms;
	s->tokens_milli = limits->images_per_minute * SCHED_MILLI; /* a full bucket at start */
}

void sched_set_limits(struct sched *s, const struct sched_limits *limits)
{
	s->limits = *limits;
}

int64_t sched_next_midnight(int64_t t)
{
	time_t now = (time_t)t;
	struct tm tm;

	if (!localtime_r(&now, &tm))
		return t + 86400;
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	tm.tm_mday++;
	tm.tm_isdst = -1; /* mktime finds whether that midnight is in summer time */
	return (int64_t)mktime(&tm);
}

static void sched_day_roll(struct sched_day *day, int64_t now_epoch_s)
{
	if (now_epoch_s >= day->day_end) {
		day->images_today = 0;
		day->spent_today = 0;
		day->day_end = sched_next_midnight(now_epoch_s);
	}
}

void sched_roll_day(struct sched *s, struct sched_folder *folder, int64_t now_epoch_s)
{
	sched_day_roll(&s->day, now_epoch_s);
	if (folder)
		sched_day_roll(&folder->day, now_epoch_s);
}

int64_t sched_day_start(struct sched *s, struct sched_folder *folder, int64_t now_epoch_s)
{
	sched_roll_day(s, folder, now_epoch_s);
	return folder->day.day_end - 86400;
}

void sched_count_today(struct sched *s, struct sched_folder *folder, uint64_t images)
{
	folder->day.images_today = images;
	s->day.images_today = sched_add_sat(s->day.images_today, images);
}

void sched_count_spent_today(struct sched *s, uint64_t micros)
{
	s->day.spent_today = sched_add_sat(s->day.spent_today, micros);
}

/* Until just after the day's end: a second late rather than a second early. */
static uint64_t sched_until_day_end(const struct sched_day *day, int64_t now_epoch_s)
{
	return (uint64_t)(day->day_end - now_epoch_s) * 1000 + 1000;
}

static struct sched_verdict sched_no(enum sched_answer answer, enum sched_reason reason,
				     uint64_t wait_ms)
{
	return (struct sched_verdict){.answer = answer, .reason = reason, .wait_ms = wait_ms};
}

/* Whether today's spend, every image the generations in flight may make (a
 * max_images request counts as all it asked for) and `images` more would pass
 * max_spend_per_day; saturated, as today's spend may come from a hostile
 * answer. */
static bool sched_over_spend(const struct sched *s, uint64_t images)
{
	const struct sched_limits *lim = &s->limits;

	return lim->max_spend_per_day &&
	       sched_add_sat(s->day.spent_today,
			     sched_mul_sat(sched_add_sat(s->in_flight_images, images),
					   lim->image_price)) > lim->max_spend_per_day;
}

static struct sched_verdict sched_no_spend(const struct sched *s, int64_t now_epoch_s)
{
	struct sched_verdict v = sched_no(SCHED_NO_TODAY, SCHED_REASON_SPEND,
					  sched_until_day_end(&s->day, now_epoch_s));

	v.count = s->day.spent_today;
	v.limit = s->limits.max_spend_per_day;
	return v;
}

struct sched_verdict sched_may_start_any(struct sched *s, uint64_t now_mono_ms, int64_t now_epoch_s)
{
	const struct sched_limits *lim = &s->limits;
	struct sched_verdict v;

	/* While paused, one probe at a time and nothing beside it. */
	if (s->paused && (!s->probing || s->in_flight > 0))
		return sched_no(SCHED_NO, SCHED_REASON_PAUSED, 0);
	if (s->in_flight + s->held >= lim->max_in_flight)
		return sched_no(SCHED_NO, SCHED_REASON_IN_FLIGHT, 0);
	sched_roll_day(s, NULL, now_epoch_s);
	/* A generation in flight may be paid: it counts until its answer says. */
	if (lim->max_images_per_day &&
	    sched_add_sat(s->day.images_today, s->in_flight_images) >= lim->max_images_per_day) {
		v = sched_no(SCHED_NO_TODAY, SCHED_REASON_DAY,
			     sched_until_day_end(&s->day, now_epoch_s));
		v.count = s->day.images_today;
		v.limit = lim->max_images_per_day;
		return v;
	}
	/* The new generation makes at least one image. */
	if (sched_over_spend(s, 1))
		return sched_no_spend(s, now_epoch_s);
	if (lim->images_per_minute) {
		uint64_t cap = lim->images_per_minute * SCHED_MILLI;

		/* ms * images/min / 60 = thousandths of an image; the remainder is
		 * kept, so that asking often (every pump) still refills at a low rate. */
		s->tokens_sixtieths += (now_mono_ms - s->tokens_at) * lim->images_per_minute;
		s->tokens_milli += s->tokens_sixtieths / 60;
		s->tokens_sixtieths %= 60;
		if (s->tokens_milli >= cap) {
			s->tokens_milli = cap;
			s->tokens_sixtieths = 0;
		}
		s->tokens_at = now_mono_ms;
		if (s->tokens_milli < SCHED_MILLI) {
			v = sched_no(SCHED_NO_UNTIL, SCHED_REASON_MINUTE,
				     (SCHED_MILLI - s->tokens_milli) * 60 / lim->images_per_minute +
					 1);
			v.limit = lim->images_per_minute;
			return v;
		}
	}
	return sched_no(SCHED_YES, SCHED_REASON_NONE, 0);
}

static uint64_t sched_min(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* What a generation of the folder may make beyond the one image that
 * sched_may_start_any made sure of: the global daily limits (images and
 * money) and the bucket. */
static struct sched_verdict sched_room_for(struct sched *s, uint64_t need, int64_t now_epoch_s)
{
	const struct sched_limits *lim = &s->limits;
	struct sched_verdict v;

	if (lim->max_images_per_day &&
	    sched_add_sat(sched_add_sat(s->day.images_today, s->in_flight_images),
			  sched_min(need, lim->max_images_per_day)) > lim->max_images_per_day) {
		v = sched_no(SCHED_NO_TODAY, SCHED_REASON_DAY,
			     sched_until_day_end(&s->day, now_epoch_s));
		v.count = s->day.images_today;
		v.limit = lim->max_images_per_day;
		return v;
	}
	/* The money limit, for every image the request may make. */
	if (sched_over_spend(s, need))
		return sched_no_spend(s, now_epoch_s);
	if (lim->images_per_minute) {
		uint64_t want = sched_min(need, lim->images_per_minute) * SCHED_MILLI;

		if (s->tokens_milli < want) {
			v = sched_no(SCHED_NO_UNTIL, SCHED_REASON_MINUTE,
				     (want - s->tokens_milli) * 60 / lim->images_per_minute + 1);
			v.limit = lim->images_per_minute;
			return v;
		}
	}
	return sched_no(SCHED_YES, SCHED_REASON_NONE, 0);
}

struct sched_verdict sched_folder_allows(struct sched *s, struct sched_folder *folder,
					 int64_t now_epoch_s)
{
	uint64_t need = folder->images_per_request ? folder->images_per_request : 1;
	struct sched_verdict v;

	if (need > 1) {
		sched_roll_day(s, NULL, now_epoch_s);
		v = sched_room_for(s, need, now_epoch_s);
		if (v.answer != SCHED_YES)
			return v;
	}
	if (!folder->max_images_per_day)
		return sched_no(SCHED_YES, SCHED_REASON_NONE, 0);
	sched_roll_day(s, folder, now_epoch_s);
	if (sched_add_sat(sched_add_sat(folder->day.images_today, folder->in_flight_images),
			  need) <= folder->max_images_per_day)
		return sched_no(SCHED_YES, SCHED_REASON_NONE, 0);
	v = sched_no(SCHED_NO_TODAY, SCHED_REASON_FOLDER_DAY,
		     sched_until_day_end(&folder->day, now_epoch_s));
	v.count = folder->day.images_today;
	v.limit = folder->max_images_per_day;
	return v;
}

struct sched_verdict sched_may_start(struct sched *s, struct sched_folder *folder,
				     uint64_t now_mono_ms, int64_t now_epoch_s)
{
	struct sched_verdict v = sched_may_start_any(s, now_mono_ms, now_epoch_s);

	if (v.answer != SCHED_YES)
		return v;
	return sched_folder_allows(s, folder, now_epoch_s);
}

void sched_started_images(struct sched *s, struct sched_folder *folder, uint64_t images)
{
	uint64_t want = (images ? images : 1) * SCHED_MILLI;

	/* The tokens pay for the slot, also when its preparation then sends
	 * nothing (rare): the rate bounds how often sends are readied. */
	if (s->limits.images_per_minute)
		s->tokens_milli =
		    s->tokens_milli > want ? s->tokens_milli - want : s->tokens_milli % SCHED_MILLI;
	s->in_flight++;
	folder->in_flight++;
	s->in_flight_images += images ? images : 1;
	folder->in_flight_images += images ? images : 1;
}

void sched_started(struct sched *s, struct sched_folder *folder)
{
	sched_started_images(s, folder, 1);
}

static void sched_ended(struct sched *s, struct sched_folder *folder, uint64_t images)
{
	images = images ? images : 1;
	if (s->in_flight > 0)
		s->in_flight--;
	if (folder->in_flight > 0)
		folder->in_flight--;
	s->in_flight_images -= sched_min(images, s->in_flight_images);
	folder->in_flight_images -= sched_min(images, folder->in_flight_images);
}

void sched_answered_images(struct sched *s, struct sched_folder *folder, uint64_t images)
{
	sched_ended(s, folder, images);
	s->probing = false;
}

void sched_withdrawn_images(struct sched *s, struct sched_folder *folder, uint64_t images)
{
	sched_ended(s, folder, images);
}

void sched_answered(struct sched *s, struct sched_folder *folder)
{
	sched_answered_images(s, folder, 1);
}

void sched_withdrawn(struct sched *s, struct sched_folder *folder)
{
	sched_withdrawn_images(s, folder, 1);
}

void sched_hold(struct sched *s)
{
	s->held++;
}

void sched_unhold(struct sched *s)
{
	if (s->held > 0)
		s->held--;
}

void sched_paid(struct sched *s, struct sched_folder *folder, uint64_t images, int64_t now_epoch_s)
{
	/* An answer that comes after midnight is today's, not the day its
	 * generation started in. */
	sched_roll_day(s, folder, now_epoch_s);
	s->day.images_today = sched_add_sat(s->day.images_today, images);
	folder->day.images_today = sched_add_sat(folder->day.images_today, images);
}

void sched_spent(struct sched *s, uint64_t micros, int64_t now_epoch_s)
{
	sched_roll_day(s, NULL, now_epoch_s);
	s->day.spent_today = sched_add_sat(s->day.spent_today, micros);
}

uint64_t sched_spent_today(struct sched *s, int64_t now_epoch_s)
{
	sched_roll_day(s, NULL, now_epoch_s);
	return s->day.spent_today;
}

void sched_pause(struct sched *s)
{
	s->paused = true;
	s->probing = false;
}

void sched_probe(struct sched *s)
{
	s->probing = true;
}

void sched_resume(struct sched *s)
{
	s->paused = false;
}
