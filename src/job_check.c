/* job_check: what happens before any money is spent. The source is opened
 * without following links out of the tree, checked against the done record
 * and the API's limits, and, when it is a copy of something already paid
 * for in the folder, given that result instead of a new one. */
#include "job_private.h"

/* Opens path below dirfd without following any symbolic link on the way
 * (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), so a subfolder swapped for
 * a link cannot lead a read, a move or a delete out of the tree. Kernels or
 * seccomp filters without openat2 get openat with O_NOFOLLOW on the last part. */
static int open_beneath(int dirfd, const char *path, int flags)
{
	struct open_how how = {
	    .flags = (uint64_t)(unsigned)(flags | O_NOFOLLOW | O_CLOEXEC),
	    .resolve = (uint64_t)(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS),
	};
	long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));

	if (fd < 0 && (errno == ENOSYS || errno == EPERM))
		fd = openat(dirfd, path, flags | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : (int)fd;
}

int job_open_source(const struct job *job)
{
	int dirfd, fd, flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC;

	dirfd = open(job->folder->cfg->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return -errno;
	/* O_NONBLOCK: a FIFO dropped in must not block the loop on open. */
	if (job->folder->cfg->follow_symlinks) {
		fd = openat(dirfd, job->rel, flags);
		if (fd < 0)
			fd = -errno;
	} else {
		fd = open_beneath(dirfd, job->rel, flags);
	}
	close(dirfd);
	return fd;
}

/* The folder holding the source, opened the same safe way, for on_success. */
int job_open_source_dir(const struct job *job)
{
	int dirfd = open(job->folder->cfg->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), fd;
	char *dir;

	if (dirfd < 0)
		return -errno;
	dir = rel_dir(job->rel);
	fd = dir[0] ? open_beneath(dirfd, dir, O_RDONLY | O_DIRECTORY) : dup(dirfd);
	if (fd < 0 && !dir[0])
		fd = -errno;
	free(dir);
	close(dirfd);
	return fd;
}

static ssize_t read_at(int fd, uint8_t *buf, size_t len, off_t off)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = pread(fd, buf + got, len - got, off + (off_t)got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* A done record counts only while its sidecar exists: a deleted .error.json
 * means "try again". */
bool sidecar_still_there(const struct folder *folder, const struct index_entry *e)
{
	char *path = xasprintf("%s/%s", folder->cfg->output, e->sidecar);
	bool exists = access(path, F_OK) == 0;

	free(path);
	return exists;
}

/* Whether the done record covers this version (size and mtime). */
bool job_already_done(const struct folder *folder, const char *rel, const struct stat *st)
{
	const struct index_entry *e = index_get(folder->index, rel);

	if (!e || e->size != (uint64_t)st->st_size || e->mtime_sec != st->st_mtim.tv_sec ||
	    e->mtime_nsec != st->st_mtim.tv_nsec)
		return false;
	return sidecar_still_there(folder, e);
}

/* Same bytes under a new mtime (copied again, touched): done already. The
 * hash is kept in the job, for the copy check and the sidecar. */
static bool job_same_content_done(struct job *job, int fd)
{
	const struct index_entry *e = index_get(job->folder->index, job->rel);

	if (!e || e->failed || e->size != job->size || !e->sha256[0])
		return false;
	if (!job->sha256[0] && transfer_sha256_fd(fd, job->sha256) < 0)
		return false;
	return strcmp(job->sha256, e->sha256) == 0 && sidecar_still_there(job->folder, e);
}

static uint8_t *validate_buffer(void)
{
	/* One head buffer for the whole process: validation is synchronous. */
	static uint8_t *buf;

	if (!buf) {
		buf = malloc(IMAGE_HEAD_MAX);
		if (!buf)
			log_oom();
	}
	return buf;
}

/* A TIFF whose first directory lies beyond the head: read it where it is. */
static enum image_probe_result job_probe_tiff_tail(const struct job *job, size_t head_len,
						   struct image_info *info)
{
	uint64_t off = image_tiff_ifd_offset(validate_buffer(), head_len);
	uint8_t *window = malloc(IMAGE_TIFF_IFD_WINDOW);
	enum image_probe_result r = IMAGE_PROBE_CORRUPT;
	ssize_t n;
	int fd;

	if (!window)
		log_oom();
	fd = job_open_source(job);
	if (fd >= 0 && off < job->size) {
		n = read_at(fd, window, IMAGE_TIFF_IFD_WINDOW, (off_t)off);
		if (n >= 0)
			r = image_probe_tiff_ifd(validate_buffer(), head_len, window, (size_t)n,
						 off, job->size, info);
	}
	if (fd >= 0)
		close(fd);
	free(window);
	return r;
}

static const char *json_string(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A sidecar found in the folder may have been planted and hold anything up to
 * OUTPUT_RECORD_MAX: what a reuse carries over is bounded like an answer
 * from the server, so the new sidecar can always be read back. */
static int bound_reused(cJSON *old)
{
	static const struct {
		const char *key;
		size_t max;
	} texts[] = {
	    {"model", API_MODEL_MAX},
	    {"result_size", API_SIZE_MAX},
	    {"request_id", API_REQUEST_ID_MAX},
	    {"response_format", API_SIZE_MAX},
	};
	cJSON *usage;

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		cJSON *v = cJSON_GetObjectItemCaseSensitive(old, texts[i].key);
		char *c;

		if (!cJSON_IsString(v))
			continue;
		c = clean_text(v->valuestring, texts[i].max, NULL);
		if (!c || !cJSON_SetValuestring(v, c)) {
			free(c);
			return -ENOMEM;
		}
		free(c);
	}
	usage = cJSON_DetachItemFromObjectCaseSensitive(old, "usage");
	if (!cJSON_IsObject(usage)) {
		cJSON_Delete(usage);
		return 0;
	}
	if (api_bound_usage(&usage, NULL) < 0)
		return -ENOMEM;
	cJSON_AddItemToObject(old, "usage", usage);
	return 0;
}

/* Links (or copies) an output file into the job's output folder. */
static int job_link_output(struct job *job, const char *old_path, const char *new_name)
{
	int src = open(old_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), r;
	char tmp[300];
	int fd;

	if (src < 0)
		return -errno;
	fd = output_tmp_open(job->out_dirfd, new_name, tmp, sizeof(tmp));
	if (fd < 0) {
		close(src);
		return fd;
	}
	close(fd);
	(void)unlinkat(job->out_dirfd, tmp, 0);
	/* A hard link under the temporary name, renamed in: atomic like any output. */
	if (linkat(src, "", job->out_dirfd, tmp, AT_EMPTY_PATH) < 0 &&
	    linkat(AT_FDCWD, old_path, job->out_dirfd, tmp, 0) < 0) {
		r = copy_file(src, job->out_dirfd, tmp);
		if (r < 0) {
			close(src);
			return r;
		}
	}
	close(src);
	fd = openat(job->out_dirfd, tmp, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		(void)unlinkat(job->out_dirfd, tmp, 0);
		return r;
	}
	return output_tmp_commit(job->out_dirfd, fd, tmp, new_name);
}

enum job_reuse_result {
	REUSE_NONE,	   /* nothing to reuse (other settings, or gone): generate */
	REUSE_DONE,	   /* finished with the earlier result */
	REUSE_LOCAL_ERROR, /* a result to reuse, but it could not be written here yet */
};

/* The same bytes were already paid for under another name in this folder
 * (a file copied, or a subfolder renamed): reuse that result instead of
 * generating again, if it was made with the settings this file would get.
 * A local read or write error is never a reason to pay: the caller holds
 * the job and tries the reuse again. */
static enum job_reuse_result job_reuse(struct jobs *jobs, struct job *job,
				       const struct index_entry *e, int *ret_errno)
{
	const struct folder_config *cfg = job->folder->cfg;
	char *path = xasprintf("%s/%s", cfg->output, e->sidecar), *text = NULL, *old_out = NULL;
	char out_name[OUTPUT_NAME_MAX], side_name[OUTPUT_NAME_MAX], *doc = NULL, *rel_out = NULL;
	struct sidecar_success s = {0};
	const char *output, *ext;
	enum job_reuse_result result = REUSE_LOCAL_ERROR;
	cJSON *old = NULL, *wm;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		if (r == -ENOENT || r == -ELOOP)
			result = REUSE_NONE;
		goto out;
	}
	{
		size_t len;
		r = output_read_fd(fd, OUTPUT_RECORD_MAX, &text, &len);
		if (r == 0)
			old = cJSON_ParseWithLength(text, len);
		close(fd);
		if (r < 0 && r != -EFBIG && r != -EINVAL)
			goto out;
	}
	result = REUSE_NONE;
	if (old && bound_reused(old) < 0)
		log_oom();
	output = old ? json_string(old, "output") : NULL;
	wm = old ? cJSON_GetObjectItemCaseSensitive(old, "watermark") : NULL;
	if (!output || json_string(old, "output_hex") || strstr(output, "..") ||
	    !json_string(old, "prompt") || strcmp(json_string(old, "prompt"), cfg->prompt) != 0 ||
	    !json_string(old, "size") || strcmp(json_string(old, "size"), cfg->size) != 0 ||
	    !cJSON_IsBool(wm) || cJSON_IsTrue(wm) != cfg->watermark)
		goto out; /* other settings (or not ours to read): generate anew */
	old_out = xasprintf("%s/%s", cfg->output, output);
	ext = strrchr(output, '.');
	if (access(old_out, F_OK) < 0 && errno == ENOENT)
		goto out; /* the earlier output was deleted: nothing to reuse */
	result = REUSE_LOCAL_ERROR;
	r = job_open_output_dir(job);
	if (r >= 0)
		r = job_choose_stem(jobs, job);
	if (r < 0)
		goto out;
	(void)snprintf(out_name, sizeof(out_name), "%s%s", job->stem, ext ? ext : ".jpeg");
	r = job_link_output(job, old_out, out_name);
	if (r < 0)
		goto out;
	{
		char *dir = rel_dir(job->rel);
		rel_out = dir[0] ? xasprintf("%s/%s", dir, out_name) : xstrdup(out_name);
		free(dir);
	}
	job_fill_source(job, &s.src);
	s.output = rel_out;
	s.model = json_string(old, "model");
	s.prompt = cfg->prompt;
	s.size = cfg->size;
	s.result_size = json_string(old, "result_size");
	s.watermark = cfg->watermark;
	s.response_format = json_string(old, "response_format");
	/* NaN when absent: the checked conversion keeps that defined (as 0). */
	if (!clean_int64(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(old, "created")),
			 &s.created))
		s.created = 0;
	s.usage = cJSON_GetObjectItemCaseSensitive(old, "usage");
	s.request_id = json_string(old, "request_id");
	s.attempts = 0;
	s.elapsed_ms = 0;
	s.completed_at = loop_wall_ms() / 1000;
	s.version = SEEDREAMD_VERSION;
	s.reused_from = e->source;
	doc = output_sidecar_json(&s);
	if (!doc)
		log_oom();
	(void)snprintf(side_name, sizeof(side_name), "%s.json", job->stem);
	r = output_write_atomic(job->out_dirfd, side_name, doc, strlen(doc));
	if (r < 0) {
		/* The linked output without its sidecar is not "done": take it away. */
		(void)unlinkat(job->out_dirfd, out_name, 0);
		goto out;
	}
	log_job(LOG_INFO, cfg->path, job->rel, NULL, NULL,
		"done %s/%s -> %s/%s (the same image as %s: its result reused, no API call)",
		cfg->path, job->rel, cfg->output, rel_out, e->source);
	job_index_put(job, side_name, false, s.completed_at, 0);
	jobs->done++;
	result = REUSE_DONE;
out:
	free(doc);
	free(rel_out);
	free(old_out);
	cJSON_Delete(old);
	free(text);
	free(path);
	*ret_errno = r < 0 ? -r : EIO;
	if (result == REUSE_DONE) {
		job_after_success(job);
		job_finish(jobs, job);
	}
	return result;
}

