/* journal: paid-for results not yet written out, one small file each under
 * <state_dir>/journal, written atomically when the API answers and removed
 * once the sidecar is on disk. A crash in between costs a download after the
 * restart, never a second generation. Never logs; returns negative errno. */
#ifndef SEEDREAMD_JOURNAL_H
#define SEEDREAMD_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

struct journal_record {
	char *folder;          /* the watched folder's path */
	char *source;          /* relative to it */
	char *stem;            /* the output stem chosen for it */
	char *url;             /* the result to download */
	char *model;           /* may be NULL */
	char *result_size;     /* may be NULL */
	char *request_id;      /* may be NULL */
	cJSON *usage;          /* may be NULL */
	char sha256[65];
	uint64_t size;
	int64_t mtime_sec;
	long mtime_nsec;
	int64_t created;       /* from the API */
	int64_t generated_at;  /* epoch ms when the answer arrived */
	uint64_t elapsed_ms;   /* from the first attempt to the answer */
	unsigned attempts;
};

/* The record as JSON (NUL-terminated, caller frees), or NULL on ENOMEM. */
char *journal_record_json(const struct journal_record *rec);
/* Parses what journal_record_json wrote. 0, -EINVAL or -ENOMEM. */
int journal_record_parse(const char *json, size_t len, struct journal_record *ret_rec);
void journal_record_clear(struct journal_record *rec); /* frees members */

struct journal;

/* Opens (creating) <state_dir>/journal. */
int journal_open(const char *state_dir, struct journal **ret_journal);
void journal_close(struct journal *journal); /* accepts NULL */

int journal_write(struct journal *journal, const struct journal_record *rec);
int journal_remove(struct journal *journal, const char *folder, const char *source);

/* Calls fn for every readable record; unreadable ones are counted in
 * *ret_bad (may be NULL) and left in place for a human. */
int journal_load(struct journal *journal, void (*fn)(struct journal_record *rec, void *userdata),
		 void *userdata, size_t *ret_bad);

#endif
