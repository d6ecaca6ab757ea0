/* journal: paid results not yet written out, in one append-only file.
 *
 * The guarantees (the README states them too):
 * - A crash costs at most the generations in flight: a result the API has
 *   answered is in the journal (or written out) before anything else
 *   happens to it, and a restart downloads it instead of paying again.
 * - A paid result is durable (a journal record after fdatasync, or the
 *   output and its sidecar after fsync of file and directory) before the job
 *   counts it done.
 * - No partial file under a final name: every file is written to a hidden
 *   temporary name, fsync'd and renamed; a torn journal append is detected
 *   by its frame and checksum and never replayed.
 *
 * Cheaper than one file per record: concurrent writers share one fdatasync
 * (group commit), and a "done" tombstone needs none (a lost one only makes
 * the restart find the result already written, which the restore checks). */
#include "journal.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "api.h"
#include "clean.h"
#include "dirlist.h"
#include "fdio.h"
#include "output.h"
#include "sidecar.h"

/* Server text arrives cleaned (api_parse_response); names may be any bytes,
 * so they are written as sidecars write them: readable, and exact as hex.
 * Either way the record stays valid UTF-8. */
static int add_string(cJSON *o, const char *key, const char *value)
{
	return sidecar_add_name(o, key, value) ? 0 : -ENOMEM;
}

static int add_number(cJSON *o, const char *key, double value)
{
	return cJSON_AddNumberToObject(o, key, value) ? 0 : -ENOMEM;
}

/* ---- what was sent ---------------------------------------------------------
 *
 * Prompts and paths may be long and full of bytes JSON escapes as six: one
 * whose escaped form would be more than twice as long (or that is not UTF-8)
 * is written as "<key>_hex" alone, so the largest record stays bounded
 * (tests/unit/test_journal.c, test_largest_records_read_back). */

static bool text_plain(const char *s)
{
	size_t len = 0, escaped = 0;

	if (!clean_utf8_valid(s))
		return false;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++, len++)
		escaped += *p == '"' || *p == '\\' || *p == '\n' || *p == '\r' || *p == '\t' ||
				   *p == '\b' || *p == '\f'
			       ? 2
			   : *p < 0x20 ? 6
				       : 1;
	return escaped <= 2 * len;
}

static int add_compact(cJSON *o, const char *key, const char *value)
{
	char hex_key[32], *hex;
	size_t len;
	bool ok;

	if (!value)
		return 0;
	if (text_plain(value))
		return cJSON_AddStringToObject(o, key, value) ? 0 : -ENOMEM;
	len = strlen(value);
	hex = malloc(2 * len + 1);
	if (!hex)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++)
		(void)snprintf(hex + 2 * i, 3, "%02x", (unsigned char)value[i]);
	hex[2 * len] = '\0';
	(void)snprintf(hex_key, sizeof(hex_key), "%s_hex", key);
	ok = cJSON_AddStringToObject(o, hex_key, hex) != NULL;
	free(hex);
	return ok ? 0 : -ENOMEM;
}

/* What add_compact (or add_string) wrote, or NULL when neither form is there. */
static int get_compact(const cJSON *o, const char *key, char **ret)
{
	char hex_key[32];
	bool present;

	(void)snprintf(hex_key, sizeof(hex_key), "%s_hex", key);
	*ret = NULL;
	present = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, key)) ||
		  cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, hex_key));
	if (!present)
		return cJSON_GetObjectItemCaseSensitive(o, key) ||
			       cJSON_GetObjectItemCaseSensitive(o, hex_key)
			   ? -EINVAL
			   : 0;
	*ret = sidecar_get_name(o, key);
	if (*ret)
		return 0;
	return cJSON_GetObjectItemCaseSensitive(o, hex_key) ? -EINVAL : -ENOMEM;
}

static int add_sent(cJSON *o, const struct journal_record *rec)
{
	cJSON *arr, *item;
	char mtime[64];
	int r = 0;

	r |= add_compact(o, "prompt", rec->prompt);
	r |= add_compact(o, "prompt_source", rec->prompt_source);
	r |= add_compact(o, "prompt_file", rec->prompt_file);
	if (r)
		return -ENOMEM;
	if (rec->extra_json) {
		item = cJSON_Parse(rec->extra_json);
		if (!cJSON_IsObject(item)) {
			cJSON_Delete(item);
			return item ? -EINVAL : -ENOMEM;
		}
		cJSON_AddItemToObject(o, "extra", item);
	}
	if (rec->n_references) {
		if (!(arr = cJSON_AddArrayToObject(o, "references")))
			return -ENOMEM;
		for (size_t i = 0; i < rec->n_references; i++) {
			if (!(item = cJSON_CreateObject()))
				return -ENOMEM;
			cJSON_AddItemToArray(arr, item);
			r |= add_compact(item, "path", rec->references[i].path);
			if (rec->references[i].sha256[0])
				r |= add_string(item, "sha256", rec->references[i].sha256);
		}
	}
	if (rec->n_sources) {
		if (!(arr = cJSON_AddArrayToObject(o, "sources")))
			return -ENOMEM;
		for (size_t i = 0; i < rec->n_sources; i++) {
			const struct journal_sent_source *src = &rec->sources[i];

			if (sidecar_format_time(src->mtime_sec, src->mtime_nsec, mtime,
						sizeof(mtime)) < 0)
				return -EINVAL;
			if (!(item = cJSON_CreateObject()))
				return -ENOMEM;
			cJSON_AddItemToArray(arr, item);
			r |= add_compact(item, "name", src->name);
			if (src->sha256[0])
				r |= add_string(item, "sha256", src->sha256);
			r |= add_number(item, "size", (double)src->size);
			r |= add_string(item, "mtime", mtime);
		}
	}
	return r ? -ENOMEM : 0;
}