/* A reuse that failed on a local error: try it again later (validation runs
 * again then), never pay for the image instead. */
static void job_hold_reuse(struct jobs *jobs, struct job *job, int err)
{
	job_close_output_dir(job);
	(void)snprintf(jobs->disk_reason, sizeof(jobs->disk_reason),
		       "reusing an earlier result for %s/%s failed (%s); held and retried",
		       job->folder->cfg->path, job->rel, strerror(err));
	if (jobs->once) {
		log_warn("%s/%s: reusing an earlier result failed (%s); left for a later run",
			 job->folder->cfg->path, job->rel, strerror(err));
		jobs->left_incomplete++;
		job_finish(jobs, job);
		return;
	}
	log_warn("%s/%s: reusing an earlier result failed (%s); trying again in %u s",
		 job->folder->cfg->path, job->rel, strerror(err), JOBS_STORAGE_RETRY_MS / 1000);
	job_settle(jobs, job, JOBS_STORAGE_RETRY_MS);
	jobs_changed(jobs);
}

/* A copy of something already paid for in this folder, by content. */
static const struct index_entry *job_find_copy(struct job *job, int fd)
{
	const struct index_entry *e;

	if (!index_may_have_size(job->folder->index, job->size))
		return NULL;
	if (!job->sha256[0] && transfer_sha256_fd(fd, job->sha256) < 0)
		return NULL;
	e = index_find_content(job->folder->index, job->size, job->sha256, job->rel);
	return e && sidecar_still_there(job->folder, e) ? e : NULL;
}

