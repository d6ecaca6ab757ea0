/* ledger: every paid answer, appended to <state_dir>/paid.log, so that what
 * was paid today and this month survives a restart even when the records in
 * the output folders are gone (a paid .error.json deleted by seedreamctl
 * retry, by a retry's success or by hand). The entries are kept in memory,
 * added and read on the loop thread only; ledger_write appends the bytes on
 * a worker, under the ledger's mutex. Never logs; returns negative errno. */
#ifndef SEEDREAMD_LEDGER_H
#define SEEDREAMD_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ledger_entry {
	char *folder;	 /* the watched folder's path */
	char *source;	 /* relative to it; with paid_ms the key of one payment */
	char *model;	 /* the model it was priced by; NULL: api.model */
	int64_t paid_ms; /* epoch ms when the answer arrived (journal: generated_at) */
	unsigned images; /* as counted, at most API_IMAGES_MAX */
};

struct ledger;

/* Opens (creating) <state_dir>/paid.log and reads it, keeping the entries
 * paid at or after keep_since_s (the month's start) and rewriting the file
 * without the others and without damaged lines. *ret_created: there was no
 * ledger before (an install of an older version: its payments are only in
 * the records). Blocks: at start-up only. */
int ledger_open(const char *state_dir, int64_t keep_since_s, struct ledger **ret_ledger,
		bool *ret_created);
void ledger_close(struct ledger *ledger); /* accepts NULL */

/* Whether the payment (folder, source, paid_ms) is in the ledger. */
bool ledger_has(const struct ledger *ledger, const char *folder, const char *source,
		int64_t paid_ms);

/* Adds e (copied) in memory and returns its line for ledger_write (caller
 * frees). 0 or -ENOMEM. */
int ledger_add(struct ledger *ledger, const struct ledger_entry *e, char **ret_line,
	       size_t *ret_len);

/* Appends lines made by ledger_add and returns once they are durable.
 * Blocks: call it on a worker thread. */
int ledger_write(struct ledger *ledger, const char *lines, size_t len);

/* True the first time for folder (then remembered until ledger_close): a
 * folder's records are taken in once. -ENOMEM as false with *ret_r set. */
bool ledger_first_seed(struct ledger *ledger, const char *folder, int *ret_r);

void ledger_foreach(const struct ledger *ledger,
		    void (*fn)(const struct ledger_entry *e, void *userdata), void *userdata);

/* The start of the local month of now_s (epoch seconds). */
int64_t ledger_month_start(int64_t now_s);

#endif
