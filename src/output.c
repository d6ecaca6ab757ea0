#include "output.h"

#include "b64.h"
#include "clean.h"

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

/* Reads a whole regular file of at most `max` bytes into a NUL-terminated
 * buffer. -EFBIG when larger, -EINVAL when not a regular file. */
int output_read_fd(int fd, size_t max, char **ret_buf, size_t *ret_len)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0, cap;
	int r;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if (st.st_size < 0 || (uint64_t)st.st_size > max)
		return -EFBIG;
	/* One byte past the size tells whether the file grew meanwhile. */
	cap = (size_t)st.st_size + 2;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t k = read(fd, buf + len, cap - 1 - len);

		if (k < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto fail;
		}
		if (k == 0)
			break;
		len += (size_t)k;
		if (len > max) {
			r = -EFBIG;
			goto fail;
		}
		if (len == cap - 1) {
			char *bigger;

			cap = cap * 2 > max + 2 ? max + 2 : cap * 2;
			bigger = realloc(buf, cap);
			if (!bigger) {
				r = -ENOMEM;
				goto fail;
			}
			buf = bigger;
		}
	}
	buf[len] = '\0';
	*ret_buf = buf;
	*ret_len = len;
	return 0;
fail:
	free(buf);
	return r;
}

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
	r = output_read_fd(fd, OUTPUT_RECORD_MAX, &buf, &len);
	(void)close(fd);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return SIDECAR_OTHER;
	root = cJSON_ParseWithLength(buf, len);
	src_name = output_sidecar_source(root);
	if (src_name && strcmp(src_name, source_rel) == 0)
		r = SIDECAR_OURS;
	else
		r = SIDECAR_OTHER;
	free(src_name);
	cJSON_Delete(root);
	free(buf);
	return r;
}

/* 1 when the candidate stem can be used, 0 when taken, or -errno. */
static int candidate_free(int dirfd, const char *cand, const char *source_rel)
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
	return 1;
}

int output_choose_stem(int dirfd, const char *stem, const char *source_rel,
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
		r = candidate_free(dirfd, cand, source_rel);
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

void output_tmp_abort(int dirfd, int fd, const char *tmp_name)
{
	int saved = errno;

	if (fd >= 0)
		(void)close(fd);
	if (tmp_name)
		(void)unlinkat(dirfd, tmp_name, 0);
	errno = saved;
}

static int write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t k = write(fd, p, len);

		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += k;
		len -= (size_t)k;
	}
	return 0;
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
	r = write_all(fd, data, len);
	if (r < 0) {
		output_tmp_abort(dirfd, fd, tmp);
		return r;
	}
	return output_tmp_commit(dirfd, fd, tmp, final_name);
}

int output_rfc3339(int64_t sec, long nsec, char *buf, size_t len)
{
	time_t t = (time_t)sec;
	struct tm tm;
	int n;

	if (!buf || nsec >= 1000000000L || (int64_t)t != sec || !gmtime_r(&t, &tm))
		return -EINVAL;
	/* RFC 3339 has exactly four year digits. */
	if (tm.tm_year < -1900 || tm.tm_year > 9999 - 1900)
		return -EINVAL;
	if (nsec >= 0)
		n = snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ", tm.tm_year + 1900,
			     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, nsec);
	else
		n = snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
			     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	if (n < 0 || (size_t)n >= len)
		return -EINVAL;
	return 0;
}

/* Exactly `digits` decimal digits at *p; advances *p. */
static bool parse_digits(const char **p, int digits, int *ret)
{
	int v = 0;

	for (int i = 0; i < digits; i++) {
		char c = (*p)[i];

		if (c < '0' || c > '9')
			return false;
		v = v * 10 + (c - '0');
	}
	*p += digits;
	*ret = v;
	return true;
}

static bool expect_char(const char **p, char c)
{
	if (**p != c)
		return false;
	(*p)++;
	return true;
}

static int days_in_month(int year, int month)
{
	static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

	return month == 2 && leap ? 29 : days[month - 1];
}

int output_parse_rfc3339(const char *text, int64_t *ret_sec, long *ret_nsec)
{
	int year, mon, day, hour, min, sec;
	const char *p = text;
	struct tm tm = {0};
	long nsec = 0;
	time_t t;

	if (!text)
		return -EINVAL;
	if (!parse_digits(&p, 4, &year) || !expect_char(&p, '-') || !parse_digits(&p, 2, &mon) ||
	    !expect_char(&p, '-') || !parse_digits(&p, 2, &day) || !expect_char(&p, 'T') ||
	    !parse_digits(&p, 2, &hour) || !expect_char(&p, ':') || !parse_digits(&p, 2, &min) ||
	    !expect_char(&p, ':') || !parse_digits(&p, 2, &sec))
		return -EINVAL;
	if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) || hour > 23 ||
	    min > 59 || sec > 59)
		return -EINVAL;
	if (*p == '.') {
		int digits = 0;

		p++;
		while (*p >= '0' && *p <= '9') {
			if (++digits > 9)
				return -EINVAL;
			nsec = nsec * 10 + (*p++ - '0');
		}
		if (digits == 0)
			return -EINVAL;
		for (; digits < 9; digits++)
			nsec *= 10;
	}
	if (!expect_char(&p, 'Z') || *p != '\0')
		return -EINVAL;
	tm.tm_year = year - 1900;
	tm.tm_mon = mon - 1;
	tm.tm_mday = day;
	tm.tm_hour = hour;
	tm.tm_min = min;
	tm.tm_sec = sec;
	/* The fields are validated, so -1 here is 1969-12-31T23:59:59, not an error. */
	t = timegm(&tm);
	if (ret_sec)
		*ret_sec = (int64_t)t;
	if (ret_nsec)
		*ret_nsec = nsec;
	return 0;
}

