/* events_store (prefix events_store_): the notifications that survive a
 * restart, in state_dir/events.pending: the events still to be delivered
 * (each with the targets it still waits for) and the last day a daily
 * summary was sent for. One JSON document, rewritten whole (temp file,
 * fsync, rename, fsync of the directory) by a worker thread of its own; read
 * once by that worker at start. A file that does not read is renamed to
 * events.pending.bad for a human and never stops the start.
 *
 * The format and parse functions are pure (no I/O, no logging); the rest runs
 * on the loop thread and leaves every file-system call to the worker. */
#ifndef SEEDREAMD_EVENTS_STORE_H
#define SEEDREAMD_EVENTS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"

#define EVENTS_STORE_FILE	"events.pending"
#define EVENTS_STORE_BAD	"events.pending.bad"
#define EVENTS_STORE_VERSION	1
#define EVENTS_STORE_EVENTS_MAX 128	   /* more than both queues and the running commands */
#define EVENTS_STORE_FIELDS_MAX 16	   /* an event has at most 6 today */
#define EVENTS_STORE_BYTES_MAX	(8u << 20) /* 128 events of 16 fields of 4 KiB, escaped */
#define EVENTS_STORE_DATE_LEN	11	   /* "YYYY-MM-DD" and its NUL */
#define EVENTS_STORE_AHEAD_S	600	   /* an event later than now by more does not read */

struct events_store_field {
	char *name; /* one of those its event's kind has */
	char *text;
	bool number; /* text is a JSON number */
};

struct events_store_event {
	char kind[24];
	int64_t time;	       /* epoch seconds when it happened */
	bool webhook, command; /* still to be delivered there */
	struct events_store_field *fields;
	size_t n_fields;
};

struct events_store_state {
	char summarised[EVENTS_STORE_DATE_LEN]; /* "" when none was recorded */
	struct events_store_event *events;
	size_t n_events;
};

/* The document for state; NULL only when out of memory. */
char *events_store_format(const struct events_store_state *state);
/* Reads a document into ret_state (events in file order). An event that does
 * not read (also one that happened more than EVENTS_STORE_AHEAD_S after now,
 * epoch s) is left out and counted in *ret_bad. -EINVAL when the text is not
 * such a document at all (ret_state then empty), -ENOMEM. */
int events_store_parse(const char *text, int64_t now, struct events_store_state *ret_state,
		       size_t *ret_bad);
/* Whether date ("YYYY-MM-DD") is later than tomorrow (local time) at now:
 * a summary recorded for it was sent while the clock was ahead, and would
 * silence the summaries until then if trusted. */
bool events_store_date_ahead(const char *date, int64_t now);
/* Frees what state holds and empties it; accepts an empty state. */
void events_store_state_clear(struct events_store_state *state);

struct events_store;

/* What the worker found at start, handed to the loop thread. */
struct events_store_loaded {
	struct events_store_state state; /* the callee may take the events (set n_events 0) */
	int read_error;	 /* 0, or -errno reading the file (-ENOENT is not an error) */
	bool damaged;	 /* not a document, or some events did not read */
	size_t bad;	 /* events that did not read */
	int aside_error; /* 0, or -errno renaming it to events.pending.bad; when
			  * damaged, the file is then never written in this run */
};

/* Builds the document to write now (the caller's state at this moment), or
 * NULL when out of memory; runs on the loop thread. */
typedef char *(*events_store_snapshot_fn)(void *userdata);
typedef void (*events_store_loaded_fn)(void *userdata, struct events_store_loaded *loaded);
/* A write failed (-errno) or, after one had failed, worked again (0). */
typedef void (*events_store_error_fn)(void *userdata, int error);

int events_store_new(struct loop *loop, const char *state_dir, events_store_snapshot_fn snapshot,
		     events_store_error_fn on_error, void *userdata,
		     struct events_store **ret_store);
/* Writes a last snapshot if one is due (the daemon is ending: on the calling
 * thread, after the worker's last write), then frees. Accepts NULL. */
void events_store_free(struct events_store *store);
/* Reads the file on the worker; loaded is called on the loop thread (also
 * with an empty state when the read could not be queued). */
int events_store_load(struct events_store *store, events_store_loaded_fn loaded);
/* The state changed: a snapshot is taken and written as soon as the worker
 * is free (changes meanwhile are coalesced into the next one). */
void events_store_changed(struct events_store *store);

#endif