static void copy_sha(const cJSON *o, char sha256[65])
{
	const cJSON *sha = cJSON_GetObjectItemCaseSensitive(o, "sha256");

	sha256[0] = '\0';
	if (cJSON_IsString(sha) && strlen(sha->valuestring) == 64)
		memcpy(sha256, sha->valuestring, 65);
}

/* An optional array of at most API_IMAGES_MAX objects: its size, or -EINVAL. */
static int sent_array(const cJSON *o, const char *key, const cJSON **ret)
{
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, key), *item;
	int n;

	*ret = arr;
	if (!arr)
		return 0;
	n = cJSON_GetArraySize(arr);
	if (!cJSON_IsArray(arr) || n > API_IMAGES_MAX)
		return -EINVAL;
	cJSON_ArrayForEach(item, arr)
	{
		if (!cJSON_IsObject(item))
			return -EINVAL;
	}
	return n;
}

static int parse_sent(const cJSON *o, struct journal_record *rec)
{
	const cJSON *extra = cJSON_GetObjectItemCaseSensitive(o, "extra"), *arr, *item;
	char *mtime = NULL;
	double size;
	int n, r;

	if ((r = get_compact(o, "prompt", &rec->prompt)) < 0 ||
	    (r = get_compact(o, "prompt_source", &rec->prompt_source)) < 0 ||
	    (r = get_compact(o, "prompt_file", &rec->prompt_file)) < 0)
		return r;
	if (extra) {
		if (!cJSON_IsObject(extra))
			return -EINVAL;
		if (!(rec->extra_json = cJSON_PrintUnformatted(extra)))
			return -ENOMEM;
	}
	if ((n = sent_array(o, "references", &arr)) < 0)
		return n;
	if (n) {
		if (!(rec->references = calloc((size_t)n, sizeof(*rec->references))))
			return -ENOMEM;
		cJSON_ArrayForEach(item, arr)
		{
			struct journal_sent_ref *ref = &rec->references[rec->n_references++];

			if ((r = get_compact(item, "path", &ref->path)) < 0)
				return r;
			if (!ref->path)
				return -EINVAL;
			copy_sha(item, ref->sha256);
		}
	}
	if ((n = sent_array(o, "sources", &arr)) < 0)
		return n;
	if (n) {
		if (!(rec->sources = calloc((size_t)n, sizeof(*rec->sources))))
			return -ENOMEM;
		cJSON_ArrayForEach(item, arr)
		{
			struct journal_sent_source *src = &rec->sources[rec->n_sources++];

			if ((r = get_compact(item, "name", &src->name)) < 0 ||
			    (r = sidecar_dup_string(item, "mtime", true, &mtime)) < 0)
				return r;
			r = src->name && sidecar_get_number(item, "size", 9e15, &size)
				? sidecar_parse_time(mtime, &src->mtime_sec, &src->mtime_nsec)
				: -EINVAL;
			free(mtime);
			mtime = NULL;
			if (r < 0)
				return r;
			src->size = (uint64_t)size;
			copy_sha(item, src->sha256);
		}
	}
	return 0;
}

