/* twin_map: the loop's lookup from an image's content to the job that is
 * already paying for it, so that a copy in flight at the same time waits for
 * that result instead of being paid again. Keyed by (owner, size, sha256):
 * owner is the folder (compared as a pointer). One content may have several
 * entries, one per leader: the caller tells them apart by what the leader
 * would be sent with now (its prompt, which a reload or a per-file prompt
 * changes), so the map keeps no prompt that could go stale. Each entry has
 * one leader and the followers waiting on it. Pure: no I/O, no logging, no
 * clock; the loop thread is its only user (no lock). */
#ifndef SEEDREAMD_TWIN_MAP_H
#define SEEDREAMD_TWIN_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct twin_map;
struct twin_entry;

int twin_map_new(struct twin_map **ret_map); /* 0 or -ENOMEM */
void twin_map_free(struct twin_map *map);    /* accepts NULL; entries go with it */
size_t twin_map_count(const struct twin_map *map);

/* The first entry for the key, or NULL; twin_map_next gives the next entry
 * of the same key (another leader of the same content), or NULL. sha256 is
 * 64 hex digits. */
struct twin_entry *twin_map_find(const struct twin_map *map, const void *owner, uint64_t size,
				 const char *sha256);
struct twin_entry *twin_map_next(const struct twin_entry *entry);
/* A new entry for the key led by leader (sha256 is copied), beside any the
 * key has. 0, -EINVAL for an empty sha256 or a NULL leader, -ENOMEM. */
int twin_map_lead(struct twin_map *map, const void *owner, uint64_t size, const char *sha256,
		  void *leader, struct twin_entry **ret_entry);
void *twin_entry_leader(const struct twin_entry *entry);
size_t twin_entry_followers(const struct twin_entry *entry);
/* Whether entry is of this key (a leader checked again may have changed). */
bool twin_entry_is(const struct twin_entry *entry, const void *owner, uint64_t size,
		   const char *sha256);

/* follower waits on entry's leader (it waits on no entry yet). 0 or -ENOMEM. */
int twin_entry_follow(struct twin_entry *entry, void *follower);
/* follower no longer waits (looked at anew, or gone). 0 or -ENOENT. */
int twin_entry_unfollow(struct twin_entry *entry, void *follower);

/* The leader ends: the entry is removed and its followers, in the order they
 * came, handed to the caller (*ret_followers, free() it; NULL when none).
 * Returns how many. */
size_t twin_map_end(struct twin_map *map, struct twin_entry *entry, void ***ret_followers);
/* The leader ends without a result: the first follower leads the entry now
 * (and is returned), the others keep waiting, on it. NULL, and the entry
 * unchanged, when nobody waits. */
void *twin_entry_promote(struct twin_entry *entry);

#endif
