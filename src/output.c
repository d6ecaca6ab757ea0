#include "output.h"

#include "clean.h"
#include "dirlist.h"
#include "fdio.h"
#include "fnv.h"
#include "sidecar.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define TMP_OPEN_TRIES	 8
#define STEM_SUFFIX_MAX	 9999

int output_safe_stem(const char *filename, char *out, size_t outlen)
{
	const unsigned char *s = (const unsigned char *)filename;
	const char *dot;
	size_t n, limit, i = 0, o = 0;

	if (!filename || !out || outlen == 0)
		return -EINVAL;
	n = strlen(filename);
	/* A dot at position 0 starts a hidden name, not an extension. */
	dot = strrchr(filename, '.');
	if (dot && dot != filename)
		n = (size_t)(dot - filename);
	limit = outlen - 1 < OUTPUT_STEM_MAX ? outlen - 1 : OUTPUT_STEM_MAX;

	while (i < n) {
		size_t len = clean_utf8_seq(s + i, n - i);
		bool bad = len == 0 || (len == 1 && (s[i] < 0x20 || s[i] == 0x7f || s[i] == '/'));

		if (bad) {
			if (o + 1 > limit)
				break;
			out[o++] = '_';
			i++;
			continue;
		}
		if (o + len > limit)
			break;
		memcpy(out + o, s + i, len);
		o += len;
		i += len;
	}
	if (o == 0)
		out[o++] = '_';
	out[o] = '\0';
	if (out[0] == '.')
		out[0] = '_';
	return 0;
}

const char *output_ext_for(enum image_format format)
{
	switch (format) {
	case IMAGE_FORMAT_PNG:
		return ".png";
	case IMAGE_FORMAT_JPEG:
		return ".jpeg";
	case IMAGE_FORMAT_WEBP:
		return ".webp";
	case IMAGE_FORMAT_BMP:
		return ".bmp";
	case IMAGE_FORMAT_TIFF:
		return ".tiff";
	case IMAGE_FORMAT_GIF:
		return ".gif";
	case IMAGE_FORMAT_UNKNOWN:
	default:
		return ".bin";
	}
}

enum sidecar_owner {
	SIDECAR_ABSENT,
	SIDECAR_OURS,
	SIDECAR_OTHER,
};

/* Who owns the sidecar `name` in dirfd. Anything we cannot read or parse
 * counts as someone else's: never overwrite what we do not understand. */
static int sidecar_owner(int dirfd, const char *name, const char *source_rel)
{
	cJSON *root = NULL;
	char *src_name;
	char *buf = NULL;
	size_t len = 0;
	int fd, r;

	/* O_NONBLOCK: a FIFO planted under a sidecar name must not hang us. */
	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		if (errno == ENOENT)
			return SIDECAR_ABSENT;
		if (errno == ELOOP || errno == EACCES || errno == EPERM || errno == EISDIR ||
		    errno == ENXIO)
			return SIDECAR_OTHER;
		return -errno;
	}
	r = fdio_read_file(fd, SIDECAR_RECORD_MAX, &buf, &len);
	(void)close(fd);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return SIDECAR_OTHER;
	root = cJSON_ParseWithLength(buf, len);
	src_name = sidecar_get_name(root, SIDECAR_SOURCE);
	if (src_name && strcmp(src_name, source_rel) == 0)
		r = SIDECAR_OURS;
	else
		r = SIDECAR_OTHER;
	free(src_name);
	cJSON_Delete(root);
	free(buf);
	return r;
}

/* Whether a sidecar's output path (relative to the watched folder) names the
 * file `name` in the output folder. */
static bool output_rel_is(const cJSON *obj, const char *name)
{
	char *rel = sidecar_get_name(obj, SIDECAR_OUTPUT);
	const char *slash;
	bool is;

	if (!rel)
		return false;
	slash = strrchr(rel, '/');
	is = strcmp(slash ? slash + 1 : rel, name) == 0;
	free(rel);
	return is;
}

/* Whether the sidecar side_name is another source's (not source_rel's) and,
 * with need_listed, lists `name` (a file in the same folder) as an output.
 * A sidecar that cannot be read or parsed counts as another's: never replace
 * what we do not understand. */