/* cJSON adders return NULL only when out of memory; NULL strings become null.
 * cJSON writes bytes as they are, and a document must stay valid UTF-8: bad
 * bytes become U+FFFD (names that must stay exact go through add_name). */
static bool add_string(cJSON *obj, const char *key, const char *value)
{
	char *lossy;
	bool ok;

	if (!value)
		return cJSON_AddNullToObject(obj, key) != NULL;
	if (clean_utf8_valid(value))
		return cJSON_AddStringToObject(obj, key, value) != NULL;
	lossy = clean_text(value, SIZE_MAX, NULL);
	ok = lossy && cJSON_AddStringToObject(obj, key, lossy) != NULL;
	free(lossy);
	return ok;
}

static bool add_number(cJSON *obj, const char *key, double value)
{
	return cJSON_AddNumberToObject(obj, key, value) != NULL;
}

/* A time outside RFC 3339's four-digit years is written as null. */
static bool add_time(cJSON *obj, const char *key, int64_t sec, long nsec)
{
	char buf[64];

	if (output_rfc3339(sec, nsec, buf, sizeof(buf)) < 0)
		return add_string(obj, key, NULL);
	return add_string(obj, key, buf);
}

/* JSON text must be UTF-8, names on disk need not be: a name that is not
 * valid UTF-8 is written readable (U+FFFD for bad bytes) under key, and
 * exactly, as hex, under "<key>_hex". */
static bool add_name(cJSON *obj, const char *key, const char *name)
{
	char hex_key[32], *lossy, *hex;
	size_t n;
	bool ok;

	if (!name || clean_utf8_valid(name))
		return add_string(obj, key, name);
	n = strlen(name);
	lossy = clean_text(name, SIZE_MAX, NULL);
	hex = malloc(2 * n + 1);
	ok = lossy && hex;
	if (ok) {
		b64_hex((const uint8_t *)name, n, hex);
		(void)snprintf(hex_key, sizeof(hex_key), "%s_hex", key);
		ok = add_string(obj, key, lossy) && add_string(obj, hex_key, hex);
	}
	free(lossy);
	free(hex);
	return ok;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *output_json_name(const cJSON *root, const char *key)
{
	char hex_key[32];
	const cJSON *hex, *src = cJSON_GetObjectItemCaseSensitive(root, key);
	size_t n;
	char *out;

	(void)snprintf(hex_key, sizeof(hex_key), "%s_hex", key);
	hex = cJSON_GetObjectItemCaseSensitive(root, hex_key);
	if (!cJSON_IsString(hex) || !hex->valuestring)
		return cJSON_IsString(src) && src->valuestring ? strdup(src->valuestring) : NULL;
	n = strlen(hex->valuestring);
	if (n == 0 || n % 2)
		return NULL;
	out = malloc(n / 2 + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hex_value(hex->valuestring[2 * i]), lo = hex_value(hex->valuestring[2 * i + 1]);
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
			free(out);
			return NULL;
		}
		out[i] = (char)(hi << 4 | lo);
	}
	out[n / 2] = '\0';
	return out;
}

char *output_sidecar_source(const cJSON *root)
{
	return output_json_name(root, "source");
}

bool output_json_add_name(cJSON *obj, const char *key, const char *name)
{
	return add_name(obj, key, name);
}

static bool add_source(cJSON *obj, const struct sidecar_source *src)
{
	/* Sizes stay exact up to 2^53 bytes as a JSON number. */
	long nsec = src->mtime_nsec < 0 ? 0 : src->mtime_nsec;

	return add_name(obj, "source", src->source) &&
	       add_string(obj, "source_sha256", src->sha256_hex) &&
	       add_number(obj, "source_size", (double)src->size) &&
	       add_time(obj, "source_mtime", src->mtime_sec, nsec);
}

static bool add_usage(cJSON *obj, const cJSON *usage)
{
	cJSON *copy;

	if (!usage)
		return cJSON_AddNullToObject(obj, "usage") != NULL;
	copy = cJSON_Duplicate(usage, true);
	if (!copy)
		return false;
	/* Bounded by api_bound_usage already; this keeps the document UTF-8
	 * whoever filled usage (a reused sidecar, say). */
	if (clean_json(copy, NULL) < 0) {
		cJSON_Delete(copy);
		return false;
	}
	if (!cJSON_AddItemToObject(obj, "usage", copy)) {
		cJSON_Delete(copy);
		return false;
	}
	return true;
}

