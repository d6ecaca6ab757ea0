/* job_send: the generation request, its answer, retries with backoff and
 * the pause on account or configuration errors. */
#include "job_private.h"
#include "metrics.h"

/* The key inside jobs->auth_header: what a server must never make us repeat. */
static const char *jobs_key(const struct jobs *jobs)
{
	static const char prefix[] = "Authorization: Bearer ";

	return strncmp(jobs->auth_header, prefix, sizeof(prefix) - 1) == 0
		   ? jobs->auth_header + sizeof(prefix) - 1
		   : NULL;
}

static void jobs_pause(struct jobs *jobs, const struct api_result *res)
{
	(void)snprintf(jobs->pause_reason, sizeof(jobs->pause_reason),
		       "paused: the API refused the account or configuration (HTTP %ld %s: %s)",
		       res->http_status, res->error_code ? res->error_code : "?",
		       res->error_message ? res->error_message : "");
	if (!jobs->sched.paused) {
		log_error("%s; no file is marked failed; trying again in %llu s",
			  jobs->pause_reason,
			  (unsigned long long)jobs->config->api.pause_retry_ms / 1000);
		events_paused(jobs->events, jobs->pause_reason);
	}
	sched_pause(&jobs->sched);
	if (jobs->once) {
		/* A batch run cannot wait it out: stop, leaving the files for later. */
		jobs->stopping = true;
		return;
	}
	(void)loop_timer_arm(jobs->pause_timer, jobs->config->api.pause_retry_ms);
}

void jobs_pause_timer(void *userdata)
{
	struct jobs *jobs = userdata;

	/* One request probes whether the account works again. */
	sched_probe(&jobs->sched);
	jobs_pump(jobs);
}

static void job_retry_or_fail(struct jobs *jobs, struct job *job, long status, const char *code,
			      const char *message, int64_t retry_after_ms)
{
	uint64_t delay;

	job->failures++;
	if (job->failures > jobs->config->api.retries) {
		char text[512];
		(void)snprintf(text, sizeof(text), "%s (gave up after %u attempts)", message,
			       job->attempts);
		job_advance(
		    jobs, job,
		    JOB_VERDICT(FAIL, .http_status = status, .code = code, .message = text));
		return;
	}
	delay = jobs_backoff(jobs, job->failures, retry_after_ms);
	metrics_note_retry("generation");
	log_job(LOG_INFO, job->folder->cfg->path, job->rel,
		job->request_id[0] ? job->request_id : NULL, code,
		"retrying %s/%s in %llu ms: %s: %s", job->folder->cfg->path, job->rel,
		(unsigned long long)delay, code, message);
	job_advance(jobs, job, JOB_VERDICT(RETRY, .delay_ms = delay));
}

/* The decoded b64_json image, as if it had been downloaded: job_fetch
 * commits it. NULL with a code and a reason when it cannot be used, or
 * NULL with the image back in res->b64_json after a write error. */
