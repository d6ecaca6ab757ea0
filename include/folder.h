/* folder: the run-time state of one watched folder, shared by watch and job. */
#ifndef SEEDREAMD_FOLDER_H
#define SEEDREAMD_FOLDER_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "index.h"

struct loop_timer;
struct watch;

struct folder {
	const struct folder_config *cfg; /* points into the current config */
	struct index *index;             /* what its output tree says is done */
	bool present;                    /* false while missing (unmounted share) */
	bool polling;                    /* scanned every poll_interval instead of inotify */
	bool removed;                    /* dropped by a reload; freed when idle */
	int root_wd;                     /* inotify watch of the root, -1 if none */
	struct watch *watch;             /* the watch that owns the timer below */
	struct loop_timer *timer;        /* poll scans, or looking for a missing folder */
	uint64_t images_today;           /* images generated today (spend limit) */
	unsigned images_reserved;        /* generations in flight, counted against the limit */
	int64_t images_day_end;          /* epoch s when images_today starts again at 0 */
	unsigned storage_holds;          /* paid results waiting for the output to take writes */
};

#endif