static bool sidecar_other_claims(int dirfd, const char *side_name, const char *source_rel,
				 const char *name, bool need_listed)
{
	const cJSON *o;
	cJSON *root = NULL;
	char *buf = NULL, *src_name = NULL;
	size_t len = 0;
	bool claims = true;
	int fd;

	fd = openat(dirfd, side_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return errno != ENOENT;
	if (fdio_read_file(fd, SIDECAR_RECORD_MAX, &buf, &len) < 0)
		goto out;
	root = cJSON_ParseWithLength(buf, len);
	src_name = sidecar_get_name(root, SIDECAR_SOURCE);
	if (!src_name)
		goto out;
	claims = strcmp(src_name, source_rel) != 0;
	if (!claims || !need_listed)
		goto out;
	claims = output_rel_is(root, name);
	cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(root, "outputs"))
	{
		if (claims)
			break;
		claims = output_rel_is(o, name);
	}
out:
	(void)close(fd);
	free(src_name);
	cJSON_Delete(root);
	free(buf);
	return claims;
}

/* Whether the output file `name` is another source's result: its own
 * sidecar ("<base>.json" for "<base><ext>") is another source's, or it is
 * "<B>-<k><ext>" and another source's "<B>.json" lists it. A file no sidecar
 * claims (its sidecar deleted to have it made again, or left by a crash) is
 * nobody's, and may be replaced. */
static bool output_claimed_by_other(int dirfd, const char *name, const char *source_rel)
{
	char side[OUTPUT_NAME_MAX];
	const char *dot = strrchr(name, '.'), *dash;
	size_t base_len = dot ? (size_t)(dot - name) : strlen(name), digits = 0;

	if (base_len + sizeof(".json") > sizeof(side))
		return true;
	(void)snprintf(side, sizeof(side), "%.*s.json", (int)base_len, name);
	if (sidecar_other_claims(dirfd, side, source_rel, name, false))
		return true;
	for (dash = name + base_len; dash > name && isdigit((unsigned char)dash[-1]); dash--)
		digits++;
	if (!digits || dash - 1 <= name || dash[-1] != '-')
		return false;
	(void)snprintf(side, sizeof(side), "%.*s.json", (int)(dash - 1 - name), name);
	return sidecar_other_claims(dirfd, side, source_rel, name, true);
}

/* 1 when no file of another source has one of the image names the stem
 * would write: <cand><ext> for one output, <cand>-1<ext> .. <cand>-N<ext>
 * for several, any extension. 0 when one has, or -errno. */
static int candidate_images_free(int dirfd, const char *cand, const char *source_rel,
				 unsigned n_outputs)
{
	char name[OUTPUT_NAME_MAX];
	struct stat st;

	for (unsigned k = n_outputs > 1 ? 1 : 0; k <= (n_outputs > 1 ? n_outputs : 0); k++) {
		for (int f = IMAGE_FORMAT_UNKNOWN; f <= IMAGE_FORMAT_GIF; f++) {
			const char *ext = output_ext_for((enum image_format)f);
			int n = k ? snprintf(name, sizeof(name), "%s-%u%s", cand, k, ext)
				  : snprintf(name, sizeof(name), "%s%s", cand, ext);

			if (n < 0 || (size_t)n >= sizeof(name))
				return -ENAMETOOLONG;
			if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
				if (errno == ENOENT)
					continue;
				return -errno;
			}
			if (output_claimed_by_other(dirfd, name, source_rel))
				return 0;
		}
	}
	return 1;
}

/* 1 when the candidate stem can be used, 0 when taken, or -errno. */
static int candidate_free(int dirfd, const char *cand, const char *source_rel, unsigned n_outputs)
{
	static const char *const suffixes[] = {".json", ".error.json"};
	char name[OUTPUT_NAME_MAX];

	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		int n = snprintf(name, sizeof(name), "%s%s", cand, suffixes[i]);
		int r;

		if (n < 0 || (size_t)n >= sizeof(name))
			return -ENAMETOOLONG;
		r = sidecar_owner(dirfd, name, source_rel);
		if (r < 0)
			return r;
		if (r == SIDECAR_OTHER)
			return 0;
	}
	return candidate_images_free(dirfd, cand, source_rel, n_outputs);
}

int output_choose_stem(int dirfd, const char *stem, const char *source_rel,
		       bool (*reserved)(const char *candidate, void *userdata), void *userdata,
		       char *ret, size_t retlen)
{
	return output_choose_stem_n(dirfd, stem, source_rel, 1, reserved, userdata, ret, retlen);
}

