/* job_result: after the API answered. The paid result is journalled,
 * fetched (downloaded, or decoded from b64_json) into a temporary file,
 * committed with its sidecar, and the original kept, moved or deleted.
 * Failures get their .error.json here too. */
#include "job_private.h"

void job_fill_source(const struct job *job, struct sidecar_source *src)
{
	src->source = job->rel;
	src->sha256_hex = job->sha256[0] ? job->sha256 : NULL;
	src->size = job->size;
	src->mtime_sec = job->mtime.tv_sec;
	src->mtime_nsec = job->mtime.tv_nsec;
}

void job_index_put(struct job *job, const char *sidecar_name, bool failed, int64_t finished_at,
		   int64_t generated_images)
{
	char *dir = rel_dir(job->rel);
	char *sidecar = dir[0] ? xasprintf("%s/%s", dir, sidecar_name) : xstrdup(sidecar_name);
	struct index_entry e = {
	    .source = job->rel,
	    .sidecar = sidecar,
	    .size = job->size,
	    .mtime_sec = job->mtime.tv_sec,
	    .mtime_nsec = job->mtime.tv_nsec,
	    .failed = failed,
	    .finished_at = finished_at,
	    .generated_images = generated_images,
	};

	memcpy(e.sha256, job->sha256, sizeof(e.sha256));
	if (index_put(job->folder->index, &e) < 0)
		log_oom();
	free(sidecar);
	free(dir);
}

/* Records the paid result so that a crash before it is written out costs a
 * download, not a second generation. Without a state_dir there is nothing
 * to record into (the README says what that costs); a result that has no
 * URL (b64_json) cannot be recorded and is safe only once written out. */
int job_journal_write(struct jobs *jobs, struct job *job)
{
	struct journal_record rec = {
	    .folder = (char *)job->folder->cfg->path,
	    .source = job->rel,
	    .stem = job->stem,
	    .url = job->result.url,
	    .model = job->result.model,
	    .result_size = job->result.size,
	    .request_id = job->request_id[0] ? job->request_id : NULL,
	    .usage = job->result.usage,
	    .size = job->size,
	    .mtime_sec = job->mtime.tv_sec,
	    .mtime_nsec = job->mtime.tv_nsec,
	    .created = job->result.created,
	    .generated_at = job->generated_at,
	    .elapsed_ms = loop_now_ms() - job->started,
	    .attempts = job->attempts,
	};
	int r;

	if (!jobs->journal)
		return 0;
	if (!job->result.url) {
		job_set_undurable(jobs, job, true);
		return 0;
	}
	memcpy(rec.sha256, job->sha256, sizeof(rec.sha256));
	r = journal_write(jobs->journal, &rec);
	if (r < 0) {
		job_set_undurable(jobs, job, true);
		(void)snprintf(jobs->disk_reason, sizeof(jobs->disk_reason),
			       "cannot write the journal in state_dir (%s): no new generation "
			       "starts until the paid result of %s/%s is written out",
			       strerror(-r), job->folder->cfg->path, job->rel);
		log_job(LOG_WARNING, job->folder->cfg->path, job->rel,
			job->request_id[0] ? job->request_id : NULL, NULL,
			"cannot journal the result of %s/%s: %s; no new generation starts until "
			"it is written out",
			job->folder->cfg->path, job->rel, strerror(-r));
		return r;
	}
	job->journalled = true;
	job_set_undurable(jobs, job, false);
	return 0;
}

static void job_journal_remove(struct jobs *jobs, struct job *job)
{
	int r;

	if (!jobs->journal)
		return;
	r = journal_remove(jobs->journal, job->folder->cfg->path, job->rel);
	if (r < 0)
		log_warn("cannot remove the journal record of %s/%s: %s", job->folder->cfg->path,
			 job->rel, strerror(-r));
}

