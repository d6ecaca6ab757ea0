#include "journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "api.h"
#include "b64.h"
#include "clean.h"
#include "output.h"

struct journal {
	int dirfd;
};

/* Server text arrives cleaned (api_parse_response); names may be any bytes,
 * so they are written as sidecars write them: readable, and exact as hex.
 * Either way the record stays valid UTF-8. */
static int add_string(cJSON *o, const char *key, const char *value)
{
	return output_json_add_name(o, key, value) ? 0 : -ENOMEM;
}

static int add_number(cJSON *o, const char *key, double value)
{
	return cJSON_AddNumberToObject(o, key, value) ? 0 : -ENOMEM;
}

char *journal_record_json(const struct journal_record *rec)
{
	cJSON *o = cJSON_CreateObject(), *usage;
	char mtime[64], *text = NULL;
	int r = 0;

	if (!o)
		return NULL;
	if (output_rfc3339(rec->mtime_sec, rec->mtime_nsec, mtime, sizeof(mtime)) < 0)
		goto out;
	r |= add_string(o, "folder", rec->folder);
	r |= add_string(o, "source", rec->source);
	r |= add_string(o, "stem", rec->stem);
	r |= add_string(o, "url", rec->url);
	r |= add_string(o, "model", rec->model);
	r |= add_string(o, "result_size", rec->result_size);
	r |= add_string(o, "request_id", rec->request_id);
	r |= add_string(o, "source_sha256", rec->sha256);
	r |= add_string(o, "source_mtime", mtime);
	/* Sizes and times stay far below 2^53: exact as JSON numbers. */
	r |= add_number(o, "source_size", (double)rec->size);
	r |= add_number(o, "created", (double)rec->created);
	r |= add_number(o, "generated_at_ms", (double)rec->generated_at);
	r |= add_number(o, "elapsed_ms", (double)rec->elapsed_ms);
	r |= add_number(o, "attempts", rec->attempts);
	usage = rec->usage ? cJSON_Duplicate(rec->usage, true) : cJSON_CreateNull();
	if (!usage || r || clean_json(usage, NULL) < 0) {
		cJSON_Delete(usage);
		goto out;
	}
	cJSON_AddItemToObject(o, "usage", usage);
	text = cJSON_PrintUnformatted(o);
out:
	cJSON_Delete(o);
	return text;
}

static int dup_string(const cJSON *o, const char *key, bool required, char **ret)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	*ret = NULL;
	if (cJSON_IsString(v) && v->valuestring) {
		*ret = strdup(v->valuestring);
		return *ret ? 0 : -ENOMEM;
	}
	return required ? -EINVAL : 0;
}

/* A name written by add_string: exact from "<key>_hex" when present. */
static int dup_name(const cJSON *o, const char *key, char **ret)
{
	char hex_key[32];

	(void)snprintf(hex_key, sizeof(hex_key), "%s_hex", key);
	*ret = NULL;
	if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, key)))
		return -EINVAL;
	*ret = output_json_name(o, key);
	if (*ret)
		return 0;
	/* NULL: a malformed hex form, or out of memory. */
	return cJSON_GetObjectItemCaseSensitive(o, hex_key) ? -EINVAL : -ENOMEM;
}

static int get_number(const cJSON *o, const char *key, double max, double *ret)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > max)
		return -EINVAL;
	*ret = v->valuedouble;
	return 0;
}

int journal_record_parse(const char *json, size_t len, struct journal_record *rec)
{
	cJSON *o = cJSON_ParseWithLength(json, len);
	char *sha = NULL, *mtime = NULL;
	double size, created, gen, elapsed, attempts;
	const cJSON *usage;
	int r;

	memset(rec, 0, sizeof(*rec));
	if (!o)
		return -EINVAL;
	r = -EINVAL;
	if (!cJSON_IsObject(o))
		goto out;
	if ((r = dup_name(o, "folder", &rec->folder)) < 0 ||
	    (r = dup_name(o, "source", &rec->source)) < 0 ||
	    (r = dup_string(o, "stem", true, &rec->stem)) < 0 ||
	    (r = dup_string(o, "url", true, &rec->url)) < 0 ||
	    (r = dup_string(o, "model", false, &rec->model)) < 0 ||
	    (r = dup_string(o, "result_size", false, &rec->result_size)) < 0 ||
	    (r = dup_string(o, "request_id", false, &rec->request_id)) < 0 ||
	    (r = dup_string(o, "source_sha256", false, &sha)) < 0 ||
	    (r = dup_string(o, "source_mtime", true, &mtime)) < 0)
		goto out;
	r = -EINVAL;
	if (!rec->stem[0] || strchr(rec->stem, '/') || rec->stem[0] == '.')
		goto out; /* never let a record name a file outside its folder */
	if (get_number(o, "source_size", 9e15, &size) < 0 ||
	    get_number(o, "created", (double)API_CREATED_MAX, &created) < 0 ||
	    get_number(o, "generated_at_ms", 9e15, &gen) < 0 ||
	    get_number(o, "elapsed_ms", 9e15, &elapsed) < 0 ||
	    get_number(o, "attempts", 1e6, &attempts) < 0)
		goto out;
	if (output_parse_rfc3339(mtime, &rec->mtime_sec, &rec->mtime_nsec) < 0)
		goto out;
	if (sha && strlen(sha) == 64)
		memcpy(rec->sha256, sha, 65);
	rec->size = (uint64_t)size;
	rec->created = (int64_t)created;
	rec->generated_at = (int64_t)gen;
	rec->elapsed_ms = (uint64_t)elapsed;
	rec->attempts = (unsigned)attempts;
	usage = cJSON_GetObjectItemCaseSensitive(o, "usage");
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
	memset(rec, 0, sizeof(*rec));
}

