#include "index.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "output.h"

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
};

static size_t size_bit(uint64_t size)
{
	return (size_t)((size * 0x9e3779b97f4a7c15ULL) >> 48) % INDEX_SIZE_BITS;
}

static uint64_t hash_string(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
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
	hash = hash_string(entry->source);
	i = find_slot(index, entry->source, hash);
	if (index->slots[i] && index->slots[i]->entry.finished_at > entry->finished_at)
		return 0;
	n = node_new(entry, hash);
	if (!n)
		return -ENOMEM;
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
	i = find_slot(index, source, hash_string(source));
	return index->slots[i] ? &index->slots[i]->entry : NULL;
}

int index_remove(struct index *index, const char *source)
{
	size_t mask, i, j;

	if (!index || !source)
		return -ENOENT;
	mask = index->capacity - 1;
	i = find_slot(index, source, hash_string(source));
	if (!index->slots[i])
		return -ENOENT;
	free(index->slots[i]);
	index->slots[i] = NULL;
	index->count--;
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
	memset(entry, 0, sizeof(*entry));
}

static bool is_hex64(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
		      (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	return i == 64;
}

/* An RFC 3339 time member; absent or null gives 0 (older than anything). */
static int parse_finished_at(const cJSON *root, const char *key, int64_t *ret)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
	long nsec;

	*ret = 0;
	if (!item || cJSON_IsNull(item))
		return 0;
	if (!cJSON_IsString(item))
		return -EINVAL;
	return output_parse_rfc3339(item->valuestring, ret, &nsec);
}

static int64_t parse_generated_images(const cJSON *root)
{
	const cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
	const cJSON *gen = cJSON_GetObjectItemCaseSensitive(usage, "generated_images");
	double v;

	/* usage is the API's verbatim object: tolerate anything in it. */
	if (!cJSON_IsObject(usage) || !cJSON_IsNumber(gen))
		return 0;
	v = gen->valuedouble;
	/* Also false for NaN. */
	if (!(v >= 0 && v <= 1e15))
		return 0;
	return (int64_t)v;
}

static int parse_source_fields(const cJSON *root, struct index_entry *e)
{
	const cJSON *size = cJSON_GetObjectItemCaseSensitive(root, "source_size");
	const cJSON *mtime = cJSON_GetObjectItemCaseSensitive(root, "source_mtime");
	const cJSON *sha = cJSON_GetObjectItemCaseSensitive(root, "source_sha256");

	/* A whole number up to 2^53, where doubles stop being exact; the range
	 * test is false for NaN and makes the cast below defined. */
	if (!cJSON_IsNumber(size) || !(size->valuedouble >= 0 && size->valuedouble <= 0x1p53))
		return -EINVAL;
	e->size = (uint64_t)size->valuedouble;
	if ((double)e->size != size->valuedouble)
		return -EINVAL;
	if (!cJSON_IsString(mtime) ||
	    output_parse_rfc3339(mtime->valuestring, &e->mtime_sec, &e->mtime_nsec) < 0)
		return -EINVAL;
	if (sha && !cJSON_IsNull(sha)) {
		if (!cJSON_IsString(sha) || !is_hex64(sha->valuestring))
			return -EINVAL;
		for (size_t i = 0; i < 64; i++)
			e->sha256[i] = (char)(sha->valuestring[i] | 0x20);
		e->sha256[64] = '\0';
	}
	return 0;
}

int index_parse_sidecar(const char *json, size_t len, const char *sidecar_rel,
			struct index_entry *ret_entry)
{
	struct index_entry e = {0};
	const cJSON *source, *error;
	char *raw_source = NULL;
	cJSON *root;
	int r = -EINVAL;