static struct transfer_dl *job_take_image(struct transfer_gen *g, struct api_result *res,
					  const char **ret_code, char *why, size_t whylen)
{
	struct transfer_dl *d;

	if (g->img.malformed) {
		*ret_code = "MalformedResponse";
		(void)snprintf(why, whylen, "data[0].b64_json is not valid base64");
		return NULL;
	}
	if (g->img.write_errno) {
		/* The disk failed under it: keep the image in memory as the text
		 * of the answer, and job_fetch writes it when it can. */
		char *text = NULL;
		int r = transfer_image_text(g, &text);
		if (r < 0) {
			*ret_code = "Result.WriteFailed";
			(void)snprintf(why, whylen,
				       "writing the b64_json result: %s; reading it back: %s",
				       strerror(g->img.write_errno), strerror(-r));
			return NULL;
		}
		free(res->b64_json);
		res->b64_json = text;
		res->b64_streamed = false;
		return NULL;
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		log_oom();
	d->fd = g->img.fd;
	g->img.fd = -1;
	memcpy(d->tmp_name, g->img.tmp_name, sizeof(d->tmp_name));
	memcpy(d->magic, g->img.magic, sizeof(d->magic));
	d->magic_len = g->img.magic_len;
	d->written = g->img.written;
	return d;
}

/* The answer to a generation, taken from the transfer, while a worker looks
 * whether the source is still the version sent. */
struct job_answer {
	struct job_io io;
	CURLcode result;
	long status;
	bool file_changed, read_whole, paid_too_large;
	size_t changed_part; /* with file_changed: 0 the source, i + 1 reference i */
	const char *code;
	char msg[256];
	struct transfer_dl *img; /* a b64_json image decoded as it arrived */
	const char *img_code;
	char img_why[256];
	int src_fd;	    /* a second descriptor of what was read */
	struct job_src src; /* only its identity is used */
	bool unchanged;	    /* the result */
};

static void job_answer_work(struct job_io *io)
{
	struct job_answer *ans = (struct job_answer *)io;

	ans->unchanged = ans->src_fd >= 0 && job_src_unchanged(&ans->src, ans->src_fd);
}

static void job_answer_done(struct jobs *jobs, struct job *job, struct job_io *io);

static void job_generated(CURL *easy, CURLcode result, void *userdata)
{
	struct job *job = userdata;
	struct jobs *jobs = job->owner;
	struct transfer_gen *g = job->gen;
	struct api_result *res = &job->result;
	struct job_answer *ans;
	long status = 0;

	(void)curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	/* A fitted job sent converted bytes: the source is checked through its
	 * own descriptor, and source_sha256 stays the original's (hashed by
	 * the fit worker). */
	int src_fd = job->fitted ? job->fitted->src_fd : g->fd;
	/* Likewise a group whose first image was fitted. */
	int first_src = job_group_fit_first_src(job);

	if (first_src >= 0)
		src_fd = first_src;

	{
		/* A header from the server, like the body: no key, valid UTF-8. */
		char *rid = clean_text(g->request_id, sizeof(job->request_id) - 1, jobs_key(jobs));
		if (!rid)
			log_oom();
		(void)snprintf(job->request_id, sizeof(job->request_id), "%s", rid);
		free(rid);
	}
	/* The job keeps its slot (and stays the probe) until its answer is
	 * judged and it leaves GENERATING (job_activate, job_leave_state). */
	if (g->sha256_hex[0] && !job->fitted && first_src < 0)
		memcpy(job->sha256, g->sha256_hex, sizeof(job->sha256));
	if (jobs->sched.paused)
		/* Unless this answer settles it, probe again later. */
		(void)loop_timer_arm(jobs->pause_timer, jobs->config->api.pause_retry_ms);

	ans = calloc(1, sizeof(*ans));
	if (!ans)
		log_oom();
	ans->result = result;
	ans->status = status;
	ans->file_changed = g->file_changed;
	ans->changed_part = g->changed_part;
	for (size_t i = 0; i < g->n_parts && i < job->n_refs_sent; i++)
		memcpy(job->refs_sent[i].sha256, g->parts[i].sha256_hex,
		       sizeof(job->refs_sent[i].sha256));
	ans->read_whole = g->sha256_hex[0] != '\0';
	ans->src_fd = src_fd >= 0 ? dup(src_fd) : -1;
	ans->src.dev = job->dev;
	ans->src.ino = job->ino;
	ans->src.size = job->size;
	ans->src.mtime = job->mtime;
	if (result != CURLE_OK) {
		ans->code = g->body_too_large ? "ResponseTooLarge" : "NetworkError";
		if (g->body_too_large)
			(void)snprintf(ans->msg, sizeof(ans->msg),
				       "the answer is larger than %u bytes (or its image than %u)",
				       TRANSFER_JSON_MAX, TRANSFER_IMAGE_MAX);
		else
			(void)snprintf(ans->msg, sizeof(ans->msg), "%s",
				       g->guard.refused ? g->guard.why
							: curl_easy_strerror(result));
		ans->paid_too_large = g->body_too_large && status >= 200 && status < 300;
	} else {
		api_result_clear(res);
		if (api_parse_streamed(status, g->body ? g->body : "", g->body_len, g->img.found,
				       jobs_key(jobs), res) < 0)
			log_oom();
		if (res->outcome == API_OUTCOME_OK && res->b64_streamed)
			ans->img = job_take_image(g, res, &ans->img_code, ans->img_why,
						  sizeof(ans->img_why));
		job->retry_after_ms = api_parse_retry_after(
		    g->retry_after[0] ? g->retry_after : NULL, loop_wall_ms() / 1000);
	}
	{
		curl_off_t up = 0, down = 0, us = 0;
		(void)curl_easy_getinfo(easy, CURLINFO_SIZE_UPLOAD_T, &up);
		(void)curl_easy_getinfo(easy, CURLINFO_SIZE_DOWNLOAD_T, &down);
		(void)curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME_T, &us);
		metrics_note_answer(status, result != CURLE_OK ? ans->code : res->error_code,
				    up > 0 ? (uint64_t)up : 0, down > 0 ? (uint64_t)down : 0,
				    (double)us / 1e6);
	}
	job_release_transfers(jobs, job); /* g is gone from here on */
	/* Whether the source is still what was sent: an fstat, on a worker,
	 * at once (a paid answer is journalled only after it). */
	ans->io.work = job_answer_work;
	ans->io.done = job_answer_done;
	job_io_submit_urgent(jobs, job, job->folder, &ans->io);
}

