/* job internals, shared by the files of the job module only:
 *   job.c         the table, the deadline heap, states and transitions, the
 *                 queue's pump (asking schedule.c whether to start), the public side
 *   job_check.c   before any money is spent: open safely, validate, reuse
 *   job_fit.c     converting what the API would refuse, on the fit workers
 *   job_send.c    the generation request, its answer, retries and the pause
 *   job_result.c  after: fetch the paid result, commit output and sidecar,
 *                 the journal, on_success, and error sidecars */
#ifndef SEEDREAMD_JOB_PRIVATE_H
#define SEEDREAMD_JOB_PRIVATE_H

#include "api.h"
#include "b64.h"
#include "clean.h"
#include "digest.h"
#include "events.h"
#include "fdio.h"
#include "fit.h"
#include "fnv.h"
#include "image.h"
#include "job.h"
#include "job_core.h"
#include "job_group_fit.h"
#include "journal.h"
#include "log.h"
#include "output.h"
#include "refs.h"
#include "schedule.h"
#include "sidecar.h"
#include "prompt_waiters.h"
#include "stem.h"
#include "transfer.h"
#include "twin_map.h"
#include "work.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#define JOBS_BACKOFF_BASE_MS	1000
#define JOBS_BACKOFF_CAP_MS	60000
#define JOBS_URL_VALID_MS	(24ull * 3600 * 1000) /* result URLs live 24 h */
#define JOBS_HASH_MIN		1024
#define JOBS_HASH_FOR_ERROR_MAX (256ull * 1024 * 1024)
#define JOBS_STORAGE_RETRY_MS	10000 /* looking again at storage that failed or is full */
#define JOBS_STORE_THREADS	8     /* storage workers to start with: every file-system call of a job */
#define JOBS_STORE_THREADS_MAX	64    /* grown to when workers are stuck on a hung share */
#define JOBS_STORE_PER_FOLDER	16    /* out at once per folder; a stalled share holds at most this many */
#define JOBS_STORAGE_STALL_MS	10000 /* a request older than this: its folder is stalled */

/* The states are job_core.h's; job_advance below applies verdicts. */

/* A storage request: every file-system call of a job runs on a storage worker
 * (jobs->store_pool) through one of these. Each kind embeds it first and
 * copies its inputs in: the worker touches nothing else. done runs on the
 * loop and frees the request; job is NULL there when the job was freed or
 * looks anew meanwhile (the result is then only cleaned up). */
struct job;
struct job_io;
typedef void (*job_io_work_fn)(struct job_io *io);
typedef void (*job_io_done_fn)(struct jobs *jobs, struct job *job, struct job_io *io);

struct job_io {
	struct jobs *jobs;
	struct job *job;
	struct folder *folder; /* kept alive: jobs_folder_busy while a request is out;
				* NULL: state_dir's storage (the journal) */
	job_io_work_fn work;
	job_io_done_fn done;
	bool ran;		    /* work ran (false: cancelled at shutdown) */
	bool out;		    /* handed to a worker (else waiting for its folder's turn) */
	uint64_t submitted;	    /* monotonic ms when handed to a worker, 0 while waiting */
	struct job_io *prev, *next; /* its queue's waiting list, or jobs->io_out */
};

