/* progress: what a --once run has done so far. On a terminal, one line at
 * the bottom redrawn in place at most PROGRESS_REDRAW_MS apart (log.c keeps
 * log lines from garbling it); elsewhere (a pipe, the journal) a log line
 * every PROGRESS_LOG_INTERVAL_MS. */
#ifndef SEEDREAMD_PROGRESS_H
#define SEEDREAMD_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

#include "loop.h"

#define PROGRESS_REDRAW_MS	 250
#define PROGRESS_LOG_INTERVAL_MS 10000

struct progress_counts {
	uint64_t done;	       /* results written */
	uint64_t skipped;      /* found already done */
	uint64_t failed, left; /* left: for a later run */
	uint64_t paid;	       /* images generated (billed) */
	size_t in_flight;
	size_t pending; /* found and not finished, in flight included */
};

/* One line: "12/40 done, 1 failed, 4 in flight, 6.5 images/min, ETA 4m10s,
 * 13 images paid". total = finished + pending (files found by the first
 * scan and added since); the rate is of files generated or failed over
 * elapsed_s. Pure. */
void progress_format(const struct progress_counts *c, double elapsed_s, char *buf, size_t len);

typedef void (*progress_counts_fn)(void *userdata, struct progress_counts *ret_counts);

struct progress;

int progress_new(struct loop *loop, progress_counts_fn counts, void *userdata,
		 struct progress **ret_progress);
/* The run is over: the final state stays on the terminal (or is logged). */
void progress_finish(struct progress *progress);
void progress_free(struct progress *progress); /* accepts NULL */

#endif