/* The file fails for good: an .error.json next to where the output would be. */
void job_fail(struct jobs *jobs, struct job *job, long http_status, const char *code,
	      const char *message)
{
	struct sidecar_error e = {0};
	char name[OUTPUT_NAME_MAX];
	char *doc = NULL;
	int r;

	jobs->failed++;
	log_job(LOG_WARNING, job->folder->cfg->path, job->rel,
		job->request_id[0] ? job->request_id : NULL, code, "failed %s/%s: %s: %s",
		job->folder->cfg->path, job->rel, code, message);
	r = job_open_output_dir(job);
	if (r < 0)
		goto out;
	r = job_choose_stem(jobs, job);
	if (r < 0)
		goto out;
	/* A huge file (a 16 GiB sparse "photo") must not hold the loop, and the
	 * watchdog, for the sake of an error record: hash up to ~150 ms worth. */
	if (!job->sha256[0] && job->size <= JOBS_HASH_FOR_ERROR_MAX) {
		int in = job_open_source(job);
		if (in >= 0) {
			if (job_source_unchanged(job, in))
				(void)transfer_sha256_fd(in, job->sha256);
			close(in);
		}
	}
	job_fill_source(job, &e.src);
	e.http_status = http_status;
	e.code = code;
	e.message = message;
	e.request_id = job->request_id[0] ? job->request_id : NULL;
	e.attempts = job->attempts;
	e.failed_at = loop_wall_ms() / 1000;
	e.version = SEEDREAMD_VERSION;
	doc = output_error_json(&e);
	if (!doc)
		log_oom();
	(void)snprintf(name, sizeof(name), "%s.error.json", job->stem);
	/* The record of this failure replaces the paid result's journal record
	 * (removed below, once the error is on disk). */
	r = output_write_atomic(job->out_dirfd, name, doc, strlen(doc));
	if (r < 0)
		goto out;
	job_index_put(job, name, true, e.failed_at, 0);
	job_journal_remove(jobs, job);
out:
	if (r < 0)
		log_job(LOG_ERR, job->folder->cfg->path, job->rel, NULL, code,
			"cannot write the error sidecar for %s/%s: %s", job->folder->cfg->path,
			job->rel, strerror(-r));
	free(doc);
	job_finish(jobs, job);
}

bool job_disk_space_ok(const struct jobs *jobs, int dirfd)
{
	struct statvfs sv;

	if (fstatvfs(dirfd, &sv) < 0)
		return true;
	return (uint64_t)sv.f_bavail * sv.f_frsize >= jobs->config->min_free_space;
}

/* The paid result could not be fetched or written: fetch it again later,
 * never generate again. code is NULL for a download or a write that failed
 * (tried for as long as the URL lives), or the code of an answer that was
 * not the image (tried api.retries more times: a proxy's error page may go
 * away, a relay that serves HTML will not). storage: the failure was ours
 * (the output folder, the disk), not the network's: the folder takes no new
 * generation until it works again, and the next try opens the folder anew. */