int output_choose_stem_n(int dirfd, const char *stem, const char *source_rel, unsigned n_outputs,
			 bool (*reserved)(const char *candidate, void *userdata), void *userdata,
			 char *ret, size_t retlen)
{
	char cand[OUTPUT_NAME_MAX];

	if (!stem || !*stem || strchr(stem, '/') || !source_rel || !ret)
		return -EINVAL;
	for (unsigned k = 1; k <= STEM_SUFFIX_MAX; k++) {
		int n, r;

		if (k == 1)
			n = snprintf(cand, sizeof(cand), "%s", stem);
		else
			n = snprintf(cand, sizeof(cand), "%s-%u", stem, k);
		if (n < 0 || (size_t)n >= sizeof(cand))
			return -ENAMETOOLONG;
		if (reserved && reserved(cand, userdata))
			continue;
		r = candidate_free(dirfd, cand, source_rel, n_outputs);
		if (r < 0)
			return r;
		if (r == 0)
			continue;
		if ((size_t)n >= retlen)
			return -ENAMETOOLONG;
		memcpy(ret, cand, (size_t)n + 1);
		return 0;
	}
	return -EEXIST;
}

static uint64_t tmp_random(void)
{
	static uint64_t counter; /* atomic: commits run on several threads */
	uint64_t v;

	if (getrandom(&v, sizeof(v), GRND_NONBLOCK) == (ssize_t)sizeof(v))
		return v;
	/* No entropy yet (early boot): uniqueness is all O_EXCL needs. */
	return ((uint64_t)(uint32_t)getpid() << 32) ^ __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
}

int output_tmp_open(int dirfd, const char *final_name, char *ret_tmp, size_t tmplen)
{
	if (!final_name || !*final_name || strchr(final_name, '/') || !ret_tmp)
		return -EINVAL;
	for (int tries = 0; tries < TMP_OPEN_TRIES; tries++) {
		int n =
		    snprintf(ret_tmp, tmplen, ".%s.%016" PRIx64 ".tmp", final_name, tmp_random());
		int fd;

		if (n < 0 || (size_t)n >= tmplen)
			return -ENAMETOOLONG;
		fd = openat(dirfd, ret_tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY,
			    0644);
		if (fd >= 0)
			return fd;
		if (errno != EEXIST)
			return -errno;
	}
	return -EEXIST;
}

/* fsync wants a descriptor opened for reading; an O_PATH dirfd gets EBADF. */
static int sync_dir_now(int dirfd)
{
	int fd, r = 0;

	if (fsync(dirfd) == 0)
		return 0;
	if (errno != EBADF && errno != EINVAL)
		return -errno;
	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	(void)close(fd);
	return r;
}

/* Directory fsyncs shared between threads, per directory (device + inode):
 * a rename made before a sync of its directory *started* is covered by it,
 * so a caller joins the next sync to start, or starts it. Syncs of one
 * directory run one at a time; different directories do not wait on each
 * other. */
struct dir_sync {
	dev_t dev;
	ino_t ino;
	uint64_t started;   /* syncs begun */
	uint64_t completed; /* the last that finished */
	int result;	    /* its result */
	bool running;
	unsigned users;
	struct dir_sync *next;
};

static pthread_mutex_t dir_sync_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t dir_sync_done = PTHREAD_COND_INITIALIZER;
static struct dir_sync *dir_syncs;
static uint64_t dir_sync_calls;
static unsigned dir_sync_delay_us;

static struct dir_sync *dir_sync_get(dev_t dev, ino_t ino)
{
	struct dir_sync *d;

	for (d = dir_syncs; d; d = d->next)
		if (d->dev == dev && d->ino == ino)
			return d;
	d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->dev = dev;
	d->ino = ino;
	d->next = dir_syncs;
	dir_syncs = d;
	return d;
}

static void dir_sync_put(struct dir_sync *d)
{
	if (--d->users || d->running)
		return;
	for (struct dir_sync **p = &dir_syncs; *p; p = &(*p)->next)
		if (*p == d) {
			*p = d->next;
			break;
		}
	free(d);
}