struct job {
	struct jobs *owner;
	struct folder *folder;
	char *rel; /* relative to the folder */
	enum job_state state;
	bool dirty;	     /* changed while in flight: look again afterwards */
	bool retry_fetch;    /* the wait is for the fetch, not a new generation */
	bool journalled;     /* its paid result is recorded in the journal */
	bool undurable;      /* paid, but neither journalled nor written out yet */
	bool storage_hold;   /* waiting for its output folder to take writes again */
	bool offered_done;   /* offered with a matching done record: end quietly if so */
	uint64_t deadline;   /* settling and waiting, monotonic ms */
	size_t heap_pos;     /* SIZE_MAX when not in the deadline heap */
	uint64_t first_seen; /* for incomplete_timeout */
	uint64_t size;	     /* as last seen */
	struct timespec mtime;
	dev_t dev; /* the file validated: a swapped file is not it */
	ino_t ino;
	enum image_format format;
	unsigned attempts; /* generation calls made */
	unsigned sched_images; /* the images its generation in flight may make (max_images) */
	unsigned max_images;   /* what its paid request asked for (job_outputs.c) */
	size_t out_cur;	       /* result.images[] entry being fetched, with several outputs */
	unsigned out_done;     /* outputs committed so far */
	cJSON *outputs_done;   /* and their sidecar entries */
	unsigned failures; /* retryable failures so far */
	unsigned fetch_failures;
	uint64_t started;     /* first generation, monotonic ms */
	int64_t generated_at; /* when the result arrived, epoch ms (URLs expire by the clock) */
	unsigned images_paid; /* images its answer was counted as (0: nothing paid) */
	char *model_sent;     /* api.model when its last request was built; NULL before */
	int64_t retry_after_ms;
	char *stem;    /* the output stem, while active */
	unsigned stem_outputs; /* the images written under it (stem_outputs_meet) */
	int out_dirfd; /* the output folder, while active */
	char sha256[65];
	char request_id[128];
	struct transfer_gen *gen;
	struct transfer_dl *dl;
	struct job_fit *fit;	     /* the fit under way (JOB_FITTING) */
	struct job_fitted *fitted;   /* what is sent instead of the file, once fitted */
	unsigned fit_reasons;	     /* queued, to be fitted first (fit_wanted's reasons) */
	struct api_result result;
	struct job_io *io; /* the storage request under way, if any */
	/* The prompt for this image (job_prompt.c), set by each check: NULL
	 * means the folder's; prompt_source is a static string or NULL. */
	char *prompt;
	const char *prompt_source;
	char *prompt_file; /* relative like rel, when the prompt came from one */
	/* prompt_file: required, none yet: the file it waits for, on
	 * jobs->prompt_waiters, woken when that file arrives (job_prompt.c). */
	char *prompt_awaited;
	struct prompt_waiter prompt_wait;
	struct job *hash_next;
	struct job *prev, *next;	   /* the queue (queued) or the active list (in flight) */
	struct job *stem_prev, *stem_next; /* jobs->stem_holders while stem is set */
	struct job_ref_sent *refs_sent;	   /* the references of its last request, for the sidecar */
	size_t n_refs_sent;
	/* The extra: its last request sent ("" none; NULL: not known, as for a
	 * record of an older journal: the folder's is used), for the sidecar and
	 * the journal: a reload may change the folder's before the result is
	 * written. Set when a request is built, or restored from the journal. */
	char *extra_sent;
	/* group: subfolder (job_group.c): rel is the subfolder; members are its
	 * images as checked, sent first (in name order) before the references,
	 * whose first n_members - 1 entries of refs_sent are the other members. */
	bool group;
	bool group_live; /* offered by an event, not only by a scan, since it was checked */
	struct config_reference *members;
	size_t n_members;
	struct job_group_fits *group_fits; /* its images to fit, and fitted (job_group_fit.c) */
	/* job_twins.c: the entry of its content it leads, or waits on (JOB_TWIN). */
	struct twin_entry *twin;
	bool twin_leads;
	char *twin_from; /* the rel whose result it waited for: the reuse tries it first */
};

/* job_group.c: a file of a group folder's subfolder was offered (or its
 * marker): the group's job settles (created if need be). */
void job_group_offer(struct jobs *jobs, struct folder *folder, const char *rel,
		     const struct stat *st, enum watch_how how);
/* On a worker: opens a group's image (path, absolute, below root) as
 * job_src_open opens inputs: beneath root, without symlinks unless
 * follow_symlinks. The descriptor or -errno. */
int job_group_member_open(const char *root, const char *path, bool follow_symlinks);
/* Looks at a settled group on a worker: lists, checks and judges it. */
void job_group_validate(struct jobs *jobs, struct job *job);
/* The sidecar's "sources" of a group job (n_members entries), or NULL. */
const struct sidecar_source *job_group_sources(const struct job *job, struct sidecar_source *buf,
					       size_t n);
struct job *jobs_find(const struct jobs *jobs, const struct folder *folder, const char *rel);
struct job *jobs_create(struct jobs *jobs, struct folder *folder, const char *rel);