char *journal_record_json(const struct journal_record *rec)
{
	cJSON *o = cJSON_CreateObject(), *usage;
	char mtime[64], *text = NULL;
	int r = 0;

	if (!o)
		return NULL;
	if (sidecar_format_time(rec->mtime_sec, rec->mtime_nsec, mtime, sizeof(mtime)) < 0)
		goto out;
	r |= add_string(o, "folder", rec->folder);
	r |= add_string(o, SIDECAR_SOURCE, rec->source);
	r |= add_string(o, "stem", rec->stem);
	r |= add_string(o, "url", rec->url);
	r |= add_string(o, SIDECAR_MODEL, rec->model);
	r |= add_string(o, SIDECAR_RESULT_SIZE, rec->result_size);
	r |= add_string(o, SIDECAR_REQUEST_ID, rec->request_id);
	r |= add_string(o, SIDECAR_SHA256, rec->sha256);
	r |= add_string(o, SIDECAR_MTIME, mtime);
	/* Sizes and times stay far below 2^53: exact as JSON numbers. */
	r |= add_number(o, SIDECAR_SIZE, (double)rec->size);
	r |= add_number(o, SIDECAR_CREATED, (double)rec->created);
	r |= add_number(o, "generated_at_ms", (double)rec->generated_at);
	r |= add_number(o, SIDECAR_ELAPSED_MS, (double)rec->elapsed_ms);
	r |= add_number(o, SIDECAR_ATTEMPTS, rec->attempts);
	usage = rec->usage ? cJSON_Duplicate(rec->usage, true) : cJSON_CreateNull();
	if (!usage || r || clean_json(usage, NULL) < 0) {
		cJSON_Delete(usage);
		goto out;
	}
	cJSON_AddItemToObject(o, SIDECAR_USAGE, usage);
	if (add_sent(o, rec) < 0)
		goto out;
	if (rec->max_images > 1 && !cJSON_AddNumberToObject(o, "max_images", rec->max_images))
		goto out;
	if (rec->images) {
		cJSON *images = cJSON_Duplicate(rec->images, true);

		if (!images || clean_json(images, NULL) < 0) {
			cJSON_Delete(images);
			goto out;
		}
		cJSON_AddItemToObject(o, "images", images);
	}
	text = cJSON_PrintUnformatted(o);
out:
	cJSON_Delete(o);
	return text;
}

/* A name written by add_string: exact from "<key>_hex" when present. */
static int dup_name(const cJSON *o, const char *key, char **ret)
{
	char hex_key[32];

	(void)snprintf(hex_key, sizeof(hex_key), "%s_hex", key);
	*ret = NULL;
	if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, key)))
		return -EINVAL;
	*ret = sidecar_get_name(o, key);
	if (*ret)
		return 0;
	/* NULL: a malformed hex form, or out of memory. */
	return cJSON_GetObjectItemCaseSensitive(o, hex_key) ? -EINVAL : -ENOMEM;
}

int journal_record_parse(const char *json, size_t len, struct journal_record *rec)
{
	cJSON *o = cJSON_ParseWithLength(json, len);
	char *sha = NULL, *mtime = NULL;
	double size, created, gen, elapsed, attempts, max_images;
	const cJSON *usage, *images;
	int r;

	memset(rec, 0, sizeof(*rec));
	if (!o)
		return -EINVAL;
	r = -EINVAL;
	if (!cJSON_IsObject(o))
		goto out;
	if ((r = dup_name(o, "folder", &rec->folder)) < 0 ||
	    (r = dup_name(o, SIDECAR_SOURCE, &rec->source)) < 0 ||
	    (r = sidecar_dup_string(o, "stem", true, &rec->stem)) < 0 ||
	    (r = sidecar_dup_string(o, "url", true, &rec->url)) < 0 ||
	    (r = sidecar_dup_string(o, SIDECAR_MODEL, false, &rec->model)) < 0 ||
	    (r = sidecar_dup_string(o, SIDECAR_RESULT_SIZE, false, &rec->result_size)) < 0 ||
	    (r = sidecar_dup_string(o, SIDECAR_REQUEST_ID, false, &rec->request_id)) < 0 ||
	    (r = sidecar_dup_string(o, SIDECAR_SHA256, false, &sha)) < 0 ||
	    (r = sidecar_dup_string(o, SIDECAR_MTIME, true, &mtime)) < 0)
		goto out;
	r = -EINVAL;
	if (!rec->stem[0] || strchr(rec->stem, '/') || rec->stem[0] == '.')
		goto out; /* never let a record name a file outside its folder */
	if (!sidecar_get_number(o, SIDECAR_SIZE, 9e15, &size) ||
	    !sidecar_get_number(o, SIDECAR_CREATED, (double)API_CREATED_MAX, &created) ||
	    !sidecar_get_number(o, "generated_at_ms", 9e15, &gen) ||
	    !sidecar_get_number(o, SIDECAR_ELAPSED_MS, 9e15, &elapsed) ||
	    !sidecar_get_number(o, SIDECAR_ATTEMPTS, 1e6, &attempts))
		goto out;
	if (sidecar_parse_time(mtime, &rec->mtime_sec, &rec->mtime_nsec) < 0)
		goto out;
	if (sha && strlen(sha) == 64)
		memcpy(rec->sha256, sha, 65);
	rec->size = (uint64_t)size;
	rec->created = (int64_t)created;
	rec->generated_at = (int64_t)gen;
	rec->elapsed_ms = (uint64_t)elapsed;
	rec->attempts = (unsigned)attempts;
	if (sidecar_get_number(o, "max_images", API_IMAGES_MAX, &max_images))
		rec->max_images = (unsigned)max_images;
	images = cJSON_GetObjectItemCaseSensitive(o, "images");
	if (images) {
		/* Each entry is checked where it is used (a URL is checked again
		 * before any fetch); the list itself must be what we write. */
		if (!cJSON_IsArray(images) || cJSON_GetArraySize(images) < 1 ||
		    cJSON_GetArraySize(images) > API_IMAGES_MAX)
			goto out;
		rec->images = cJSON_Duplicate(images, true);
		if (!rec->images) {
			r = -ENOMEM;
			goto out;
		}
	}
	r = parse_sent(o, rec);
	if (r < 0)
		goto out;
	r = -EINVAL;
	usage = cJSON_GetObjectItemCaseSensitive(o, SIDECAR_USAGE);
	if (cJSON_IsObject(usage)) {
		rec->usage = cJSON_Duplicate(usage, true);
		if (!rec->usage) {
			r = -ENOMEM;
			goto out;
		}
	}
	r = 0;
out:
	free(sha);
	free(mtime);
	cJSON_Delete(o);
	if (r < 0)
		journal_record_clear(rec);
	return r;
}

