/* job_check: what happens before any money is spent. A storage worker opens
 * the source without following links out of the tree, checks it against the
 * done record and reads its head and tail; the loop then judges it against
 * the API's limits, and, when it is a copy of something already paid for in
 * the folder, a worker gives it that result instead of a new one. */
#include "job_private.h"

/* ---- the check, on a worker --------------------------------------------- */

struct job_check_io {
	struct job_io io;
	struct job_src src;
	bool quiet_if_done; /* offered as done by its record: no "skipped" */
	bool have_done;	    /* the done record of this source, copied: */
	bool done_failed;
	uint64_t done_size;
	int64_t done_mtime_sec;
	long done_mtime_nsec;
	char done_sha[65];
	char *done_sidecar; /* full path */
	bool want_hash;	    /* the hash may find it done or a copy */
	bool read_image;    /* not too large to look at */
	/* results */
	int gone; /* < 0: gone, not a regular file, or a link not followed */
	bool changed, done;
	struct stat st;
	char sha[65];
	int read_err;
	enum image_probe_result pr;
	struct image_info info;
	bool complete;
	struct job_prompt_read prompt; /* <stem>.txt, with prompt_file */
};

static bool check_done_record(const struct job_check_io *c, const struct stat *st)
{
	return c->have_done && c->done_size == (uint64_t)st->st_size &&
	       c->done_mtime_sec == st->st_mtim.tv_sec && c->done_mtime_nsec == st->st_mtim.tv_nsec;
}

/* Head and tail, and what they say the image is. */
static void check_read_image(struct job_check_io *c, int fd)
{
	uint8_t *head = malloc(IMAGE_HEAD_MAX), tail[IMAGE_TAIL_MAX];
	ssize_t head_len, tail_len = 0;
	off_t size = c->st.st_size;

	if (!head) {
		c->read_err = -ENOMEM;
		return;
	}
	head_len = fdio_pread_full(fd, head, IMAGE_HEAD_MAX, 0);
	if (size > 0)
		tail_len =
		    fdio_pread_full(fd, tail, sizeof(tail),
				    size > (off_t)sizeof(tail) ? size - (off_t)sizeof(tail) : 0);
	if (head_len < 0 || tail_len < 0) {
		c->read_err = (int)(head_len < 0 ? head_len : tail_len);
		goto out;
	}
	c->pr = image_probe(head, (size_t)head_len, c->src.size, &c->info);
	if (c->pr == IMAGE_PROBE_CORRUPT && c->info.format == IMAGE_FORMAT_TIFF) {
		/* A TIFF whose first directory lies beyond the head: read it there. */
		uint64_t off = image_tiff_ifd_offset(head, (size_t)head_len);
		if (off >= (uint64_t)head_len) {
			uint8_t *window = malloc(IMAGE_TIFF_IFD_WINDOW);
			ssize_t n = -ENOMEM;
			c->pr = IMAGE_PROBE_CORRUPT;
			if (window && off < c->src.size)
				n = fdio_pread_full(fd, window, IMAGE_TIFF_IFD_WINDOW, (off_t)off);
			if (window && off < c->src.size && n >= 0)
				c->pr = image_probe_tiff_ifd(head, (size_t)head_len, window,
							     (size_t)n, off, c->src.size, &c->info);
			free(window);
		}
	}
	c->complete =
	    c->pr == IMAGE_PROBE_OK && image_tail_complete(c->info.format, tail, (size_t)tail_len);
out:
	free(head);
}