static void job_fetch_retry(struct jobs *jobs, struct job *job, const char *code, const char *why,
			    bool storage)
{
	uint64_t delay;

	job->fetch_failures++;
	if (storage) {
		job_close_output_dir(job);
		job_set_storage_hold(jobs, job, true);
		(void)snprintf(jobs->disk_reason, sizeof(jobs->disk_reason),
			       "writing results is failing (%s/%s: %s); kept and retried",
			       job->folder->cfg->output, job->rel, why);
	}
	/* A batch run (--once) gives up after api.retries; a journalled result
	 * that could not be written stays in the journal for the next run. */
	if (jobs->once && job->fetch_failures > jobs->config->api.retries && storage &&
	    job->journalled && loop_wall_ms() - job->generated_at <= (int64_t)JOBS_URL_VALID_MS) {
		log_job(LOG_WARNING, job->folder->cfg->path, job->rel,
			job->request_id[0] ? job->request_id : NULL, NULL,
			"the paid result of %s/%s cannot be written (%s); it stays in the "
			"journal for the next run",
			job->folder->cfg->path, job->rel, why);
		jobs->left_incomplete++;
		job->folder->gave_up_this_run = true;
		jobs_leave_queued_for_later(jobs, job->folder);
		job_finish(jobs, job);
		return;
	}
	/* The URL lives 24 h: keep trying within that, never generate again. */
	if (loop_wall_ms() - job->generated_at > (int64_t)JOBS_URL_VALID_MS ||
	    ((jobs->once || code) && job->fetch_failures > jobs->config->api.retries)) {
		job_fail(jobs, job, code ? 200 : 0, code ? code : "FetchFailed", why);
		return;
	}
	delay = jobs_backoff(jobs, job->fetch_failures, -1);
	log_job(LOG_WARNING, job->folder->cfg->path, job->rel,
		job->request_id[0] ? job->request_id : NULL, code,
		"fetching the result of %s/%s failed (%s); trying again in %llu ms",
		job->folder->cfg->path, job->rel, why, (unsigned long long)delay);
	job_wait(jobs, job, delay, true);
	jobs_changed(jobs);
	jobs_pump(jobs); /* a download waiting to retry holds no generation slot */
}

static void job_fetch_failed(struct jobs *jobs, struct job *job, const char *why, bool storage)
{
	job_fetch_retry(jobs, job, NULL, why, storage);
}

/* Whether the result in fd is an image: known magic bytes, and for PNG and
 * JPEG the ending of a whole file (the check inputs get). NULL when it is,
 * else a code, with a sentence in msg. */
static const char *job_result_problem(int fd, const uint8_t *magic, size_t magic_len,
				      enum image_format *ret_fmt, char *msg, size_t msglen)
{
	uint8_t tail[IMAGE_TAIL_MAX];
	struct stat st;
	size_t n;
	ssize_t got;

	*ret_fmt = image_sniff(magic, magic_len);
	if (fstat(fd, &st) < 0 || st.st_size == 0) {
		(void)snprintf(msg, msglen, "the result is empty");
		return "Result.NotAnImage";
	}
	if (*ret_fmt == IMAGE_FORMAT_UNKNOWN) {
		(void)snprintf(msg, msglen,
			       "the result is not an image: its first bytes match no "
			       "known image format");
		return "Result.NotAnImage";
	}
	n = (uint64_t)st.st_size < sizeof(tail) ? (size_t)st.st_size : sizeof(tail);
	do
		got = pread(fd, tail, n, st.st_size - (off_t)n);
	while (got < 0 && errno == EINTR);
	if (got == (ssize_t)n && !image_tail_complete(*ret_fmt, tail, n)) {
		(void)snprintf(msg, msglen,
			       "the result is a %s cut short (it does not end like "
			       "a whole file)",
			       image_format_name(*ret_fmt));
		return "Result.Incomplete";
	}
	return NULL;
}

/* Copies src to dst (O_EXCL) and fsyncs it: moves across filesystems. */
int copy_file(int src_fd, int dst_dirfd, const char *dst_name)
{
	char buf[64 * 1024];
	int out = openat(dst_dirfd, dst_name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644), r = 0;
	off_t off = 0;

	if (out < 0)
		return -errno;
	for (;;) {
		ssize_t n = pread(src_fd, buf, sizeof(buf), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : 0;
			break;
		}
		for (ssize_t done = 0; done < n;) {
			ssize_t w = write(out, buf + done, (size_t)(n - done));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				r = -errno;
				goto out;
			}
			done += w;
		}
		off += n;
	}
	if (r == 0 && fsync(out) < 0)
		r = -errno;
out:
	close(out);
	if (r < 0)
		(void)unlinkat(dst_dirfd, dst_name, 0);
	return r;
}

/* on_success: move the original to done_dir (mirroring its relative path,
 * never over another file) or delete it. Only after the output and its
 * sidecar are on disk, and only if the file is still the version sent. */
