#include "index.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


#include "dirlist.h"
#include "fdio.h"
#include "fnv.h"
#include "output.h"
#include "sidecar.h"
#include "textbuf.h"

#define INDEX_MIN_CAPACITY 64
/* A sidecar larger than this is not one of ours. */
#define WALK_DEPTH_MAX	 64

/* One allocation per entry: the public entry, its hash, then both strings. */
struct node {
	struct index_entry entry;
	uint64_t hash;
	char strings[];
};

/* Open addressing with linear probing and backward-shift deletion, so there
 * are no tombstones and lookups stay short however many removals happen. */
#define INDEX_SIZE_BITS (1u << 16)

struct index {
	struct node **slots;
	size_t capacity; /* a power of two */
	size_t count;
	/* A filter over the sizes of successful sources: a new file whose size
	 * was never done cannot be a copy of one, so it needs no hashing. */
	uint64_t sizes[INDEX_SIZE_BITS / 64];
	uint64_t changes;      /* puts and removes so far */
	struct timespec taken; /* a clone: when it was taken (else zero) */
	/* Model names, one copy each, that entries point at: 100,000 entries
	 * of a few models cost a pointer each, not a string. A set by open
	 * addressing; never shrinks (a model stays known until index_free). */
	char **models;
	size_t models_cap, n_models;
};

static size_t size_bit(uint64_t size)
{
	return (size_t)((size * 0x9e3779b97f4a7c15ULL) >> 48) % INDEX_SIZE_BITS;
}

/* The index's copy of model in *ret (NULL for NULL or ""). 0 or -ENOMEM. */
static int intern_model(struct index *index, const char *model, const char **ret)
{
	size_t mask, i;

	*ret = NULL;
	if (!model || !model[0])
		return 0;
	if ((index->n_models + 1) * 4 > index->models_cap * 3) {
		size_t cap = index->models_cap ? index->models_cap * 2 : 8;
		char **set = calloc(cap, sizeof(*set));

		if (!set)
			return -ENOMEM;
		for (size_t k = 0; k < index->models_cap; k++) {
			char *m = index->models[k];

			if (!m)
				continue;
			for (i = (size_t)fnv1a64_str(m) & (cap - 1); set[i];
			     i = (i + 1) & (cap - 1))
				;
			set[i] = m;
		}
		free(index->models);
		index->models = set;
		index->models_cap = cap;
	}
	mask = index->models_cap - 1;
	for (i = (size_t)fnv1a64_str(model) & mask; index->models[i]; i = (i + 1) & mask) {
		if (strcmp(index->models[i], model) == 0) {
			*ret = index->models[i];
			return 0;
		}
	}
	index->models[i] = strdup(model);
	if (!index->models[i])
		return -ENOMEM;
	index->n_models++;
	*ret = index->models[i];
	return 0;
}

int index_new(struct index **ret_index)
{
	struct index *index;

	if (!ret_index)
		return -EINVAL;
	index = calloc(1, sizeof(*index));
	if (!index)
		return -ENOMEM;
	index->slots = calloc(INDEX_MIN_CAPACITY, sizeof(*index->slots));
	if (!index->slots) {
		free(index);
		return -ENOMEM;
	}
	index->capacity = INDEX_MIN_CAPACITY;
	*ret_index = index;
	return 0;
}

void index_free(struct index *index)
{
	if (!index)
		return;
	for (size_t i = 0; i < index->capacity; i++)
		free(index->slots[i]);
	free(index->slots);
	for (size_t i = 0; i < index->models_cap; i++)
		free(index->models[i]);
	free(index->models);
	free(index);
}

size_t index_count(const struct index *index)
{
	return index ? index->count : 0;
}

/* The slot holding source, or the empty slot where it would go. */
static size_t find_slot(const struct index *index, const char *source, uint64_t hash)
{
	size_t mask = index->capacity - 1;
	size_t i = (size_t)hash & mask;

	while (index->slots[i]) {
		const struct node *n = index->slots[i];

		if (n->hash == hash && strcmp(n->entry.source, source) == 0)
			break;
		i = (i + 1) & mask;
	}
	return i;
}