/* A paid answer counted against the daily limits and the cost, priced as
 * model (else api.model), and kept in the job for its record. */
static void job_count_paid(struct jobs *jobs, struct job *job, uint64_t images, const char *model)
{
	uint64_t price = 0, cost;

	jobs->generations = sched_add_sat(jobs->generations, images);
	sched_paid(&jobs->sched, &job->folder->sched, images, loop_wall_ms() / 1000);
	if (config_price_of(jobs->config, model, &price) < 0)
		(void)config_price_of(jobs->config, jobs->config->api.model, &price);
	cost = sched_mul_sat(images, price);
	sched_spent(&jobs->sched, cost, loop_wall_ms() / 1000);
	jobs->spent_total = sched_add_sat(jobs->spent_total, cost);
	if (price)
		metrics_note(METRICS_ESTIMATED_COST, (double)cost / CONFIG_MICROS,
			     jobs->config->currency, NULL);
	events_paid(jobs->events, images, cost);
	job->generated_at = loop_wall_ms();
	job->images_paid = (unsigned)images; /* at most API_IMAGES_MAX */
	/* Named like its record: the model that answered, else the one sent. */
	job_ledger_note(jobs, job->folder->cfg->path, job->rel, model ? model : job->model_sent,
			job->generated_at, images);
}

