/* folder: the run-time state of one watched folder, shared by watch and job. */
#ifndef SEEDREAMD_FOLDER_H
#define SEEDREAMD_FOLDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "index.h"
#include "schedule.h"

struct loop_timer;
struct watch;

/* Which directory a path leads to, and on which mount: a share that goes
 * away leaves its bare mount point (another mount) behind, while a share
 * mounted again may come back with new device numbers on the same mount point. */
struct folder_id {
	bool known;
	dev_t dev;
	ino_t ino;
	bool mount_root; /* it is itself the mount point */
	char *mount;     /* where the filesystem holding it is mounted */
};

/* The job module's storage requests of one folder (or of state_dir): those
 * waiting for its turn, in order, and how many are out on workers. */
struct job_io;
struct job_io_queue {
	struct job_io *head, *tail;	  /* waiting */
	size_t n_waiting;
	unsigned busy;			  /* out on workers */
	struct job_io_queue *ready_next;  /* jobs' list of queues with requests waiting */
	bool ready;
};

struct folder {
	const struct folder_config *cfg; /* points into the current config */
	struct index *index;             /* what its output tree says is done */
	bool present;                    /* false while missing (unmounted share) */
	bool polling;                    /* scanned every poll_interval instead of inotify */
	bool removed;                    /* dropped by a reload; freed when idle */
	int root_wd;                     /* inotify watch of the root, -1 if none */
	struct watch *watch;             /* the watch that owns the timer below */
	struct loop_timer *timer;        /* poll scans, or looking for a missing folder */
	struct sched_folder sched;       /* its daily limit's count (the job module's scheduler) */
	unsigned storage_holds;          /* paid results waiting for the output to take writes */
	struct job_io_queue io_queue;    /* its storage requests (job module, job_io.c) */
	uint64_t storage_stalled_since;  /* monotonic ms its oldest request went out, while that is
					  * longer ago than the stall bound; 0 when it answers */
	bool gave_up_this_run;           /* --once: its output failed a paid result; spend no more */
	bool warned_no_usage;            /* an answer without usage was logged (once per folder) */
	bool warned_few_images;          /* fewer images than max_images was logged (once) */
	struct folder_id root_id;        /* the watched folder as last seen present */
	struct folder_id out_id;         /* the output root as first seen (kept in state_dir) */
	char *out_id_for;                /* the output path out_id belongs to */
	char *state_dir;                 /* for out_id's file; NULL without one */
	bool out_id_saved;               /* its file was written (deleting it forgets out_id) */
	bool index_stale;                /* reload the done records before the next scan */
	/* Counts the times the output was judged untrustworthy (index_stale set
	 * by folder_output_judge): a records read that saw it change while it
	 * ran installs nothing, for it may have read a share half away. */
	uint64_t index_epoch;
	bool records_in;		 /* its journal's paid results were restored (main.c) */
	bool today_counted;		 /* what its records say was paid today is counted */
	bool index_reloading;		 /* folder_reload_index_async runs: keep the folder */
	/* Monotonic ms since when a worker reads its done records (a reload
	 * added it, or its output came back as another directory); 0 when not:
	 * a look at its storage like the watch's own. */
	uint64_t records_loading_since;
	/* Meanwhile the read's own stamp of its last progress (in the request,
	 * stored by the worker); NULL when none runs. */
	const _Atomic uint64_t *records_progress_at;
	bool index_saving;		 /* folder_save_index_cache_async runs: keep the folder */
	uint64_t index_changes_saved;	 /* index_changes() when the cache was last written */
	char pause_reason[512];          /* why not present, for the log and STATUS= */
	/* Monotonic ms since when a look at the watched folder (a scan, a health
	 * check) has been under way without progress for longer than the watch's
	 * bound; 0 while it answers. */
	uint64_t look_stalled_since;
	bool user_paused;		 /* seedreamctl pause FOLDER: no generation starts */
	uint64_t run_done, run_failed;	 /* files done and failed in this run (seedreamctl status) */
};

/* Where path leads: its device, inode and mount point. -errno (ENOTDIR if it
 * is not a directory). */
int folder_probe(const char *path, struct folder_id *ret_id);
void folder_id_clear(struct folder_id *id);

/* Whether the output root is the one the done records came from. Learns (and
 * saves to state_dir) its identity when first seen; an output that never
 * existed is fine (the first result creates it). Returns true when usable,
 * else false with the reason in why. The same mount point with a new device
 * or inode (a share mounted again, a restore) is accepted and sets
 * index_stale. Never logs. */
bool folder_output_check(struct folder *folder, char *why, size_t whylen);

/* What folder_output_check looks at on the storage, split so that a worker
 * thread can look (folder_output_look: no folder state, never logs) and the
 * loop judge (folder_output_judge: may read or write the identity file in
 * state_dir when it is first needed or the output changed). */
struct folder_output_seen {
	int probe_r;         /* folder_probe of the output: 0 or -errno */
	struct folder_id id; /* when probe_r is 0 */
	bool id_file_exists; /* the identity file in state_dir is (still) there */
};
void folder_output_look(const char *output, const char *id_file,
			struct folder_output_seen *ret_seen);
/* folder_output_check's verdict on what was seen; takes over seen->id. */
bool folder_output_judge(struct folder *f, struct folder_output_seen *seen, char *why,
			 size_t whylen);

/* The file in state_dir that keeps the output's identity ("" if none). */
void folder_output_id_file(const struct folder *folder, char *buf, size_t len);

/* The done-record cache of its output in state_dir ("" if none). */
void folder_index_cache_file(const struct folder *folder, char *buf, size_t len);

/* Marks its done records as not to be trusted until read again. */
void folder_mark_stale(struct folder *folder);

/* Reads the done records again from the output. 0 or -errno. */
int folder_reload_index(struct folder *folder);

/* folder_reload_index on a worker of pool: the new index is built there from
 * copies of the paths (nothing of the folder is touched off the loop), then on
 * the loop thread it replaces folder->index (clearing index_stale) unless the
 * output was reconfigured or marked stale (index_epoch) meanwhile or the pool
 * was freed, and done(folder, result, userdata) runs: 0, -ESTALE
 * (reconfigured or marked: still stale, to be read again), -ECANCELED
 * or the load's -errno. index_reloading is true until then: the folder must
 * not be freed, nor a second reload started. Returns 0 or -errno (done is
 * then not called). */
struct work_pool;
int folder_reload_index_async(struct folder *folder, struct work_pool *pool,
			      void (*done)(struct folder *folder, int result, void *userdata),
			      void *userdata);

/* Writes the done-record cache on a worker of pool from a copy of the index
 * taken now (on the loop thread); then done(folder, result, userdata) on the
 * loop. index_saving is true until then. 0 or -errno (-EBUSY while one runs;
 * done is then not called). */
int folder_save_index_cache_async(struct folder *folder, struct work_pool *pool,
				  void (*done)(struct folder *folder, int result, void *userdata),
				  void *userdata);

/* Frees what the folder_* functions allocated in the folder. */
void folder_clear_ids(struct folder *folder);

#endif