static int grow(struct index *index)
{
	size_t capacity = index->capacity * 2;
	struct node **slots, **old = index->slots;
	size_t old_capacity = index->capacity;

	if (capacity < index->capacity)
		return -ENOMEM;
	slots = calloc(capacity, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	index->slots = slots;
	index->capacity = capacity;
	for (size_t i = 0; i < old_capacity; i++) {
		size_t mask = capacity - 1, j;

		if (!old[i])
			continue;
		for (j = (size_t)old[i]->hash & mask; slots[j]; j = (j + 1) & mask)
			;
		slots[j] = old[i];
	}
	free(old);
	return 0;
}

static struct node *node_new(const struct index_entry *entry, uint64_t hash)
{
	const char *sidecar = entry->sidecar ? entry->sidecar : "";
	size_t slen = strlen(entry->source) + 1, clen = strlen(sidecar) + 1;
	struct node *n;

	n = malloc(sizeof(*n) + slen + clen);
	if (!n)
		return NULL;
	n->entry = *entry;
	n->hash = hash;
	memcpy(n->strings, entry->source, slen);
	memcpy(n->strings + slen, sidecar, clen);
	n->entry.source = n->strings;
	n->entry.sidecar = n->strings + slen;
	/* The caller's array need not be terminated. */
	n->entry.sha256[sizeof(n->entry.sha256) - 1] = '\0';
	return n;
}

int index_put(struct index *index, const struct index_entry *entry)
{
	struct node *n;
	uint64_t hash;
	size_t i;
	int r;

	if (!index || !entry || !entry->source)
		return -EINVAL;
	if (!entry->failed && entry->sha256[0])
		index->sizes[size_bit(entry->size) / 64] |= 1ULL << (size_bit(entry->size) % 64);
	hash = fnv1a64_str(entry->source);
	i = find_slot(index, entry->source, hash);
	if (index->slots[i] && index->slots[i]->entry.finished_at > entry->finished_at)
		return 0;
	n = node_new(entry, hash);
	if (!n)
		return -ENOMEM;
	r = intern_model(index, entry->model, &n->entry.model);
	if (r < 0) {
		free(n);
		return r;
	}
	index->changes++;
	if (index->slots[i]) {
		free(index->slots[i]);
		index->slots[i] = n;
		return 0;
	}
	/* Keep the load factor at or below 3/4. */
	if ((index->count + 1) * 4 > index->capacity * 3) {
		r = grow(index);
		if (r < 0) {
			free(n);
			return r;
		}
		i = find_slot(index, entry->source, hash);
	}
	index->slots[i] = n;
	index->count++;
	return 0;
}

const struct index_entry *index_get(const struct index *index, const char *source)
{
	size_t i;

	if (!index || !source)
		return NULL;
	i = find_slot(index, source, fnv1a64_str(source));
	return index->slots[i] ? &index->slots[i]->entry : NULL;
}

int index_remove(struct index *index, const char *source)
{
	size_t mask, i, j;

	if (!index || !source)
		return -ENOENT;
	mask = index->capacity - 1;
	i = find_slot(index, source, fnv1a64_str(source));
	if (!index->slots[i])
		return -ENOENT;
	free(index->slots[i]);
	index->slots[i] = NULL;
	index->count--;
	index->changes++;
	/* Backward shift: pull later members of the probe run into the hole
	 * unless their home slot lies cyclically in (i, j]. */
	for (j = (i + 1) & mask; index->slots[j]; j = (j + 1) & mask) {
		size_t home = (size_t)index->slots[j]->hash & mask;

		if (((j - home) & mask) >= ((j - i) & mask)) {
			index->slots[i] = index->slots[j];
			index->slots[j] = NULL;
			i = j;
		}
	}
	return 0;
}

uint64_t index_changes(const struct index *index)
{
	return index ? index->changes : 0;
}

int index_clone(const struct index *src, struct index **ret_index)
{
	struct index *index;

	if (!src || !ret_index)
		return -EINVAL;
	index = calloc(1, sizeof(*index));
	if (!index)
		return -ENOMEM;
	index->slots = calloc(src->capacity, sizeof(*index->slots));
	if (!index->slots) {
		free(index);
		return -ENOMEM;
	}
	index->capacity = src->capacity;
	for (size_t i = 0; i < src->capacity; i++) {
		const struct node *n = src->slots[i];
		struct node *copy;

		if (!n)
			continue;
		copy = node_new(&n->entry, n->hash);
		if (!copy) {
			index_free(index);
			return -ENOMEM;
		}
		index->slots[i] = copy;
		/* The clone's own copy: the source's set may grow meanwhile. */
		if (intern_model(index, n->entry.model, &copy->entry.model) < 0) {
			index_free(index);
			return -ENOMEM;
		}
	}
	index->count = src->count;
	index->changes = src->changes;
	memcpy(index->sizes, src->sizes, sizeof(index->sizes));
	(void)clock_gettime(CLOCK_REALTIME, &index->taken);
	*ret_index = index;
	return 0;
}

void index_foreach(const struct index *index,
		   void (*fn)(const struct index_entry *entry, void *userdata), void *userdata)
{
	if (!index || !fn)
		return;
	for (size_t i = 0; i < index->capacity; i++)
		if (index->slots[i])
			fn(&index->slots[i]->entry, userdata);
}

void index_entry_clear(struct index_entry *entry)
{
	if (!entry)
		return;
	free(entry->source);
	free(entry->sidecar);
	free((char *)entry->model);
	memset(entry, 0, sizeof(*entry));
}

int index_parse_sidecar(const char *json, size_t len, const char *sidecar_rel,
			struct index_entry *ret_entry)
{
	struct sidecar_doc d;
	int r;

	if (!ret_entry)
		return -EINVAL;
	memset(ret_entry, 0, sizeof(*ret_entry));
	r = sidecar_parse(json, len, &d);
	if (r < 0)
		return r;
	ret_entry->sidecar = strdup(sidecar_rel ? sidecar_rel : "");
	if (!ret_entry->sidecar) {
		sidecar_doc_clear(&d);
		return -ENOMEM;
	}
	ret_entry->source = d.source;
	d.source = NULL;
	ret_entry->size = d.size;
	ret_entry->mtime_sec = d.mtime_sec;
	ret_entry->mtime_nsec = d.mtime_nsec;
	memcpy(ret_entry->sha256, d.sha256, sizeof(ret_entry->sha256));
	ret_entry->failed = d.failed;
	ret_entry->finished_at = d.finished_at;
	ret_entry->paid_at = d.paid_at;
	ret_entry->generated_images = d.generated_images;
	ret_entry->model = d.model;
	d.model = NULL;
	ret_entry->reused = d.reused;
	sidecar_doc_clear(&d);
	return 0;
}

/* A growable relative path ("sub/dir/") without length limits. */
struct path {
	char *buf;
	size_t len;
	size_t cap;
};

static int path_push(struct path *p, const char *name, bool dir)
{
	size_t n = strlen(name), need = p->len + n + 2;

	if (need > p->cap) {
		size_t cap = p->cap ? p->cap : 256;
		char *buf;

		while (cap < need)
			cap *= 2;
		buf = realloc(p->buf, cap);
		if (!buf)
			return -ENOMEM;
		p->buf = buf;
		p->cap = cap;
	}
	memcpy(p->buf + p->len, name, n);
	p->len += n;
	if (dir)
		p->buf[p->len++] = '/';
	p->buf[p->len] = '\0';
	return 0;
}

struct walk {
	struct index *index;
	struct path path;
	bool have_skip;
	dev_t skip_dev;
	ino_t skip_ino;
	size_t skipped;
	char *buf; /* reused read buffer */
	size_t bufcap;
	const struct cache *cache; /* may be NULL */
	struct index_load_stats stats;
	_Atomic uint64_t *progress_at; /* may be NULL */
};

/* Another directory or sidecar answered: the read goes on. */
static void walk_progress(struct walk *w)
{
	struct timespec ts;

	if (!w->progress_at)
		return;
	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	atomic_store_explicit(w->progress_at,
			      (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u,
			      memory_order_relaxed);
}

struct cache;
struct cache_dir;
static int cache_read(const char *path, const char *output_root, const char *skip_dir,
		      struct cache **ret);
static void cache_free(struct cache *c);
/* The cached directory rel when its stat still matches, else NULL. */
static const struct cache_dir *cache_match(const struct cache *c, const char *rel,
					   const struct stat *st);
static int walk_cached(struct walk *w, const struct cache_dir *d, int dirfd, unsigned depth);

static bool is_resource_error(int r)
{
	return r == -ENOMEM || r == -EMFILE || r == -ENFILE;
}

/* Reads fd (a regular file of `size` bytes, at most SIDECAR_RECORD_MAX) into
 * w->buf. Returns the length or -errno; -EFBIG when it grew past the cap. */
static ssize_t read_sidecar(struct walk *w, int fd, size_t size)
{
	ssize_t got;
	size_t len;

	if (size + 2 > w->bufcap) {
		char *buf = realloc(w->buf, size + 2);

		if (!buf)
			return -ENOMEM;
		w->buf = buf;
		w->bufcap = size + 2;
	}
	/* Reading one byte past st_size notices a file that grew. */
	got = fdio_read_full(fd, w->buf, size + 1);
	if (got < 0)
		return got;
	len = (size_t)got;
	if (len > size)
		return -EFBIG;
	w->buf[len] = '\0';
	return (ssize_t)len;
}

/* One "*.json" file: 0 when put or skipped, or a fatal -errno. */
static int load_file(struct walk *w, int dirfd, const char *name)
{
	struct index_entry e;
	struct stat st;
	size_t base = w->path.len;
	ssize_t len;
	int fd, r;

	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		r = -errno;
		if (is_resource_error(r))
			return r;
		/* A symlink (ELOOP) or a file removed meanwhile is no sidecar. */
		if (r != -ELOOP && r != -ENOENT)
			w->skipped++;
		return 0;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > SIDECAR_RECORD_MAX) {
		w->skipped++;
		r = 0;
		goto out;
	}
	w->stats.sidecars_read++;
	walk_progress(w);
	len = read_sidecar(w, fd, (size_t)st.st_size);
	if (len < 0) {
		r = (int)len;
		if (!is_resource_error(r)) {
			w->skipped++;
			r = 0;
		}
		goto out;
	}
	r = path_push(&w->path, name, false);
	if (r < 0)
		goto out;
	r = index_parse_sidecar(w->buf, (size_t)len, w->path.buf, &e);
	w->path.len = base;
	w->path.buf[base] = '\0';
	if (r == -EINVAL) {
		w->skipped++;
		r = 0;
		goto out;
	}
	if (r < 0)
		goto out;
	r = index_put(w->index, &e);
	index_entry_clear(&e);
out:
	(void)close(fd);
	return r;
}

static bool has_json_suffix(const char *name)
{
	size_t n = strlen(name);

	return n > 5 && strcmp(name + n - 5, ".json") == 0;
}

static int walk_dir(struct walk *w, int dirfd, unsigned depth);

/* From the cache when it vouches for the directory, else by reading it. */
static int walk_any(struct walk *w, int dirfd, const struct stat *st, unsigned depth)
{
	const struct cache_dir *d = w->cache ? cache_match(w->cache, w->path.buf, st) : NULL;

	walk_progress(w);
	if (d)
		return walk_cached(w, d, dirfd, depth);
	w->stats.dirs_read++;
	return walk_dir(w, dirfd, depth);
}

/* A subdirectory: 0 when walked or passed over, or a fatal -errno. */
static int enter_dir(struct walk *w, int dirfd, const char *name, unsigned depth)
{
	size_t base = w->path.len;
	struct stat st;
	int fd, r;

	if (depth >= WALK_DEPTH_MAX)
		return 0;
	fd = dirlist_open_sub(dirfd, name);
	if (fd < 0)
		return is_resource_error(fd) ? fd : 0;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		(void)close(fd);
		return is_resource_error(r) ? r : 0;
	}
	if (w->have_skip && st.st_dev == w->skip_dev && st.st_ino == w->skip_ino) {
		(void)close(fd);
		return 0;
	}
	r = path_push(&w->path, name, true);
	if (r < 0) {
		(void)close(fd);
		return r;
	}
	r = walk_any(w, fd, &st, depth + 1);
	w->path.len = base;
	w->path.buf[base] = '\0';
	return r;
}