/* One file per (folder, source): the SHA-256 of both names, so any name is safe. */
static int journal_name(const char *folder, const char *source, char *name, size_t len)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	if (!ctx)
		return -ENOMEM;
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, folder, strlen(folder) + 1) != 1 ||
	    EVP_DigestUpdate(ctx, source, strlen(source)) != 1 ||
	    EVP_DigestFinal_ex(ctx, md, &md_len) != 1 || len < 2 * md_len + 6) {
		EVP_MD_CTX_free(ctx);
		return -EIO;
	}
	EVP_MD_CTX_free(ctx);
	b64_hex(md, md_len, name);
	memcpy(name + 2 * md_len, ".json", 6);
	return 0;
}

int journal_open(const char *state_dir, struct journal **ret_journal)
{
	struct journal *j;
	char *path;
	int r;

	if (asprintf(&path, "%s/journal", state_dir) < 0)
		return -ENOMEM;
	r = output_mkdir_parents(path, 0700);
	if (r < 0)
		goto out;
	j = calloc(1, sizeof(*j));
	if (!j) {
		r = -ENOMEM;
		goto out;
	}
	j->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (j->dirfd < 0) {
		r = -errno;
		free(j);
		goto out;
	}
	*ret_journal = j;
out:
	free(path);
	return r;
}

void journal_close(struct journal *journal)
{
	if (!journal)
		return;
	close(journal->dirfd);
	free(journal);
}

int journal_write(struct journal *journal, const struct journal_record *rec)
{
	char name[80], *text;
	int r;

	r = journal_name(rec->folder, rec->source, name, sizeof(name));
	if (r < 0)
		return r;
	text = journal_record_json(rec);
	if (!text)
		return -ENOMEM;
	r = output_write_atomic(journal->dirfd, name, text, strlen(text));
	free(text);
	return r;
}

int journal_remove(struct journal *journal, const char *folder, const char *source)
{
	char name[80];
	int r = journal_name(folder, source, name, sizeof(name));

	if (r < 0)
		return r;
	if (unlinkat(journal->dirfd, name, 0) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

static int read_small_file(int dirfd, const char *name, char **ret, size_t *ret_len)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC), r;

	if (fd < 0)
		return -errno;
	r = output_read_fd(fd, OUTPUT_RECORD_MAX, ret, ret_len);
	close(fd);
	return r;
}

int journal_load(struct journal *journal, void (*fn)(struct journal_record *rec, void *userdata),
		 void *userdata, size_t *ret_bad)
{
	int fd = dup(journal->dirfd);
	size_t bad = 0;
	struct dirent *de;
	DIR *dir;

	if (fd < 0)
		return -errno;
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return -errno;
	}
	rewinddir(dir);
	while ((de = readdir(dir))) {
		struct journal_record rec;
		size_t len = 0;
		char *text = NULL;

		if (output_is_tmp_name(de->d_name)) {
			/* An interrupted write (the lock says no other run is writing):
			 * its record never became durable, so nothing refers to it. */
			(void)unlinkat(journal->dirfd, de->d_name, 0);
			continue;
		}
		if (de->d_name[0] == '.')
			continue;
		if (read_small_file(journal->dirfd, de->d_name, &text, &len) < 0) {
			bad++;
			continue;
		}
		if (journal_record_parse(text, len, &rec) < 0) {
			bad++;
		} else {
			fn(&rec, userdata);
			journal_record_clear(&rec);
		}
		free(text);
	}
	closedir(dir);
	if (ret_bad)
		*ret_bad = bad;
	return 0;
}
