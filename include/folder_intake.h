/* folder_intake: a folder that a reload adds is made ready off the loop. Its
 * output's temporary files are swept and its done records read on a worker:
 * the output may sit on a share that hangs, which must not freeze the loop
 * (nor the watchdog). Only once the records are in may the folder be
 * watched, so that no file already done is paid for again. */
#ifndef SEEDREAMD_FOLDER_INTAKE_H
#define SEEDREAMD_FOLDER_INTAKE_H

#include <stddef.h>

#include "index.h"

struct folder;
struct work_pool;

/* What the worker did, for the loop to log. */
struct folder_intake_result {
	/* 0; -ESTALE: the output was reconfigured meanwhile (nothing installed);
	 * -EAGAIN: it was judged missing, remounted or replaced meanwhile
	 * (folder_output_judge: index_epoch moved), so what was read may lack
	 * what was away: nothing installed, still stale; -ECANCELED: the pool
	 * was freed; else the load's -errno. */
	int result;
	int sweep_result; /* output_sweep_tmp: 0 or -errno */
	size_t swept;	  /* temporary files of an interrupted run removed */
	size_t skipped;	  /* JSON files in the output that are not sidecars */
	struct index_load_stats stats;
};

typedef void (*folder_intake_done_fn)(struct folder *folder, const struct folder_intake_result *res,
				      void *userdata);

/* Sweeps folder->cfg->output and reads its done records on a worker of pool,
 * from copies of the paths (nothing of the folder is touched off the loop).
 * Until done(folder, res, userdata) runs on the loop thread: index_reloading
 * is true (the folder must not be freed, nor started by the watch),
 * index_stale is true (its records are not in: none may be trusted or saved
 * as the cache) and records_loading_since says since when the worker reads.
 * On success the records replace folder->index and index_stale is cleared
 * before done runs. Returns 0 or -errno (done is then not called). */
int folder_intake_start(struct folder *folder, struct work_pool *pool, folder_intake_done_fn done,
			void *userdata);

#endif