int output_sync_dir(int dirfd)
{
	struct dir_sync *d;
	struct stat st;
	uint64_t target;
	int r;

	if (fstat(dirfd, &st) < 0)
		return -errno;
	pthread_mutex_lock(&dir_sync_lock);
	d = dir_sync_get(st.st_dev, st.st_ino);
	if (!d) {
		pthread_mutex_unlock(&dir_sync_lock);
		return -ENOMEM;
	}
	d->users++;
	target = d->started + 1; /* the first sync that starts after this call */
	while (d->completed < target) {
		uint64_t gen;
		unsigned delay;

		if (d->running) {
			pthread_cond_wait(&dir_sync_done, &dir_sync_lock);
			continue;
		}
		d->running = true;
		gen = ++d->started;
		delay = dir_sync_delay_us;
		pthread_mutex_unlock(&dir_sync_lock);
		if (delay)
			(void)usleep(delay);
		r = sync_dir_now(dirfd);
		pthread_mutex_lock(&dir_sync_lock);
		d->running = false;
		d->completed = gen;
		d->result = r;
		dir_sync_calls++;
		pthread_cond_broadcast(&dir_sync_done);
	}
	r = d->result;
	dir_sync_put(d);
	pthread_mutex_unlock(&dir_sync_lock);
	return r;
}

unsigned long output_dir_sync_count(void)
{
	unsigned long n;

	pthread_mutex_lock(&dir_sync_lock);
	n = (unsigned long)dir_sync_calls;
	pthread_mutex_unlock(&dir_sync_lock);
	return n;
}

void output_test_set_sync_delay(unsigned usec)
{
	pthread_mutex_lock(&dir_sync_lock);
	dir_sync_delay_us = usec;
	pthread_mutex_unlock(&dir_sync_lock);
}

int output_tmp_commit(int dirfd, int fd, const char *tmp_name, const char *final_name)
{
	int r;

	if (fsync(fd) < 0) {
		r = -errno;
		goto fail;
	}
	/* Some file systems (NFS) report write-back errors only at close. */
	r = close(fd);
	fd = -1;
	if (r < 0 && errno != EINTR) {
		r = -errno;
		goto fail;
	}
	if (renameat(dirfd, tmp_name, dirfd, final_name) < 0) {
		r = -errno;
		goto fail;
	}
	return output_sync_dir(dirfd);
fail:
	output_tmp_abort(dirfd, fd, tmp_name);
	return r;
}

/* Renames tmp_name to final_name only if final_name does not exist. Where
 * the file system has no RENAME_NOREPLACE (NFS: EINVAL), a hard link fails
 * the same way; where it has no links either, a check before the rename is
 * the best there is. */
