/* schedule (prefix sched_; not sched.h, which would hide the system header): whether one more
 * generation may start now, and if not, until when. Pure: no I/O, no logging, no globals; the
 * clocks are passed in (a monotonic one in ms for the per-minute bucket, the epoch in s for days,
 * which end at local midnight in the process's time zone). It owns the limits of the config
 * (max_in_flight, images_per_minute, max_images_per_day globally and per folder), the counters they
 * are checked against and the pause on account errors; the caller owns the queue and the timers.
 * The job core (job.c) asks it before every generation. A generation holds its slot from the
 * start of its preparation (sched_started) to its answer (sched_answered) or to the end of a
 * preparation that sent nothing (sched_withdrawn); a paid result not yet durable keeps a slot
 * after that (sched_hold). The per-minute bucket keeps the fraction of a thousandth it refilled
 * (the core's own bucket once dropped it at every check, so asking every few ms starved a low
 * rate). */
#ifndef SEEDREAMD_SCHEDULE_H
#define SEEDREAMD_SCHEDULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sched_limits {
	unsigned max_in_flight;	     /* generations at once, all folders (>= 1) */
	uint64_t max_images_per_day; /* all folders, 0 = no limit */
	uint64_t images_per_minute;  /* a token bucket, 0 = no limit */
	/* The estimated cost per day, all folders, in micros (millionths of
	 * the currency): no generation starts whose image would take today's
	 * spend past it. 0 = no limit. */
	uint64_t max_spend_per_day;
	uint64_t image_price; /* micros one more image is counted at */
};

/* Images counted against a daily limit, and when they start again at 0. */
struct sched_day {
	uint64_t images_today;
	uint64_t spent_today; /* micros, estimated; only the global day counts it */
	int64_t day_end; /* epoch s of the next local midnight; 0 before the first use */
};

/* One folder's share of the schedule; the caller keeps one per folder. */
struct sched_folder {
	uint64_t max_images_per_day; /* 0 = no limit; the caller updates it on reload */
	struct sched_day day;
	unsigned in_flight; /* generations of this folder not answered yet */
	/* What one generation of it may make (max_images; 0 counts as 1): it
	 * starts only when that many fit the daily limits and the per-minute
	 * bucket. The caller updates it on reload. */
	uint64_t images_per_request;
	uint64_t in_flight_images; /* what its generations in flight may make */
};

struct sched {
	struct sched_limits limits;
	struct sched_day day;
	uint64_t tokens_milli;	   /* the bucket, in thousandths of an image */
	uint64_t tokens_sixtieths; /* and 1/60000 of an image, refilled but not yet a milli */
	uint64_t tokens_at;	   /* monotonic ms of its last refill */
	size_t in_flight;	   /* generations not answered yet, all folders */
	uint64_t in_flight_images; /* what they may make (counted against max_images_per_day) */
	size_t held;		   /* paid results not yet durable, each keeping a slot */
	bool paused;		   /* the API refused the account: only probes */
	bool probing;		   /* while paused, one request may find out if it works again */
};

enum sched_answer {
	SCHED_YES,	/* start it now */
	SCHED_NO,	/* not now: something that ends a generation or the pause changes it */
	SCHED_NO_UNTIL, /* a rate limit: ask again after wait_ms */
	SCHED_NO_TODAY, /* a daily limit: ask again after wait_ms (just after midnight) */
};

enum sched_reason {
	SCHED_REASON_NONE,
	SCHED_REASON_PAUSED,	 /* paused, and no probe is due (or one is under way) */
	SCHED_REASON_IN_FLIGHT,	 /* max_in_flight generations are under way */
	SCHED_REASON_DAY,	 /* max_images_per_day of all folders */
	SCHED_REASON_MINUTE,	 /* images_per_minute */
	SCHED_REASON_FOLDER_DAY, /* the folder's max_images_per_day */
	SCHED_REASON_SPEND,	 /* max_spend_per_day (count and limit in micros) */
};

struct sched_verdict {
	enum sched_answer answer;
	enum sched_reason reason;
	uint64_t wait_ms; /* for SCHED_NO_UNTIL and SCHED_NO_TODAY */
	uint64_t count;	  /* for the daily limits: images counted today */
	uint64_t limit;	  /* the limit that was reached */
};

/* a + b and a * b, UINT64_MAX when they would wrap: money and image counts
 * come from the API's answers, and a wrapped sum would let a spend limit
 * pass. */
uint64_t sched_add_sat(uint64_t a, uint64_t b);
uint64_t sched_mul_sat(uint64_t a, uint64_t b);

