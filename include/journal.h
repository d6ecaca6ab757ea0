/* journal: paid-for results not yet written out, as records appended to
 * <state_dir>/journal.log when the API answers, and "done" tombstones
 * appended once the sidecar is on disk. A crash in between costs a download
 * after the restart, never a second generation. Thread-safe: any thread may
 * write and remove at once. Never logs; returns negative errno. */
#ifndef SEEDREAMD_JOURNAL_H
#define SEEDREAMD_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* At most API_IMAGES_MAX of each, like a request; names may be any bytes. */
struct journal_sent_ref {
	char *path;	 /* absolute */
	char sha256[65]; /* of the bytes sent; "" when unknown */
};
struct journal_sent_source {
	char *name;	 /* a group's image, relative to its subfolder */
	char sha256[65]; /* "" when unknown */
	uint64_t size;
	int64_t mtime_sec;
	long mtime_nsec;
};

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
	/* Several outputs: every data[] entry, [{"url","size"} | {"error":{"code",
	 * "message"}}], so that a crash after payment fetches them all (url above
	 * is the first). NULL for one output and in records of older versions. */
	cJSON *images;
	unsigned max_images; /* the request's max_images; 0 in older records (= 1) */
	/* What was sent, for the sidecar of a result written after a restart:
	 * the prompt (NULL in older records: then the folder's prompt now), its
	 * source ("folder" | "file" | "folder+file", may be NULL) and file, the
	 * extra: fields (JSON object text, NULL when none), the references after
	 * the source and a group's images, both in the order sent. */
	char *prompt;
	char *prompt_source;
	char *prompt_file;
	char *extra_json;
	struct journal_sent_ref *references;
	size_t n_references;
	struct journal_sent_source *sources;
	size_t n_sources;
};

/* The record as JSON (NUL-terminated, caller frees), or NULL on ENOMEM. */
char *journal_record_json(const struct journal_record *rec);
/* Parses what journal_record_json wrote. 0, -EINVAL or -ENOMEM. */
int journal_record_parse(const char *json, size_t len, struct journal_record *ret_rec);
void journal_record_clear(struct journal_record *rec); /* frees members */

struct journal;

/* Opens (creating) <state_dir>/journal.log; changes nothing else, so it may
 * run before the state_dir lock is taken. */
int journal_open(const char *state_dir, struct journal **ret_journal);
void journal_close(struct journal *journal); /* accepts NULL */

/* Appends the record for (rec->folder, rec->source), replacing an earlier
 * one, and returns once it is durable. Concurrent callers share one
 * fdatasync. Blocks: call it on a worker thread. */
int journal_write(struct journal *journal, const struct journal_record *rec);
/* Appends a tombstone for (folder, source), ordered after its write but not
 * waited for. Rewrites the file without dead records when it has grown. */
int journal_remove(struct journal *journal, const char *folder, const char *source);

/* At start-up, under the state_dir lock: calls fn for every live record
 * (fn may take over the record's members, leaving it zeroed), migrating the
 * records of the old layout (<state_dir>/journal/<hash>.json) and rewriting
 * the log without dead records and torn tails. Lines that do not read are
 * counted in *ret_bad (may be NULL) and kept in <state_dir>/journal.bad for a
 * human (old-layout files stay where they are). fn is called even when the
 * rewrite fails (then the result is that error). */
int journal_load(struct journal *journal, void (*fn)(struct journal_record *rec, void *userdata),
		 void *userdata, size_t *ret_bad);

/* CRC-32 (IEEE) of data continuing crc (0 to start): the frames' checksum,
 * shared with the paid ledger (ledger.c). */
uint32_t journal_crc32(uint32_t crc, const void *data, size_t len);

/* fdatasync calls so far (group commit makes them fewer than writes). */
unsigned long journal_sync_count(struct journal *journal);
/* Tests: sleep this long before each fdatasync, as a NAS would take. */
void journal_test_set_sync_delay(struct journal *journal, unsigned usec);

#endif
