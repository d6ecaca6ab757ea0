/* job_result: after the API answered. The paid result is journalled,
 * fetched (downloaded, or decoded from b64_json) into a temporary file,
 * committed with its sidecar, and the original kept, moved or deleted.
 * Failures get their .error.json here too. Every file-system call of it runs
 * on a storage worker (job_io.c): the loop builds a request, the completion
 * decides what follows. */
#include "job_private.h"
#include "xmp.h"
#include "metrics.h"

/* journal.c is safe from several workers at once; concurrent writes share
 * one fdatasync (group commit). */
int job_journal_drop(struct journal *journal, const char *folder, const char *source)
{
	return journal ? journal_remove(journal, folder, source) : 0;
}

void job_fill_source(const struct job *job, struct sidecar_source *src)
{
	src->source = job->rel;
	src->sha256_hex = job->sha256[0] ? job->sha256 : NULL;
	src->size = job->size;
	src->mtime_sec = job->mtime.tv_sec;
	src->mtime_nsec = job->mtime.tv_nsec;
}

static void job_index_put_entry(struct job *job, const char *sidecar_name, bool failed,
				int64_t finished_at, int64_t generated_images, const char *model,
				bool reused, int64_t paid_at)
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
	    .model = model,
	    .reused = reused,
	    .paid_at = paid_at,
	};

	memcpy(e.sha256, job->sha256, sizeof(e.sha256));
	if (index_put(job->folder->index, &e) < 0)
		log_oom();
	free(sidecar);
	free(dir);
}

void job_index_put(struct job *job, const char *sidecar_name, bool failed, int64_t finished_at,
		   int64_t generated_images, const char *model, int64_t paid_at)
{
	job_index_put_entry(job, sidecar_name, failed, finished_at, generated_images, model, false,
			    paid_at);
}

void job_index_put_reused(struct job *job, const char *sidecar_name, int64_t finished_at)
{
	job_index_put_entry(job, sidecar_name, false, finished_at, 0, NULL, true, 0);
}

static char *xstrdup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

/* The model a record names, the one its cost is priced by: the one that
 * answered, else the one sent (api.model for a result restored from the
 * journal, which keeps only the first). */
static const char *job_model(const struct jobs *jobs, const struct job *job)
{
	if (job->result.model)
		return job->result.model;
	return job->model_sent ? job->model_sent : jobs->config->api.model;
}

/* The extra: fields sent: those recorded in the journal for a restored
 * result ("" when none), else the folder's. */
static const char *job_extra_json(const struct job *job)
{
	if (job->extra_sent)
		return job->extra_sent[0] ? job->extra_sent : NULL;
	return job->folder->cfg->extra_json;
}

/* The references sent after the source (a group's other images, which come
 * first, left out), into refs (CONFIG_IMAGES_MAX); their number. */
static size_t job_sent_references(const struct job *job, bool group_sources,
				  struct sidecar_reference *refs)
{
	size_t n_members_after = group_sources ? job->n_members - 1 : 0;

	if (job->n_refs_sent > CONFIG_IMAGES_MAX || job->n_refs_sent <= n_members_after)
		return 0;
	for (size_t i = n_members_after; i < job->n_refs_sent; i++) {
		refs[i - n_members_after].path = job->refs_sent[i].path;
		refs[i - n_members_after].sha256_hex =
		    job->refs_sent[i].sha256[0] ? job->refs_sent[i].sha256 : NULL;
	}
	return job->n_refs_sent - n_members_after;
}

/* What the sidecar says was sent (prompt, extra:, references, a group's
 * images), into the journal record: a result written after a restart says
 * what was paid for, not what the folder holds then. */
static void job_journal_sent(const struct job *job, struct journal_record *rec)
{
	const char *extra = job_extra_json(job);
	struct sidecar_reference refs[CONFIG_IMAGES_MAX];
	struct sidecar_source sources[CONFIG_IMAGES_MAX];
	const struct sidecar_source *srcs = job_group_sources(job, sources, CONFIG_IMAGES_MAX);
	size_t n_refs = job_sent_references(job, srcs != NULL, refs);

	rec->prompt = xstrdup(job_prompt(job));
	rec->prompt_source = xstrdup_or_null(job->prompt_source);
	rec->prompt_file = xstrdup_or_null(job->prompt_file);
	rec->extra_json = xstrdup_or_null(extra);
	if (n_refs) {
		rec->references = calloc(n_refs, sizeof(*rec->references));
		if (!rec->references)
			log_oom();
		for (size_t i = 0; i < n_refs; i++, rec->n_references++) {
			rec->references[i].path = xstrdup(refs[i].path);
			if (refs[i].sha256_hex)
				memcpy(rec->references[i].sha256, refs[i].sha256_hex, 65);
		}
	}
	if (srcs) {
		rec->sources = calloc(job->n_members, sizeof(*rec->sources));
		if (!rec->sources)
			log_oom();
		for (size_t i = 0; i < job->n_members; i++, rec->n_sources++) {
			rec->sources[i].name = xstrdup(srcs[i].source);
			if (srcs[i].sha256_hex)
				memcpy(rec->sources[i].sha256, srcs[i].sha256_hex, 65);
			rec->sources[i].size = srcs[i].size;
			rec->sources[i].mtime_sec = srcs[i].mtime_sec;
			rec->sources[i].mtime_nsec = srcs[i].mtime_nsec;
		}
	}
}

/* The journal record of the paid result, with copies the worker owns.
 * Records the paid result so that a crash before it is written out costs a
 * download, not a second generation. */