/* Walks the directory dirfd (consumed). */
static int walk_dir(struct walk *w, int dirfd, unsigned depth)
{
	struct dirlist list;
	const char *name;
	unsigned char type;
	int r;

	r = dirlist_open(&list, dirfd);
	if (r < 0)
		return r;
	while ((name = dirlist_next(&list, &type, &r))) {
		if (name[0] == '.')
			continue;
		if (type == DT_DIR)
			r = enter_dir(w, dirfd, name, depth);
		else if (type == DT_REG && has_json_suffix(name))
			r = load_file(w, dirfd, name);
		if (r < 0)
			break;
	}
	dirlist_close(&list);
	return r;
}

int index_load_tree_cached(struct index *index, const char *output_root, const char *skip_dir,
			   const char *cache_path, size_t *ret_skipped,
			   struct index_load_stats *ret_stats)
{
	return index_load_tree_progress(index, output_root, skip_dir, cache_path, ret_skipped,
					ret_stats, NULL);
}

int index_load_tree_progress(struct index *index, const char *output_root, const char *skip_dir,
			     const char *cache_path, size_t *ret_skipped,
			     struct index_load_stats *ret_stats, _Atomic uint64_t *progress_at)
{
	struct walk w = {.index = index, .progress_at = progress_at};
	struct cache *cache = NULL;
	struct stat st;
	int fd, r;