/* A reference image as a request sent it (job_send.c). */
struct job_ref_sent {
	char *path;
	char format[8];
	char sha256[65]; /* once sent whole; "" before */
};
/* Forgets refs_sent and extra_sent (a new request, or the job is freed). */
void job_refs_release(struct job *job);

struct job_list {
	struct job *head, *tail;
	size_t n;
};

struct jobs {
	struct loop *loop;
	struct http *http;
	const struct config *config;
	char *auth_header;
	bool once, stopping;
	bool user_paused; /* seedreamctl pause (all folders): no generation starts */
	struct job **table; /* chained hash on (folder, rel) */
	size_t table_size, n_jobs;
	struct job **heap; /* deadlines, min-heap */
	size_t heap_len, heap_cap;
	struct loop_timer *timer; /* the earliest deadline */
	uint64_t armed_at;         /* the deadline the timer is set for, 0 if none */
	struct loop_timer *pause_timer;
	struct job_list queue, active;
	struct job *stem_holders; /* every job holding an output stem not yet on disk */
	struct prompt_waiters prompt_waiters;	     /* jobs waiting for their prompt file */
	struct job_prompt_arrivals *prompt_arrivals; /* prompt files lately arrived */
	size_t n_settling, n_waiting, n_fitting;
	struct work_pool *fit_pool; /* max_fits threads: fits at once are bounded */
	struct work_pool *io_pool;  /* the transfers' file reads and writes */
	size_t n_paid_waiting; /* waiting jobs whose result is already paid for */
	uint64_t done, failed, skipped, left_incomplete, generations;
	bool pumping, pump_again; /* jobs_pump is not re-entered */
	char pause_reason[512];
	uint64_t rng;
	void (*on_change)(void *userdata);
	void *on_change_data;
	struct transfer_net net;
	char *gen_url;
	struct journal *journal; /* may be NULL: no state_dir */
	/* The limits (in flight, per minute, per day), their counters and the
	 * pause: a job holds a slot while PREPARING or GENERATING (job_activate,
	 * job_leave_state), and while its paid result is undurable
	 * (job_set_undurable: a crash, or a full state_dir, costs at most
	 * max_in_flight generations). */
	struct sched sched;
	struct loop_timer *limit_timer; /* asks again when a limit's wait is over */
	char limit_reason[256];
	bool limit_daily;      /* the reason is a daily limit (not a rate to wait out) */
	char disk_reason[256]; /* why writing outputs fails, while it does */
	/* Storage requests: waiting for their folder's turn or out on a worker. */
	struct work_pool *store_pool;
	/* Storage requests: each folder's (and state_dir's) queue of those
	 * waiting, the queues with some waiting, and those out on workers (at
	 * most JOBS_STORE_PER_FOLDER per queue: every pass below is short). */
	struct job_io_queue state_queue;
	struct job_io_queue *ready_queues;
	struct job_io *io_out;
	/* Files offered as done, being gathered for one look at their sidecars
	 * (job_done.c); done_timer sends them at the end of the iteration. */
	struct job_done_batch *done_batches;
	struct loop_timer *done_timer;
	size_t n_io;
	size_t n_checking;
	struct loop_timer *stall_timer;
	char storage_reason[512]; /* stalled folders, for STATUS= */
	struct events *events;	  /* may be NULL */
	uint64_t spent_total;	  /* micros, estimated, paid answers of this run */
	bool warned_images_claimed; /* an answer claimed more images than asked (logged once) */
	struct ledger *ledger;	    /* every paid answer (job_ledger.c); NULL: none */
	bool ledger_created;	    /* new this run: seeded from the records */
	bool warned_ledger;	    /* an append failed (logged once) */
	char **group_logged;	  /* "<folder>/<group>" already said to have changed after done */
	size_t n_group_logged;
	struct twin_map *twins; /* job_twins.c: content being paid for -> its job */
	size_t n_twins;		/* jobs in JOB_TWIN */
};

/* What a stage ends in; job_advance (job.c) is the one place that applies
 * it, through job_core_step. code and message are copied by the core. */