static void job_answered(struct jobs *jobs, struct job *job, struct job_answer *ans)
{
	struct api_result *res = &job->result;
	long status = ans->status;
	struct transfer_dl *img = ans->img;

	ans->img = NULL;
	if (!ans->file_changed && !ans->unchanged && ans->result == CURLE_OK && ans->read_whole) {
		/* Changed after being read in full: what was sent is one whole
		 * version (its SHA-256 is in the sidecar). A paid answer is kept;
		 * the new version is looked at afterwards. */
		job->dirty = true;
	} else if (ans->file_changed || !ans->unchanged) {
		/* The file changed while it was being sent: what was sent is not the
		 * file. Look at the new version once it settles. */
		if (ans->changed_part && ans->changed_part <= job->n_refs_sent)
			log_warn("%s changed while it was being sent with %s/%s; waiting",
				 job->refs_sent[ans->changed_part - 1].path, job->folder->cfg->path,
				 job->rel);
		else
			log_warn("%s/%s changed while it was being sent; waiting for it to settle",
				 job->folder->cfg->path, job->rel);
		if (img)
			job_io_discard_tmp(jobs, job->folder, dup(job->out_dirfd), img->fd,
					   img->tmp_name);
		free(img);
		job_advance(jobs, job,
			    JOB_VERDICT(SETTLE, .delay_ms = job->folder->cfg->settle_ms));
		return;
	}
	if (ans->result != CURLE_OK) {
		if (ans->paid_too_large) {
			/* A success too large to keep was generated, and paid: asking
			 * again would pay again for the same oversized answer. Its
			 * usage is unknown: counted as all it asked for, at the price
			 * of the model sent, so a relay answering too large cannot
			 * get around the daily limits. */
			api_result_clear(res); /* no earlier attempt's model or usage */
			job->max_images = job->sched_images ? job->sched_images : 1;
			job_count_paid(jobs, job, job->max_images,
				       job->model_sent ? job->model_sent : jobs->config->api.model);
			job_advance(jobs, job,
				    JOB_VERDICT(FAIL, .http_status = status, .code = ans->code,
						.message = ans->msg));
			return;
		}
		job_retry_or_fail(jobs, job, status, ans->code, ans->msg, -1);
		return;
	}
	if (jobs->sched.paused && res->outcome != API_OUTCOME_PAUSE) {
		log_info("the API answers again (HTTP %ld); resuming", status);
		sched_resume(&jobs->sched);
		loop_timer_disarm(jobs->pause_timer);
		events_resumed(jobs->events, "the API answers again");
	}

	if (res->outcome == API_OUTCOME_OK || res->outcome == API_OUTCOME_FILE_FAIL)
		job_fit_drop_bytes(job); /* never sent again */
	switch (res->outcome) {
	case API_OUTCOME_OK: {
		uint64_t images = api_result_images_counted(res, job->sched_images);

		if (api_result_image_count(res) > images && !jobs->warned_images_claimed) {
			jobs->warned_images_claimed = true;
			log_warn("%s: the API claims %llu generated images for a request of at "
				 "most %llu: counted as %llu (logged once)",
				 job->rel, (unsigned long long)api_result_image_count(res),
				 (unsigned long long)images, (unsigned long long)images);
		}
		job_outputs_note_relay(job);
		{
			const cJSON *tokens =
			    cJSON_GetObjectItemCaseSensitive(res->usage, "output_tokens");
			int64_t n = 0;
			if (!cJSON_IsNumber(tokens) || !clean_int64(tokens->valuedouble, &n))
				n = 0;
			metrics_note_usage((int64_t)images, n);
		}
		job_count_paid(jobs, job, images, res->model);
		if (ans->img_code) {
			/* Paid, and a second call would answer the same: no retry. */
			job_advance(jobs, job,
				    JOB_VERDICT(FAIL, .http_status = status, .code = ans->img_code,
						.message = ans->img_why));
			break;
		}
		/* Paid, and not recorded until a worker journals it: no new
		 * generation starts meanwhile (a crash costs what is in flight). */
		if (jobs->journal)
			job_set_undurable(jobs, job, true);
		job->dl = img;
		job_advance(jobs, job, JOB_VERDICT(PAID));
		break;
	}
	case API_OUTCOME_FILE_FAIL:
		job_advance(jobs, job,
			    JOB_VERDICT(FAIL, .http_status = status,
					.code = res->error_code ? res->error_code : "Unknown",
					.message = res->error_message ? res->error_message : ""));
		break;
	case API_OUTCOME_RETRY:
		job_retry_or_fail(jobs, job, status, res->error_code ? res->error_code : "Unknown",
				  res->error_message ? res->error_message : "",
				  job->retry_after_ms);
		break;
	case API_OUTCOME_PAUSE:
		/* Not this file's fault: it goes back to the front of the queue. */
		jobs_pause(jobs, res);
		job_advance(jobs, job, JOB_VERDICT(PAUSE));
		break;
	}
}

static void job_answer_done(struct jobs *jobs, struct job *job, struct job_io *io)
{
	struct job_answer *ans = (struct job_answer *)io;

	work_close(jobs->store_pool, ans->src_fd);
	ans->src_fd = -1;
	if (job && io->ran)
		job_answered(jobs, job, ans);
	if (ans->img) {
		/* No job to hand it to (gone, or shutting down). */
		job_io_discard_tmp(jobs, io->folder, -1, ans->img->fd, ans->img->tmp_name);
		free(ans->img);
	}
	free(ans);
}

/* The output folder has less room than min_free_space: the job waits
 * unpaid (a batch run leaves it for a later run). */
static void job_hold_for_space(struct jobs *jobs, struct job *job)
{
	const struct folder_config *cfg = job->folder->cfg;

	job_close_output_dir(job);
	(void)snprintf(jobs->disk_reason, sizeof(jobs->disk_reason),
		       "%s has less free space than min_free_space; nothing is sent until it has",
		       cfg->output);
	if (jobs->once) {
		log_job(LOG_WARNING, cfg->path, job->rel, NULL, NULL,
			"%s/%s left for a later run: %s has less free space than min_free_space",
			cfg->path, job->rel, cfg->output);
		job_advance(jobs, job, JOB_VERDICT(LEAVE));
		return;
	}
	log_job(LOG_WARNING, cfg->path, job->rel, NULL, NULL,
		"%s/%s waits: %s has less free space than min_free_space", cfg->path, job->rel,
		cfg->output);
	job_advance(jobs, job, JOB_VERDICT(RETRY, .delay_ms = JOBS_STORAGE_RETRY_MS));
}

/* Readying a send on a storage worker: the source opened and still the
 * version validated, the output folder, the stem, room for the result, and
 * for b64_json the temporary file the image is decoded into as it arrives. */