	if (ret_skipped)
		*ret_skipped = 0;
	if (ret_stats)
		memset(ret_stats, 0, sizeof(*ret_stats));
	if (!index || !output_root)
		return -EINVAL;
	if (skip_dir && stat(skip_dir, &st) == 0) {
		w.have_skip = true;
		w.skip_dev = st.st_dev;
		w.skip_ino = st.st_ino;
	}
	if (cache_path) {
		r = cache_read(cache_path, output_root, skip_dir, &cache);
		if (r == -ENOMEM)
			return r;
		w.stats.cache_result = r;
		w.cache = cache;
	}
	fd = open(output_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		r = errno == ENOENT ? 0 : -errno;
		goto out;
	}
	r = path_push(&w.path, "", false);
	if (r < 0 || fstat(fd, &st) < 0) {
		r = r < 0 ? r : -errno;
		(void)close(fd);
		goto out;
	}
	r = walk_any(&w, fd, &st, 0);
out:
	if (ret_skipped)
		*ret_skipped = w.skipped;
	if (ret_stats)
		*ret_stats = w.stats;
	cache_free(cache);
	free(w.path.buf);
	free(w.buf);
	return r;
}

int index_load_tree(struct index *index, const char *output_root, const char *skip_dir,
		    size_t *ret_skipped)
{
	return index_load_tree_cached(index, output_root, skip_dir, NULL, ret_skipped, NULL);
}

bool index_may_have_size(const struct index *index, uint64_t size)
{
	return index->sizes[size_bit(size) / 64] & (1ULL << (size_bit(size) % 64));
}

const struct index_entry *index_find_content(const struct index *index, uint64_t size,
					     const char *sha256, const char *except_source)
{
	for (size_t i = 0; i < index->capacity; i++) {
		const struct node *n = index->slots[i];
		if (n && !n->entry.failed && n->entry.size == size &&
		    strcmp(n->entry.sha256, sha256) == 0 &&
		    (!except_source || strcmp(n->entry.source, except_source) != 0))
			return &n->entry;
	}
	return NULL;
}

size_t index_find_contents(const struct index *index, uint64_t size, const char *sha256,
			   const char *except_source, const struct index_entry **found, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < index->capacity && n < max; i++) {
		const struct node *nd = index->slots[i];
		if (nd && !nd->entry.failed && nd->entry.size == size &&
		    strcmp(nd->entry.sha256, sha256) == 0 &&
		    (!except_source || strcmp(nd->entry.source, except_source) != 0))
			found[n++] = &nd->entry;
	}
	return n;
}