void job_after_success(struct job *job)
{
	const struct folder_config *cfg = job->folder->cfg;
	char *dir = NULL, *dest_dir = NULL, name[OUTPUT_NAME_MAX + 16];
	const char *base = rel_base(job->rel), *dot;
	int src_dir = -1, fd = -1, dest_fd = -1, r = 0;
	struct stat st;

	if (cfg->on_success == ON_SUCCESS_KEEP)
		return;
	src_dir = job_open_source_dir(job);
	fd = job_open_source(job);
	/* The name must still be the very file that was sent, reached without
	 * a link on the way: never move or delete anything else. */
	if (src_dir < 0 || fd < 0 || !job_source_unchanged(job, fd) || job->dirty ||
	    fstatat(src_dir, base, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_ino != job->ino ||
	    st.st_dev != job->dev) {
		log_info("%s/%s changed or went away; left in place", cfg->path, job->rel);
		goto out;
	}
	if (cfg->on_success == ON_SUCCESS_DELETE) {
		if (unlinkat(src_dir, base, 0) < 0)
			r = -errno;
		goto out;
	}
	dir = rel_dir(job->rel);
	dest_dir = dir[0] ? xasprintf("%s/%s", cfg->done_dir, dir) : xstrdup(cfg->done_dir);
	r = output_mkdir_parents(dest_dir, 0755);
	if (r < 0)
		goto out;
	dest_fd = open(dest_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dest_fd < 0) {
		r = -errno;
		goto out;
	}
	dot = strrchr(base, '.');
	(void)snprintf(name, sizeof(name), "%s", base);
	for (unsigned n = 2; faccessat(dest_fd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0; n++) {
		if (n > 9999) {
			r = -EEXIST;
			goto out;
		}
		(void)snprintf(name, sizeof(name), "%.*s-%u%s",
			       (int)(dot ? dot - base : (long)strlen(base)), base, n,
			       dot ? dot : "");
	}
	if (renameat(src_dir, base, dest_fd, name) < 0) {
		if (errno != EXDEV) {
			r = -errno;
			goto out;
		}
		r = copy_file(fd, dest_fd, name);
		if (r == 0 && unlinkat(src_dir, base, 0) < 0)
			r = -errno;
	}
	if (r == 0)
		(void)fsync(dest_fd);
out:
	if (r < 0)
		log_warn("on_success for %s/%s failed: %s; the original stays", cfg->path, job->rel,
			 strerror(-r));
	if (dest_fd >= 0)
		close(dest_fd);
	if (fd >= 0)
		close(fd);
	if (src_dir >= 0) {
		(void)fsync(src_dir);
		close(src_dir);
	}
	free(dest_dir);
	free(dir);
}

/* The output file is complete in a temporary file: rename it in, then the
 * sidecar, which is the "done" record. */
/* A b64_json image decoded straight to its file exists nowhere else: before
 * a failed commit throws the file away, its bytes go back into the job as
 * the answer's text, and the retried write decodes them again. keep_fd is a
 * second descriptor of the file (it outlives the unlink). */
static int job_keep_streamed_image(struct job *job, int keep_fd)
{
	char *buf = NULL, *text = NULL;
	size_t len = 0;
	int r;

	/* The descriptor shares the writer's offset (at the end): read from 0. */
	if (lseek(keep_fd, 0, SEEK_SET) < 0)
		return -errno;
	r = output_read_fd(keep_fd, TRANSFER_IMAGE_MAX, &buf, &len);
	if (r < 0)
		return r;
	if (len == 0) {
		r = -EFBIG;
		goto out;
	}
	text = malloc(B64_ENCODED_LEN(len) + 1);
	if (!text) {
		r = -ENOMEM;
		goto out;
	}
	text[b64_encode((const uint8_t *)buf, len, text)] = '\0';
	free(job->result.b64_json);
	job->result.b64_json = text;
	job->result.b64_streamed = false;
out:
	free(buf);
	return r;
}

/* The commit of a paid result failed on storage: retry, and for a streamed
 * b64_json image, keep its bytes first (see above). */
static void job_commit_failed(struct jobs *jobs, struct job *job, int keep_fd, int err)
{
	if (keep_fd >= 0) {
		int r = job_keep_streamed_image(job, keep_fd);
		close(keep_fd);
		if (r < 0) {
			job_fail(jobs, job, 200, "Result.WriteFailed", strerror(-r));
			return;
		}
	}
	job_fetch_failed(jobs, job, strerror(err), true);
}

static void job_commit(struct jobs *jobs, struct job *job, int tmp_fd, const char *tmp_name,
		       const uint8_t *magic, size_t magic_len, bool downloaded)
{
	int keep_fd = -1;
	const struct folder_config *cfg = job->folder->cfg;
	enum image_format fmt;
	char out_name[OUTPUT_NAME_MAX], side_name[OUTPUT_NAME_MAX], err_name[OUTPUT_NAME_MAX];
	char why[160];
	struct sidecar_success s = {0};
	struct sidecar_fitted fitted;
	const char *reasons[FIT_REASON_COUNT];
	const char *problem;
	char *doc;
	int r;

	/* Anything else (an HTML page, a zip) is no success: on_success could
	 * otherwise delete the original for it. */
	problem = job_result_problem(tmp_fd, magic, magic_len, &fmt, why, sizeof(why));
	if (problem) {
		output_tmp_abort(job->out_dirfd, tmp_fd, tmp_name);
		if (downloaded)
			job_fetch_retry(jobs, job, problem, why, false); /* paid: download again */
		else
			job_fail(jobs, job, 200, problem, why); /* b64_json: it stays what it is */
		return;
	}

	(void)snprintf(out_name, sizeof(out_name), "%s%s", job->stem, output_ext_for(fmt));
	if (job->result.b64_streamed) {
		keep_fd = dup(tmp_fd);
		if (keep_fd < 0) {
			r = -errno;
			output_tmp_abort(job->out_dirfd, tmp_fd, tmp_name);
			job_fail(jobs, job, 200, "Result.WriteFailed", strerror(-r));
			return;
		}
	}
	r = output_tmp_commit(job->out_dirfd, tmp_fd, tmp_name, out_name);
	if (r < 0) {
		job_commit_failed(jobs, job, keep_fd, -r);
		return;
	}
	job_fill_source(job, &s.src);
	s.output = NULL;
	{
		char *dir = rel_dir(job->rel);
		char *rel_out = dir[0] ? xasprintf("%s/%s", dir, out_name) : xstrdup(out_name);
		s.output = rel_out;
		free(dir);
	}
	s.model = job->result.model ? job->result.model : jobs->config->api.model;
	s.prompt = cfg->prompt;
	s.size = cfg->size;
	s.result_size = job->result.size;
	s.watermark = cfg->watermark;
	s.response_format =
	    jobs->config->api.response_format == RESPONSE_FORMAT_B64_JSON ? "b64_json" : "url";
	s.created = job->result.created;
	s.usage = job->result.usage;
	s.request_id = job->request_id[0] ? job->request_id : NULL;
	s.attempts = job->attempts;
	s.elapsed_ms = loop_now_ms() - job->started;
	s.completed_at = loop_wall_ms() / 1000;
	s.version = SEEDREAMD_VERSION;
	s.fitted = job_fit_sidecar(job, &fitted, reasons, FIT_REASON_COUNT);
	doc = output_sidecar_json(&s);
	if (!doc)
		log_oom();
	(void)snprintf(side_name, sizeof(side_name), "%s.json", job->stem);
	r = output_write_atomic(job->out_dirfd, side_name, doc, strlen(doc));
	free(doc);
	if (r < 0) {
		/* Without its sidecar the output is not "done": the next try writes
		 * both again (under the same stem), rather than leave an orphan. */
		(void)unlinkat(job->out_dirfd, out_name, 0);
		free((char *)s.output);
		job_commit_failed(jobs, job, keep_fd, -r);
		return;
	}
	if (keep_fd >= 0)
		close(keep_fd);
	(void)snprintf(err_name, sizeof(err_name), "%s.error.json", job->stem);
	(void)unlinkat(job->out_dirfd, err_name, 0); /* an old failure of this source */
	job_index_put(job, side_name, false, s.completed_at,
		      job->result.generated_images > 0 ? job->result.generated_images : 1);
	job_journal_remove(jobs, job);
	job_set_undurable(jobs, job, false);
	job_set_storage_hold(jobs, job, false);
	jobs->disk_reason[0] = '\0';
	job_after_success(job);
	jobs->done++;
	log_job(LOG_INFO, cfg->path, job->rel, s.request_id, NULL,
		"done %s/%s -> %s/%s (%u attempt%s, %llu ms)", cfg->path, job->rel, cfg->output,
		s.output, job->attempts, job->attempts == 1 ? "" : "s",
		(unsigned long long)s.elapsed_ms);
	free((char *)s.output);
	job_finish(jobs, job);
}

static void job_downloaded(CURL *easy, CURLcode result, void *userdata)
{
	struct job *job = userdata;
	struct jobs *jobs = job->owner;
	struct transfer_dl *d = job->dl;
	long status = 0;
	char why[256];
	bool storage = d->write_errno != 0;

	(void)curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	transfer_dl_clear(d);
	if (result == CURLE_OK && status == 200) { /* an empty body is judged by job_commit */
		int fd = d->fd;
		char tmp[sizeof(d->tmp_name)];
		uint8_t magic[sizeof(d->magic)];
		size_t magic_len = d->magic_len;

		memcpy(tmp, d->tmp_name, sizeof(tmp));
		memcpy(magic, d->magic, sizeof(magic));
		free(job->dl);
		job->dl = NULL;
		job_commit(jobs, job, fd, tmp, magic, magic_len, true);
		return;
	}
	if (d->guard.refused) {
		/* A policy answer, not a passing fault: trying again would only
		 * knock on the same door. The result stays paid; nothing is
		 * generated again. */
		(void)snprintf(why, sizeof(why), "%s", d->guard.why);
		job_release_transfers(jobs, job);
		job_fail(jobs, job, 200, "UnsafeResultURL", why); /* as a URL refused up front */
		return;
	}
	if (d->write_errno)
		(void)snprintf(why, sizeof(why), "writing the output: %s",
			       strerror(d->write_errno));
	else if (d->too_large)
		(void)snprintf(why, sizeof(why), "the image is larger than %u bytes",
			       TRANSFER_IMAGE_MAX);
	else if (result != CURLE_OK)
		(void)snprintf(why, sizeof(why), "%s", curl_easy_strerror(result));
	else
		(void)snprintf(why, sizeof(why), "HTTP %ld", status);
	job_release_transfers(jobs, job);
	job_fetch_failed(jobs, job, why, storage);
}

static int job_decode_b64(struct job *job, int fd, uint8_t *magic, size_t *magic_len)
{
	const char *text = job->result.b64_json;
	size_t len = strlen(text), out_len = 0, off = 0;
	uint8_t *buf = malloc(len / 4 * 3 + 3);
	int r;

	if (!buf)
		return -ENOMEM;
	r = b64_decode(text, len, buf, &out_len);
	if (r < 0 || out_len == 0)
		goto out;
	*magic_len = out_len < 16 ? out_len : 16;
	memcpy(magic, buf, *magic_len);
	while (off < out_len) {
		ssize_t w = write(fd, buf + off, out_len - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out;
		}
		off += (size_t)w;
	}
	r = 0;
out:
	if (r == 0 && out_len == 0)
		r = -EINVAL;
	free(buf);
	return r;
}

void job_fetch(struct jobs *jobs, struct job *job)
{
	char tmp[300], final_hint[OUTPUT_NAME_MAX];
	uint8_t magic[16];
	size_t magic_len = 0;
	int fd, r;

	job_activate(jobs, job, JOB_FETCHING);
	if (job->undurable && job->result.url)
		(void)job_journal_write(jobs, job); /* the state_dir may take it now */
	jobs_pump(jobs); /* the generation slot is free: fill it while this downloads */
	if (job->dl) {
		/* A b64_json image, already decoded as the answer arrived. */
		struct transfer_dl *d = job->dl;
		job->dl = NULL;
		job_commit(jobs, job, d->fd, d->tmp_name, d->magic, d->magic_len, false);
		free(d);
		return;
	}
	if (job->result.b64_streamed) {
		/* Decoded once, lost on the way to the disk: no bytes to retry with. */
		job_fail(jobs, job, 200, "Result.WriteFailed",
			 "the b64_json result could not be written");
		return;
	}
	r = job_open_output_dir(job);
	if (r < 0) {
		job_fetch_failed(jobs, job, strerror(-r), true);
		return;
	}
	if (job->journalled &&
	    job_version_done(job->folder, job->rel, job->size, job->mtime.tv_sec, job->mtime.tv_nsec)) {
		/* A result restored from the journal while the output was away,
		 * which turned out to be written before the crash. */
		log_job(LOG_INFO, job->folder->cfg->path, job->rel,
			job->request_id[0] ? job->request_id : NULL, NULL,
			"%s/%s: its paid-for result is already on disk; journal record removed",
			job->folder->cfg->path, job->rel);
		job_journal_remove(jobs, job);
		job_finish(jobs, job);
		return;
	}
	if (!job_disk_space_ok(jobs, job->out_dirfd)) {
		job_fetch_failed(jobs, job, "less free space than min_free_space", true);
		return;
	}
	(void)snprintf(final_hint, sizeof(final_hint), "%s.out", job->stem);
	fd = output_tmp_open(job->out_dirfd, final_hint, tmp, sizeof(tmp));
	if (fd < 0) {
		job_fetch_failed(jobs, job, strerror(-fd), true);
		return;
	}
	if (job->result.b64_json) {
		r = job_decode_b64(job, fd, magic, &magic_len);
		if (r == -EINVAL) {
			output_tmp_abort(job->out_dirfd, fd, tmp);
			job_fail(jobs, job, 200, "MalformedResponse",
				 "data[0].b64_json is not valid base64");
			return;
		}
		if (r < 0) {
			output_tmp_abort(job->out_dirfd, fd, tmp);
			job_fetch_failed(jobs, job, strerror(-r), true);
			return;
		}
		job_commit(jobs, job, fd, tmp, magic, magic_len, false);
		return;
	}
	if (!job->result.url || !transfer_url_allowed(job->result.url, &jobs->net)) {
		output_tmp_abort(job->out_dirfd, fd, tmp);
		job_fail(jobs, job, 200, "UnsafeResultURL",
			 job->result.url ? "the result URL is not https, or leads to this "
					   "machine or its local network"
					 : "the result URL is missing");
		return;
	}
	job->dl = calloc(1, sizeof(*job->dl));
	if (!job->dl)
		log_oom();
	job->dl->fd = fd;
	memcpy(job->dl->tmp_name, tmp, sizeof(job->dl->tmp_name));
	r = transfer_dl_setup(job->dl, job->result.url, &jobs->net, jobs->io_pool);
	if (r >= 0)
		r = transfer_dl_start(job->dl, jobs->http, job_downloaded, job);
	if (r == -ENOMEM)
		log_oom();
	if (r < 0) {
		job_release_transfers(jobs, job);
		job_fetch_failed(jobs, job, strerror(-r), false);
	}
}