static void job_check_work(struct job_io *io)
{
	struct job_check_io *c = (struct job_check_io *)io;
	int fd;

	fd = c->gone = job_src_open(&c->src);
	if (fd < 0)
		return;
	c->gone = 0;
	if (fstat(fd, &c->st) < 0 || !S_ISREG(c->st.st_mode)) {
		c->gone = -EINVAL;
		goto out;
	}
	if ((uint64_t)c->st.st_size != c->src.size || !same_mtime(&c->st.st_mtim, &c->src.mtime) ||
	    c->st.st_dev != c->src.dev || c->st.st_ino != c->src.ino) {
		c->changed = true;
		goto out;
	}
	/* A done record counts only while its sidecar exists: a deleted
	 * .error.json means "try again". */
	if (check_done_record(c, &c->st) && access(c->done_sidecar, F_OK) == 0) {
		c->done = true;
		goto out;
	}
	if (c->want_hash && !c->sha[0] && digest_sha256_fd(fd, c->sha) < 0)
		c->sha[0] = '\0';
	/* Same bytes under a new mtime (copied again, touched): done already. */
	if (c->have_done && !c->done_failed && c->done_size == c->src.size && c->done_sha[0] &&
	    c->sha[0] && strcmp(c->sha, c->done_sha) == 0 && access(c->done_sidecar, F_OK) == 0) {
		c->done = true;
		goto out;
	}
	job_prompt_read(&c->src, &c->prompt);
	if (c->read_image)
		check_read_image(c, fd);
out:
	close(fd);
}

static void job_check_free(struct job_check_io *c)
{
	job_src_clear(&c->src);
	free(c->done_sidecar);
	job_prompt_clear(&c->prompt);
	free(c);
}

/* ---- reusing an earlier result, on a worker ------------------------------ */

/* Links (or copies) an output file into dirfd. */
static int job_link_output(int dirfd, const char *old_path, const char *new_name)
{
	int src = open(old_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), r;
	char tmp[300];
	int fd;

	if (src < 0)
		return -errno;
	fd = output_tmp_open(dirfd, new_name, tmp, sizeof(tmp));
	if (fd < 0) {
		close(src);
		return fd;
	}
	close(fd);
	(void)unlinkat(dirfd, tmp, 0);
	/* A hard link under the temporary name, renamed in: atomic like any output. */
	if (linkat(src, "", dirfd, tmp, AT_EMPTY_PATH) < 0 &&
	    linkat(AT_FDCWD, old_path, dirfd, tmp, 0) < 0) {
		r = copy_file(src, dirfd, tmp);
		if (r < 0) {
			close(src);
			return r;
		}
	}
	close(src);
	fd = openat(dirfd, tmp, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		(void)unlinkat(dirfd, tmp, 0);
		return r;
	}
	return output_tmp_commit(dirfd, fd, tmp, new_name);
}

enum job_reuse_result {
	REUSE_NONE,	   /* nothing to reuse (other settings, or gone): generate */
	REUSE_DONE,	   /* finished with the earlier result */
	REUSE_LOCAL_ERROR, /* a result to reuse, but it could not be written here yet */
};

/* Done records of the same bytes a reuse looks at, the first made with the
 * same settings is reused: the first record found may be of another prompt
 * (a reload, a per-file prompt) while a later one fits. */
#define JOB_REUSE_CANDIDATES 8

struct job_reuse_io {
	struct job_io io;
	struct job_check_io *check; /* kept for the judgement if nothing is reused */
	char *sidecars[JOB_REUSE_CANDIDATES]; /* full paths, the preferred first */
	char *sources[JOB_REUSE_CANDIDATES];
	size_t n_candidates;
	const char *reused_from; /* the one of sources[] reused */
	char *output_root, *rel_dir;
	char *prompt, *size;
	const char *prompt_source; /* a static string or NULL */
	char *prompt_file;
	char *extra_json; /* the folder's extra:, NULL if none */
	bool watermark;
	char sha[65];
	struct config_reference *refs; /* the folder's references: the result must be of them */
	size_t n_refs;
	struct job_out out;
	struct job_stem stem;
	struct job_success success;
	int64_t completed_at;
	bool rechecked;
	/* results */
	enum job_reuse_result result;
	int r;
	char side_name[OUTPUT_NAME_MAX + 8];
	char *rel_out;
};

/* Both printed unformatted by cJSON from the same config text: the same
 * fields in the same order print the same. */