	if (!ret_entry)
		return -EINVAL;
	memset(ret_entry, 0, sizeof(*ret_entry));
	if (!json)
		return -EINVAL;
	root = cJSON_ParseWithLength(json, len);
	if (!cJSON_IsObject(root))
		goto out;
	source = cJSON_GetObjectItemCaseSensitive(root, "source");
	if (!cJSON_IsString(source) || !source->valuestring[0])
		goto out;
	raw_source = output_sidecar_source(root);
	if (!raw_source || !raw_source[0])
		goto out;
	r = parse_source_fields(root, &e);
	if (r < 0)
		goto out;
	error = cJSON_GetObjectItemCaseSensitive(root, "error");
	if (error && !cJSON_IsObject(error)) {
		r = -EINVAL;
		goto out;
	}
	e.failed = error != NULL;
	r = parse_finished_at(root, e.failed ? "failed_at" : "completed_at", &e.finished_at);
	if (r < 0)
		goto out;
	e.generated_images = parse_generated_images(root);
	e.source = raw_source;
	raw_source = NULL;
	e.sidecar = strdup(sidecar_rel ? sidecar_rel : "");
	if (!e.source || !e.sidecar) {
		index_entry_clear(&e);
		r = -ENOMEM;
		goto out;
	}
	*ret_entry = e;
	r = 0;
out:
	free(raw_source);
	cJSON_Delete(root);
	return r;
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
};

static bool is_resource_error(int r)
{
	return r == -ENOMEM || r == -EMFILE || r == -ENFILE;
}

/* Reads fd (a regular file of `size` bytes, at most OUTPUT_RECORD_MAX) into
 * w->buf. Returns the length or -errno; -EFBIG when it grew past the cap. */
static ssize_t read_sidecar(struct walk *w, int fd, size_t size)
{
	size_t len = 0;

	if (size + 2 > w->bufcap) {
		char *buf = realloc(w->buf, size + 2);

		if (!buf)
			return -ENOMEM;
		w->buf = buf;
		w->bufcap = size + 2;
	}
	/* Reading one byte past st_size notices a file that grew. */
	while (len < size + 1) {
		ssize_t k = read(fd, w->buf + len, size + 1 - len);

		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (k == 0)
			break;
		len += (size_t)k;
	}
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
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > OUTPUT_RECORD_MAX) {
		w->skipped++;
		r = 0;
		goto out;
	}
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

/* A subdirectory: 0 when walked or passed over, or a fatal -errno. */
static int enter_dir(struct walk *w, int dirfd, const char *name, unsigned depth)
{
	size_t base = w->path.len;
	struct stat st;
	int fd, r;

	if (depth >= WALK_DEPTH_MAX)
		return 0;
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		return is_resource_error(r) ? r : 0;
	}
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
	r = walk_dir(w, fd, depth + 1);
	w->path.len = base;
	w->path.buf[base] = '\0';
	return r;
}

/* Walks the directory dirfd (consumed). */
static int walk_dir(struct walk *w, int dirfd, unsigned depth)
{
	struct dirent *de;
	DIR *dir;
	int r = 0;

	dir = fdopendir(dirfd);
	if (!dir) {
		r = -errno;
		(void)close(dirfd);
		return r;
	}
	for (;;) {
		unsigned char type;

		errno = 0;
		de = readdir(dir);
		if (!de) {
			r = errno ? -errno : 0;
			break;
		}
		if (de->d_name[0] == '.')
			continue;
		type = de->d_type;
		if (type == DT_UNKNOWN) {
			struct stat st;

			if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
				continue;
			if (S_ISDIR(st.st_mode))
				type = DT_DIR;
			else if (S_ISREG(st.st_mode))
				type = DT_REG;
		}
		if (type == DT_DIR)
			r = enter_dir(w, dirfd, de->d_name, depth);
		else if (type == DT_REG && has_json_suffix(de->d_name))
			r = load_file(w, dirfd, de->d_name);
		if (r < 0)
			break;
	}
	(void)closedir(dir);
	return r;
}

int index_load_tree(struct index *index, const char *output_root, const char *skip_dir,
		    size_t *ret_skipped)
{
	struct walk w = {.index = index};
	struct stat st;
	int fd, r;

	if (ret_skipped)
		*ret_skipped = 0;
	if (!index || !output_root)
		return -EINVAL;
	if (skip_dir && stat(skip_dir, &st) == 0) {
		w.have_skip = true;
		w.skip_dev = st.st_dev;
		w.skip_ino = st.st_ino;
	}
	fd = open(output_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	r = path_push(&w.path, "", false);
	if (r < 0) {
		(void)close(fd);
		goto out;
	}
	r = walk_dir(&w, fd, 0);
out:
	if (ret_skipped)
		*ret_skipped = w.skipped;
	free(w.path.buf);
	free(w.buf);
	return r;
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
