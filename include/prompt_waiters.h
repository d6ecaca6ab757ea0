/* prompt_waiters: the images waiting for their prompt file, indexed by
 * (folder, the file's relative name), so that a file's arrival finds its
 * waiters without walking all of them (a batch of 50,000 .txt renamed in
 * beside 50,000 waiting images would otherwise take 2.5e9 steps on the
 * loop). The entries are linked into the owner's structs; the index owns
 * only its buckets. Pure; not thread-safe (the loop's). */
#ifndef SEEDREAMD_PROMPT_WAITERS_H
#define SEEDREAMD_PROMPT_WAITERS_H

#include <stddef.h>

struct prompt_waiter {
	const void *folder;		   /* compared, never followed */
	const char *rel;		   /* the awaited file, owned by the entry's owner */
	struct prompt_waiter *prev, *next; /* its bucket's chain */
};

struct prompt_waiters {
	struct prompt_waiter **buckets; /* a power of two of them, or none yet */
	size_t n_buckets, n;
};

/* Adds e, whose folder and rel are set and stay until it is removed.
 * -ENOMEM only when the first buckets cannot be had (a table that cannot
 * grow stays as it is, slower). */
int prompt_waiters_add(struct prompt_waiters *w, struct prompt_waiter *e);
/* Removes e, which is in w. */
void prompt_waiters_remove(struct prompt_waiters *w, struct prompt_waiter *e);
/* The first waiter for (folder, rel), or NULL; then prompt_waiters_next of
 * it. Removing the one found is fine after its next is taken. */
struct prompt_waiter *prompt_waiters_first(const struct prompt_waiters *w, const void *folder,
					   const char *rel);
struct prompt_waiter *prompt_waiters_next(const struct prompt_waiter *e);
/* Frees the buckets (the entries are the owner's). */
void prompt_waiters_free(struct prompt_waiters *w);

#endif