static bool same_extra(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The folder's references as they are now, hashed (on the worker). */
static int job_reuse_refs(struct job_reuse_io *u, struct sidecar_reference *refs, char (*hex)[65])
{
	for (size_t i = 0; i < u->n_refs && i < CONFIG_IMAGES_MAX; i++) {
		int fd = refs_open(&u->refs[i]), r;

		if (fd < 0)
			return fd;
		r = digest_sha256_fd(fd, hex[i]);
		(void)close(fd);
		if (r < 0)
			return r;
		refs[i].path = u->refs[i].path;
		refs[i].sha256_hex = hex[i];
	}
	return 0;
}

/* The same bytes were already paid for under another name in this folder
 * (a file copied, or a subfolder renamed): reuse that result instead of
 * generating again, if it was made with the settings this file would get.
 * A local read or write error is never a reason to pay: the loop holds the
 * job and tries the reuse again. */
static void job_reuse_try(struct job_reuse_io *u, const char *sidecar)
{
	char out_name[OUTPUT_NAME_MAX + 16], *text = NULL, *old_out = NULL, *doc = NULL;
	struct sidecar_success s = {0};
	struct sidecar_doc old = {0};
	struct sidecar_reference refs[CONFIG_IMAGES_MAX];
	char refs_hex[CONFIG_IMAGES_MAX][65];
	const char *output, *ext;
	int fd, dirfd = -1, r = 0, p;
	size_t len;

	u->result = REUSE_LOCAL_ERROR;
	fd = open(sidecar, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		if (r == -ENOENT || r == -ELOOP)
			u->result = REUSE_NONE;
		goto out;
	}
	r = fdio_read_file(fd, SIDECAR_RECORD_MAX, &text, &len);
	close(fd);
	if (r < 0 && r != -EFBIG && r != -EINVAL)
		goto out;
	/* The parser bounds what a reuse carries over (a planted file may hold
	 * anything) and refuses a missing output, output_hex and "..". */
	p = r == 0 ? sidecar_parse_reuse(text, len, &old) : -EINVAL;
	r = 0;
	if (p == -ENOMEM) {
		r = -ENOMEM;
		goto out;
	}
	u->result = REUSE_NONE;
	if (p < 0 || strcmp(old.prompt, u->prompt) != 0 ||
	    strcmp(old.size_requested, u->size) != 0 || old.watermark != u->watermark ||
	    !same_extra(old.extra_json, u->extra_json))
		goto out; /* other settings (or not ours to read): generate anew */
	r = job_reuse_refs(u, refs, refs_hex);
	if (r < 0 || !sidecar_references_equal(text, len, refs, u->n_refs)) {
		/* Made with other references, or they cannot be read: generate
		 * (sending checks the references again). */
		r = r == -ENOMEM ? r : 0;
		u->result = r ? REUSE_LOCAL_ERROR : REUSE_NONE;
		goto out;
	}
	output = old.output;
	if (asprintf(&old_out, "%s/%s", u->output_root, output) < 0) {
		old_out = NULL;
		r = -ENOMEM;
		u->result = REUSE_LOCAL_ERROR;
		goto out;
	}
	ext = strrchr(output, '.');
	if (access(old_out, F_OK) < 0 && errno == ENOENT)
		goto out; /* the earlier output was deleted: nothing to reuse */
	u->result = REUSE_LOCAL_ERROR;
	dirfd = r = job_out_open(&u->out);
	if (r >= 0)
		r = job_stem_choose(dirfd, &u->stem);
	if (r < 0)
		goto out;
	(void)snprintf(out_name, sizeof(out_name), "%s%s", u->stem.chosen, ext ? ext : ".jpeg");
	r = job_link_output(dirfd, old_out, out_name);
	if (r < 0)
		goto out;
	if ((u->rel_dir[0] ? asprintf(&u->rel_out, "%s/%s", u->rel_dir, out_name)
			   : asprintf(&u->rel_out, "%s", out_name)) < 0) {
		u->rel_out = NULL;
		r = -ENOMEM;
		goto out;
	}
	s.src.source = u->success.src.rel;
	s.src.sha256_hex = u->sha[0] ? u->sha : NULL;
	s.src.size = u->success.src.size;
	s.src.mtime_sec = u->success.src.mtime.tv_sec;
	s.src.mtime_nsec = u->success.src.mtime.tv_nsec;
	s.output = u->rel_out;
	s.model = old.model;
	s.prompt = u->prompt;
	s.size = u->size;
	s.result_size = old.result_size;
	s.watermark = u->watermark;
	s.response_format = old.response_format;
	s.created = old.created;
	s.usage = old.usage;
	s.request_id = old.request_id;
	s.completed_at = u->completed_at;
	s.version = SEEDREAMD_VERSION;
	s.reused_from = u->reused_from;
	s.provenance = old.provenance; /* the same bytes: its XMP names the first source */
	s.prompt_source = u->prompt_source;
	s.prompt_file = u->prompt_file;
	s.extra_json = u->extra_json;
	s.references = refs;
	s.n_references = u->n_refs;
	doc = sidecar_success_json(&s);
	if (!doc) {
		r = -ENOMEM;
		goto out;
	}
	(void)snprintf(u->side_name, sizeof(u->side_name), "%s.json", u->stem.chosen);
	r = output_write_atomic(dirfd, u->side_name, doc, strlen(doc));
	if (r < 0) {
		/* The linked output without its sidecar is not "done": take it away. */
		(void)unlinkat(dirfd, out_name, 0);
		goto out;
	}
	u->result = REUSE_DONE;
	job_success_run(&u->success);
out:
	u->r = r;
	if (dirfd >= 0)
		close(dirfd);
	free(doc);
	free(old_out);
	sidecar_doc_clear(&old);
	free(text);
}

/* Each candidate in turn until one has a result made with these settings;
 * a local error ends the search (never a reason to pay). */
static void job_reuse_work(struct job_io *io)
{
	struct job_reuse_io *u = (struct job_reuse_io *)io;

	u->result = REUSE_NONE;
	u->r = 0;
	for (size_t i = 0; i < u->n_candidates && u->result == REUSE_NONE; i++) {
		u->reused_from = u->sources[i];
		job_reuse_try(u, u->sidecars[i]);
	}
}

static void job_reuse_free(struct job_reuse_io *u)
{
	if (u->check)
		job_check_free(u->check);
	refs_free(u->refs, u->n_refs);
	for (size_t i = 0; i < u->n_candidates; i++) {
		free(u->sidecars[i]);
		free(u->sources[i]);
	}
	free(u->output_root);
	free(u->rel_dir);
	free(u->prompt);
	free(u->prompt_file);
	free(u->extra_json);
	free(u->size);
	free(u->rel_out);
	job_out_clear(&u->out);
	job_stem_clear(&u->stem);
	free(u);
}

/* ---- the judgement, on the loop ----------------------------------------- */

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
		job_advance(jobs, job, JOB_VERDICT(LEAVE));
		return;
	}
	log_warn("%s/%s: reusing an earlier result failed (%s); trying again in %u s",
		 job->folder->cfg->path, job->rel, strerror(err), JOBS_STORAGE_RETRY_MS / 1000);
	job_advance(jobs, job, JOB_VERDICT(SETTLE, .delay_ms = JOBS_STORAGE_RETRY_MS));
}