static int rename_noreplace(int dirfd, const char *tmp_name, const char *final_name)
{
	struct stat st;

	if (renameat2(dirfd, tmp_name, dirfd, final_name, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -errno;
	if (linkat(dirfd, tmp_name, dirfd, final_name, 0) == 0) {
		(void)unlinkat(dirfd, tmp_name, 0);
		return 0;
	}
	if (errno != EPERM && errno != EOPNOTSUPP)
		return -errno;
	if (fstatat(dirfd, final_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return -EEXIST;
	if (renameat(dirfd, tmp_name, dirfd, final_name) < 0)
		return -errno;
	return 0;
}

int output_tmp_commit_image(int dirfd, int fd, const char *tmp_name, const char *base,
			    const char *ext, const char *source_rel, char *ret_name, size_t retlen)
{
	int r;

	if (fsync(fd) < 0) {
		r = -errno;
		goto fail;
	}
	r = close(fd);
	fd = -1;
	if (r < 0 && errno != EINTR) {
		r = -errno;
		goto fail;
	}
	for (unsigned k = 1; k <= STEM_SUFFIX_MAX; k++) {
		int n = k == 1 ? snprintf(ret_name, retlen, "%s%s", base, ext)
			       : snprintf(ret_name, retlen, "%s~%u%s", base, k, ext);

		if (n < 0 || (size_t)n >= retlen) {
			r = -ENAMETOOLONG;
			goto fail;
		}
		r = rename_noreplace(dirfd, tmp_name, ret_name);
		/* The same source's earlier result, or nobody's, is replaced. */
		if (r == -EEXIST && !output_claimed_by_other(dirfd, ret_name, source_rel))
			r = renameat(dirfd, tmp_name, dirfd, ret_name) < 0 ? -errno : 0;
		if (r == 0)
			return output_sync_dir(dirfd);
		if (r != -EEXIST)
			goto fail;
	}
	r = -EEXIST;
fail:
	output_tmp_abort(dirfd, fd, tmp_name);
	return r;
}

void output_tmp_abort(int dirfd, int fd, const char *tmp_name)
{
	int saved = errno;

	if (fd >= 0)
		(void)close(fd);
	if (tmp_name)
		(void)unlinkat(dirfd, tmp_name, 0);
	errno = saved;
}

int output_write_atomic(int dirfd, const char *final_name, const void *data, size_t len)
{
	char tmp[OUTPUT_NAME_MAX + 32];
	int fd, r;

	if (!data && len > 0)
		return -EINVAL;
	fd = output_tmp_open(dirfd, final_name, tmp, sizeof(tmp));
	if (fd < 0)
		return fd;
	r = fdio_write_all(fd, data, len, NULL);
	if (r < 0) {
		output_tmp_abort(dirfd, fd, tmp);
		return r;
	}
	return output_tmp_commit(dirfd, fd, tmp, final_name);
}

bool output_is_tmp_name(const char *name)
{
	size_t n = strlen(name);

	/* "." + at least one character + "." + 16 hex + ".tmp" */
	if (name[0] != '.' || n < 1 + 1 + 1 + 16 + 4 || strcmp(name + n - 4, ".tmp") != 0)
		return false;
	if (name[n - 4 - 16 - 1] != '.')
		return false;
	for (size_t i = n - 4 - 16; i < n - 4; i++)
		if (!isxdigit((unsigned char)name[i]))
			return false;
	return true;
}

static int sweep_dir(int dirfd, unsigned depth, size_t *removed)
{
	struct dirlist list;
	const char *name;
	unsigned char type;
	int r;

	r = dirlist_open(&list, dirfd);
	if (r < 0)
		return r;
	/* Only temporary names and folders need a look: no stat for each of
	 * 100,000 outputs and sidecars (unless the file system gives no type). */
	while ((name = dirlist_next(&list, &type, NULL))) {
		if (type == DT_REG && output_is_tmp_name(name)) {
			if (unlinkat(dirfd, name, 0) == 0)
				(*removed)++;
		} else if (type == DT_DIR && name[0] != '.' && depth < 64) {
			int sub = dirlist_open_sub(dirfd, name);

			if (sub >= 0)
				(void)sweep_dir(sub, depth + 1, removed);
		}
	}
	dirlist_close(&list);
	return 0;
}

int output_sweep_tmp(const char *root, size_t *ret_removed)
{
	size_t removed = 0;
	int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r;

	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	r = sweep_dir(fd, 0, &removed);
	if (ret_removed)
		*ret_removed = removed;
	return r;
}

/* Directories output_mkdir_parents made or found, by path, so a job does not
 * mkdir every component per image. Forgotten when they turn out gone. */
#define MKDIR_BUCKETS	1024
#define MKDIR_KNOWN_MAX 65536 /* then the set starts over: a cache, never a limit */

struct known_dir {
	struct known_dir *next;
	char path[];
};

static pthread_mutex_t mkdir_lock = PTHREAD_MUTEX_INITIALIZER;
static struct known_dir *mkdir_known[MKDIR_BUCKETS];
static size_t mkdir_n_known;
static uint64_t mkdir_calls;

static size_t mkdir_bucket(const char *path)
{
	return (size_t)(fnv1a64_str(path) % MKDIR_BUCKETS);
}

static void mkdir_known_clear_locked(void)
{
	for (size_t i = 0; i < MKDIR_BUCKETS; i++)
		while (mkdir_known[i]) {
			struct known_dir *k = mkdir_known[i];

			mkdir_known[i] = k->next;
			free(k);
		}
	mkdir_n_known = 0;
}

static bool mkdir_is_known(const char *path)
{
	bool found = false;

	pthread_mutex_lock(&mkdir_lock);
	for (struct known_dir *k = mkdir_known[mkdir_bucket(path)]; k && !found; k = k->next)
		found = strcmp(k->path, path) == 0;
	pthread_mutex_unlock(&mkdir_lock);
	return found;
}

static void mkdir_remember(const char *path)
{
	size_t len = strlen(path), b = mkdir_bucket(path);
	struct known_dir *k;

	pthread_mutex_lock(&mkdir_lock);
	for (k = mkdir_known[b]; k; k = k->next)
		if (strcmp(k->path, path) == 0)
			goto out;
	if (mkdir_n_known >= MKDIR_KNOWN_MAX)
		mkdir_known_clear_locked();
	k = malloc(sizeof(*k) + len + 1);
	if (!k)
		goto out; /* only a cache: the next call makes it again */
	memcpy(k->path, path, len + 1);
	k->next = mkdir_known[b];
	mkdir_known[b] = k;
	mkdir_n_known++;
out:
	pthread_mutex_unlock(&mkdir_lock);
}

void output_mkdir_forget(const char *path)
{
	size_t len = strlen(path);

	while (len > 1 && path[len - 1] == '/')
		len--;
	pthread_mutex_lock(&mkdir_lock);
	/* The folder and everything under it. */
	for (size_t i = 0; i < MKDIR_BUCKETS; i++)
		for (struct known_dir **p = &mkdir_known[i]; *p;) {
			struct known_dir *k = *p;

			if (strncmp(k->path, path, len) == 0 &&
			    (k->path[len] == '\0' || k->path[len] == '/')) {
				*p = k->next;
				free(k);
				mkdir_n_known--;
			} else {
				p = &k->next;
			}
		}
	pthread_mutex_unlock(&mkdir_lock);
}

unsigned long output_mkdir_count(void)
{
	unsigned long n;

	pthread_mutex_lock(&mkdir_lock);
	n = (unsigned long)mkdir_calls;
	pthread_mutex_unlock(&mkdir_lock);
	return n;
}

/* A directory created just now is durable only once its parent is synced. */
static int sync_parent(const char *path)
{
	char *parent = strdup(path), *slash;
	int fd, r;

	if (!parent)
		return -ENOMEM;
	slash = strrchr(parent, '/');
	if (slash == parent)
		slash[1] = '\0';
	else if (slash)
		*slash = '\0';
	fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(parent);
	if (fd < 0)
		return -errno;
	r = output_sync_dir(fd);
	(void)close(fd);
	return r;
}

/* Makes each component of p not known yet. A component that exists but was
 * not known is synced into its parent as well as a new one: another thread
 * may have just made it and not synced yet, or a crashed run never did. */
static int mkdir_components(char *p, mode_t mode)
{
	for (char *s = p + 1;; s++) {
		if (*s == '/' || *s == '\0') {
			char c = *s;
			int r;

			*s = '\0';
			if (!mkdir_is_known(p)) {
				r = mkdir(p, mode) == 0 || errno == EEXIST ? 0 : -errno;
				pthread_mutex_lock(&mkdir_lock);
				mkdir_calls++;
				pthread_mutex_unlock(&mkdir_lock);
				if (r == 0)
					r = sync_parent(p);
				if (r < 0) {
					*s = c;
					return r;
				}
				mkdir_remember(p);
			}
			*s = c;
			if (c == '\0')
				return 0;
		}
	}
}

int output_mkdir_parents(const char *path, mode_t mode)
{
	struct stat st;
	char *p;
	int r = 0;

	/* A known folder costs one stat, not a mkdir per component (a write
	 * round trip on a network file system each). */
	if (mkdir_is_known(path)) {
		if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
			return 0;
		output_mkdir_forget(path);
	}
	p = strdup(path);
	if (!p)
		return -ENOMEM;
	r = mkdir_components(p, mode);
	if (r == -ENOENT) {
		/* A known parent was removed meanwhile: forget the first one that
		 * is gone (and so all below it), then once more. */
		for (char *s = p + 1;; s++) {
			if (*s == '/' || *s == '\0') {
				char c = *s;
				bool gone;

				*s = '\0';
				gone = mkdir_is_known(p) && stat(p, &st) < 0 && errno == ENOENT;
				if (gone)
					output_mkdir_forget(p);
				*s = c;
				if (gone || c == '\0')
					break;
			}
		}
		r = mkdir_components(p, mode);
	}
	free(p);
	return r;
}

int output_mkdir_open(const char *path, mode_t mode)
{
	int fd, r;

	for (int tries = 0; tries < 2; tries++) {
		if (!mkdir_is_known(path)) {
			r = output_mkdir_parents(path, mode);
			if (r < 0)
				return r;
		}
		fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd >= 0)
			return fd;
		if (errno != ENOENT)
			return -errno;
		output_mkdir_forget(path); /* removed since: make it again */
	}
	return -ENOENT;
}