static void job_journal_record(const struct job *job, struct journal_record *rec)
{
	memset(rec, 0, sizeof(*rec));
	rec->folder = xstrdup(job->folder->cfg->path);
	rec->source = xstrdup(job->rel);
	rec->stem = xstrdup(job->stem);
	rec->url = xstrdup(job->result.url);
	/* The model the sidecar will name (job_model), also when the answer
	 * named none: after a restart, api.model may be another. */
	rec->model = xstrdup_or_null(job->result.model ? job->result.model : job->model_sent);
	rec->result_size = xstrdup_or_null(job->result.size);
	rec->request_id = job->request_id[0] ? xstrdup(job->request_id) : NULL;
	if (job->result.usage) {
		rec->usage = cJSON_Duplicate(job->result.usage, true);
		if (!rec->usage)
			log_oom();
	}
	rec->size = job->size;
	rec->mtime_sec = job->mtime.tv_sec;
	rec->mtime_nsec = job->mtime.tv_nsec;
	rec->created = job->result.created;
	rec->generated_at = job->generated_at;
	rec->elapsed_ms = loop_now_ms() - job->started;
	rec->attempts = job->attempts;
	memcpy(rec->sha256, job->sha256, sizeof(rec->sha256));
	/* Every URL of several outputs, before the first is fetched. */
	rec->images = job_outputs_journal(job);
	rec->max_images = job->max_images;
	job_journal_sent(job, rec);
}

/* What the journal write of a paid result came to (on the loop). */
static void job_journal_written(struct jobs *jobs, struct job *job, int r)
{
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
		return;
	}
	job->journalled = true;
	job_set_undurable(jobs, job, false);
}

static void job_journal_removed(const struct job *job, int r)
{
	if (r < 0)
		log_warn("cannot remove the journal record of %s/%s: %s", job->folder->cfg->path,
			 job->rel, strerror(-r));
}

/* on_success's outcome, logged on the loop. */
static void job_after_success_log(const struct job *job, int r, bool left)
{
	const struct folder_config *cfg = job->folder->cfg;

	if (left)
		log_info("%s/%s changed or went away; left in place", cfg->path, job->rel);
	else if (r < 0)
		log_warn("on_success for %s/%s failed: %s; the original stays", cfg->path, job->rel,
			 strerror(-r));
}

void job_success_fill(const struct job *job, struct job_success *s)
{
	const struct folder_config *cfg = job->folder->cfg;

	s->mode = job->dirty ? ON_SUCCESS_KEEP : cfg->on_success;
	s->left = job->dirty && cfg->on_success != ON_SUCCESS_KEEP;
	s->done_dir = xstrdup_or_null(cfg->done_dir);
	job_src_fill(job, &s->src);
}

void job_success_run(struct job_success *s)
{
	bool left = false;

	if (s->mode == ON_SUCCESS_KEEP)
		return;
	s->r = job_src_after_success(&s->src, s->mode, s->done_dir, &left);
	s->left = left;
}

void job_success_done(const struct job *job, struct job_success *s)
{
	if (job)
		job_after_success_log(job, s->r, s->left);
	job_src_clear(&s->src);
	free(s->done_dir);
	s->done_dir = NULL;
}

/* ---- the error sidecar -------------------------------------------------- */

struct job_fail_io {
	struct job_io io;
	struct job_out out;
	struct job_stem stem;
	struct job_src src;
	bool hash; /* hash the source first (the sidecar says which bytes failed) */
	char sha256[65];
	struct journal *journal;
	char *code, *message, *request_id;
	char *model;	      /* NULL: no request was made */
	cJSON *usage;	      /* of a paid answer */
	unsigned images_paid; /* 0: nothing paid */
	unsigned max_images;
	int64_t paid_at;
	long http_status;
	unsigned attempts;
	int64_t failed_at;
	bool rechecked;
	int r;
	char name[OUTPUT_NAME_MAX + 16];
};

static void job_fail_work(struct job_io *io)
{
	struct job_fail_io *f = (struct job_fail_io *)io;
	struct sidecar_error e = {0};
	char *doc = NULL;
	int dirfd;

	dirfd = f->r = job_out_open(&f->out);
	if (dirfd < 0)
		return;
	f->r = job_stem_choose(dirfd, &f->stem);
	if (f->r < 0)
		goto out;
	if (f->hash) {
		int in = job_src_open(&f->src);
		if (in >= 0) {
			if (job_src_unchanged(&f->src, in))
				(void)digest_sha256_fd(in, f->sha256);
			close(in);
		}
	}
	e.src.source = f->src.rel;
	e.src.sha256_hex = f->sha256[0] ? f->sha256 : NULL;
	e.src.size = f->src.size;
	e.src.mtime_sec = f->src.mtime.tv_sec;
	e.src.mtime_nsec = f->src.mtime.tv_nsec;
	e.http_status = f->http_status;
	e.code = f->code;
	e.message = f->message;
	e.request_id = f->request_id;
	e.attempts = f->attempts;
	e.failed_at = f->failed_at;
	e.version = SEEDREAMD_VERSION;
	e.model = f->model;
	e.images_paid = f->images_paid;
	e.usage = f->usage;
	e.max_images = f->max_images;
	e.paid_at = f->paid_at;
	doc = sidecar_error_json(&e);
	if (!doc) {
		f->r = -ENOMEM;
		goto out;
	}
	(void)snprintf(f->name, sizeof(f->name), "%s.error.json", f->stem.chosen);
	/* The record of this failure replaces the paid result's journal record
	 * (removed once the error is on disk). */
	f->r = output_write_atomic(dirfd, f->name, doc, strlen(doc));
	if (f->r == 0)
		(void)job_journal_drop(f->journal, f->src.root, f->src.rel);
out:
	free(doc);
	close(dirfd);
}

static void job_fail_free(struct job_fail_io *f)
{
	job_out_clear(&f->out);
	job_stem_clear(&f->stem);
	job_src_clear(&f->src);
	free(f->code);
	free(f->message);
	free(f->request_id);
	free(f->model);
	cJSON_Delete(f->usage);
	free(f);
}

static void job_fail_submit(struct jobs *jobs, struct job *job, struct job_fail_io *f,
			    bool trusted);