void journal_record_clear(struct journal_record *rec)
{
	free(rec->folder);
	free(rec->source);
	free(rec->stem);
	free(rec->url);
	free(rec->model);
	free(rec->result_size);
	free(rec->request_id);
	cJSON_Delete(rec->usage);
	cJSON_Delete(rec->images);
	free(rec->prompt);
	free(rec->prompt_source);
	free(rec->prompt_file);
	free(rec->extra_json);
	for (size_t i = 0; i < rec->n_references; i++)
		free(rec->references[i].path);
	free(rec->references);
	for (size_t i = 0; i < rec->n_sources; i++)
		free(rec->sources[i].name);
	free(rec->sources);
	memset(rec, 0, sizeof(*rec));
}

/* ---- the log file ----------------------------------------------------------
 *
 * One line per record: "SJ1 <kind> <length> <crc32> <payload>\n", kind 'W'
 * (a paid result, payload journal_record_json) or 'D' (done: payload
 * {"folder","source"}), length the payload's bytes in decimal, crc32 (IEEE)
 * over the kind and the payload in 8 hex digits. JSON as cJSON prints it
 * unformatted never holds a raw newline, so a damaged line ends at the next
 * '\n' and the lines after it still read. A last line without its '\n' is a
 * torn append: its writer never heard "durable", so it is set aside, never
 * replayed. */

#define JOURNAL_LOG	"journal.log"
#define JOURNAL_BAD	"journal.bad"
#define JOURNAL_OLD_DIR "journal"
#define JOURNAL_MAGIC	"SJ1 "
/* Compact once the file has grown past this and doubled since it was last
 * rewritten: tombstones then hold at least half of it. */
#define JOURNAL_COMPACT_MIN (1024 * 1024)
/* A log larger than this is not read (never written: compaction keeps it
 * near the live records, each under SIDECAR_RECORD_MAX). */
#define JOURNAL_READ_MAX ((size_t)1 << 30)

struct journal {
	int dirfd; /* state_dir */
	int fd;	   /* journal.log, O_APPEND */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t appended;    /* records appended so far */
	uint64_t synced;      /* of which durable */
	uint64_t failed_upto; /* a failed sync covered records up to this one */
	int failed_err;
	bool syncing;	     /* a leader is in fdatasync outside the lock */
	bool needs_rewrite;  /* the file's tail is suspect: rewrite before appending */
	uint64_t size;	     /* bytes in journal.log */
	uint64_t base_size;  /* after the last rewrite */
	uint64_t sync_count; /* fdatasync calls, for tests and figures */
	unsigned sync_delay_us;
};

uint32_t journal_crc32(uint32_t crc, const void *data, size_t len)
{
	const unsigned char *p = data;

	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
	}
	return ~crc;
}

static uint32_t line_crc(char kind, const char *payload, size_t len)
{
	return journal_crc32(journal_crc32(0, &kind, 1), payload, len);
}

/* The framed line for payload (caller frees), or NULL on ENOMEM. */
static char *line_new(char kind, const char *payload, size_t *ret_len)
{
	size_t len = strlen(payload);
	char *line;
	int n;

	n = asprintf(&line, JOURNAL_MAGIC "%c %zu %08" PRIx32 " %s\n", kind, len,
		     line_crc(kind, payload, len), payload);
	if (n < 0)
		return NULL;
	*ret_len = (size_t)n;
	return line;
}