struct job_verdict {
	enum job_verdict_kind kind;
	uint64_t delay_ms; /* SETTLE, RETRY, FETCH_RETRY */
	long http_status;  /* FAIL */
	const char *code, *message;
};
void job_advance(struct jobs *jobs, struct job *job, const struct job_verdict *v);
#define JOB_VERDICT(k, ...) (&(const struct job_verdict){.kind = JOB_VERDICT_##k, __VA_ARGS__})

/* job_io.c: submits io for job (NULL: a clean-up of no job) on folder's
 * storage; it starts when the folder has fewer than JOBS_STORE_PER_FOLDER
 * requests out, in submission order. */
void job_io_submit(struct jobs *jobs, struct job *job, struct folder *folder, struct job_io *io);
/* The same, handed to a worker at once, past the folder's turn: for the
 * look that stands between a paid answer and its journal record, which must
 * not wait behind the folder's other requests. */
void job_io_submit_urgent(struct jobs *jobs, struct job *job, struct folder *folder,
			  struct job_io *io);
/* The job no longer waits for its request (freed or looked at anew). */
void job_io_forget(struct job *job);
/* Whether a request of folder is waiting or out. */
bool job_io_folder_busy(const struct jobs *jobs, const struct folder *folder);
/* Cancels what never started and waits for what runs (jobs_free). */
void job_io_shutdown(struct jobs *jobs);
/* Closes fd and removes the temporary tmp_name in dirfd, on a worker. Takes
 * dirfd (closed afterwards) and fd; either may be -1. */
void job_io_discard_tmp(struct jobs *jobs, struct folder *folder, int dirfd, int fd,
			const char *tmp_name);
void jobs_stall_timer(void *userdata);

/* The source as a worker reaches it: copied from the job. */
struct job_src {
	char *root, *rel;
	bool follow_symlinks;
	dev_t dev;
	ino_t ino;
	uint64_t size;
	struct timespec mtime;
};
void job_src_fill(const struct job *job, struct job_src *src);
void job_src_clear(struct job_src *src);
/* On a worker: the only place inputs are opened. -errno. */
int job_src_open(const struct job_src *src);
bool job_src_unchanged(const struct job_src *src, int fd);
/* on_success (move to done_dir or delete), on a worker. ret_left: the file
 * changed or went away and was left in place. -errno on failure. */
int job_src_after_success(const struct job_src *src, enum on_success mode, const char *done_dir,
			  bool *ret_left);

/* The output folder of a job as a worker reaches it. */
struct job_out {
	char *root, *path; /* the output root, and the job's folder in it */
	bool known;	   /* the root's identity below is known */
	bool trusted;	   /* the loop just judged the root (job_out_recheck) */
	dev_t dev;
	ino_t ino;
};
void job_out_fill(const struct job *job, struct job_out *out, bool trusted);
void job_out_clear(struct job_out *out);
/* On a worker: creates and opens the job's output folder. -ESTALE when the
 * root is not the directory known: the loop judges it (job_out_recheck). */
int job_out_open(const struct job_out *out);
/* On the loop after -ESTALE: 0 to try again, else -ENODEV or -EAGAIN. */
int job_out_recheck(struct job *job);
bool job_out_space_ok(int dirfd, uint64_t min_free);

/* on_success after a result is done: filled on the loop, run on the worker
 * that wrote the result, logged on the loop by job_success_done (job may be
 * NULL there; it frees the copies). */
struct job_success {
	struct job_src src;
	enum on_success mode;
	char *done_dir;
	int r;
	bool left;
};
void job_success_fill(const struct job *job, struct job_success *s);
void job_success_run(struct job_success *s);
void job_success_done(const struct job *job, struct job_success *s);
/* journal_remove, one thread at a time (journal may be NULL). */
int job_journal_drop(struct journal *journal, const char *folder, const char *source);

/* job_ledger.c: a paid answer noted in the ledger (once per folder, source
 * and paid_ms; nothing without a ledger), appended on state_dir's storage. */
void job_ledger_note(struct jobs *jobs, const char *folder, const char *source, const char *model,
		     int64_t paid_ms, uint64_t images);
/* With a ledger new this run: this month's paid records of folder added. */
void job_ledger_seed(struct jobs *jobs, struct folder *folder);
/* What the ledger says folder paid since `since` (seeding it first); false
 * without a ledger. */
