/* twin_map: see twin_map.h. A chained hash table of entries; each entry keeps
 * its followers in an array (a few copies at once, not thousands). */
#include "twin_map.h"

#include "fnv.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define TWIN_MAP_MIN 64

struct twin_entry {
	struct twin_entry *next; /* the bucket's chain */
	uint64_t hash;
	const void *owner;
	uint64_t size;
	char sha256[65];
	void *leader;
	void **followers;
	size_t n_followers, cap_followers;
};

struct twin_map {
	struct twin_entry **buckets;
	size_t n_buckets, n_entries;
};

static uint64_t twin_hash(const void *owner, uint64_t size, const char *sha256)
{
	uint64_t h = FNV1A64_INIT;

	h = fnv1a64_update(h, &owner, sizeof(owner));
	h = fnv1a64_update(h, &size, sizeof(size));
	return fnv1a64_update(h, sha256, strlen(sha256));
}

int twin_map_new(struct twin_map **ret_map)
{
	struct twin_map *map = calloc(1, sizeof(*map));

	if (!map)
		return -ENOMEM;
	map->buckets = calloc(TWIN_MAP_MIN, sizeof(*map->buckets));
	if (!map->buckets) {
		free(map);
		return -ENOMEM;
	}
	map->n_buckets = TWIN_MAP_MIN;
	*ret_map = map;
	return 0;
}

static void twin_entry_free(struct twin_entry *e)
{
	free(e->followers);
	free(e);
}

void twin_map_free(struct twin_map *map)
{
	if (!map)
		return;
	for (size_t i = 0; i < map->n_buckets; i++) {
		struct twin_entry *e = map->buckets[i];
		while (e) {
			struct twin_entry *next = e->next;
			twin_entry_free(e);
			e = next;
		}
	}
	free(map->buckets);
	free(map);
}

size_t twin_map_count(const struct twin_map *map)
{
	return map->n_entries;
}

static bool twin_entry_keyed(const struct twin_entry *e, uint64_t h, const void *owner,
			     uint64_t size, const char *sha256)
{
	return e->hash == h && e->owner == owner && e->size == size &&
	       strcmp(e->sha256, sha256) == 0;
}

bool twin_entry_is(const struct twin_entry *entry, const void *owner, uint64_t size,
		   const char *sha256)
{
	return twin_entry_keyed(entry, twin_hash(owner, size, sha256), owner, size, sha256);
}

static struct twin_entry *twin_chain_find(struct twin_entry *e, uint64_t h, const void *owner,
					  uint64_t size, const char *sha256)
{
	for (; e; e = e->next)
		if (twin_entry_keyed(e, h, owner, size, sha256))
			return e;
	return NULL;
}

struct twin_entry *twin_map_find(const struct twin_map *map, const void *owner, uint64_t size,
				 const char *sha256)
{
	uint64_t h = twin_hash(owner, size, sha256);

	return twin_chain_find(map->buckets[h % map->n_buckets], h, owner, size, sha256);
}

/* Entries of one key share a bucket: the rest of its chain holds the others. */
struct twin_entry *twin_map_next(const struct twin_entry *entry)
{
	return twin_chain_find(entry->next, entry->hash, entry->owner, entry->size, entry->sha256);
}

/* Doubles the buckets; a failed allocation only leaves the chains longer. */
static void twin_map_grow(struct twin_map *map)
{
	size_t n = map->n_buckets * 2;
	struct twin_entry **b = calloc(n, sizeof(*b));

	if (!b)
		return;
	for (size_t i = 0; i < map->n_buckets; i++) {
		struct twin_entry *e = map->buckets[i];
		while (e) {
			struct twin_entry *next = e->next;
			e->next = b[e->hash % n];
			b[e->hash % n] = e;
			e = next;
		}
	}
	free(map->buckets);
	map->buckets = b;
	map->n_buckets = n;
}

int twin_map_lead(struct twin_map *map, const void *owner, uint64_t size, const char *sha256,
		  void *leader, struct twin_entry **ret_entry)
{
	struct twin_entry *e;

	if (!leader || !sha256[0] || strlen(sha256) >= sizeof(e->sha256))
		return -EINVAL;
	if (map->n_entries >= map->n_buckets)
		twin_map_grow(map);
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->hash = twin_hash(owner, size, sha256);
	e->owner = owner;
	e->size = size;
	memcpy(e->sha256, sha256, strlen(sha256) + 1);
	e->leader = leader;
	e->next = map->buckets[e->hash % map->n_buckets];
	map->buckets[e->hash % map->n_buckets] = e;
	map->n_entries++;
	*ret_entry = e;
	return 0;
}

void *twin_entry_leader(const struct twin_entry *entry)
{
	return entry->leader;
}

size_t twin_entry_followers(const struct twin_entry *entry)
{
	return entry->n_followers;
}

int twin_entry_follow(struct twin_entry *entry, void *follower)
{
	if (entry->n_followers == entry->cap_followers) {
		size_t cap = entry->cap_followers ? entry->cap_followers * 2 : 4;
		void **f = realloc(entry->followers, cap * sizeof(*f));
		if (!f)
			return -ENOMEM;
		entry->followers = f;
		entry->cap_followers = cap;
	}
	entry->followers[entry->n_followers++] = follower;
	return 0;
}

int twin_entry_unfollow(struct twin_entry *entry, void *follower)
{
	for (size_t i = 0; i < entry->n_followers; i++) {
		if (entry->followers[i] != follower)
			continue;
		/* Keeps the order: the first to come is released first. */
		memmove(&entry->followers[i], &entry->followers[i + 1],
			(entry->n_followers - i - 1) * sizeof(*entry->followers));
		entry->n_followers--;
		return 0;
	}
	return -ENOENT;
}

size_t twin_map_end(struct twin_map *map, struct twin_entry *entry, void ***ret_followers)
{
	struct twin_entry **pp = &map->buckets[entry->hash % map->n_buckets];
	size_t n = entry->n_followers;

	while (*pp != entry)
		pp = &(*pp)->next;
	*pp = entry->next;
	map->n_entries--;
	*ret_followers = n ? entry->followers : NULL;
	if (!n)
		free(entry->followers);
	entry->followers = NULL;
	twin_entry_free(entry);
	return n;
}

void *twin_entry_promote(struct twin_entry *entry)
{
	if (!entry->n_followers)
		return NULL;
	entry->leader = entry->followers[0];
	entry->n_followers--;
	memmove(&entry->followers[0], &entry->followers[1],
		entry->n_followers * sizeof(*entry->followers));
	return entry->leader;
}