/* Parses one line (without its '\n'); on success *ret_payload points into it. */
static int line_parse(const char *line, size_t len, char *ret_kind, const char **ret_payload,
		      size_t *ret_payload_len)
{
	const size_t magic = strlen(JOURNAL_MAGIC);
	unsigned long long plen = 0;
	uint32_t crc = 0;
	const char *p = line + magic + 2, *end = line + len;
	int digits = 0;

	if (len < magic + 2 || memcmp(line, JOURNAL_MAGIC, magic) != 0 || line[magic + 1] != ' ')
		return -EINVAL;
	if (line[magic] != 'W' && line[magic] != 'D')
		return -EINVAL;
	while (p < end && *p >= '0' && *p <= '9' && digits < 12) {
		plen = plen * 10 + (unsigned)(*p++ - '0');
		digits++;
	}
	if (!digits || p >= end || *p++ != ' ')
		return -EINVAL;
	for (digits = 0; digits < 8; digits++, p++) {
		int v = p < end && isxdigit((unsigned char)*p)
			    ? (*p <= '9' ? *p - '0' : (*p | 0x20) - 'a' + 10)
			    : -1;
		if (v < 0)
			return -EINVAL;
		crc = crc << 4 | (uint32_t)v;
	}
	if (p >= end || *p++ != ' ' || (size_t)(end - p) != plen)
		return -EINVAL;
	if (line_crc(line[magic], p, (size_t)plen) != crc)
		return -EINVAL;
	*ret_kind = line[magic];
	*ret_payload = p;
	*ret_payload_len = (size_t)plen;
	return 0;
}

static char *tombstone_json(const char *folder, const char *source)
{
	cJSON *o = cJSON_CreateObject();
	char *text = NULL;

	if (o && sidecar_add_name(o, "folder", folder) &&
	    sidecar_add_name(o, SIDECAR_SOURCE, source))
		text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return text;
}

static int tombstone_parse(const char *json, size_t len, char **ret_folder, char **ret_source)
{
	cJSON *o = cJSON_ParseWithLength(json, len);
	int r = -EINVAL;

	*ret_folder = *ret_source = NULL;
	if (!cJSON_IsObject(o))
		goto out;
	if ((r = dup_name(o, "folder", ret_folder)) < 0 ||
	    (r = dup_name(o, "source", ret_source)) < 0)
		goto out;
	r = 0;
out:
	cJSON_Delete(o);
	if (r < 0) {
		free(*ret_folder);
		free(*ret_source);
		*ret_folder = *ret_source = NULL;
	}
	return r;
}

/* ---- reading: what is live ----------------------------------------------- */

struct entry {
	char kind;		   /* 'W' or 'D' */
	size_t seq;		   /* order of appearance: old-layout files first */
	struct journal_record rec; /* 'W': the record; 'D': folder and source only */
	char *old_name;		   /* a file of the old layout, removed once migrated */
};

struct scan {
	struct entry *e;
	size_t n, cap;
	size_t bad;
	bool dirty;	   /* something to drop: dead records, bad lines, a torn tail, old files */
	int bad_fd;	   /* journal.bad, opened on the first bad line */
	int bad_err;	   /* a bad line could not be kept: do not drop it */
	uint64_t good_end; /* journal.log's bytes up to the last complete line */
};

static void scan_clear(struct scan *s)
{
	for (size_t i = 0; i < s->n; i++) {
		journal_record_clear(&s->e[i].rec);
		free(s->e[i].old_name);
	}
	free(s->e);
	if (s->bad_fd >= 0)
		(void)close(s->bad_fd);
	memset(s, 0, sizeof(*s));
	s->bad_fd = -1;
}

static struct entry *scan_add(struct scan *s)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		struct entry *e = reallocarray(s->e, cap, sizeof(*e));

		if (!e)
			return NULL;
		s->e = e;
		s->cap = cap;
	}
	memset(&s->e[s->n], 0, sizeof(s->e[0]));
	s->e[s->n].seq = s->n;
	return &s->e[s->n++];
}

/* Keeps a line that did not read in journal.bad for a human: it leaves the
 * log only once it is durable there. */