struct job_prepare_io {
	struct job_io io;
	struct job_src src;
	struct job_out out;
	struct job_stem stem;
	uint64_t min_free;
	bool b64, rechecked;
	struct config_reference *refs; /* a group's other images, then the folder's references */
	size_t n_refs;
	struct config_reference *first; /* a group's first image (sent as the source), or NULL */
	size_t n_members_after;		/* a group's images among refs (its first n) */
	/* results */
	int r, fd, dirfd, img_fd;
	bool gone, changed, space_low;
	char img_tmp[300];
	int *ref_fds;	/* n_refs, -1 where not open */
	size_t ref_bad; /* with ref_err: the reference that is not as validated */
	int ref_err;	/* -ESTALE (changed) or -errno of opening it */
};

static int job_prepare_member(const struct job_prepare_io *p, const struct config_reference *m)
{
	int fd = job_group_member_open(p->src.root, m->path, p->src.follow_symlinks);

	return fd < 0 ? fd : refs_check_fd(fd, m);
}

/* Opens the references; false (ref_bad, ref_err) when one is not the file
 * that was validated: no request pays with a wrong reference. */
static bool job_prepare_refs(struct job_prepare_io *p)
{
	for (size_t i = 0; i < p->n_refs; i++) {
		/* A group's images are inputs: opened as inputs are. */
		int fd = i < p->n_members_after ? job_prepare_member(p, &p->refs[i])
						: refs_open(&p->refs[i]);
		if (fd < 0) {
			p->ref_bad = i;
			p->ref_err = fd;
			return false;
		}
		p->ref_fds[i] = fd;
	}
	return true;
}

static void job_prepare_work(struct job_io *io)
{
	struct job_prepare_io *p = (struct job_prepare_io *)io;
	char hint[OUTPUT_NAME_MAX + 8];

	if (p->first) {
		/* A group: its first image, still as the group's check saw it. */
		p->fd = job_prepare_member(p, p->first);
		if (p->fd < 0) {
			p->changed = p->fd == -ESTALE;
			p->gone = !p->changed;
			return;
		}
	} else {
		p->fd = job_src_open(&p->src);
		if (p->fd < 0) {
			p->gone = true;
			return;
		}
		if (!job_src_unchanged(&p->src, p->fd)) {
			p->changed = true;
			return;
		}
	}
	if (!job_prepare_refs(p))
		return;
	p->dirfd = p->r = job_out_open(&p->out);
	if (p->r < 0)
		return;
	p->r = job_stem_choose(p->dirfd, &p->stem);
	if (p->r < 0)
		return;
	if (!job_out_space_ok(p->dirfd, p->min_free)) {
		p->space_low = true; /* a result that could not be written is paid in vain */
		return;
	}
	if (p->b64) {
		(void)snprintf(hint, sizeof(hint), "%s.out", p->stem.chosen);
		p->img_fd = p->r = output_tmp_open(p->dirfd, hint, p->img_tmp, sizeof(p->img_tmp));
	}
}

static void job_prepare_free(struct jobs *jobs, struct job_prepare_io *p, bool keep)
{
	/* Those handed to a transfer are -1 by now. */
	for (size_t i = 0; i < p->n_refs && p->ref_fds; i++)
		work_close(jobs->store_pool, p->ref_fds[i]);
	free(p->ref_fds);
	refs_free(p->refs, p->n_refs);
	refs_free(p->first, p->first ? 1 : 0);
	if (!keep) {
		work_close(jobs->store_pool, p->fd);
		if (p->img_fd >= 0)
			job_io_discard_tmp(jobs, p->io.folder, p->dirfd, p->img_fd, p->img_tmp);
		else
			work_close(jobs->store_pool, p->dirfd);
	}
	job_src_clear(&p->src);
	job_out_clear(&p->out);
	job_stem_clear(&p->stem);
	free(p);
}

static void job_prepare_submit(struct jobs *jobs, struct job *job, struct job_prepare_io *p);
static void job_generate_start(struct jobs *jobs, struct job *job, int fd, int img_fd,
			       const char *img_tmp, struct job_prepare_io *p);

/* A reference changed or vanished since the configuration was read: the
 * file waits, unpaid, until the reference is back or a reload accepts the
 * new one (a batch run leaves it for a later run). */