/* cJSON_Print's text plus the trailing newline, in a plain malloc() buffer so
 * the caller can free() it whatever hooks cJSON was given. */
static char *print_document(const cJSON *root)
{
	char *text, *out;
	size_t len;

	text = cJSON_Print(root);
	if (!text)
		return NULL;
	len = strlen(text);
	out = malloc(len + 2);
	if (out) {
		memcpy(out, text, len);
		out[len] = '\n';
		out[len + 1] = '\0';
	}
	cJSON_free(text);
	return out;
}

static bool add_fitted(cJSON *obj, const struct sidecar_fitted *f)
{
	cJSON *o = cJSON_AddObjectToObject(obj, "fitted"), *reasons;

	if (!o || !add_string(o, "from", f->from) || !add_string(o, "to", f->to))
		return false;
	reasons = cJSON_AddArrayToObject(o, "reasons");
	if (!reasons)
		return false;
	for (size_t i = 0; i < f->n_reasons; i++) {
		cJSON *r = cJSON_CreateString(f->reasons[i]);
		if (!r || !cJSON_AddItemToArray(reasons, r)) {
			cJSON_Delete(r);
			return false;
		}
	}
	return add_number(o, "bytes_sent", (double)f->bytes_sent);
}

char *output_sidecar_json(const struct sidecar_success *s)
{
	cJSON *root;
	char *out = NULL;
	bool ok;

	if (!s)
		return NULL;
	root = cJSON_CreateObject();
	if (!root)
		return NULL;
	ok = add_source(root, &s->src) && add_name(root, "output", s->output) &&
	     add_string(root, "model", s->model) && add_string(root, "prompt", s->prompt) &&
	     add_string(root, "size", s->size) && add_string(root, "result_size", s->result_size) &&
	     cJSON_AddBoolToObject(root, "watermark", s->watermark) &&
	     add_string(root, "response_format", s->response_format) &&
	     add_number(root, "created", (double)s->created) && add_usage(root, s->usage) &&
	     add_string(root, "request_id", s->request_id) &&
	     add_number(root, "attempts", s->attempts) &&
	     add_number(root, "elapsed_ms", (double)s->elapsed_ms) &&
	     add_time(root, "completed_at", s->completed_at, -1) &&
	     add_string(root, "seedreamd_version", s->version) &&
	     (!s->reused_from || add_name(root, "reused_from", s->reused_from)) &&
	     (!s->fitted || add_fitted(root, s->fitted));
	if (ok)
		out = print_document(root);
	cJSON_Delete(root);
	return out;
}

static bool add_error(cJSON *obj, const struct sidecar_error *e)
{
	cJSON *err = cJSON_AddObjectToObject(obj, "error");
	bool ok;

	if (!err)
		return false;
	if (e->http_status == 0)
		ok = cJSON_AddNullToObject(err, "http_status") != NULL;
	else
		ok = add_number(err, "http_status", (double)e->http_status);
	return ok && add_string(err, "code", e->code) && add_string(err, "message", e->message);
}

char *output_error_json(const struct sidecar_error *e)
{
	cJSON *root;
	char *out = NULL;
	bool ok;

	if (!e)
		return NULL;
	root = cJSON_CreateObject();
	if (!root)
		return NULL;
	ok = add_source(root, &e->src) && add_error(root, e) &&
	     add_string(root, "request_id", e->request_id) &&
	     add_number(root, "attempts", e->attempts) &&
	     add_time(root, "failed_at", e->failed_at, -1) &&
	     add_string(root, "seedreamd_version", e->version);
	if (ok)
		out = print_document(root);
	cJSON_Delete(root);
	return out;
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
	DIR *dir;
	struct dirent *de;
	int r = 0;

	dir = fdopendir(dirfd);
	if (!dir) {
		r = -errno;
		close(dirfd);
		return r;
	}
	while ((de = readdir(dir))) {
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		/* Only temporary names and folders need a look: no stat for
		 * each of 100,000 outputs and sidecars. */
		if (de->d_type != DT_UNKNOWN && de->d_type != DT_DIR &&
		    !(de->d_type == DT_REG && output_is_tmp_name(de->d_name)))
			continue;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISREG(st.st_mode) && output_is_tmp_name(de->d_name)) {
			if (unlinkat(dirfd, de->d_name, 0) == 0)
				(*removed)++;
		} else if (S_ISDIR(st.st_mode) && de->d_name[0] != '.' && depth < 64) {
			int sub = openat(dirfd, de->d_name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0)
				(void)sweep_dir(sub, depth + 1, removed);
		}
	}
	closedir(dir);
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
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (const unsigned char *p = (const unsigned char *)path; *p; p++)
		h = (h ^ *p) * 1099511628211ull;
	return (size_t)(h % MKDIR_BUCKETS);
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