static void job_fail_done(struct jobs *jobs, struct job *job, struct job_io *io)
{
	struct job_fail_io *f = (struct job_fail_io *)io;
	int r = io->ran ? f->r : -ECANCELED;

	if (!job) {
		job_fail_free(f);
		return;
	}
	if (r == -ESTALE && !f->rechecked) {
		r = job_out_recheck(job);
		if (r == 0) {
			job_out_clear(&f->out);
			f->rechecked = true;
			job_fail_submit(jobs, job, f, true);
			return;
		}
	}
	if (r == 0 && job_stem_take(jobs, job, &f->stem) < 0) {
		job_stem_clear(&f->stem);
		job_stem_fill_n(jobs, job, 1, &f->stem);
		job_fail_submit(jobs, job, f, f->rechecked);
		return;
	}
	if (r == 0) {
		if (f->sha256[0])
			memcpy(job->sha256, f->sha256, sizeof(job->sha256));
		job_index_put(job, f->name, true, f->failed_at, f->images_paid, f->model,
			      f->paid_at);
	} else {
		log_job(LOG_ERR, job->folder->cfg->path, job->rel, NULL, f->code,
			"cannot write the error sidecar for %s/%s: %s", job->folder->cfg->path,
			job->rel, strerror(-r));
	}
	job_fail_free(f);
	job_advance(jobs, job, JOB_VERDICT(DROP)); /* counted failed when it failed */
}

static void job_fail_submit(struct jobs *jobs, struct job *job, struct job_fail_io *f, bool trusted)
{
	if (job->folder->index_stale) {
		/* back, but its records are not read again yet */
		f->r = -EAGAIN;
		f->io.ran = true;
		f->io.job = job;
		job_fail_done(jobs, job, &f->io);
		return;
	}
	job_out_fill(job, &f->out, trusted);
	f->io.work = job_fail_work;
	f->io.done = job_fail_done;
	job_io_submit(jobs, job, job->folder, &f->io);
}

/* The file fails for good: an .error.json next to where the output would be. */
void job_fail(struct jobs *jobs, struct job *job, long http_status, const char *code,
	      const char *message)
{
	struct job_fail_io *f = calloc(1, sizeof(*f));

	if (!f)
		log_oom();
	jobs->failed++;
	events_file_failed(jobs->events, job->folder->cfg->path, job->rel, http_status, code,
			   message);
	metrics_note_file(job->folder->cfg->path, "failed", code);
	job->folder->run_failed++;
	log_job(LOG_WARNING, job->folder->cfg->path, job->rel,
		job->request_id[0] ? job->request_id : NULL, code, "failed %s/%s: %s: %s",
		job->folder->cfg->path, job->rel, code, message);
	job_activate(jobs, job, JOB_COMMITTING);
	job_stem_fill_n(jobs, job, 1, &f->stem); /* a new stem writes only the record */
	job_src_fill(job, &f->src);
	memcpy(f->sha256, job->sha256, sizeof(f->sha256));
	/* A huge file (a 16 GiB sparse "photo") is not hashed for the sake of
	 * an error record. */
	f->hash = !job->sha256[0] && job->size <= JOBS_HASH_FOR_ERROR_MAX;
	f->journal = jobs->journal;
	f->code = xstrdup(code);
	f->message = xstrdup(message);
	f->request_id = job->request_id[0] ? xstrdup(job->request_id) : NULL;
	f->http_status = http_status;
	f->attempts = job->attempts;
	f->failed_at = loop_wall_ms() / 1000;
	if (job->attempts || job->images_paid)
		f->model = xstrdup(job_model(jobs, job));
	/* Paid, though it failed: the record keeps what was paid, so a restart
	 * counts it against today's limits and cost as this run did. */
	if (job->images_paid) {
		f->images_paid = job->images_paid;
		f->max_images = job->max_images;
		/* Counted on the day it was paid: a fetch may fail a day later. */
		f->paid_at = job->generated_at / 1000;
		if (job->result.usage && !(f->usage = cJSON_Duplicate(job->result.usage, true)))
			log_oom();
	}
	job_fail_submit(jobs, job, f, false);
}

/* ---- fetching and committing the paid result ---------------------------- */

/* The stages below end a failure through the core. */
static void job_fails(struct jobs *jobs, struct job *job, long http_status, const char *code,
		      const char *message)
{
	/* One of several paid images that cannot be had: recorded in the
	 * sidecar like a data[i].error, and the others still written. */
	if (job_outputs_fail_current(job, code, message)) {
		log_job(LOG_WARNING, job->folder->cfg->path, job->rel,
			job->request_id[0] ? job->request_id : NULL, code,
			"one image of %s/%s failed: %s: %s; recorded in its sidecar",
			job->folder->cfg->path, job->rel, code, message);
		job_fetch(jobs, job);
		return;
	}
	job_advance(
	    jobs, job,
	    JOB_VERDICT(FAIL, .http_status = http_status, .code = code, .message = message));
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
		job->folder->gave_up_this_run = true;
		jobs_leave_queued_for_later(jobs, job->folder);
		job_advance(jobs, job, JOB_VERDICT(LEAVE));
		return;
	}
	/* The URL lives 24 h: keep trying within that, never generate again. */
	if (loop_wall_ms() - job->generated_at > (int64_t)JOBS_URL_VALID_MS ||
	    ((jobs->once || code) && job->fetch_failures > jobs->config->api.retries)) {
		job_fails(jobs, job, code ? 200 : 0, code ? code : "FetchFailed", why);
		return;
	}
	delay = jobs_backoff(jobs, job->fetch_failures, -1);
	metrics_note_retry("fetch");
	log_job(LOG_WARNING, job->folder->cfg->path, job->rel,
		job->request_id[0] ? job->request_id : NULL, code,
		"fetching the result of %s/%s failed (%s); trying again in %llu ms",
		job->folder->cfg->path, job->rel, why, (unsigned long long)delay);
	/* A download waiting to retry holds no generation slot. */
	job_advance(jobs, job, JOB_VERDICT(FETCH_RETRY, .delay_ms = delay));
}

static void job_fetch_failed(struct jobs *jobs, struct job *job, const char *why, bool storage)
{
	job_fetch_retry(jobs, job, NULL, why, storage);
}

/* Whether the result in fd is an image: known magic bytes, and for PNG and
 * JPEG the ending of a whole file (the check inputs get). NULL when it is,
 * else a code, with a sentence in msg. On a worker. */
