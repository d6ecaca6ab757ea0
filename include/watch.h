/* watch: finds candidate files in the watched folders, by inotify on local
 * filesystems and by polling on network ones, plus full scans at start, on
 * IN_Q_OVERFLOW and every rescan_interval. Reports through callbacks. */
#ifndef SEEDREAMD_WATCH_H
#define SEEDREAMD_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

#include "folder.h"
#include "loop.h"

enum watch_how {
	WATCH_CLOSED, /* closed after writing: it may be written again, settle first */
	WATCH_MOVED,  /* renamed in: complete now */
	WATCH_SCAN,   /* found by a scan */
};

struct watch_events {
	/* A candidate file, relative to the folder, with its lstat/stat. */
	void (*file)(void *userdata, struct folder *folder, const char *rel, const struct stat *st,
		     enum watch_how how);
	/* A "*.txt" file (never a candidate: perhaps a prompt file) written or
	 * renamed in (how), in a folder with prompt_file on. May be NULL. */
	void (*prompt_file)(void *userdata, struct folder *folder, const char *rel,
			    enum watch_how how);
	/* A candidate file deleted or moved away. */
	void (*removed)(void *userdata, struct folder *folder, const char *rel);
	/* The folder was paused (present false, pause_reason says why) or resumed. */
	void (*changed)(void *userdata, struct folder *folder);
	/* Its storage stopped answering (folder->storage_stalled_since set), still
	 * does not (reported again every few seconds), or answers again. May be NULL. */
	void (*stalled)(void *userdata, struct folder *folder);
	/* Its done records were read again (index_stale cleared). May be NULL. */
	void (*records_read)(void *userdata, struct folder *folder);
};

struct watch;

/* use_inotify false (--once) only scans. */
int watch_new(struct loop *loop, bool use_inotify, const struct watch_events *events,
	      void *userdata, struct watch **ret_watch);
void watch_free(struct watch *watch); /* accepts NULL; folders must be removed first */

/* Starts watching a folder (mode chosen per config and statfs, logged) and
 * scans it. The looks at the storage run on the watch's worker threads (inline
 * without inotify, for --once) and report through the callbacks later; a
 * folder whose look has made no progress for 10 s is marked with
 * storage_stalled_since. A missing folder, an empty mount point where the
 * folder was a mount, or an output that is not the one its done records came from (see
 * folder_output_check) pauses it: logged, marked not present with a reason,
 * looked at again every few seconds, scanned in full when back. Present
 * folders are checked the same way every few seconds. Returns 0 or -ENOMEM. */
int watch_add_folder(struct watch *watch, struct folder *folder);
void watch_remove_folder(struct watch *watch, struct folder *folder);

/* Scans every present folder again (IN_Q_OVERFLOW, rescan_interval). */
void watch_rescan(struct watch *watch, struct folder **folders, size_t n_folders);

/* Whether the path is on a filesystem that does not deliver inotify events
 * for changes made elsewhere (NFS, CIFS/SMB, FUSE, 9p, ...). fs_name gets a
 * short name for the log. */
bool watch_is_remote_fs(const char *path, const char **ret_fs_name);

#endif