/* What the file's head and tail say, against the API's limits: queue it (to
 * be fitted first, perhaps), wait for more of it, or fail it. */
static void job_judge(struct jobs *jobs, struct job *job, const struct job_check_io *c)
{
	const struct folder_config *cfg = job->folder->cfg;
	const struct image_info *info = &c->info;
	enum image_probe_result pr = c->pr;
	char msg[256];
	const char *code;
	unsigned reasons;

	if (job->size > cfg->max_input_bytes && cfg->fit == FIT_NEVER) {
		/* Too large whatever else is wrong with it: say so now, and do not
		 * hold it as "incomplete" first. (A fit makes it smaller.) */
		(void)snprintf(msg, sizeof(msg), "file is %llu bytes; at most %llu are allowed",
			       (unsigned long long)job->size,
			       (unsigned long long)cfg->max_input_bytes);
		job_advance(
		    jobs, job,
		    JOB_VERDICT(FAIL, .code = "LocalValidation.FileTooLarge", .message = msg));
		return;
	}
	if (c->read_err < 0) {
		job_advance(jobs, job,
			    JOB_VERDICT(FAIL, .code = "LocalValidation.Unreadable",
					.message = strerror(-c->read_err)));
		return;
	}
	if (pr == IMAGE_PROBE_TRUNCATED || (pr == IMAGE_PROBE_OK && !c->complete)) {
		/* Maybe still arriving (a slow copy that closes between chunks). */
		if (loop_now_ms() - job->first_seen < cfg->incomplete_timeout_ms && !jobs->once) {
			job_advance(jobs, job,
				    JOB_VERDICT(SETTLE, .delay_ms = cfg->settle_ms > 1000
									? cfg->settle_ms
									: 1000));
			return;
		}
		if (jobs->once && loop_now_ms() - job->first_seen < cfg->incomplete_timeout_ms) {
			log_warn("%s/%s looks incomplete; left for a later run", cfg->path,
				 job->rel);
			job_advance(jobs, job, JOB_VERDICT(LEAVE));
			return;
		}
		job_advance(jobs, job,
			    JOB_VERDICT(FAIL, .code = "LocalValidation.Truncated",
					.message = "the image is incomplete (its header or its end "
						   "is missing) and did not change within "
						   "incomplete_timeout"));
		return;
	}
	if (pr == IMAGE_PROBE_UNKNOWN && info->found) {
		(void)snprintf(msg, sizeof(msg),
			       "a %s: neither the API nor a conversion here can read it",
			       info->found);
		job_advance(jobs, job,
			    JOB_VERDICT(FAIL, .code = image_probe_code(pr), .message = msg));
		return;
	}
	if (pr != IMAGE_PROBE_OK) {
		job_advance(jobs, job,
			    JOB_VERDICT(FAIL, .code = image_probe_code(pr),
					.message = image_probe_message(pr)));
		return;
	}
	reasons = fit_wanted(info, job->size, cfg->max_input_bytes, cfg->fit);
	if (!image_api_format(info->format) && !reasons) {
		(void)snprintf(
		    msg, sizeof(msg),
		    "a %s image: the API does not take it and this folder has fit: never",
		    image_format_name(info->format));
		job_advance(
		    jobs, job,
		    JOB_VERDICT(FAIL, .code = "LocalValidation.UnsupportedFormat", .message = msg));
		return;
	}
	code = image_api_format(info->format)
		   ? image_check_limits(info, job->size, cfg->max_input_bytes, msg, sizeof(msg))
		   : NULL;
	/* A fit shrinks; it cannot mend a side under 15 px or a 1:20 strip. */
	if (code && (!reasons || strcmp(code, "LocalValidation.TooSmall") == 0 ||
		     strcmp(code, "LocalValidation.AspectRatio") == 0)) {
		job_advance(jobs, job, JOB_VERDICT(FAIL, .code = code, .message = msg));
		return;
	}
	job->format = info->format;
	/* A file to fit waits in the queue like any other; jobs_pump fits it
	 * when it comes near a generation slot, so fitted bytes never pile up. */
	job->fit_reasons = reasons;
	/* Valid: a copy of an image another job of the folder is paying for
	 * waits for that result (job_twins.c) instead of joining the queue. */
	if (!job_twins_hold(jobs, job))
		job_advance(jobs, job, JOB_VERDICT(QUEUE));
}