static void job_hold_for_reference(struct jobs *jobs, struct job *job,
				   const struct job_prepare_io *p)
{
	const struct folder_config *cfg = job->folder->cfg;
	const char *ref = p->refs[p->ref_bad].path;
	const char *why = p->ref_err == -ESTALE ? "changed since the configuration was read"
						: strerror(-p->ref_err);

	job_close_output_dir(job);
	if (jobs->once) {
		log_job(LOG_WARNING, cfg->path, job->rel, NULL, "Reference.Changed",
			"%s/%s left for a later run: reference %s: %s (reload to accept a new "
			"version)",
			cfg->path, job->rel, ref, why);
		job_advance(jobs, job, JOB_VERDICT(LEAVE));
		return;
	}
	log_job(LOG_WARNING, cfg->path, job->rel, NULL, "Reference.Changed",
		"%s/%s waits: reference %s: %s (nothing is sent with another version; reload "
		"to accept it)",
		cfg->path, job->rel, ref, why);
	job_advance(jobs, job, JOB_VERDICT(RETRY, .delay_ms = JOBS_STORAGE_RETRY_MS));
}

static void job_prepare_done(struct jobs *jobs, struct job *job, struct job_io *io)
{
	struct job_prepare_io *p = (struct job_prepare_io *)io;
	int r = p->r;

	if (!job || !io->ran) {
		job_prepare_free(jobs, p, false);
		return;
	}
	/* A group whose first image went has not gone: it changed (settle again). */
	if (p->gone && job->group) {
		p->gone = false;
		p->changed = true;
	}
	if (jobs->stopping || job->folder->removed || p->gone) {
		/* Stopping, its folder dropped by a reload, or gone since it was queued. */
		job_prepare_free(jobs, p, false);
		job_advance(jobs, job, JOB_VERDICT(DROP));
		return;
	}
	if (p->changed || job->dirty) {
		job_prepare_free(jobs, p, false);
		job->dirty = false;
		job_advance(jobs, job,
			    JOB_VERDICT(SETTLE, .delay_ms = job->folder->cfg->settle_ms));
		return;
	}
	if (p->ref_err && p->ref_bad < p->n_members_after) {
		/* An image of the group changed or went: look at the group anew. */
		log_info("group %s/%s changed before it was sent; waiting for it to settle",
			 job->folder->cfg->path, job->rel);
		job_prepare_free(jobs, p, false);
		job_advance(jobs, job,
			    JOB_VERDICT(SETTLE, .delay_ms = job->folder->cfg->settle_ms));
		return;
	}
	if (p->ref_err) {
		job_hold_for_reference(jobs, job, p);
		job_prepare_free(jobs, p, false);
		return;
	}
	if (r == -ESTALE && !p->rechecked) {
		r = job_out_recheck(job);
		if (r == 0) {
			bool b64 = p->b64;
			job_prepare_free(jobs, p, false);
			p = calloc(1, sizeof(*p));
			if (!p)
				log_oom();
			p->b64 = b64;
			p->rechecked = true;
			job_prepare_submit(jobs, job, p);
			return;
		}
	}
	if (r == -ESTALE)
		r = -ENODEV;
	if (r >= 0 && job_stem_take(jobs, job, &p->stem) < 0) {
		bool b64 = p->b64, rechecked = p->rechecked;
		job_prepare_free(jobs, p, false);
		p = calloc(1, sizeof(*p));
		if (!p)
			log_oom();
		p->b64 = b64;
		p->rechecked = rechecked;
		job_prepare_submit(jobs, job, p);
		return;
	}
	if (r >= 0 && p->space_low) {
		job_prepare_free(jobs, p, false);
		job_hold_for_space(jobs, job);
		return;
	}
	if (r < 0) {
		job_prepare_free(jobs, p, false);
		job_close_output_dir(job);
		job_retry_or_fail(jobs, job, 0, "OutputFolder", strerror(-r), -1);
		return;
	}
	job_close_output_dir(job);
	job->out_dirfd = p->dirfd;
	{
		int fd = p->fd, img_fd = p->img_fd;
		char img_tmp[sizeof(p->img_tmp)];

		memcpy(img_tmp, p->img_tmp, sizeof(img_tmp));
		job_generate_start(jobs, job, fd, img_fd, img_tmp, p);
		job_prepare_free(jobs, p, true);
	}
}

/* What goes after the source: a group's other images, then the folder's
 * references; a group's first image is opened as the source. */
