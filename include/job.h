/* job: one input file's way through the daemon, as a state machine:
 *   settling -> checking -> [fitting ->] queued -> preparing -> generating ->
 *   committing (journal, fetch, write) -> done | failed (committing its record)
 * with waiting-to-retry beside them. Every file-system call of a job runs on
 * a storage worker while the job is checking, preparing or committing.
 * plus the queue, the in-flight limit, retries with backoff, and the pause on
 * account or configuration errors. Every transition lives in job.c. */
#ifndef SEEDREAMD_JOB_H
#define SEEDREAMD_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "config.h"
#include "folder.h"
#include "http.h"
#include "journal.h"
#include "loop.h"
#include "watch.h"

struct jobs;

struct jobs_counts {
	size_t settling, fitting, queued, in_flight, waiting;
	size_t twins;	  /* waiting for the result of the same image (paid once) */
	size_t undurable; /* paid results neither journalled nor written out */
	uint64_t done, failed, skipped, left_incomplete, generations;
	size_t jobs; /* files found and not finished, in any state */
	bool paused;
	const char *pause_reason; /* these three: NULL, or valid until the next call into jobs */
	const char *limit_reason; /* a spend limit holds submissions back */
	const char *disk_reason;  /* writing outputs fails */
	const char *storage_reason; /* a folder's storage does not answer (stalled) */
};

/* once: --once mode (pauses and incomplete files end the run instead of
 * waiting). api_key is copied into the Authorization header only. */
int jobs_new(struct loop *loop, struct http *http, const struct config *config,
	     const char *api_key, bool once, struct jobs **ret_jobs);
void jobs_free(struct jobs *jobs); /* accepts NULL; cancels transfers */

/* A reload: settings apply to jobs not yet submitted. */
void jobs_set_config(struct jobs *jobs, const struct config *config);

void jobs_offer(struct jobs *jobs, struct folder *folder, const char *rel, const struct stat *st,
		enum watch_how how);
void jobs_removed(struct jobs *jobs, struct folder *folder, const char *rel);
/* A text file (rel) was written or renamed into a folder: an image waiting
 * for it as its prompt file is looked at again, at once when renamed in,
 * else once it has settled. */
void jobs_prompt_file_arrived(struct jobs *jobs, struct folder *folder, const char *rel,
			      enum watch_how how);
/* Drops every job of a folder that is not in flight (a reload removed it). */
void jobs_drop_folder(struct jobs *jobs, struct folder *folder);
/* A folder was paused or resumed (folder->present): no generation starts for
 * a paused folder; a resumed one's queued jobs go on. */
void jobs_folder_changed(struct jobs *jobs, struct folder *folder);
/* Whether a folder still has jobs in flight. */
bool jobs_folder_busy(const struct jobs *jobs, const struct folder *folder);

/* Stop starting new generations (SIGTERM); in-flight ones finish. */
void jobs_stop(struct jobs *jobs);
/* Nothing settling, queued, waiting or in flight. */
bool jobs_idle(const struct jobs *jobs);
/* Nothing in flight. */
bool jobs_quiet(const struct jobs *jobs);

/* Only daily spend limits keep the queued jobs waiting (--once gives up
 * then; a per-minute rate it waits out). */
bool jobs_held_by_limits(const struct jobs *jobs);

void jobs_counts(const struct jobs *jobs, struct jobs_counts *ret_counts);

/* A new key for requests from now on (a reload). */
void jobs_set_api_key(struct jobs *jobs, const char *api_key);

/* Where paid-for results are recorded until written out (NULL: nowhere). */
void jobs_set_journal(struct jobs *jobs, struct journal *journal);
/* The paid ledger (ledger.h; NULL: none); created: new this run, so this
 * month's payments are taken from the records once. */
struct ledger;
void jobs_set_ledger(struct jobs *jobs, struct ledger *ledger, bool created);
const struct ledger *jobs_ledger(const struct jobs *jobs);
/* Whether the ledger has the payment (a journalled result counted already). */
bool jobs_ledger_counted(const struct jobs *jobs, const char *folder, const char *source,
			 int64_t paid_ms);
/* Resumes a journalled result: downloaded and written, never generated again. */
void jobs_restore(struct jobs *jobs, struct folder *folder, const struct journal_record *rec);

/* Counts what the folder's sidecars say was generated today (local time),
 * so that a restart does not reset max_images_per_day. */
void jobs_count_today(struct jobs *jobs, struct folder *folder);
/* The same for the daily summary only (notifications started by a reload). */
void jobs_count_today_events(struct jobs *jobs, struct folder *folder);

/* The estimated cost of today's images, in micros (price_per_image; 0
 * without prices): this run's answers and today's done records at start. */
uint64_t jobs_spent_today(struct jobs *jobs); /* rolled at local midnight */
/* The same for the paid answers of this run only (a counter for metrics). */
uint64_t jobs_spent_total(const struct jobs *jobs);

/* Where events (a file failed, pauses, limits) are reported (NULL: nowhere). */
struct events;
void jobs_set_events(struct jobs *jobs, struct events *events);
/* Calls fn for every file found and not finished (metrics: pending per
 * folder, the oldest; first_seen is monotonic ms). On the loop thread. */
void jobs_each(const struct jobs *jobs,
	       void (*fn)(void *userdata, const struct folder *folder, bool queued,
			  uint64_t first_seen),
	       void *userdata);
/* One job as the control socket shows it; valid during the callback only. */
enum jobs_item_kind {
	JOBS_ITEM_SETTLING,  /* settling or being checked */
	JOBS_ITEM_QUEUED,    /* valid (or being fitted), waiting for a generation slot */
	JOBS_ITEM_WAITING,   /* backing off before its next generation */
	JOBS_ITEM_IN_FLIGHT, /* generating, fetching, writing (or paid and waiting to fetch) */
	JOBS_ITEM_TWIN,	     /* waiting for the result of the same image, already being paid */
};
struct jobs_item {
	struct folder *folder;
	const char *rel;
	const char *state; /* job_state_name */
	enum jobs_item_kind kind;
	uint64_t first_seen_ms; /* monotonic */
	unsigned attempts;
};
/* Calls fn for every job, in no particular order. fn must not change jobs. */
void jobs_foreach(const struct jobs *jobs, void (*fn)(const struct jobs_item *item, void *userdata),
		  void *userdata);

/* A user's pause of every folder (seedreamctl pause): no generation starts,
 * those in flight finish. Per folder it is folder->user_paused (then call
 * jobs_folder_changed). */
void jobs_set_user_pause(struct jobs *jobs, bool paused);
bool jobs_user_paused(const struct jobs *jobs);

/* Called after every change of the counts (for STATUS=). */
void jobs_on_change(struct jobs *jobs, void (*fn)(void *userdata), void *userdata);

#endif