static void job_reuse_submit(struct jobs *jobs, struct job *job, struct job_reuse_io *u);

static void job_reuse_done(struct jobs *jobs, struct job *job, struct job_io *io)
{
	struct job_reuse_io *u = (struct job_reuse_io *)io;
	const struct folder_config *cfg;
	int r = u->r;

	job_success_done(job, &u->success);
	if (!job || !io->ran) {
		job_reuse_free(u);
		return; /* cancelled */
	}
	if (jobs->stopping && u->result != REUSE_DONE) {
		job_reuse_free(u);
		job_advance(jobs, job, JOB_VERDICT(DROP)); /* stopping: nothing more is started */
		return;
	}
	cfg = job->folder->cfg;
	if (u->result == REUSE_NONE) {
		struct job_check_io *c = u->check;
		u->check = NULL;
		job_reuse_free(u);
		job_judge(jobs, job, c);
		job_check_free(c);
		return;
	}
	if (u->result == REUSE_LOCAL_ERROR && r == -ESTALE && !u->rechecked &&
	    job_out_recheck(job) == 0) {
		struct job_reuse_io *again = calloc(1, sizeof(*again));
		if (!again)
			log_oom();
		again->check = u->check;
		u->check = NULL;
		again->rechecked = true;
		job_reuse_free(u);
		job_reuse_submit(jobs, job, again);
		return;
	}
	if (u->result == REUSE_LOCAL_ERROR) {
		job_reuse_free(u);
		job_hold_reuse(jobs, job, r < 0 ? -r : EIO);
		return;
	}
	/* Done: the output and its sidecar are written under the stem chosen. */
	if (job_stem_take(jobs, job, &u->stem) < 0)
		log_warn("%s/%s: its reused result took a stem another job chose meanwhile",
			 cfg->path, job->rel);
	log_job(LOG_INFO, cfg->path, job->rel, NULL, NULL,
		"done %s/%s -> %s/%s (the same image as %s: its result reused, no API call)",
		cfg->path, job->rel, cfg->output, u->rel_out, u->reused_from);
	job_index_put_reused(job, u->side_name, u->completed_at);
	job_reuse_free(u);
	job_advance(jobs, job, JOB_VERDICT(DONE));
}