void job_validate(struct jobs *jobs, struct job *job)
{
	const struct folder_config *cfg = job->folder->cfg;
	uint8_t tail[IMAGE_TAIL_MAX];
	struct image_info info = {0};
	enum image_probe_result pr;
	char msg[256];
	const char *code;
	struct stat st;
	ssize_t head_len, tail_len;
	unsigned reasons;
	bool complete;
	int fd;

	if (!job->folder->present) {
		/* Paused (its folder or its output is away): a missing sidecar
		 * proves nothing now. Look again after a settle; a resume rescans. */
		if (jobs->once)
			job_finish(jobs, job);
		else
			job_settle(jobs, job, cfg->settle_ms > 1000 ? cfg->settle_ms : 1000);
		return;
	}
	fd = job_open_source(job);
	if (fd < 0) {
		/* Deleted before submission, or a symlink we do not follow: nothing to do. */
		log_debug("dropped %s/%s: %s", cfg->path, job->rel, strerror(-fd));
		job_finish(jobs, job);
		return;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		job_finish(jobs, job);
		return;
	}
	if ((uint64_t)st.st_size != job->size || !same_mtime(&st.st_mtim, &job->mtime) ||
	    st.st_dev != job->dev || st.st_ino != job->ino) {
		/* Still being written (or replaced): wait for it to be quiet for a
		 * whole settle. */
		job->dev = st.st_dev;
		job->ino = st.st_ino;
		job->size = (uint64_t)st.st_size;
		job->mtime = st.st_mtim;
		close(fd);
		job_settle(jobs, job, cfg->settle_ms);
		return;
	}
	if (job_already_done(job->folder, job->rel, &st) || job_same_content_done(job, fd)) {
		jobs->skipped++;
		close(fd);
		job_finish(jobs, job);
		return;
	}
	{
		const struct index_entry *copy = job_find_copy(job, fd);
		int err = 0;
		enum job_reuse_result rr = copy ? job_reuse(jobs, job, copy, &err) : REUSE_NONE;
		if (rr != REUSE_NONE) {
			close(fd);
			if (rr == REUSE_LOCAL_ERROR)
				job_hold_reuse(jobs, job, err);
			return;
		}
	}
	if (job->size > cfg->max_input_bytes && cfg->fit == FIT_NEVER) {
		/* Too large whatever else is wrong with it: say so now, and do not
		 * hold it as "incomplete" first. (A fit makes it smaller.) */
		close(fd);
		(void)snprintf(msg, sizeof(msg), "file is %llu bytes; at most %llu are allowed",
			       (unsigned long long)job->size,
			       (unsigned long long)cfg->max_input_bytes);
		job_fail(jobs, job, 0, "LocalValidation.FileTooLarge", msg);
		return;
	}
	head_len = read_at(fd, validate_buffer(), IMAGE_HEAD_MAX, 0);
	tail_len =
	    st.st_size > 0
		? read_at(fd, tail, sizeof(tail),
			  st.st_size > (off_t)sizeof(tail) ? st.st_size - (off_t)sizeof(tail) : 0)
		: 0;
	close(fd);
	if (head_len < 0 || tail_len < 0) {
		job_fail(jobs, job, 0, "LocalValidation.Unreadable",
			 strerror(-(int)(head_len < 0 ? head_len : tail_len)));
		return;
	}
	pr = image_probe(validate_buffer(), (size_t)head_len, job->size, &info);
	if (pr == IMAGE_PROBE_CORRUPT && info.format == IMAGE_FORMAT_TIFF &&
	    image_tiff_ifd_offset(validate_buffer(), (size_t)head_len) >= (uint64_t)head_len)
		pr = job_probe_tiff_tail(job, (size_t)head_len, &info);
	complete = pr == IMAGE_PROBE_OK && image_tail_complete(info.format, tail, (size_t)tail_len);
	if (pr == IMAGE_PROBE_TRUNCATED || (pr == IMAGE_PROBE_OK && !complete)) {
		/* Maybe still arriving (a slow copy that closes between chunks). */
		if (loop_now_ms() - job->first_seen < cfg->incomplete_timeout_ms && !jobs->once) {
			job_settle(jobs, job, cfg->settle_ms > 1000 ? cfg->settle_ms : 1000);
			return;
		}
		if (jobs->once && loop_now_ms() - job->first_seen < cfg->incomplete_timeout_ms) {
			log_warn("%s/%s looks incomplete; left for a later run", cfg->path,
				 job->rel);
			jobs->left_incomplete++;
			job_finish(jobs, job);
			return;
		}
		job_fail(jobs, job, 0, "LocalValidation.Truncated",
			 "the image is incomplete (its header or its end is missing) and did not "
			 "change within incomplete_timeout");
		return;
	}
	if (pr == IMAGE_PROBE_UNKNOWN && info.found) {
		(void)snprintf(msg, sizeof(msg),
			       "a %s: neither the API nor a conversion here can read it",
			       info.found);
		job_fail(jobs, job, 0, image_probe_code(pr), msg);
		return;
	}
	if (pr != IMAGE_PROBE_OK) {
		job_fail(jobs, job, 0, image_probe_code(pr), image_probe_message(pr));
		return;
	}
	reasons = fit_wanted(&info, job->size, cfg->max_input_bytes, cfg->fit);
	if (!image_api_format(info.format) && !reasons) {
		(void)snprintf(msg, sizeof(msg),
			       "a %s image: the API does not take it and this folder has fit: never",
			       image_format_name(info.format));
		job_fail(jobs, job, 0, "LocalValidation.UnsupportedFormat", msg);
		return;
	}
	code = image_api_format(info.format)
		   ? image_check_limits(&info, job->size, cfg->max_input_bytes, msg, sizeof(msg))
		   : NULL;
	/* A fit shrinks; it cannot mend a side under 15 px or a 1:20 strip. */
	if (code && (!reasons || strcmp(code, "LocalValidation.TooSmall") == 0 ||
		     strcmp(code, "LocalValidation.AspectRatio") == 0)) {
		job_fail(jobs, job, 0, code, msg);
		return;
	}
	job->format = info.format;
	/* A file to fit waits in the queue like any other; jobs_pump fits it
	 * when it comes near a generation slot, so fitted bytes never pile up. */
	job->fit_reasons = reasons;
	job_queue(jobs, job, false);
	jobs_changed(jobs);
	jobs_pump(jobs);
}

bool job_source_unchanged(const struct job *job, int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_dev == job->dev &&
	       st.st_ino == job->ino && (uint64_t)st.st_size == job->size &&
	       same_mtime(&st.st_mtim, &job->mtime);
}
