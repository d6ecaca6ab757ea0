/* twin_map: the loop's lookup from an image's content to the job that is
 * already paying for it, so that a copy in flight at the same time waits for
 * that result instead of being paid again. Keyed by (owner, size, sha256,
 * prompt): owner is the folder (compared as a pointer), the prompt is the one
 * the image would be sent with (a per-file prompt makes another result). Each
 * entry has one leader and the followers waiting on it. Pure: no I/O, no
 * logging, no clock; the loop thread is its only user (no lock). */
#ifndef SEEDREAMD_TWIN_MAP_H
#define SEEDREAMD_TWIN_MAP_H

#include <stddef.h>
#include <stdint.h>

struct twin_map;
struct twin_entry;

int twin_map_new(struct twin_map **ret_map); /* 0 or -ENOMEM */
void twin_map_free(struct twin_map *map);    /* accepts NULL; entries go with it */
size_t twin_map_count(const struct twin_map *map);

/* The entry for the key, or NULL. sha256 is 64 hex digits. */
struct twin_entry *twin_map_find(const struct twin_map *map, const void *owner, uint64_t size,
				 const char *sha256, const char *prompt);
/* Makes leader lead the key (the key strings are copied). -EEXIST when
 * the key has a leader already (*ret_entry is then that entry), -EINVAL for
 * an empty sha256 or a NULL leader, -ENOMEM. */
int twin_map_lead(struct twin_map *map, const void *owner, uint64_t size, const char *sha256,
		  const char *prompt, void *leader, struct twin_entry **ret_entry);
void *twin_entry_leader(const struct twin_entry *entry);
size_t twin_entry_followers(const struct twin_entry *entry);

/* follower waits on entry's leader. 0, -EEXIST (already waits), -ENOMEM. */
int twin_entry_follow(struct twin_entry *entry, void *follower);
/* follower no longer waits (looked at anew, or gone). 0 or -ENOENT. */
int twin_entry_unfollow(struct twin_entry *entry, void *follower);

/* The leader ends: the entry is removed and its followers, in the order they
 * came, handed to the caller (*ret_followers, free() it; NULL when none).
 * Returns how many. */
size_t twin_map_end(struct twin_map *map, struct twin_entry *entry, void ***ret_followers);

#endif