/* The done records of job's bytes into u: first the one of the job whose
 * result it waited for (job_twins.c), then the others. */
static void job_reuse_candidates(const struct job *job, struct job_reuse_io *u)
{
	const struct index_entry *found[JOB_REUSE_CANDIDATES], *from = NULL;
	const char *output = job->folder->cfg->output;
	size_t n;

	if (job->twin_from && strcmp(job->twin_from, job->rel) != 0)
		from = index_get(job->folder->index, job->twin_from);
	if (from && !from->failed && from->size == job->size &&
	    strcmp(from->sha256, job->sha256) == 0) {
		u->sidecars[0] = xasprintf("%s/%s", output, from->sidecar);
		u->sources[0] = xstrdup(from->source);
		u->n_candidates = 1;
	}
	n = index_find_contents(job->folder->index, job->size, job->sha256, job->rel, found,
				JOB_REUSE_CANDIDATES);
	for (size_t i = 0; i < n && u->n_candidates < JOB_REUSE_CANDIDATES; i++) {
		if (found[i] == from)
			continue;
		u->sidecars[u->n_candidates] = xasprintf("%s/%s", output, found[i]->sidecar);
		u->sources[u->n_candidates++] = xstrdup(found[i]->source);
	}
}

static void job_reuse_submit(struct jobs *jobs, struct job *job, struct job_reuse_io *u)
{
	const struct folder_config *cfg = job->folder->cfg;

	if (!job->folder->index_stale)
		job_reuse_candidates(job, u);
	if (!u->n_candidates || job->folder->index_stale) {
		/* Gone from the records meanwhile (or they are being read again). */
		struct job_check_io *c = u->check;
		u->check = NULL;
		job_reuse_free(u);
		if (job->folder->index_stale) {
			job_check_free(c);
			job_hold_reuse(jobs, job, EAGAIN);
			return;
		}
		job_judge(jobs, job, c);
		job_check_free(c);
		return;
	}
	u->output_root = xstrdup(cfg->output);
	u->rel_dir = rel_dir(job->rel);
	u->prompt = xstrdup(job_prompt(job)); /* a per-file prompt is part of "the same settings" */
	u->prompt_source = job->prompt_source;
	u->prompt_file = job->prompt_file ? xstrdup(job->prompt_file) : NULL;
	u->extra_json = cfg->extra_json ? xstrdup(cfg->extra_json) : NULL;
	u->size = xstrdup(cfg->size);
	u->watermark = cfg->watermark;
	if (refs_copy(cfg->references, cfg->n_references, &u->refs) < 0)
		log_oom();
	u->n_refs = cfg->n_references;
	memcpy(u->sha, job->sha256, sizeof(u->sha));
	job_out_fill(job, &u->out, u->rechecked);
	job_stem_fill(jobs, job, &u->stem);
	job_success_fill(job, &u->success);
	u->completed_at = loop_wall_ms() / 1000;
	u->io.work = job_reuse_work;
	u->io.done = job_reuse_done;
	job_io_submit(jobs, job, job->folder, &u->io);
}