/* ---- the done-record cache ------------------------------------------------
 *
 * Reading 100,000 sidecars at every start costs seconds (minutes on a share).
 * The cache keeps the entries per output directory together with the
 * directory's (device, inode, mtime, size) when it was written. At the next
 * start a directory whose stat still matches gives its entries and its list of
 * subdirectories from the cache, without a readdir or a sidecar read; any
 * other is read as before. The daemon writes every sidecar by rename, which
 * changes the directory's mtime, and so does a deletion or a new
 * subdirectory. A directory changed within INDEX_CACHE_RACY_S of writing the
 * cache is not trusted (a later change could leave the same mtime).
 *
 * Layout (host byte order; a cache never moves between machines):
 *   magic, u32 version, str output_root, str skip_dir,
 *   u64 n_dirs, per dir: str rel ("" or "a/b/"), u64 dev, ino, i64 mtime
 *   sec, nsec, u64 size, u8 trusted, u64 n_entries, then the entries:
 *   str source, str sidecar, u64 size, i64 mtime sec, nsec, str sha256,
 *   u8 failed, i64 finished_at, generated_images, str model ("" none), u8 reused,
 *   i64 paid_at;
 *   u64 FNV-1a over everything before.
 * A str is a u32 length that counts a final NUL, then the bytes. */

#define INDEX_CACHE_MAGIC   "SEEDREAMD-INDEX\n"
#define INDEX_CACHE_VERSION 4u
#define INDEX_CACHE_RACY_S  2
#define INDEX_CACHE_MAX	    ((size_t)1 << 31)

static void put_u64(struct textbuf *b, uint64_t v)
{
	textbuf_put(b, &v, sizeof(v));
}

static void put_i64(struct textbuf *b, int64_t v)
{
	textbuf_put(b, &v, sizeof(v));
}

static void put_str(struct textbuf *b, const char *s)
{
	uint32_t n = (uint32_t)strlen(s) + 1;

	textbuf_put(b, &n, sizeof(n));
	textbuf_put(b, s, n);
}

struct rbuf {
	const char *p;
	size_t len, pos;
	bool bad;
};

static void get(struct rbuf *b, void *out, size_t len)
{
	if (b->bad || b->len - b->pos < len) {
		b->bad = true;
		memset(out, 0, len);
		return;
	}
	memcpy(out, b->p + b->pos, len);
	b->pos += len;
}

static uint64_t get_u64(struct rbuf *b)
{
	uint64_t v;

	get(b, &v, sizeof(v));
	return v;
}

static int64_t get_i64(struct rbuf *b)
{
	int64_t v;

	get(b, &v, sizeof(v));
	return v;
}

/* A NUL-terminated string inside the buffer, or "" (and bad). */
static const char *get_str(struct rbuf *b)
{
	uint32_t n;
	const char *s;

	get(b, &n, sizeof(n));
	if (b->bad || n == 0 || b->len - b->pos < n) {
		b->bad = true;
		return "";
	}
	s = b->p + b->pos;
	if (s[n - 1] != '\0' || memchr(s, '\0', n - 1)) {
		b->bad = true;
		return "";
	}
	b->pos += n;
	return s;
}

struct cache_dir {
	const char *rel;
	uint64_t dev, ino, size;
	int64_t mtime_sec, mtime_nsec;
	unsigned char trusted; /* else listed only as a child, read at load */
	size_t entries_pos;    /* where its entries start in the file */
	uint64_t n_entries;
};

struct cache {
	char *text;
	size_t len;
	struct cache_dir *dirs; /* sorted by rel */
	size_t n_dirs;
};

static int cache_dir_cmp(const void *a, const void *b)
{
	return strcmp(((const struct cache_dir *)a)->rel, ((const struct cache_dir *)b)->rel);
}

static void read_entry(struct rbuf *b, struct index_entry *e)
{
	const char *sha;

	e->source = (char *)get_str(b);
	e->sidecar = (char *)get_str(b);
	e->size = get_u64(b);
	e->mtime_sec = get_i64(b);
	e->mtime_nsec = (long)get_i64(b);
	sha = get_str(b);
	if (strlen(sha) == 64)
		memcpy(e->sha256, sha, 65);
	else if (sha[0])
		b->bad = true;
	else
		e->sha256[0] = '\0';
	{
		unsigned char failed = 0;

		get(b, &failed, 1);
		e->failed = failed != 0;
	}
	e->finished_at = get_i64(b);
	e->generated_images = get_i64(b);
	e->model = get_str(b);
	if (!e->model[0])
		e->model = NULL;
	{
		unsigned char reused = 0;

		get(b, &reused, 1);
		e->reused = reused != 0;
	}
	e->paid_at = get_i64(b);
	if (!e->source[0] || e->mtime_nsec < 0 || e->mtime_nsec > 999999999)
		b->bad = true;
}

static void cache_free(struct cache *c)
{
	if (!c)
		return;
	free(c->text);
	free(c->dirs);
	free(c);
}

/* Reads and checks the whole cache; NULL when missing, foreign or damaged. */
static int cache_read(const char *path, const char *output_root, const char *skip_dir,
		      struct cache **ret)
{
	struct cache *c = calloc(1, sizeof(*c));
	struct rbuf b = {0};
	char magic[sizeof(INDEX_CACHE_MAGIC) - 1];
	uint32_t version = 0;
	uint64_t sum, n;
	int fd, r;

