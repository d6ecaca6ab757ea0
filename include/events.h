/* events (prefix events_): what the config's notify: section asks to be told
 * (a file failed for good, the pause on account errors and its end, a daily
 * limit reached, the daily summary), delivered on the loop thread to
 *   - a webhook: a versioned JSON POST through the daemon's curl multi, on an
 *     easy handle of its own that never carries the API key, no redirects,
 *     retried with exponential backoff; a bounded queue (the oldest dropped);
 *   - a command: posix_spawn'ed per event on a worker thread (the spawn
 *     waits for the child's execve) with the details in SEEDREAMD_*
 *     variables and without the API key (by name or by value), stdin
 *     /dev/null, its output logged line by line from a non-blocking pipe
 *     (64 KiB per wake-up), reaped through a pidfd on the loop's epoll,
 *     killed (SIGTERM, then SIGKILL) after command_timeout, and what it left
 *     in its process group killed when it ends; a few at once, the rest
 *     queued (bounded).
 * Every text is scrubbed of the key again before it leaves. Nothing here
 * blocks the loop. All functions accept a NULL events (nothing to do). */
#ifndef SEEDREAMD_EVENTS_H
#define SEEDREAMD_EVENTS_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "http.h"
#include "loop.h"

struct events;

#define EVENTS_WEBHOOK_QUEUE	64 /* events waiting for the webhook */
#define EVENTS_WEBHOOK_TRIES	5  /* attempts per event */
#define EVENTS_COMMANDS_AT_ONCE 2
#define EVENTS_COMMAND_QUEUE	32 /* events waiting for a command slot */
#define EVENTS_BODY_VERSION	1  /* "version" of the webhook's JSON body */

/* Starts the daily summary's timer. secret (the API key, may be NULL) is
 * copied: every text sent is scrubbed of it. */
int events_new(struct loop *loop, struct http *http, const struct config *config,
	       const char *secret, struct events **ret_events);
/* Cancels deliveries under way; running commands and what they left get
 * SIGKILL (their process groups) and are reaped. */
void events_free(struct events *events);
/* A reload: new targets and events for what comes from now on. */
void events_set_config(struct events *events, const struct config *config, const char *secret);

/* A file failed for good (its .error.json is being written). */
void events_file_failed(struct events *events, const char *folder, const char *file,
			long http_status, const char *code, const char *message);
/* The API refused the account: generations stop until it answers again. */
void events_paused(struct events *events, const char *message);
void events_resumed(struct events *events, const char *message);
/* A daily limit (limit names it: "max_images_per_day", "max_spend_per_day")
 * holds generations back; folder may be NULL. Reported once per limit,
 * folder and day (day_end: the epoch second the day ends). */
void events_limit_reached(struct events *events, const char *limit, const char *folder,
			  const char *message, int64_t day_end);

/* For the daily summary: a file done, a paid answer, and at start what
 * today's done records say was generated (images, cost in micros). */
void events_file_done(struct events *events);
void events_paid(struct events *events, uint64_t images, uint64_t micros);
void events_count_earlier(struct events *events, uint64_t images, uint64_t micros);
/* What the done and error records say of today and yesterday (for a summary
 * sent after a restart), added up per folder: at start, and when a reload
 * starts notifications. */
struct events_tally {
	uint64_t done, failed, images, micros;
};
void events_count_rebuilt(struct events *events, const struct events_tally *today,
			  const struct events_tally *yesterday);

/* Keeps the events not yet delivered and the last summarised day in
 * state_dir/events.pending (see events_store.h), and delivers those kept by
 * an earlier run (an event older than 24 h is dropped) ahead of new ones;
 * a summary missed while the daemon was down goes out then. Deliveries wait
 * until the file is read (on a worker). Called once, with state_dir locked;
 * without it nothing survives a restart. 0 or -errno (then not kept). */
int events_restore(struct events *events, const char *state_dir);

/* Deliveries queued, under way or waiting to retry, and commands running. */
unsigned events_pending(const struct events *events);

#endif