static void job_prepare_images(const struct job *job, struct job_prepare_io *p)
{
	const struct folder_config *cfg = job->folder->cfg;
	struct config_reference *members = NULL, *refs = NULL;
	size_t n_after = job->group && job->n_members ? job->n_members - 1 : 0;

	if (job->group && job->n_members &&
	    (refs_copy(job->members, 1, &p->first) < 0 ||
	     refs_copy(job->members + 1, n_after, &members) < 0))
		log_oom();
	if (refs_copy(cfg->references, cfg->n_references, &refs) < 0)
		log_oom();
	p->n_refs = n_after + cfg->n_references;
	p->n_members_after = n_after;
	p->refs = calloc(p->n_refs ? p->n_refs : 1, sizeof(*p->refs));
	if (!p->refs)
		log_oom();
	/* The copies' strings move into one array. */
	if (n_after)
		memcpy(p->refs, members, n_after * sizeof(*members));
	if (cfg->n_references)
		memcpy(p->refs + n_after, refs, cfg->n_references * sizeof(*refs));
	free(members);
	free(refs);
}

static void job_prepare_submit(struct jobs *jobs, struct job *job, struct job_prepare_io *p)
{
	p->fd = p->dirfd = p->img_fd = -1;
	job_prepare_images(job, p);
	p->ref_fds = malloc((p->n_refs ? p->n_refs : 1) * sizeof(*p->ref_fds));
	if (!p->ref_fds)
		log_oom();
	for (size_t i = 0; i < p->n_refs; i++)
		p->ref_fds[i] = -1;
	job_src_fill(job, &p->src);
	job_out_fill(job, &p->out, p->rechecked);
	/* The slot is this job's from now (a submission again keeps it). */
	job_activate(jobs, job, JOB_PREPARING);
	/* The names reserved are those the request may write (sched_images,
	 * set above: max_images may have changed since the stem was held). */
	job_stem_refit(jobs, job, job->sched_images);
	job_stem_fill_n(jobs, job, job->sched_images, &p->stem);
	p->min_free = jobs->config->min_free_space;
	p->io.work = job_prepare_work;
	p->io.done = job_prepare_done;
	job_io_submit(jobs, job, job->folder, &p->io);
}