	*ret = NULL;
	if (!c)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	r = fdio_read_file(fd, INDEX_CACHE_MAX, &c->text, &c->len);
	(void)close(fd);
	if (r < 0)
		goto fail;
	r = -EINVAL;
	if (c->len < sizeof(magic) + sizeof(sum))
		goto fail;
	memcpy(&sum, c->text + c->len - sizeof(sum), sizeof(sum));
	if (fnv1a64_update(FNV1A64_INIT, c->text, c->len - sizeof(sum)) != sum)
		goto fail;
	b.p = c->text;
	b.len = c->len - sizeof(sum);
	get(&b, magic, sizeof(magic));
	get(&b, &version, sizeof(version));
	if (b.bad || memcmp(magic, INDEX_CACHE_MAGIC, sizeof(magic)) != 0 ||
	    version != INDEX_CACHE_VERSION)
		goto fail;
	if (strcmp(get_str(&b), output_root) != 0 || strcmp(get_str(&b), skip_dir ? skip_dir : ""))
		goto fail;
	n = get_u64(&b);
	if (b.bad || n > b.len / 8)
		goto fail;
	c->dirs = calloc(n ? n : 1, sizeof(*c->dirs));
	if (!c->dirs) {
		r = -ENOMEM;
		goto fail;
	}
	for (uint64_t i = 0; i < n && !b.bad; i++) {
		struct cache_dir *d = &c->dirs[c->n_dirs++];

		d->rel = get_str(&b);
		d->dev = get_u64(&b);
		d->ino = get_u64(&b);
		d->mtime_sec = get_i64(&b);
		d->mtime_nsec = get_i64(&b);
		d->size = get_u64(&b);
		get(&b, &d->trusted, 1);
		d->n_entries = get_u64(&b);
		if (!d->trusted && d->n_entries)
			b.bad = true;
		d->entries_pos = b.pos;
		for (uint64_t k = 0; k < d->n_entries && !b.bad; k++) {
			struct index_entry e;

			read_entry(&b, &e);
		}
	}
	if (b.bad || b.pos != b.len)
		goto fail;
	if (c->n_dirs) /* NULL with 0 is undefined behaviour for qsort and bsearch */
		qsort(c->dirs, c->n_dirs, sizeof(*c->dirs), cache_dir_cmp);
	for (size_t i = 1; i < c->n_dirs; i++)
		if (!strcmp(c->dirs[i - 1].rel, c->dirs[i].rel))
			goto fail;
	*ret = c;
	return 0;
fail:
	cache_free(c);
	return r;
}

static const struct cache_dir *cache_find(const struct cache *c, const char *rel)
{
	struct cache_dir key = {.rel = rel};

	return c->n_dirs ? bsearch(&key, c->dirs, c->n_dirs, sizeof(*c->dirs), cache_dir_cmp)
			 : NULL;
}

static const struct cache_dir *cache_match(const struct cache *c, const char *rel,
					   const struct stat *st)
{
	const struct cache_dir *d = cache_find(c, rel);

	if (d && d->trusted && d->dev == (uint64_t)st->st_dev && d->ino == (uint64_t)st->st_ino &&
	    d->size == (uint64_t)st->st_size && d->mtime_sec == (int64_t)st->st_mtim.tv_sec &&
	    d->mtime_nsec == (int64_t)st->st_mtim.tv_nsec)
		return d;
	return NULL;
}

/* A directory unchanged since the cache was written: its entries from the
 * cache, its subdirectories (the cached ones with one more component) walked
 * as usual. Consumes dirfd. */
static int walk_cached(struct walk *w, const struct cache_dir *d, int dirfd, unsigned depth)
{
	const struct cache *c = w->cache;
	struct rbuf b = {.p = c->text, .len = c->len, .pos = d->entries_pos};
	size_t rel_len = strlen(d->rel);
	int r = 0;

	w->stats.dirs_cached++;
	for (uint64_t k = 0; k < d->n_entries && r == 0; k++) {
		struct index_entry e;

		read_entry(&b, &e);
		r = index_put(w->index, &e);
	}
	for (const struct cache_dir *s = d + 1; r == 0 && s < c->dirs + c->n_dirs; s++) {
		const char *rest = s->rel + rel_len, *slash;
		char name[NAME_MAX + 1];
		size_t n;

		if (strncmp(s->rel, d->rel, rel_len) != 0)
			break; /* past the descendants: sorted, so contiguous */
		slash = strchr(rest, '/');
		if (!slash || slash[1] != '\0')
			continue; /* deeper: reached through its parent */
		n = (size_t)(slash - rest);
		if (n == 0 || n > NAME_MAX)
			continue;
		memcpy(name, rest, n);
		name[n] = '\0';
		r = enter_dir(w, dirfd, name, depth);
	}
	(void)close(dirfd);
	return r;
}

/* ---- writing it ---------------------------------------------------------- */

/* Sorted by directory, then name: a directory's entries are contiguous. */
static int sidecar_cmp(const void *a, const void *b)
{
	const char *x = (*(const struct index_entry *const *)a)->sidecar;
	const char *y = (*(const struct index_entry *const *)b)->sidecar;
	const char *xs = strrchr(x, '/'), *ys = strrchr(y, '/');
	size_t xd = xs ? (size_t)(xs - x) + 1 : 0, yd = ys ? (size_t)(ys - y) + 1 : 0;
	int c = memcmp(x, y, xd < yd ? xd : yd);

	if (c)
		return c;
	if (xd != yd)
		return xd < yd ? -1 : 1;
	return strcmp(x + xd, y + yd);
}