/* A full bucket at now_mono_ms, nothing counted today. */
void sched_init(struct sched *s, const struct sched_limits *limits, uint64_t now_mono_ms);

/* A reload: new limits, the counters and the bucket's content kept (a new
 * images_per_minute caps the bucket at its next refill). */
void sched_set_limits(struct sched *s, const struct sched_limits *limits);

/* The epoch second of the next local midnight after t. */
int64_t sched_next_midnight(int64_t t);

/* Starts the days over that ended by now_epoch_s (folder may be NULL). */
void sched_roll_day(struct sched *s, struct sched_folder *folder, int64_t now_epoch_s);

/* The epoch second today started at (a day before the next midnight, DST
 * days aside), for counting today's images from the records at start. */
int64_t sched_day_start(struct sched *s, struct sched_folder *folder, int64_t now_epoch_s);

/* Images generated today before this run (from the folder's records). */
void sched_count_today(struct sched *s, struct sched_folder *folder, uint64_t images);

/* The estimated cost of the images generated today before this run. */
void sched_count_spent_today(struct sched *s, uint64_t micros);

/* Whether a generation of any folder may start: the pause, the in-flight
 * limit (generations in flight and paid results held), the global daily
 * limit (generations in flight count as one image each), the daily spend
 * (today's cost, plus image_price for each generation in flight and for
 * the new one, may not pass max_spend_per_day) and the per-minute bucket,
 * in that order. Refills the bucket. */
struct sched_verdict sched_may_start_any(struct sched *s, uint64_t now_mono_ms,
					 int64_t now_epoch_s);

/* Whether the folder's daily limit allows one more (its generations in
 * flight count as the images they may make). A folder whose generations may
 * make N > 1 images (images_per_request) also needs N to fit the global
 * daily limit (at most the limit itself) and N tokens in the per-minute
 * bucket (at most its size): a request is never started on the chance that
 * the server makes fewer. */
struct sched_verdict sched_folder_allows(struct sched *s, struct sched_folder *folder,
					 int64_t now_epoch_s);

/* Both of the above, the global checks first. */
struct sched_verdict sched_may_start(struct sched *s, struct sched_folder *folder,
				     uint64_t now_mono_ms, int64_t now_epoch_s);

/* A generation takes its slot: its request starts being readied (the source
 * opened, the output checked). It takes a token, which is not given back
 * even if nothing is sent, and counts as in flight (against the in-flight
 * and the daily limits) until sched_answered or sched_withdrawn. While
 * paused it is the probe. Only after a SCHED_YES. */
void sched_started(struct sched *s, struct sched_folder *folder);

/* The same for a generation that may make `images` images (the scheduler
 * counts them in flight until it is answered or withdrawn with the same
 * number: a reload may change images_per_request meanwhile). */
void sched_started_images(struct sched *s, struct sched_folder *folder, uint64_t images);
void sched_answered_images(struct sched *s, struct sched_folder *folder, uint64_t images);
void sched_withdrawn_images(struct sched *s, struct sched_folder *folder, uint64_t images);

/* Its answer came, whatever it says (or it was given up unanswered): no
 * longer in flight, and no longer the probe. */
void sched_answered(struct sched *s, struct sched_folder *folder);

/* It ended before its request was sent (the source gone or changed, the
 * output not usable): no longer in flight; a probe that was due stays due,
 * since the API was not asked. */
void sched_withdrawn(struct sched *s, struct sched_folder *folder);

/* A paid result that a crash now would lose (not journalled, not written
 * out) keeps a generation slot until it is safe: what a crash can cost stays
 * at max_in_flight, and a state_dir that takes no records stops spending. */
void sched_hold(struct sched *s);
void sched_unhold(struct sched *s);

/* The answer was a paid success of this many images (today, here and in all),
 * counted into the day of now_epoch_s (rolled at local midnight first). */
void sched_paid(struct sched *s, struct sched_folder *folder, uint64_t images, int64_t now_epoch_s);

/* The estimated cost of a paid answer (sched_paid counts its images). */
void sched_spent(struct sched *s, uint64_t micros, int64_t now_epoch_s);
/* Today's estimated cost as of now_epoch_s (a new day: 0). */
uint64_t sched_spent_today(struct sched *s, int64_t now_epoch_s);

/* The API refused the account: no generation until sched_probe allows one. */
void sched_pause(struct sched *s);
/* The pause's retry time came: one request may probe. */
void sched_probe(struct sched *s);
/* An answer other than an account error came while paused. */
void sched_resume(struct sched *s);

#endif