static void scan_keep_bad(struct journal *j, struct scan *s, const char *text, size_t len)
{
	static const char nl = '\n';
	struct iovec iov[2] = {{(void *)text, len}, {(void *)&nl, 1}};
	ssize_t k;

	if (s->bad_fd < 0 && !s->bad_err) {
		s->bad_fd = openat(j->dirfd, JOURNAL_BAD,
				   O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (s->bad_fd < 0)
			s->bad_err = -errno;
	}
	if (s->bad_fd < 0)
		return;
	do
		k = writev(s->bad_fd, iov, 2);
	while (k < 0 && errno == EINTR);
	if (k != (ssize_t)(len + 1))
		s->bad_err = k < 0 ? -errno : -EIO;
}

static int scan_line(struct scan *s, char kind, const char *payload, size_t len)
{
	struct entry *e = scan_add(s);
	int r;

	if (!e)
		return -ENOMEM;
	if (kind == 'W')
		r = journal_record_parse(payload, len, &e->rec);
	else
		r = tombstone_parse(payload, len, &e->rec.folder, &e->rec.source);
	if (r < 0) {
		s->n--;
		return r;
	}
	e->kind = kind;
	return 0;
}

/* Reads journal.log into s. A line that does not read is counted bad and
 * copied to journal.bad; a torn tail is copied there too, not counted. */
static int scan_log(struct journal *j, struct scan *s)
{
	char *buf = NULL;
	size_t len = 0, pos = 0;
	int fd, r;

	fd = openat(j->dirfd, JOURNAL_LOG, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	r = fdio_read_file(fd, JOURNAL_READ_MAX, &buf, &len);
	(void)close(fd);
	if (r < 0)
		return r;
	while (pos < len) {
		char *nl = memchr(buf + pos, '\n', len - pos);
		size_t line_len = nl ? (size_t)(nl - (buf + pos)) : len - pos;
		const char *payload;
		size_t plen;
		char kind;

		if (!nl) {
			scan_keep_bad(j, s, buf + pos, line_len);
			s->dirty = true;
			break;
		}
		r = line_parse(buf + pos, line_len, &kind, &payload, &plen);
		if (r == 0)
			r = scan_line(s, kind, payload, plen);
		if (r == -ENOMEM)
			goto out;
		if (r < 0) {
			s->bad++;
			s->dirty = true;
			scan_keep_bad(j, s, buf + pos, line_len);
		}
		pos += line_len + 1;
		s->good_end = pos;
	}
	r = 0;
out:
	free(buf);
	return r;
}

/* The records of the old one-file-per-record layout (<state_dir>/journal),
 * as writes that precede everything in the log. Files that do not read stay
 * where they are, counted bad. */
static int scan_old_dir(struct journal *j, struct scan *s)
{
	int fd = dirlist_open_sub(j->dirfd, JOURNAL_OLD_DIR);
	struct dirlist dir;
	const char *name;
	unsigned char type;
	int r = 0;

	if (fd < 0)
		return fd == -ENOENT || fd == -ENOTDIR ? 0 : fd;
	r = dirlist_open(&dir, fd);
	if (r < 0)
		return r;
	while ((name = dirlist_next(&dir, &type, NULL))) {
		struct entry *e;
		size_t len = 0;
		char *text = NULL;
		int rfd;

		if (output_is_tmp_name(name)) {
			/* An interrupted write of the old layout: never durable. */
			(void)unlinkat(fd, name, 0);
			continue;
		}
		if (name[0] == '.')
			continue;
		rfd = openat(fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (rfd < 0) {
			s->bad++;
			continue;
		}
		r = fdio_read_file(rfd, SIDECAR_RECORD_MAX, &text, &len);
		(void)close(rfd);
		if (r == -ENOMEM)
			break;
		e = r == 0 ? scan_add(s) : NULL;
		if (r == 0 && !e) {
			free(text);
			r = -ENOMEM;
			break;
		}
		r = 0;
		if (!e || journal_record_parse(text, len, &e->rec) < 0) {
			if (e)
				s->n--;
			s->bad++;
			free(text);
			continue;
		}
		free(text);
		e->kind = 'W';
		e->old_name = strdup(name);
		if (!e->old_name) {
			r = -ENOMEM;
			break;
		}
		s->dirty = true;
	}
	dirlist_close(&dir);
	return r;
}

static int entry_key_cmp(const void *a, const void *b)
{
	const struct entry *x = *(struct entry *const *)a, *y = *(struct entry *const *)b;
	int c = strcmp(x->rec.folder, y->rec.folder);

	if (!c)
		c = strcmp(x->rec.source, y->rec.source);
	if (!c)
		c = x->seq < y->seq ? -1 : x->seq > y->seq;
	return c;
}

static int entry_seq_cmp(const void *a, const void *b)
{
	const struct entry *x = *(struct entry *const *)a, *y = *(struct entry *const *)b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The live writes (the last entry of their key is a write), in order of
 * appearance. Marks the scan dirty when anything is dead. */
static int scan_live(struct scan *s, struct entry ***ret_live, size_t *ret_n)
{
	struct entry **all = calloc(s->n ? s->n : 1, sizeof(*all));
	size_t n = 0;

	if (!all)
		return -ENOMEM;
	for (size_t i = 0; i < s->n; i++)
		all[i] = &s->e[i];
	if (s->n) /* NULL with 0 is undefined behaviour for qsort */
		qsort(all, s->n, sizeof(*all), entry_key_cmp);
	for (size_t i = 0; i < s->n; i++) {
		bool last = i + 1 == s->n || strcmp(all[i]->rec.folder, all[i + 1]->rec.folder) ||
			    strcmp(all[i]->rec.source, all[i + 1]->rec.source);

		if (last && all[i]->kind == 'W')
			all[n++] = all[i];
		else
			s->dirty = true;
	}
	if (n)
		qsort(all, n, sizeof(*all), entry_seq_cmp);
	*ret_live = all;
	*ret_n = n;
	return 0;
}

/* Writes the live records to a new file and renames it over journal.log
 * (fsync'd, and the directory too). Called with the lock held and no sync
 * running. On success j->fd is the new file. */
static int rewrite_locked(struct journal *j, struct entry **live, size_t n)
{
	char tmp[64];
	uint64_t size = 0;
	int fd, nfd, r = 0;

	fd = output_tmp_open(j->dirfd, JOURNAL_LOG, tmp, sizeof(tmp));
	if (fd < 0)
		return fd;
	for (size_t i = 0; i < n && r == 0; i++) {
		char *text = journal_record_json(&live[i]->rec), *line = NULL;
		size_t len = 0;

		if (text)
			line = line_new('W', text, &len);
		free(text);
		r = line ? fdio_write_all(fd, line, len, NULL) : -ENOMEM;
		free(line);
		size += len;
	}
	if (r < 0) {
		output_tmp_abort(j->dirfd, fd, tmp);
		return r;
	}
	r = output_tmp_commit(j->dirfd, fd, tmp, JOURNAL_LOG);
	if (r < 0)
		return r;
	nfd = openat(j->dirfd, JOURNAL_LOG, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
	if (nfd < 0)
		return -errno; /* the old fd still appends to the unlinked file: rewrite again */
	if (j->fd >= 0)
		(void)close(j->fd);
	j->fd = nfd;
	j->size = j->base_size = size;
	j->synced = j->appended; /* everything before is in the fsync'd new file */
	j->needs_rewrite = false;
	pthread_cond_broadcast(&j->cond);
	return 0;
}

/* Reads the log (and with old_dir the old layout), rewrites it when anything
 * can go, and hands the live records to fn (may be NULL). Lock held. */
static int compact_locked(struct journal *j, bool old_dir,
			  void (*fn)(struct journal_record *rec, void *userdata), void *userdata,
			  size_t *ret_bad)
{
	struct scan s = {.bad_fd = -1};
	struct entry **live = NULL;
	size_t n_live = 0;
	int r = 0;

	while (j->syncing)
		pthread_cond_wait(&j->cond, &j->lock);
	/* The old layout's records came before any log of this one. */
	if (old_dir)
		r = scan_old_dir(j, &s);
	if (r == 0)
		r = scan_log(j, &s);
	if (r == 0)
		r = scan_live(&s, &live, &n_live);
	if (r < 0)
		goto out;
	if (s.bad_fd >= 0 && fsync(s.bad_fd) < 0 && !s.bad_err)
		s.bad_err = -errno;
	if (s.dirty || j->needs_rewrite) {
		if (s.bad_err)
			r = s.bad_err; /* keep the log as it is: it holds the only copy */
		else
			r = rewrite_locked(j, live, n_live);
		if (r < 0 && j->size > s.good_end && !j->needs_rewrite) {
			/* Cannot rewrite: at least cut a torn tail so appends start
			 * on a line of their own. */
			if (ftruncate(j->fd, (off_t)s.good_end) == 0)
				j->size = s.good_end;
			else
				j->needs_rewrite = true;
		}
	} else {
		j->base_size = j->size;
	}
	if (r == 0) {
		/* The records are in journal.log now (or were never dropped). */
		int old = openat(j->dirfd, JOURNAL_OLD_DIR,
				 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

		for (size_t i = 0; old >= 0 && i < s.n; i++)
			if (s.e[i].old_name)
				(void)unlinkat(old, s.e[i].old_name, 0);
		if (old >= 0)
			(void)close(old);
	}
	if (fn)
		for (size_t i = 0; i < n_live; i++)
			fn(&live[i]->rec, userdata);
out:
	if (ret_bad)
		*ret_bad = s.bad;
	free(live);
	scan_clear(&s);
	return r;
}

/* ---- the public face ----------------------------------------------------- */

int journal_open(const char *state_dir, struct journal **ret_journal)
{
	struct journal *j;
	struct stat st;
	int r;

	r = output_mkdir_parents(state_dir, 0700);
	if (r < 0)
		return r;
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->fd = -1;
	j->dirfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (j->dirfd < 0) {
		r = -errno;
		goto fail;
	}
	j->fd = openat(j->dirfd, JOURNAL_LOG,
		       O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (j->fd >= 0) {
		/* New: its name must be durable before any record in it is. */
		r = output_sync_dir(j->dirfd);
		if (r < 0)
			goto fail;
	} else if (errno == EEXIST) {
		j->fd = openat(j->dirfd, JOURNAL_LOG, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
	}
	if (j->fd < 0 || fstat(j->fd, &st) < 0) {
		r = -errno;
		goto fail;
	}
	j->size = j->base_size = (uint64_t)st.st_size;
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->cond, NULL);
	*ret_journal = j;
	return 0;
fail:
	if (j->fd >= 0)
		(void)close(j->fd);
	if (j->dirfd >= 0)
		(void)close(j->dirfd);
	free(j);
	return r;
}

void journal_close(struct journal *journal)
{
	if (!journal)
		return;
	(void)close(journal->fd);
	(void)close(journal->dirfd);
	pthread_mutex_destroy(&journal->lock);
	pthread_cond_destroy(&journal->cond);
	free(journal);
}

/* Appends one line; a short write is cut off again so the next line starts
 * clean, or the file is marked for a rewrite. Lock held. */
static int append_locked(struct journal *j, const char *line, size_t len)
{
	int r;

	if (j->needs_rewrite) {
		r = compact_locked(j, false, NULL, NULL, NULL);
		if (r < 0)
			return r;
	}
	r = fdio_write_all(j->fd, line, len, NULL);
	if (r < 0) {
		struct stat st;

		if (fstat(j->fd, &st) < 0 || (uint64_t)st.st_size != j->size)
			if (ftruncate(j->fd, (off_t)j->size) < 0)
				j->needs_rewrite = true;
		return r;
	}
	j->size += len;
	j->appended++;
	return 0;
}

/* Group commit: the first waiter syncs everything appended so far; the others
 * whose records that covers wait for it instead of syncing themselves. */
static int wait_durable_locked(struct journal *j, uint64_t seq)
{
	for (;;) {
		uint64_t target;
		unsigned delay;
		int fd, r;

		if (j->synced >= seq)
			return 0;
		if (j->failed_upto >= seq)
			return j->failed_err;
		if (j->syncing) {
			pthread_cond_wait(&j->cond, &j->lock);
			continue;
		}
		j->syncing = true;
		target = j->appended;
		fd = j->fd; /* not swapped while syncing: compaction waits */
		delay = j->sync_delay_us;
		pthread_mutex_unlock(&j->lock);
		if (delay)
			(void)usleep(delay);
		r = fdatasync(fd) < 0 ? -errno : 0;
		pthread_mutex_lock(&j->lock);
		j->syncing = false;
		j->sync_count++;
		if (r == 0) {
			if (target > j->synced)
				j->synced = target;
		} else {
			/* After a failed sync the page cache may have dropped the
			 * data while a later sync succeeds: rewrite the file. Every
			 * record appended so far may have been in the failed
			 * writeback (a later fdatasync would not say so again). */
			j->failed_upto = j->appended;
			j->failed_err = r;
			j->needs_rewrite = true;
		}
		pthread_cond_broadcast(&j->cond);
	}
}

int journal_write(struct journal *journal, const struct journal_record *rec)
{
	char *text = journal_record_json(rec), *line = NULL;
	size_t len = 0;
	int r;

	if (text)
		line = line_new('W', text, &len);
	free(text);
	if (!line)
		return -ENOMEM;
	pthread_mutex_lock(&journal->lock);
	r = append_locked(journal, line, len);
	if (r == 0)
		r = wait_durable_locked(journal, journal->appended);
	pthread_mutex_unlock(&journal->lock);
	free(line);
	return r;
}

int journal_remove(struct journal *journal, const char *folder, const char *source)
{
	char *text = tombstone_json(folder, source), *line = NULL;
	size_t len = 0;
	int r;

	if (text)
		line = line_new('D', text, &len);
	free(text);
	if (!line)
		return -ENOMEM;
	pthread_mutex_lock(&journal->lock);
	r = append_locked(journal, line, len);
	if (r == 0 && journal->size > JOURNAL_COMPACT_MIN &&
	    journal->size > 2 * journal->base_size) {
		/* A failure leaves the old file intact; try again at the next doubling. */
		if (compact_locked(journal, false, NULL, NULL, NULL) < 0)
			journal->base_size = journal->size;
	}
	pthread_mutex_unlock(&journal->lock);
	free(line);
	return r;
}

int journal_load(struct journal *journal, void (*fn)(struct journal_record *rec, void *userdata),
		 void *userdata, size_t *ret_bad)
{
	int r;

	pthread_mutex_lock(&journal->lock);
	r = compact_locked(journal, true, fn, userdata, ret_bad);
	pthread_mutex_unlock(&journal->lock);
	return r;
}

unsigned long journal_sync_count(struct journal *journal)
{
	unsigned long n;

	pthread_mutex_lock(&journal->lock);
	n = (unsigned long)journal->sync_count;
	pthread_mutex_unlock(&journal->lock);
	return n;
}

void journal_test_set_sync_delay(struct journal *journal, unsigned usec)
{
	pthread_mutex_lock(&journal->lock);
	journal->sync_delay_us = usec;
	pthread_mutex_unlock(&journal->lock);
}