static const char *job_result_problem(int fd, enum image_format fmt, char *msg, size_t msglen)
{
	uint8_t tail[IMAGE_TAIL_MAX];
	struct stat st;
	size_t n;
	ssize_t got;

	if (fstat(fd, &st) < 0 || st.st_size == 0) {
		(void)snprintf(msg, msglen, "the result is empty");
		return "Result.NotAnImage";
	}
	if (fmt == IMAGE_FORMAT_UNKNOWN) {
		(void)snprintf(msg, msglen,
			       "the result is not an image: its first bytes match no "
			       "known image format");
		return "Result.NotAnImage";
	}
	n = (uint64_t)st.st_size < sizeof(tail) ? (size_t)st.st_size : sizeof(tail);
	got = fdio_pread_full(fd, tail, n, st.st_size - (off_t)n);
	if (got == (ssize_t)n && !image_tail_complete(fmt, tail, n)) {
		(void)snprintf(msg, msglen,
			       "the result is a %s cut short (it does not end like "
			       "a whole file)",
			       image_format_name(fmt));
		return "Result.Incomplete";
	}
	return NULL;
}

/* A b64_json image decoded straight to its file exists nowhere else: before
 * a failed commit throws the file away, its bytes are read back as the
 * answer's text, and the retried write decodes them again. keep_fd is a
 * second descriptor of the file (it outlives the unlink). On a worker. */
static int job_keep_streamed_image(int keep_fd, char **ret_text)
{
	char *buf = NULL, *text = NULL;
	size_t len = 0;
	int r;

	/* The descriptor shares the writer's offset (at the end): read from 0. */
	if (lseek(keep_fd, 0, SEEK_SET) < 0)
		return -errno;
	r = fdio_read_file(keep_fd, TRANSFER_IMAGE_MAX, &buf, &len);
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
	*ret_text = text;
out:
	free(buf);
	return r;
}

/* The image bytes as b64 text (job_keep_streamed_image's result). */
static int job_b64_text(const uint8_t *buf, size_t len, char **ret_text)
{
	char *text;

	if (len == 0)
		return -EFBIG;
	text = malloc(B64_ENCODED_LEN(len) + 1);
	if (!text)
		return -ENOMEM;
	text[b64_encode(buf, len, text)] = '\0';
	*ret_text = text;
	return 0;
}