bool job_ledger_count_today(struct jobs *jobs, struct folder *folder, int64_t since,
			    uint64_t *ret_images, uint64_t *ret_spent);

/* Shared between the files of the module; each is defined where its
 * concern lives (see the list at the top). */
void jobs_changed(struct jobs *jobs);
uint64_t jobs_backoff(struct jobs *jobs, unsigned failures, int64_t retry_after_ms);
bool same_mtime(const struct timespec *a, const struct timespec *b);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *rel_dir(const char *rel);
const char *rel_base(const char *rel);
void job_release_transfers(struct jobs *jobs, struct job *job);
void job_settle(struct jobs *jobs, struct job *job, uint64_t delay_ms);
void job_wait(struct jobs *jobs, struct job *job, uint64_t delay_ms, bool fetch);
void job_queue(struct jobs *jobs, struct job *job, bool front);
void job_activate(struct jobs *jobs, struct job *job, enum job_state state);
void job_activate_fitting(struct jobs *jobs, struct job *job);
void job_activate_checking(struct jobs *jobs, struct job *job);
void job_finish(struct jobs *jobs, struct job *job);
/* The output stem, chosen on a worker: filled on the loop (with the stems
 * other jobs hold), chosen by job_stem_choose on the worker, taken by
 * job_stem_take on the loop (-EAGAIN: taken meanwhile, choose again). */
struct job_stem {
	bool held; /* the job holds one already: chosen is it */
	int r;
	char *rel;
	char base[OUTPUT_STEM_MAX + 1];
	char **taken;
	unsigned *taken_outputs; /* the images each taken stem writes */
	size_t n_taken;
	char chosen[OUTPUT_NAME_MAX];
	unsigned n_outputs; /* images the request may write (max_images) */
};
void job_stem_fill(const struct jobs *jobs, const struct job *job, struct job_stem *st);
/* For a request that writes n_outputs images (fill: max_images). */
void job_stem_fill_n(const struct jobs *jobs, const struct job *job, unsigned n_outputs,
		     struct job_stem *st);
/* A held stem not paid under, asked to write more than the n_outputs it was
 * chosen for (a reload raised max_images before a retry), is let go, to be
 * chosen again for n_outputs. */
void job_stem_refit(struct jobs *jobs, struct job *job, unsigned n_outputs);
int job_stem_choose(int dirfd, struct job_stem *st);
int job_stem_take(struct jobs *jobs, struct job *job, const struct job_stem *st);
void job_stem_clear(struct job_stem *st);
void job_fill_source(const struct job *job, struct sidecar_source *src);
/* model: what the result is priced by (spend.h), or NULL. */
void job_index_put(struct job *job, const char *sidecar_name, bool failed, int64_t finished_at,
		   int64_t generated_images, const char *model, int64_t paid_at);
/* A result reused from an earlier one (nothing paid). */
void job_index_put_reused(struct job *job, const char *sidecar_name, int64_t finished_at);
void job_set_undurable(struct jobs *jobs, struct job *job, bool undurable);
void job_set_storage_hold(struct jobs *jobs, struct job *job, bool hold);
void job_close_output_dir(struct job *job);
/* --once: a folder whose output cannot take results gets no more spent on it
 * in this run; its queued files are left for a later run. */
void jobs_leave_queued_for_later(struct jobs *jobs, struct folder *folder);
void job_fail(struct jobs *jobs, struct job *job, long http_status, const char *code,
	      const char *message);
void job_validate(struct jobs *jobs, struct job *job);
void jobs_pause_timer(void *userdata);
void job_generate(struct jobs *jobs, struct job *job);
/* job_twins.c. On the loop, where a checked job found no done record to
 * reuse and would be queued: true when another job of the folder pays for
 * the same image with the same prompt (job is then in JOB_TWIN, or ended on a
 * stop); false when job leads it now (or cannot be a twin): queue it. */
bool job_twins_hold(struct jobs *jobs, struct job *job);
/* A paid result resumed from the journal leads its content, if nothing does:
 * a copy checked while it is fetched waits for it. */
void job_twins_lead(struct jobs *jobs, struct job *job);
/* The job leaves its entry: a follower stops waiting; a leader's followers
 * settle to be looked at anew (all when its result is recorded, else only the
 * first, which leads the others now). Called when the job settles or is
 * freed. */