struct saver {
	struct textbuf out;
	const struct index_entry **entries; /* sorted with sidecar_cmp */
	size_t n_entries;
	bool have_skip;
	dev_t skip_dev;
	ino_t skip_ino;
	struct timespec racy_after; /* changed since then: not trusted */
	uint64_t n_dirs;
	struct path path;
};

static void collect_entry(const struct index_entry *e, void *userdata)
{
	struct saver *s = userdata;

	s->entries[s->n_entries++] = e;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The first entry whose sidecar lies in directory rel. */
static size_t first_entry_of(const struct saver *s, const char *rel)
{
	size_t lo = 0, hi = s->n_entries, len = strlen(rel);

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const char *p = s->entries[mid]->sidecar, *slash = strrchr(p, '/');
		size_t dlen = slash ? (size_t)(slash - p) + 1 : 0;
		int c = memcmp(p, rel, dlen < len ? dlen : len);

		if (!c)
			c = dlen < len ? -1 : dlen > len;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int save_dir(struct saver *s, int dirfd, unsigned depth);

static int save_subdir(struct saver *s, int dirfd, const char *name, unsigned depth)
{
	size_t base = s->path.len;
	struct stat st;
	int fd, r;

	if (depth >= WALK_DEPTH_MAX)
		return 0;
	fd = dirlist_open_sub(dirfd, name);
	if (fd < 0) {
		if (is_resource_error(fd))
			return fd;
		/* Not listed as a child: its parent cannot vouch for the tree. */
		return fd == -ENOENT || fd == -ELOOP || fd == -ENOTDIR ? 0 : 1;
	}
	if (fstat(fd, &st) < 0) {
		(void)close(fd);
		return 1;
	}
	if (s->have_skip && st.st_dev == s->skip_dev && st.st_ino == s->skip_ino) {
		(void)close(fd);
		return 0;
	}
	r = path_push(&s->path, name, true);
	if (r < 0) {
		(void)close(fd);
		return r;
	}
	r = save_dir(s, fd, depth + 1);
	s->path.len = base;
	s->path.buf[base] = '\0';
	return r;
}

/* Lists the directory (names only, no file is read), writes it with the
 * entries whose sidecar is still there when it did not change meanwhile,
 * then its subdirectories. Consumes dirfd. */
static int save_dir(struct saver *s, int dirfd, unsigned depth)
{
	char **jsons = NULL, **subdirs = NULL;
	size_t n_json = 0, n_sub = 0, cap_json = 0, cap_sub = 0;
	struct stat before, after;
	bool incomplete = false, trusted;
	struct dirlist dir = {0};
	const char *name;
	unsigned char type;
	int r = 0;

	if (fstat(dirfd, &before) < 0) {
		(void)close(dirfd);
		return 0;
	}
	if (dirlist_open(&dir, dirfd) < 0)
		return 0;
	while ((name = dirlist_next(&dir, &type, NULL))) {
		char ***list;
		size_t *n, *cap;

		if (name[0] == '.')
			continue;
		if (type == DT_DIR) {
			list = &subdirs, n = &n_sub, cap = &cap_sub;
		} else if (type == DT_REG && has_json_suffix(name)) {
			list = &jsons, n = &n_json, cap = &cap_json;
		} else {
			continue;
		}
		if (*n == *cap) {
			size_t c = *cap ? *cap * 2 : 16;
			char **l = reallocarray(*list, c, sizeof(*l));

			if (!l) {
				r = -ENOMEM;
				goto out;
			}
			*list = l;
			*cap = c;
		}
		if (!((*list)[*n] = strdup(name))) {
			r = -ENOMEM;
			goto out;
		}
		(*n)++;
	}
	for (size_t i = 0; i < n_sub && r >= 0; i++) {
		int k = save_subdir(s, dirfd, subdirs[i], depth);

		if (k < 0)
			r = k;
		else if (k > 0)
			incomplete = true;
	}
	if (r < 0)
		goto out;
	/* Every directory is listed, so a cached parent leads to all its
	 * children; only one that is unchanged, settled and complete carries
	 * entries and is trusted. */
	trusted = !incomplete && fstat(dirfd, &after) == 0 &&
		  before.st_mtim.tv_sec == after.st_mtim.tv_sec &&
		  before.st_mtim.tv_nsec == after.st_mtim.tv_nsec &&
		  before.st_size == after.st_size &&
		  (before.st_mtim.tv_sec < s->racy_after.tv_sec ||
		   (before.st_mtim.tv_sec == s->racy_after.tv_sec &&
		    before.st_mtim.tv_nsec < s->racy_after.tv_nsec));
	{
		size_t first = first_entry_of(s, s->path.buf), last = first, len = s->path.len;
		unsigned char trust = trusted;
		uint64_t n = 0;

		if (n_json)
			qsort(jsons, n_json, sizeof(*jsons), name_cmp);
		while (last < s->n_entries &&
		       !strncmp(s->entries[last]->sidecar, s->path.buf, len) &&
		       !strchr(s->entries[last]->sidecar + len, '/'))
			last++;
		for (size_t i = first; i < last; i++) {
			const char *base = s->entries[i]->sidecar + len;

			if (n_json && bsearch(&base, jsons, n_json, sizeof(*jsons), name_cmp))
				n++;
		}
		/* Every "*.json" there must be an entry: one that is not (a
		 * sidecar committed after the index was taken, the older of a
		 * success and an error sidecar, a foreign file) is read at the
		 * next start rather than taken for nothing. */
		if (n != n_json)
			trusted = false;
		if (!trusted) {
			last = first;
			n = 0;
		}
		trust = trusted;
		put_str(&s->out, s->path.buf);
		put_u64(&s->out, (uint64_t)before.st_dev);
		put_u64(&s->out, (uint64_t)before.st_ino);
		put_i64(&s->out, (int64_t)before.st_mtim.tv_sec);
		put_i64(&s->out, (int64_t)before.st_mtim.tv_nsec);
		put_u64(&s->out, (uint64_t)before.st_size);
		textbuf_put(&s->out, &trust, 1);
		put_u64(&s->out, n);
		for (size_t i = first; i < last; i++) {
			const struct index_entry *e = s->entries[i];
			const char *base = e->sidecar + len;
			unsigned char failed = e->failed, reused = e->reused;

			/* A sidecar deleted while the daemon ran is not done. */
			if (!n_json || !bsearch(&base, jsons, n_json, sizeof(*jsons), name_cmp))
				continue;
			put_str(&s->out, e->source);
			put_str(&s->out, e->sidecar);
			put_u64(&s->out, e->size);
			put_i64(&s->out, e->mtime_sec);
			put_i64(&s->out, (int64_t)e->mtime_nsec);
			put_str(&s->out, e->sha256);
			textbuf_put(&s->out, &failed, 1);
			put_i64(&s->out, e->finished_at);
			put_i64(&s->out, e->generated_images);
			put_str(&s->out, e->model ? e->model : "");
			textbuf_put(&s->out, &reused, 1);
			put_i64(&s->out, e->paid_at);
		}
		s->n_dirs++;
	}
out:
	for (size_t i = 0; i < n_json; i++)
		free(jsons[i]);
	for (size_t i = 0; i < n_sub; i++)
		free(subdirs[i]);
	free(jsons);
	free(subdirs);
	dirlist_close(&dir);
	return r;
}

int index_save_cache(const struct index *index, const char *output_root, const char *skip_dir,
		     const char *cache_path)
{
	struct saver s = {0};
	const char *slash = strrchr(cache_path, '/');
	char *dir = NULL;
	uint64_t n_dirs_pos, sum;
	uint32_t version = INDEX_CACHE_VERSION;
	struct stat st;
	int fd = -1, r;

	if (!index || !output_root || !slash || !slash[1])
		return -EINVAL;
	s.entries = calloc(index->count ? index->count : 1, sizeof(*s.entries));
	dir = strndup(cache_path, (size_t)(slash - cache_path));
	if (!s.entries || !dir) {
		r = -ENOMEM;
		goto out;
	}
	index_foreach(index, collect_entry, &s);
	if (s.n_entries)
		qsort(s.entries, s.n_entries, sizeof(*s.entries), sidecar_cmp);
	if (skip_dir && stat(skip_dir, &st) == 0) {
		s.have_skip = true;
		s.skip_dev = st.st_dev;
		s.skip_ino = st.st_ino;
	}
	/* A clone is as old as when it was taken: a folder changed after that
	 * (less the racy margin) may hold what it lacks. */
	if (index->taken.tv_sec)
		s.racy_after = index->taken;
	else
		(void)clock_gettime(CLOCK_REALTIME, &s.racy_after);
	s.racy_after.tv_sec -= INDEX_CACHE_RACY_S;
	textbuf_put(&s.out, INDEX_CACHE_MAGIC, strlen(INDEX_CACHE_MAGIC));
	textbuf_put(&s.out, &version, sizeof(version));
	put_str(&s.out, output_root);
	put_str(&s.out, skip_dir ? skip_dir : "");
	n_dirs_pos = s.out.len;
	put_u64(&s.out, 0);
	r = path_push(&s.path, "", false);
	if (r < 0)
		goto out;
	fd = open(output_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		r = save_dir(&s, fd, 0);
		if (r < 0)
			goto out;
	} else if (errno != ENOENT) {
		r = -errno;
		goto out;
	}
	if (s.out.oom) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(s.out.p + n_dirs_pos, &s.n_dirs, sizeof(s.n_dirs));
	sum = fnv1a64_update(FNV1A64_INIT, s.out.p, s.out.len);
	put_u64(&s.out, sum);
	if (s.out.oom) {
		r = -ENOMEM;
		goto out;
	}
	r = output_mkdir_parents(dir, 0700);
	if (r < 0)
		goto out;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	r = output_write_atomic(fd, slash + 1, s.out.p, s.out.len);
	(void)close(fd);
out:
	free(s.entries);
	free(s.out.p);
	free(s.path.buf);
	free(dir);
	return r;
}