static void job_check_done(struct jobs *jobs, struct job *job, struct job_io *io)
{
	struct job_check_io *c = (struct job_check_io *)io;
	const struct folder_config *cfg;

	if (!job || !io->ran) {
		job_check_free(c);
		return; /* cancelled */
	}
	cfg = job->folder->cfg;
	if (jobs->stopping) {
		job_check_free(c);
		job_advance(jobs, job, JOB_VERDICT(DROP)); /* stopping: nothing more is started */
		return;
	}
	if (c->gone < 0) {
		/* Deleted before submission, or a symlink we do not follow: nothing to do. */
		log_debug("dropped %s/%s: %s", cfg->path, job->rel, strerror(-c->gone));
		job_check_free(c);
		job_advance(jobs, job, JOB_VERDICT(DROP));
		return;
	}
	if (c->changed || job->dirty) {
		/* Still being written (or replaced): wait for it to be quiet for a
		 * whole settle. */
		if (c->changed) {
			job->dev = c->st.st_dev;
			job->ino = c->st.st_ino;
			job->size = (uint64_t)c->st.st_size;
			job->mtime = c->st.st_mtim;
		}
		job->dirty = false;
		job_check_free(c);
		job_advance(jobs, job, JOB_VERDICT(SETTLE, .delay_ms = cfg->settle_ms));
		return;
	}
	if (c->done) {
		bool quiet = c->quiet_if_done;
		job_check_free(c);
		job_advance(jobs, job, quiet ? JOB_VERDICT(DROP) : JOB_VERDICT(SKIP));
		return;
	}
	if (!job_prompt_decide(jobs, job, &c->prompt)) {
		job_check_free(c); /* it waits for, or failed on, its prompt file */
		return;
	}
	if (c->sha[0])
		memcpy(job->sha256, c->sha, sizeof(job->sha256));
	/* A reuse links one output: a copy in a folder that makes several is
	 * generated anew (documented). */
	if (job->sha256[0] && job->folder->cfg->max_images <= 1 &&
	    index_may_have_size(job->folder->index, job->size) &&
	    index_find_content(job->folder->index, job->size, job->sha256, job->rel)) {
		/* A copy of something already paid for in this folder. */
		struct job_reuse_io *u = calloc(1, sizeof(*u));
		if (!u)
			log_oom();
		u->check = c;
		job_reuse_submit(jobs, job, u);
		return;
	}
	job_judge(jobs, job, c);
	job_check_free(c);
}

void job_validate(struct jobs *jobs, struct job *job)
{
	const struct folder_config *cfg = job->folder->cfg;
	const struct index_entry *e;
	struct job_check_io *c;

	if (job->group && job->folder->present) {
		job_group_validate(jobs, job);
		return;
	}
	if (!job->folder->present) {
		/* Paused (its folder or its output is away): a missing sidecar
		 * proves nothing now. Look again after a settle; a resume rescans. */
		if (jobs->once)
			job_finish(jobs, job);
		else
			job_settle(jobs, job, cfg->settle_ms > 1000 ? cfg->settle_ms : 1000);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		log_oom();
	job_src_fill(job, &c->src);
	c->quiet_if_done = job->offered_done;
	job->offered_done = false;
	e = index_get(job->folder->index, job->rel);
	if (e) {
		c->have_done = true;
		c->done_failed = e->failed;
		c->done_size = e->size;
		c->done_mtime_sec = e->mtime_sec;
		c->done_mtime_nsec = e->mtime_nsec;
		memcpy(c->done_sha, e->sha256, sizeof(c->done_sha));
		c->done_sidecar = xasprintf("%s/%s", cfg->output, e->sidecar);
	}
	memcpy(c->sha, job->sha256, sizeof(c->sha));
	/* The hash finds a copy done already (the index), or one being paid for
	 * right now (job_twins.c), which nothing else could tell before paying:
	 * the file is read once more here, a reuse only links one output. */
	c->want_hash = index_may_have_size(job->folder->index, job->size) ||
		       (e && !e->failed && e->size == job->size && e->sha256[0]) ||
		       (cfg->max_images <= 1 && job->size <= JOBS_HASH_FOR_ERROR_MAX);
	c->read_image = !(job->size > cfg->max_input_bytes && cfg->fit == FIT_NEVER);
	job_prompt_fill(job, &c->prompt);
	c->io.work = job_check_work;
	c->io.done = job_check_done;
	job_activate_checking(jobs, job);
	job_io_submit(jobs, job, job->folder, &c->io);
}