void job_twins_forget(struct jobs *jobs, struct job *job);
/* job_prompt.c: per-file prompts (prompt_file). On a worker, the check
 * reads <stem>.txt; on the loop, job_prompt_decide sets the job's prompt or
 * ends the check with a verdict (then it returns false). */
struct job_prompt_read {
	char *rel;  /* the prompt file, NULL when prompt_file is off */
	int r;	    /* 0 read; -ENOENT; -EFBIG; -EILSEQ (not UTF-8, or a NUL); -errno */
	char *text; /* trailing newlines and spaces taken off */
	struct timespec mtime;
};
void job_prompt_fill(const struct job *job, struct job_prompt_read *p);
void job_prompt_arrivals_free(struct jobs *jobs);
void job_prompt_waiters_free(struct jobs *jobs);
void job_prompt_arrivals_drop_folder(struct jobs *jobs, const struct folder *folder);
void job_prompt_read(const struct job_src *src, struct job_prompt_read *p);
bool job_prompt_decide(struct jobs *jobs, struct job *job, struct job_prompt_read *p);
void job_prompt_clear(struct job_prompt_read *p);
/* The prompt this job is sent with (job->prompt or the folder's). */
const char *job_prompt(const struct job *job);
void job_prompt_forget(struct job *job);

/* job_fit.c. The fitted image: its bytes (an unlinked file), what it is, and
 * the source's descriptor while it is being sent (for the changed-check). */
struct job_fitted {
	struct fit_result res;
	int src_fd;
};
/* Starts libvips on the loop thread (fit_global_init) before a fit is handed
 * to a worker. false: it cannot start; the job was held (SETTLE, no error
 * record; --once: left for a later run) and the cause logged once. */
bool job_fit_can_start(struct jobs *jobs, struct job *job);
/* Hands the job to a fit worker (JOB_FITTING); reasons from fit_wanted. */
void job_fit_start(struct jobs *jobs, struct job *job, unsigned reasons);
/* The fitted bytes are not needed again (the answer came): closes them,
 * keeping what the sidecar says of the fit. */
void job_fit_drop_bytes(struct job *job);
/* Forgets a fit under way (its result is dropped when it arrives) and the
 * fitted bytes; for a job that is freed or looked at anew. */
void job_fit_release(struct job *job);
/* The sidecar's "fitted" object for a fitted job, or NULL. */
const struct sidecar_fitted *job_fit_sidecar(const struct job *job, struct sidecar_fitted *buf,
					     const char **names, size_t n_names);
int copy_file(int src_fd, int dst_dirfd, const char *dst_name);
void job_fetch(struct jobs *jobs, struct job *job);
void jobs_pump(struct jobs *jobs);
/* job_done.c: a file whose done record matches the scan's stat is looked at
 * in a batch (its sidecar still there?) rather than as a job; those whose
 * sidecar is gone come back through jobs_offer_checked. */
bool job_done_offer(struct jobs *jobs, struct folder *folder, const char *rel,
		    const struct stat *st, enum watch_how how, const struct index_entry *e);
void jobs_done_flush(void *userdata);
void jobs_done_drop_folder(struct jobs *jobs, struct folder *folder); /* NULL: all */
/* jobs_offer without the batch: the file becomes a job. */
void jobs_offer_checked(struct jobs *jobs, struct folder *folder, const char *rel,
			const struct stat *st, enum watch_how how);

/* job_outputs.c: several outputs per request (max_images > 1). */
bool job_outputs_several(const struct job *job);
void job_outputs_begin(struct job *job);
void job_outputs_clear(struct job *job);
bool job_outputs_is_last(const struct job *job);
unsigned job_outputs_number(const struct job *job);
bool job_outputs_next(struct job *job, const char *rel_out);
cJSON *job_outputs_list(const struct job *job, const char *last_rel_out);
cJSON *job_outputs_journal(const struct job *job);
void job_outputs_restore(struct job *job, const cJSON *images, unsigned max_images);
void job_outputs_note_relay(struct job *job);
bool job_outputs_fail_current(struct job *job, const char *code, const char *message);
bool job_outputs_current_failed(const struct job *job);

#endif
