#include "prompt_waiters.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fnv.h"

#define PROMPT_WAITERS_MIN 64

static size_t prompt_waiters_bucket(const void *folder, const char *rel, size_t n_buckets)
{
	uint64_t seed = FNV1A64_INIT ^ (uint64_t)(uintptr_t)folder;

	return (size_t)(fnv1a64_update(seed, rel, strlen(rel)) & (n_buckets - 1));
}

static void prompt_waiters_link(struct prompt_waiter **buckets, size_t n_buckets,
				struct prompt_waiter *e)
{
	struct prompt_waiter **head = &buckets[prompt_waiters_bucket(e->folder, e->rel, n_buckets)];

	e->prev = NULL;
	e->next = *head;
	if (*head)
		(*head)->prev = e;
	*head = e;
}

static int prompt_waiters_resize(struct prompt_waiters *w, size_t n_buckets)
{
	struct prompt_waiter **buckets = calloc(n_buckets, sizeof(*buckets));

	if (!buckets)
		return -ENOMEM;
	for (size_t i = 0; i < w->n_buckets; i++) {
		struct prompt_waiter *e = w->buckets[i], *next;

		for (; e; e = next) {
			next = e->next;
			prompt_waiters_link(buckets, n_buckets, e);
		}
	}
	free(w->buckets);
	w->buckets = buckets;
	w->n_buckets = n_buckets;
	return 0;
}

int prompt_waiters_add(struct prompt_waiters *w, struct prompt_waiter *e)
{
	if (!w->buckets) {
		int r = prompt_waiters_resize(w, PROMPT_WAITERS_MIN);

		if (r < 0)
			return r;
	} else if (w->n >= w->n_buckets && w->n_buckets <= SIZE_MAX / 2 / sizeof(*w->buckets)) {
		/* Longer chains are only slower: a failed growth is not fatal. */
		(void)prompt_waiters_resize(w, w->n_buckets * 2);
	}
	prompt_waiters_link(w->buckets, w->n_buckets, e);
	w->n++;
	return 0;
}

void prompt_waiters_remove(struct prompt_waiters *w, struct prompt_waiter *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		w->buckets[prompt_waiters_bucket(e->folder, e->rel, w->n_buckets)] = e->next;
	if (e->next)
		e->next->prev = e->prev;
	e->prev = e->next = NULL;
	w->n--;
}

static struct prompt_waiter *prompt_waiters_match(struct prompt_waiter *e, const void *folder,
						  const char *rel)
{
	while (e && (e->folder != folder || strcmp(e->rel, rel) != 0))
		e = e->next;
	return e;
}

struct prompt_waiter *prompt_waiters_first(const struct prompt_waiters *w, const void *folder,
					   const char *rel)
{
	if (!w->buckets)
		return NULL;
	return prompt_waiters_match(w->buckets[prompt_waiters_bucket(folder, rel, w->n_buckets)],
				    folder, rel);
}

struct prompt_waiter *prompt_waiters_next(const struct prompt_waiter *e)
{
	return prompt_waiters_match(e->next, e->folder, e->rel);
}

void prompt_waiters_free(struct prompt_waiters *w)
{
	free(w->buckets);
	memset(w, 0, sizeof(*w));
}