void job_generate(struct jobs *jobs, struct job *job)
{
	struct job_prepare_io *p;

	if (job->folder->index_stale) {
		/* back, but its records are not read again yet */
		job_close_output_dir(job);
		job_retry_or_fail(jobs, job, 0, "OutputFolder", strerror(EAGAIN), -1);
		return;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		log_oom();
	p->b64 = jobs->config->api.response_format == RESPONSE_FORMAT_B64_JSON;
	job_prepare_submit(jobs, job, p);
}

void job_refs_release(struct job *job)
{
	for (size_t i = 0; i < job->n_refs_sent; i++)
		free(job->refs_sent[i].path);
	free(job->refs_sent);
	job->refs_sent = NULL;
	job->n_refs_sent = 0;
	free(job->extra_sent);
	job->extra_sent = NULL;
}

/* The references p opened go after the image: their separators into the
 * transfer with their descriptors (taken from p), and what is sent into
 * job->refs_sent for the sidecar. */
static int job_add_references(struct job *job, struct job_prepare_io *p, char **seps)
{
	job_refs_release(job);
	if (!p->n_refs)
		return 0;
	job->refs_sent = calloc(p->n_refs, sizeof(*job->refs_sent));
	if (!job->refs_sent)
		return -ENOMEM;
	job->n_refs_sent = p->n_refs;
	for (size_t i = 0; i < p->n_refs; i++) {
		struct job_ref_sent *sent = &job->refs_sent[i];
		int r;

		sent->path = strdup(p->refs[i].path);
		if (!sent->path)
			return -ENOMEM;
		memcpy(sent->format, p->refs[i].format, sizeof(sent->format));
		r = transfer_gen_add_part(job->gen, seps[i], p->ref_fds[i], p->refs[i].size);
		seps[i] = NULL;
		p->ref_fds[i] = -1;
		if (r < 0)
			return r;
	}
	return 0;
}

/* The send is ready: fd is the source (still the version validated), img_fd
 * the b64_json image's temporary file or -1, p the request that readied it
 * (its references' descriptors are taken). */
static void job_generate_start(struct jobs *jobs, struct job *job, int fd, int img_fd,
			       const char *img_tmp, struct job_prepare_io *p)
{
	const struct folder_config *cfg = job->folder->cfg;
	struct api_request req = {
	    .model = jobs->config->api.model,
	    .prompt = job_prompt(job),
	    .size = cfg->size,
	    .watermark = cfg->watermark,
	    .response_format =
		jobs->config->api.response_format == RESPONSE_FORMAT_B64_JSON ? "b64_json" : "url",
	    .image_format = image_format_name(job->format),
	    .extra_json = cfg->extra_json,
	    .max_images = job->sched_images, /* what the scheduler counted it as */
	};
	char *prefix = NULL, *suffix = NULL, **seps = NULL;
	const char *ref_formats[CONFIG_IMAGES_MAX];
	uint64_t send_size = job->size;
	int r;

	if (job->fitted) {
		/* Send the fitted bytes; keep the source open for the changed-check. */
		int sent = dup(job->fitted->res.fd);
		if (sent < 0) {
			r = -errno;
			work_close(jobs->store_pool, fd);
			if (img_fd >= 0)
				job_io_discard_tmp(jobs, job->folder, dup(job->out_dirfd), img_fd,
						   img_tmp);
			job_close_output_dir(job);
			job_retry_or_fail(jobs, job, 0, "LocalError", strerror(-r), -1);
			return;
		}
		work_close(jobs->store_pool, job->fitted->src_fd);
		job->fitted->src_fd = fd;
		fd = sent;
		send_size = job->fitted->res.bytes;
		req.image_format = image_format_name(job->fitted->res.format);
	}
	/* A group's fitted images: their bytes instead of their files. */
	r = job_group_fit_swap(jobs, job, &fd, &send_size, &req.image_format, p->refs, p->ref_fds,
			       p->n_members_after);
	if (r == -EINVAL) {
		/* A bug: the group reached the send unfitted or with other images
		 * than were planned. Nothing is sent; the group is looked at and
		 * fitted again instead of burning retries on it. */
		log_error("%s/%s: group reached the send with images not fitted as planned (a "
			  "bug); looking at it again",
			  cfg->path, job->rel);
		work_close(jobs->store_pool, fd);
		if (img_fd >= 0)
			job_io_discard_tmp(jobs, job->folder, dup(job->out_dirfd), img_fd, img_tmp);
		job_close_output_dir(job);
		job_advance(jobs, job, JOB_VERDICT(SETTLE, .delay_ms = cfg->settle_ms));
		return;
	}
	if (r < 0) {
		work_close(jobs->store_pool, fd);
		if (img_fd >= 0)
			job_io_discard_tmp(jobs, job->folder, dup(job->out_dirfd), img_fd, img_tmp);
		job_close_output_dir(job);
		job_retry_or_fail(jobs, job, 0, "LocalError", strerror(-r), -1);
		return;
	}
	for (size_t i = 0; i < p->n_refs && i < CONFIG_IMAGES_MAX; i++)
		ref_formats[i] = p->refs[i].format;
	/* One image: the body as it always was, "image" a string. */
	r = api_request_frame_images(&req, ref_formats, p->n_refs, &prefix, &seps, &suffix);
	if (r < 0)
		log_oom();
	job->gen = calloc(1, sizeof(*job->gen));
	if (!job->gen)
		log_oom();
	job->gen->fd = -1;
	job->gen->img.fd = img_fd;
	(void)snprintf(job->gen->img.tmp_name, sizeof(job->gen->img.tmp_name), "%s", img_tmp);
	if (job_add_references(job, p, seps) < 0)
		log_oom();
	job->extra_sent = xstrdup(cfg->extra_json ? cfg->extra_json : "");
	free(job->model_sent);
	job->model_sent = xstrdup(req.model);
	free(seps);
	r = transfer_gen_setup(job->gen, jobs->gen_url, jobs->auth_header, prefix, suffix, fd,
			       send_size, &jobs->net, jobs->io_pool);
	if (r >= 0)
		r = transfer_gen_start(job->gen, jobs->http, job_generated, job);
	if (r == -ENOMEM)
		log_oom();
	if (r < 0) {
		/* Nothing was sent: a local fault, retried like a network one. */
		job_release_transfers(jobs, job);
		job_retry_or_fail(jobs, job, 0, "LocalError", strerror(-r), -1);
		return;
	}
	if (!job->started)
		job->started = loop_now_ms();
	job->attempts++;
	job->request_id[0] = '\0';
	job_activate(jobs, job, JOB_GENERATING);
	log_debug("submitting %s/%s (%s, %llu bytes, attempt %u)", cfg->path, job->rel,
		  req.image_format, (unsigned long long)send_size, job->attempts);
}