static int job_pwrite_all(int fd, const uint8_t *buf, size_t len, off_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, buf, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		buf += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

struct job_commit_io {
	struct job_io io;
	int dirfd, fd;
	char tmp[300];
	enum image_format fmt;
	bool downloaded, streamed;
	bool sidecar_only; /* several outputs, the last of which failed: no image to write */
	char out_name[OUTPUT_NAME_MAX], side_name[OUTPUT_NAME_MAX], err_name[OUTPUT_NAME_MAX];
	char out_base[OUTPUT_NAME_MAX];
	const char *out_ext;
	char *source_rel; /* whose earlier outputs may be replaced */
	bool oom;	  /* on the worker: the loop reports it */
	char *doc, *rel_out;
	struct journal *journal;
	struct job_success success;
	int64_t completed_at;
	uint64_t elapsed_ms;
	/* results */
	const char *problem;
	char why[160];
	int r, keep_r, journal_r;
	char *kept_text; /* the streamed image as b64 text, after a failed commit */
	/* Provenance: the XMP packet to insert (NULL: none), and the sidecar
	 * to write instead of doc when the JPEG could not take it. */
	char *xmp_packet, *doc_without_xmp;
	const char *provenance; /* of this image: "xmp", "none" or "off" */
	size_t xmp_len;
	uint8_t *original; /* the image before the XMP went in */
	size_t original_len;
};

/* Inserts the XMP segment into the temporary JPEG in place, shifting the
 * bytes after the insertion point: every byte of the image stays as it was,
 * nothing is decoded or encoded. The original bytes are kept in c->original
 * (a failed write leaves the file half-shifted; a streamed b64 result is
 * then recovered from them). A JPEG whose header does not parse, or that
 * has XMP already, is left alone and gets doc_without_xmp. On a worker. */
static int job_commit_xmp(struct job_commit_io *c)
{
	uint8_t *seg = NULL;
	size_t seg_len = 0, off = 0;
	char *buf = NULL;
	int r;

	if (lseek(c->fd, 0, SEEK_SET) < 0)
		return -errno;
	r = fdio_read_file(c->fd, TRANSFER_IMAGE_MAX, &buf, &c->original_len);
	if (r < 0)
		return r;
	c->original = (uint8_t *)buf;
	if (xmp_jpeg_insert_offset(c->original, c->original_len, &off) < 0) {
		free(c->doc);
		c->doc = c->doc_without_xmp;
		c->doc_without_xmp = NULL;
		c->provenance = "none";
		return 0;
	}
	r = xmp_jpeg_segment(c->xmp_packet, c->xmp_len, &seg, &seg_len);
	if (r < 0)
		return r;
	r = job_pwrite_all(c->fd, seg, seg_len, (off_t)off);
	if (r == 0)
		r = job_pwrite_all(c->fd, c->original + off, c->original_len - off,
				   (off_t)(off + seg_len));
	free(seg);
	return r;
}

/* Renames the image in under its planned name, or, when another source's
 * file has that name, under "<base>~2<ext>" ..., and then says so in the
 * sidecar text. Never replaces what is not this source's. On a worker. */
static int job_commit_image(struct job_commit_io *c)
{
	char name[OUTPUT_NAME_MAX], *rel, *doc;
	size_t dir_len;
	int r;

	r = output_tmp_commit_image(c->dirfd, c->fd, c->tmp, c->out_base, c->out_ext,
				    c->source_rel, name, sizeof(name));
	if (r < 0 || strcmp(name, c->out_name) == 0)
		return r;
	dir_len = strlen(c->rel_out) - strlen(c->out_name);
	rel = malloc(dir_len + strlen(name) + 1);
	if (!rel)
		goto oom;
	memcpy(rel, c->rel_out, dir_len);
	strcpy(rel + dir_len, name);
	for (char **d = &c->doc; d; d = d == &c->doc ? &c->doc_without_xmp : NULL) {
		if (!*d)
			continue;
		doc = sidecar_rename_output(*d, c->rel_out, rel);
		if (!doc) {
			free(rel);
			goto oom;
		}
		free(*d);
		*d = doc;
	}
	free(c->rel_out);
	c->rel_out = rel;
	memcpy(c->out_name, name, sizeof(name));
	return 0;
oom:
	c->oom = true;
	return -ENOMEM;
}

static void job_commit_work(struct job_io *io)
{
	struct job_commit_io *c = (struct job_commit_io *)io;
	int keep_fd = -1;

	if (c->sidecar_only)
		goto sidecar;

	/* Anything else (an HTML page, a zip) is no success: on_success could
	 * otherwise delete the original for it. */
	c->problem = job_result_problem(c->fd, c->fmt, c->why, sizeof(c->why));
	if (c->problem) {
		output_tmp_abort(c->dirfd, c->fd, c->tmp);
		c->fd = -1;
		return;
	}
	if (c->streamed) {
		keep_fd = dup(c->fd);
		if (keep_fd < 0) {
			c->r = -errno;
			c->keep_r = c->r;
			output_tmp_abort(c->dirfd, c->fd, c->tmp);
			c->fd = -1;
			return;
		}
	}
	if (c->xmp_packet) {
		c->r = job_commit_xmp(c);
		if (c->r < 0) {
			output_tmp_abort(c->dirfd, c->fd, c->tmp);
			c->fd = -1;
			goto failed;
		}
	}
	c->r = job_commit_image(c);
	c->fd = -1;
	if (c->r == 0 && !c->doc)
		goto out; /* one of several outputs: the sidecar comes with the last */
sidecar:
	if (c->r == 0) {
		c->r = output_write_atomic(c->dirfd, c->side_name, c->doc, strlen(c->doc));
		/* Without its sidecar the output is not "done": the next try writes
		 * both again (under the same stem), rather than leave an orphan. */
		if (c->r < 0 && !c->sidecar_only)
			(void)unlinkat(c->dirfd, c->out_name, 0);
	}
failed:
	if (c->r < 0) {
		/* The file holds the XMP by now (or half of it): the next try
		 * starts again from the bytes as they came. */
		if (keep_fd >= 0 && c->original)
			c->keep_r = job_b64_text(c->original, c->original_len, &c->kept_text);
		else if (keep_fd >= 0)
			c->keep_r = job_keep_streamed_image(keep_fd, &c->kept_text);
		goto out;
	}
	(void)unlinkat(c->dirfd, c->err_name, 0); /* an old failure of this source */
	c->journal_r = job_journal_drop(c->journal, c->success.src.root, c->success.src.rel);
	job_success_run(&c->success);
out:
	if (keep_fd >= 0)
		close(keep_fd);
}

static void job_commit_done(struct jobs *jobs, struct job *job, struct job_io *io)
{
	struct job_commit_io *c = (struct job_commit_io *)io;
	const struct folder_config *cfg;

	if (c->oom)
		log_oom();
	if (!io->ran) {
		/* shutdown: the next start sweeps the temporary file */
		work_close(jobs->store_pool, c->fd);
		c->fd = -1;
		c->r = -ECANCELED;
	}
	job_success_done(job, &c->success);
	if (!job)
		goto out;
	cfg = job->folder->cfg;
	if (c->problem) {
		if (c->downloaded)
			job_fetch_retry(jobs, job, c->problem, c->why, false); /* paid: again */
		else
			job_fails(jobs, job, 200, c->problem, c->why); /* b64_json: it stays so */
		goto out;
	}
	if (c->r < 0) {
		if (c->streamed) {
			if (c->keep_r < 0 || !c->kept_text) {
				job_fails(jobs, job, 200, "Result.WriteFailed",
					  strerror(c->keep_r < 0 ? -c->keep_r : -c->r));
				goto out;
			}
			free(job->result.b64_json);
			job->result.b64_json = c->kept_text;
			job->result.b64_streamed = false;
			c->kept_text = NULL;
		}
		job_fetch_failed(jobs, job, strerror(-c->r), true);
		goto out;
	}
	if (!c->doc) {
		/* One of several outputs is in: on to the next, same stem. */
		bool more = job_outputs_next(job, c->rel_out);
		cJSON *entry = cJSON_GetArrayItem(job->outputs_done,
						  cJSON_GetArraySize(job->outputs_done) - 1);

		if (!entry || !sidecar_add_string(entry, "provenance", c->provenance))
			log_oom();
		if (more) {
			job_fetch(jobs, job);
			goto out;
		}
	}
	job_index_put(job, c->side_name, false, c->completed_at,
		      (int64_t)api_result_images_counted(&job->result, job->max_images),
		      job_model(jobs, job), job->generated_at / 1000);
	job_journal_removed(job, c->journal_r);
	job_set_undurable(jobs, job, false);
	job_set_storage_hold(jobs, job, false);
	jobs->disk_reason[0] = '\0';
	log_job(LOG_INFO, cfg->path, job->rel, job->request_id[0] ? job->request_id : NULL, NULL,
		"done %s/%s -> %s/%s (%u attempt%s, %llu ms)", cfg->path, job->rel, cfg->output,
		c->rel_out, job->attempts, job->attempts == 1 ? "" : "s",
		(unsigned long long)c->elapsed_ms);
	job_advance(jobs, job, JOB_VERDICT(DONE));
out:
	work_close(jobs->store_pool, c->dirfd);
	free(c->kept_text);
	free(c->xmp_packet);
	free(c->doc_without_xmp);
	free(c->original);
	free(c->doc);
	free(c->rel_out);
	free(c->source_rel);
	free(c);
}

/* Records prov as the provenance of the current output (index cur) in a
 * sidecar's outputs[] and returns the whole's: the one all written outputs
 * share, else "partial". */
static const char *job_outputs_provenance(cJSON *outputs, size_t cur, const char *prov)
{
	const char *all = NULL;
	bool mixed = false;
	const cJSON *o;

	cJSON_ArrayForEach(o, outputs)
	{
		const cJSON *index = cJSON_GetObjectItemCaseSensitive(o, "index");
		const cJSON *p;

		if (!cJSON_GetObjectItemCaseSensitive(o, SIDECAR_OUTPUT))
			continue; /* an image that failed: nothing written */
		if (cJSON_IsNumber(index) && index->valuedouble == (double)cur) {
			cJSON_DeleteItemFromObjectCaseSensitive((cJSON *)o, "provenance");
			if (!sidecar_add_string((cJSON *)o, "provenance", prov))
				log_oom();
		}
		p = cJSON_GetObjectItemCaseSensitive(o, "provenance");
		if (!cJSON_IsString(p) || (all && strcmp(all, p->valuestring) != 0))
			mixed = true;
		else
			all = p->valuestring;
	}
	return mixed ? "partial" : all ? all : prov;
}

/* What the sidecar says of provenance, and the XMP packet for the worker:
 * "xmp" when it goes in; "off" (embed_provenance: false); "none" when the
 * result is no JPEG (PNG, WebP: left as they came) or its header cannot take
 * it (the worker then writes doc_without_xmp). */
static void job_commit_provenance(const struct job *job, struct job_commit_io *c,
				  struct sidecar_success *s)
{
	const struct folder_config *cfg = job->folder->cfg;
	char prompt_sha[65];
	struct xmp_fields f = {0};
	int r;

	if (!cfg->embed_provenance) {
		s->provenance = c->provenance = "off";
		goto out;
	}
	s->provenance = c->provenance = "none";
	if (c->fmt != IMAGE_FORMAT_JPEG)
		goto out;
	if (digest_sha256_buf(s->prompt, strlen(s->prompt), prompt_sha) < 0)
		goto out;
	f.tool = "seedreamd " SEEDREAMD_VERSION;
	f.model = s->model;
	/* A relay may send milliseconds (or any number): out of XMP's range the
	 * time it was written is still a truthful creation time. */
	f.created = job->result.created > 0 && job->result.created <= XMP_CREATED_MAX
			? job->result.created
			: c->completed_at;
	f.source = job->rel;
	f.prompt_sha256 = prompt_sha;
	f.prompt = cfg->embed_prompt ? s->prompt : NULL;
	r = xmp_build_packet(&f, &c->xmp_packet, &c->xmp_len);
	if (r == -ENOMEM)
		log_oom();
	if (r < 0)
		goto out;
	if (s->output) { /* else one of several outputs: no sidecar with it */
		if (s->outputs)
			s->provenance =
			    job_outputs_provenance((cJSON *)s->outputs, job->out_cur, "none");
		c->doc_without_xmp = sidecar_success_json(s);
		if (!c->doc_without_xmp)
			log_oom();
	}
	s->provenance = c->provenance = "xmp";
out:
	if (s->outputs)
		s->provenance =
		    job_outputs_provenance((cJSON *)s->outputs, job->out_cur, c->provenance);
}

/* The output is complete in a temporary file: a worker checks that it is an
 * image, renames it in, then writes the sidecar, which is the "done" record. */
static void job_commit(struct jobs *jobs, struct job *job, int tmp_fd, const char *tmp_name,
		       const uint8_t *magic, size_t magic_len, bool downloaded)
{
	const struct folder_config *cfg = job->folder->cfg;
	struct job_commit_io *c = calloc(1, sizeof(*c));
	struct sidecar_success s = {0};
	struct sidecar_fitted fitted;
	const char *reasons[FIT_REASON_COUNT];
	cJSON *outputs = NULL;
	char *dir, *first_out = NULL;
	struct sidecar_reference refs[CONFIG_IMAGES_MAX];
	struct sidecar_source sources[CONFIG_IMAGES_MAX];

	if (!c)
		log_oom();
	c->dirfd = dup(job->out_dirfd);
	if (c->dirfd < 0)
		log_oom(); /* descriptors run out only by a leak */
	c->fd = tmp_fd;
	c->sidecar_only = tmp_fd < 0;
	(void)snprintf(c->tmp, sizeof(c->tmp), "%s", tmp_name);
	c->fmt = image_sniff(magic, magic_len);
	c->downloaded = downloaded;
	c->streamed = job->result.b64_streamed;
	c->out_ext = output_ext_for(c->fmt);
	if (job_outputs_several(job))
		(void)snprintf(c->out_base, sizeof(c->out_base), "%s-%u", job->stem,
			       job_outputs_number(job));
	else
		(void)snprintf(c->out_base, sizeof(c->out_base), "%s", job->stem);
	(void)snprintf(c->out_name, sizeof(c->out_name), "%s%s", c->out_base, c->out_ext);
	c->source_rel = xstrdup(job->rel);
	(void)snprintf(c->side_name, sizeof(c->side_name), "%s.json", job->stem);
	(void)snprintf(c->err_name, sizeof(c->err_name), "%s.error.json", job->stem);
	dir = rel_dir(job->rel);
	c->rel_out = dir[0] ? xasprintf("%s/%s", dir, c->sidecar_only ? c->side_name : c->out_name)
			    : xstrdup(c->sidecar_only ? c->side_name : c->out_name);
	free(dir);
	c->completed_at = loop_wall_ms() / 1000;
	c->elapsed_ms = loop_now_ms() - job->started;
	job_fill_source(job, &s.src);
	s.output = c->rel_out;
	s.model = job_model(jobs, job);
	s.prompt = job_prompt(job);
	s.prompt_source = job->prompt_source;
	s.prompt_file = job->prompt_file;
	s.extra_json = job_extra_json(job);
	s.size = cfg->size;
	s.result_size = job->result.size;
	s.watermark = cfg->watermark;
	s.response_format =
	    jobs->config->api.response_format == RESPONSE_FORMAT_B64_JSON ? "b64_json" : "url";
	s.created = job->result.created;
	s.usage = job->result.usage;
	s.request_id = job->request_id[0] ? job->request_id : NULL;
	s.attempts = job->attempts;
	s.elapsed_ms = c->elapsed_ms;
	s.completed_at = c->completed_at;
	s.paid_at = job->generated_at / 1000;
	s.version = SEEDREAMD_VERSION;
	s.fitted = job_fit_sidecar(job, &fitted, reasons, FIT_REASON_COUNT);
	s.sources = job_group_sources(job, sources, CONFIG_IMAGES_MAX);
	s.n_sources = s.sources ? job->n_members : 0;
	s.references = refs;
	s.n_references = job_sent_references(job, s.sources != NULL, refs);
	if (job_outputs_several(job)) {
		s.max_images = job->max_images;
		if (job_outputs_is_last(job)) {
			const cJSON *o;

			outputs = job_outputs_list(job, c->rel_out);
			/* "output" stays the first, for readers of one-output sidecars. */
			cJSON_ArrayForEach(o, outputs)
			{
				if ((first_out = sidecar_get_name(o, SIDECAR_OUTPUT)))
					break;
			}
			s.output = first_out ? first_out : c->rel_out;
			s.outputs = outputs;
		} else {
			s.output = NULL; /* no sidecar yet: one of several outputs */
		}
	}
	/* After the outputs are known: the sidecar without XMP (written if the
	 * image cannot take it) is built only where a sidecar is written at all. */
	job_commit_provenance(job, c, &s);
	if (s.output) {
		c->doc = sidecar_success_json(&s);
		if (!c->doc)
			log_oom();
	}
	cJSON_Delete(outputs);
	free(first_out);
	c->journal = jobs->journal;
	if (c->doc) /* on_success once every output is in */
		job_success_fill(job, &c->success);
	c->io.work = job_commit_work;
	c->io.done = job_commit_done;
	job_activate(jobs, job, JOB_COMMITTING);
	job_io_submit(jobs, job, job->folder, &c->io);
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
	{
		curl_off_t got = 0, us = 0;
		(void)curl_easy_getinfo(easy, CURLINFO_SIZE_DOWNLOAD_T, &got);
		(void)curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME_T, &us);
		metrics_note_download(got > 0 ? (uint64_t)got : 0,
				      result == CURLE_OK && status == 200 ? (double)us / 1e6 : -1);
	}
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
		job_fails(jobs, job, 200, "UnsafeResultURL", why); /* as a URL refused up front */
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

/* Decodes the b64_json text into fd. On a worker. */
static int job_decode_b64(const char *text, int fd, uint8_t *magic, size_t *magic_len)
{
	size_t len = strlen(text), out_len = 0;
	uint8_t *buf = malloc(len / 4 * 3 + 3);
	int r;

	if (!buf)
		return -ENOMEM;
	r = b64_decode(text, len, buf, &out_len);
	if (r < 0 || out_len == 0)
		goto out;
	*magic_len = out_len < 16 ? out_len : 16;
	memcpy(magic, buf, *magic_len);
	r = fdio_write_all(fd, buf, out_len, NULL);
out:
	if (r == 0 && out_len == 0)
		r = -EINVAL;
	free(buf);
	return r;
}

/* Readying the fetch: the journal record, the output folder, room in it, the
 * temporary file (and the b64_json image decoded into it). */
struct job_fetch_io {
	struct job_io io;
	struct job_out out;
	struct journal *journal;
	struct journal_record rec; /* the names, to remove a record found done */
	char *done_sidecar;	   /* set: written before a crash if this exists */
	uint64_t min_free;
	char hint[OUTPUT_NAME_MAX];
	char *b64; /* the job's b64_json text, taken while the worker decodes it */
	bool rechecked;
	/* results */
	int journal_r, r;
	bool already_done, space_low, malformed;
	bool journal_first; /* the journal write runs first, on state_dir's storage */
	int dirfd, fd;
	char tmp[300];
	uint8_t magic[16];
	size_t magic_len;
};

static void job_fetch_work(struct job_io *io)
{
	struct job_fetch_io *f = (struct job_fetch_io *)io;

	if (f->done_sidecar && access(f->done_sidecar, F_OK) == 0) {
		f->already_done = true;
		f->journal_r = job_journal_drop(f->journal, f->rec.folder, f->rec.source);
		return;
	}
	f->dirfd = f->r = job_out_open(&f->out);
	if (f->r < 0)
		return;
	if (!job_out_space_ok(f->dirfd, f->min_free)) {
		f->space_low = true;
		return;
	}
	f->fd = f->r = output_tmp_open(f->dirfd, f->hint, f->tmp, sizeof(f->tmp));
	if (f->r < 0)
		return;
	if (f->b64) {
		f->r = job_decode_b64(f->b64, f->fd, f->magic, &f->magic_len);
		if (f->r < 0) {
			f->malformed = f->r == -EINVAL;
			output_tmp_abort(f->dirfd, f->fd, f->tmp);
			f->fd = -1;
		}
	}
}

static void job_fetch_submit(struct jobs *jobs, struct job *job, struct job_fetch_io *f,
			     bool trusted);
static void job_fetch_free(struct job_fetch_io *f);

/* The journal write of a paid result, on state_dir's storage: a folder whose
 * share hangs does not hold it up, so its results are recorded and wait. */
struct job_journal_io {
	struct job_io io;
	struct journal *journal;
	struct journal_record rec;
	struct job_fetch_io *fetch; /* what follows once recorded */
	int r;
};

static void job_journal_work(struct job_io *io)
{
	struct job_journal_io *j = (struct job_journal_io *)io;

	j->r = journal_write(j->journal, &j->rec);
}

static void job_journal_done(struct jobs *jobs, struct job *job, struct job_io *io)
{
	struct job_journal_io *j = (struct job_journal_io *)io;
	struct job_fetch_io *f = j->fetch;

	journal_record_clear(&j->rec);
	if (!job || !io->ran) {
		job_fetch_free(f);
		free(j);
		return;
	}
	job_journal_written(jobs, job, j->r);
	free(j);
	job_fetch_submit(jobs, job, f, false);
	if (job->journalled)
		jobs_pump(jobs); /* recorded: the next generation may start */
}

static void job_journal_submit(struct jobs *jobs, struct job *job, struct job_fetch_io *f)
{
	struct job_journal_io *j = calloc(1, sizeof(*j));

	if (!j)
		log_oom();
	j->journal = jobs->journal;
	j->fetch = f;
	job_journal_record(job, &j->rec);
	j->io.work = job_journal_work;
	j->io.done = job_journal_done;
	job_io_submit(jobs, job, NULL, &j->io);
}

static void job_fetch_free(struct job_fetch_io *f)
{
	job_out_clear(&f->out);
	journal_record_clear(&f->rec);
	free(f->done_sidecar);
	free(f->b64);
	free(f);
}

static void job_fetch_done(struct jobs *jobs, struct job *job, struct job_io *io)
{
	struct job_fetch_io *f = (struct job_fetch_io *)io;
	int r = io->ran ? f->r : -ECANCELED;

	if (!job) {
		if (f->fd >= 0)
			job_io_discard_tmp(jobs, io->folder, f->dirfd, f->fd, f->tmp);
		else
			work_close(jobs->store_pool, f->dirfd);
		job_fetch_free(f);
		return;
	}
	if (f->b64) {
		/* Back into the job: a retry decodes it again. */
		free(job->result.b64_json);
		job->result.b64_json = f->b64;
		f->b64 = NULL;
	}
	if (f->already_done) {
		/* A result restored from the journal while the output was away,
		 * which turned out to be written before the crash. */
		log_job(LOG_INFO, job->folder->cfg->path, job->rel,
			job->request_id[0] ? job->request_id : NULL, NULL,
			"%s/%s: its paid-for result is already on disk; journal record removed",
			job->folder->cfg->path, job->rel);
		job_journal_removed(job, f->journal_r);
		job_fetch_free(f);
		job_advance(jobs, job, JOB_VERDICT(DROP));
		return;
	}
	if (r == -ESTALE && !f->rechecked) {
		r = job_out_recheck(job);
		if (r == 0) {
			job_out_clear(&f->out);
			f->rechecked = true;
			f->dirfd = f->fd = -1;
			f->b64 = job->result.b64_json;
			job->result.b64_json = NULL;
			job_fetch_submit(jobs, job, f, true);
			return;
		}
	}
	if (r == -ESTALE)
		r = -ENODEV;
	if (r < 0 || f->space_low) {
		work_close(jobs->store_pool, f->dirfd);
		f->dirfd = -1;
		if (f->malformed)
			job_fails(jobs, job, 200, "MalformedResponse",
				  "data[0].b64_json is not valid base64");
		else
			job_fetch_failed(jobs, job,
					 f->space_low ? "less free space than min_free_space"
						      : strerror(-r),
					 true);
		job_fetch_free(f);
		return;
	}
	job_close_output_dir(job);
	job->out_dirfd = f->dirfd;
	if (job->result.b64_json) {
		int fd = f->fd;
		char tmp[sizeof(f->tmp)];
		uint8_t magic[sizeof(f->magic)];
		size_t magic_len = f->magic_len;

		memcpy(tmp, f->tmp, sizeof(tmp));
		memcpy(magic, f->magic, sizeof(magic));
		job_fetch_free(f);
		job_commit(jobs, job, fd, tmp, magic, magic_len, false);
		return;
	}
	if (job_outputs_current_failed(job)) {
		/* The last of several images failed after the others were
		 * written: the sidecar alone completes the file. */
		job_io_discard_tmp(jobs, job->folder, dup(job->out_dirfd), f->fd, f->tmp);
		job_fetch_free(f);
		job_commit(jobs, job, -1, "", NULL, 0, false);
		return;
	}
	if (!job->result.url || !transfer_url_allowed(job->result.url, &jobs->net)) {
		job_io_discard_tmp(jobs, job->folder, dup(job->out_dirfd), f->fd, f->tmp);
		job_fetch_free(f);
		job_fails(jobs, job, 200, "UnsafeResultURL",
			  job->result.url ? "the result URL is not https, or leads to this "
					    "machine or its local network"
					  : "the result URL is missing");
		return;
	}
	job->dl = calloc(1, sizeof(*job->dl));
	if (!job->dl)
		log_oom();
	job->dl->fd = f->fd;
	memcpy(job->dl->tmp_name, f->tmp, sizeof(job->dl->tmp_name));
	job_fetch_free(f);
	r = transfer_dl_setup(job->dl, job->result.url, &jobs->net, jobs->io_pool);
	if (r >= 0)
		r = transfer_dl_start(job->dl, jobs->http, job_downloaded, job);
	if (r == -ENOMEM)
		log_oom();
	if (r < 0) {
		job_release_transfers(jobs, job);
		job_fetch_failed(jobs, job, strerror(-r), false);
		return;
	}
	job_activate(jobs, job, JOB_FETCHING);
}

static void job_fetch_submit(struct jobs *jobs, struct job *job, struct job_fetch_io *f,
			     bool trusted)
{
	job_out_fill(job, &f->out, trusted);
	f->io.work = job_fetch_work;
	f->io.done = job_fetch_done;
	job_io_submit(jobs, job, job->folder, &f->io);
}

void job_fetch(struct jobs *jobs, struct job *job)
{
	struct job_fetch_io *f;
	const struct index_entry *e;

	job_activate(jobs, job, JOB_COMMITTING);
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
		job_fails(jobs, job, 200, "Result.WriteFailed",
			  "the b64_json result could not be written");
		return;
	}
	if (job->folder->index_stale) {
		job_fetch_failed(jobs, job, strerror(EAGAIN), true);
		return;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		log_oom();
	f->dirfd = f->fd = -1;
	f->journal = jobs->journal;
	/* A result without a URL (b64_json) cannot be journalled: it is safe
	 * only once written out. */
	if (jobs->journal && !job->result.url)
		job_set_undurable(jobs, job, true);
	f->journal_first = jobs->journal && job->result.url && !job->journalled;
	f->rec.folder = xstrdup(job->folder->cfg->path);
	f->rec.source = xstrdup(job->rel);
	e = index_get(job->folder->index, job->rel);
	if (job->journalled && e && e->size == job->size && e->mtime_sec == job->mtime.tv_sec &&
	    e->mtime_nsec == job->mtime.tv_nsec)
		f->done_sidecar = xasprintf("%s/%s", job->folder->cfg->output, e->sidecar);
	f->min_free = jobs->config->min_free_space;
	(void)snprintf(f->hint, sizeof(f->hint), "%s.out", job->stem);
	f->b64 = job->result.b64_json;
	job->result.b64_json = NULL;
	if (f->journal_first)
		job_journal_submit(jobs, job, f);
	else
		job_fetch_submit(jobs, job, f, false);
}
