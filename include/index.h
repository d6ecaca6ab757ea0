/* index: what is already done, rebuilt from the sidecars in an output tree at
 * start. The sidecars are the "done" record; this is only a lookup table over
 * them (source path -> size, mtime, sha256, where the sidecar is). */
#ifndef SEEDREAMD_INDEX_H
#define SEEDREAMD_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct index_entry {
	char *source;             /* relative to the watched folder: the key */
	char *sidecar;            /* relative to the output folder, e.g. "sub/a.json" */
	uint64_t size;
	int64_t mtime_sec;
	long mtime_nsec;
	char sha256[65];          /* "" if unknown */
	bool failed;              /* an .error.json */
	bool reused;              /* a success that reused an earlier result: nothing paid */
	int64_t finished_at;      /* completed_at or failed_at, epoch seconds */
	/* When its answer was paid (the sidecar's paid_at), epoch seconds; 0:
	 * unknown (records of older versions), finished_at stands in. A paid
	 * failure fails, and a fetch succeeds, up to a day later. */
	int64_t paid_at;
	int64_t generated_images; /* usage.generated_images, 0 if absent; for a
				   * failure the images paid before it failed */
	/* The model the result was priced by (the sidecar's "model"), NULL if
	 * unknown. In the index, one shared copy per distinct name (valid until
	 * index_free); from index_parse_sidecar, the entry's own. */
	const char *model;
};

struct index;

int index_new(struct index **ret_index);
void index_free(struct index *index); /* accepts NULL */

size_t index_count(const struct index *index);

/* Adds or replaces the entry for entry->source (the strings are copied). When
 * both a success and an error sidecar exist for one source, the newer one by
 * finished_at wins. Returns 0 or -ENOMEM. */
int index_put(struct index *index, const struct index_entry *entry);

/* Returns the entry or NULL. The pointer stays valid until the next put or
 * remove. */
const struct index_entry *index_get(const struct index *index, const char *source);

int index_remove(struct index *index, const char *source); /* 0 or -ENOENT */

/* Parses one sidecar document (success or error) into an entry whose strings
 * (model too) point into freshly allocated memory (free with index_entry_clear).
 * `sidecar_rel` is stored as entry->sidecar. Returns 0, -EINVAL when the text
 * is not a seedreamd sidecar, or -ENOMEM. */
int index_parse_sidecar(const char *json, size_t len, const char *sidecar_rel,
			struct index_entry *ret_entry);
void index_entry_clear(struct index_entry *entry);

/* Walks output_root (recursively, skipping hidden names and `skip_dir`, an
 * absolute path that may be NULL, e.g. the done_dir for moved originals) and
 * puts every sidecar found ("*.json" that parses). Unreadable or foreign JSON
 * files are skipped and counted in *ret_skipped (may be NULL). A missing
 * output_root is not an error (nothing done yet). Returns 0 or -errno. */
int index_load_tree(struct index *index, const char *output_root, const char *skip_dir,
		    size_t *ret_skipped);

/* What a load did, for the log and tests. */
struct index_load_stats {
	int cache_result;     /* reading the cache: 0, or why not used (-ENOENT, -EINVAL...) */
	size_t dirs_cached;   /* directories whose entries came from the cache */
	size_t dirs_read;     /* directories listed and their sidecars read */
	size_t sidecars_read; /* sidecar files opened */
};

/* index_load_tree, helped by the cache at cache_path (may be NULL): a
 * directory whose device, inode, mtime and size match the cache gives its
 * entries and subdirectories from it, without a readdir or a sidecar read;
 * any other is read. A missing, foreign (another output_root/skip_dir or
 * version), truncated or corrupt (checksum) cache is ignored. */
int index_load_tree_cached(struct index *index, const char *output_root, const char *skip_dir,
			   const char *cache_path, size_t *ret_skipped,
			   struct index_load_stats *ret_stats);

/* index_load_tree_cached that stores the monotonic ms (CLOCK_MONOTONIC, as
 * loop_now_ms) into *progress_at (if not NULL) at each directory and sidecar
 * that answers, so that another thread can tell a long read that goes on
 * from one that hangs. */
int index_load_tree_progress(struct index *index, const char *output_root, const char *skip_dir,
			     const char *cache_path, size_t *ret_skipped,
			     struct index_load_stats *ret_stats, _Atomic uint64_t *progress_at);

/* Writes the cache for index over output_root at cache_path (tmp + fsync +
 * rename; its folder created 0700). Lists every directory of the tree (no
 * file is read): a directory unchanged during its listing and not modified in
 * the last 2 s is stored with the entries whose sidecar is still listed
 * there; others are left out, so the next load reads them. Blocks: on a
 * worker or at stop. 0 or -errno. */
int index_save_cache(const struct index *index, const char *output_root, const char *skip_dir,
		     const char *cache_path);

/* Whether a successful entry of this size may exist (a filter: false
 * positives, never false negatives). Cheap enough for every new file. */
bool index_may_have_size(const struct index *index, uint64_t size);

/* A successful entry with this size and SHA-256 whose source is not
 * except_source (may be NULL), or NULL. A linear walk: call it only when
 * index_may_have_size() says so. */
const struct index_entry *index_find_content(const struct index *index, uint64_t size,
					     const char *sha256, const char *except_source);
/* Like index_find_content, but every such entry, up to max, into found[]
 * (valid until the index changes). Returns how many. */
size_t index_find_contents(const struct index *index, uint64_t size, const char *sha256,
			   const char *except_source, const struct index_entry **found, size_t max);

/* Puts and removes made so far (to decide when to save the cache again). */
uint64_t index_changes(const struct index *index);

/* A copy of src for a worker to read while the loop goes on changing src;
 * index_save_cache trusts no folder changed after the copy was taken (less
 * 2 s). 0, -EINVAL or -ENOMEM. */
int index_clone(const struct index *src, struct index **ret_index);

/* Calls fn for every entry (order unspecified). */
void index_foreach(const struct index *index,
		   void (*fn)(const struct index_entry *entry, void *userdata), void *userdata);

#endif
