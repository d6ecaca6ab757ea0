/* job_send: the generation request, its answer, retries with backoff and
 * the pause on account or configuration errors. */
#include "job_private.h"

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
	if (!jobs->paused)
		log_error("%s; no file is marked failed; trying again in %llu s",
			  jobs->pause_reason,
			  (unsigned long long)jobs->config->api.pause_retry_ms / 1000);
	jobs->paused = true;
	jobs->probing = false;
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
	jobs->probing = true;
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
		job_fail(jobs, job, status, code, text);
		return;
	}
	delay = jobs_backoff(jobs, job->failures, retry_after_ms);
	log_job(LOG_INFO, job->folder->cfg->path, job->rel,
		job->request_id[0] ? job->request_id : NULL, code,
		"retrying %s/%s in %llu ms: %s: %s", job->folder->cfg->path, job->rel,
		(unsigned long long)delay, code, message);
	job_wait(jobs, job, delay, false);
	jobs_changed(jobs);
	jobs_pump(jobs);
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

static void job_generated(CURL *easy, CURLcode result, void *userdata)
{
	struct job *job = userdata;
	struct jobs *jobs = job->owner;
	struct transfer_gen *g = job->gen;
	struct api_result *res = &job->result;
	struct transfer_dl *img = NULL;
	const char *img_code = NULL;
	char img_why[256];
	long status = 0;

	(void)curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	/* A fitted job sent converted bytes: the source is checked through its
	 * own descriptor, and source_sha256 stays the original's (hashed by
	 * the fit worker). */
	int src_fd = job->fitted ? job->fitted->src_fd : g->fd;

	{
		/* A header from the server, like the body: no key, valid UTF-8. */
		char *rid = clean_text(g->request_id, sizeof(job->request_id) - 1, jobs_key(jobs));
		if (!rid)
			log_oom();
		(void)snprintf(job->request_id, sizeof(job->request_id), "%s", rid);
		free(rid);
	}
	job->folder->images_reserved--;
	if (g->sha256_hex[0] && !job->fitted)
		memcpy(job->sha256, g->sha256_hex, sizeof(job->sha256));
	jobs->probing = false;
	if (jobs->paused)
		/* Unless this answer settles it, probe again later. */
		(void)loop_timer_arm(jobs->pause_timer, jobs->config->api.pause_retry_ms);

	if (!g->file_changed && !job_source_unchanged(job, src_fd) && result == CURLE_OK &&
	    g->sha256_hex[0]) {
		/* Changed after being read in full: what was sent is one whole
		 * version (its SHA-256 is in the sidecar). A paid answer is kept;
		 * the new version is looked at afterwards. */
		job->dirty = true;
	} else if (g->file_changed || !job_source_unchanged(job, src_fd)) {
		/* The file changed while it was being sent: what was sent is not the
		 * file. Look at the new version once it settles. */
		log_warn("%s/%s changed while it was being sent; waiting for it to settle",
			 job->folder->cfg->path, job->rel);
		job_release_transfers(jobs, job);
		job_settle(jobs, job, job->folder->cfg->settle_ms);
		jobs_pump(jobs);
		return;
	}
	if (result != CURLE_OK) {
		char msg[256];
		const char *code = g->body_too_large ? "ResponseTooLarge" : "NetworkError";
		if (g->body_too_large)
			(void)snprintf(msg, sizeof(msg),
				       "the answer is larger than %u bytes (or its image than %u)",
				       TRANSFER_JSON_MAX, TRANSFER_IMAGE_MAX);
		else
			(void)snprintf(msg, sizeof(msg), "%s",
				       g->guard.refused ? g->guard.why : curl_easy_strerror(result));
		bool paid_too_large = g->body_too_large && status >= 200 && status < 300;
		job_release_transfers(jobs, job); /* g is gone from here on */
		if (paid_too_large) {
			/* A success too large to keep was generated, and paid: asking
			 * again would pay again for the same oversized answer. */
			job_fail(jobs, job, status, code, msg);
			return;
		}
		job_retry_or_fail(jobs, job, status, code, msg, -1);
		return;
	}
	api_result_clear(res);
	if (api_parse_streamed(status, g->body ? g->body : "", g->body_len, g->img.found,
			       jobs_key(jobs), res) < 0)
		log_oom();
	if (res->outcome == API_OUTCOME_OK && res->b64_streamed)
		img = job_take_image(g, res, &img_code, img_why, sizeof(img_why));
	{
		int64_t ra = api_parse_retry_after(g->retry_after[0] ? g->retry_after : NULL,
						   loop_wall_ms() / 1000);
		job->retry_after_ms = ra;
	}
	job_release_transfers(jobs, job);
	if (jobs->paused && res->outcome != API_OUTCOME_PAUSE) {
		log_info("the API answers again (HTTP %ld); resuming", status);
		jobs->paused = false;
		loop_timer_disarm(jobs->pause_timer);
	}

	if (res->outcome == API_OUTCOME_OK || res->outcome == API_OUTCOME_FILE_FAIL)
		job_fit_drop_bytes(job); /* never sent again */
	switch (res->outcome) {
	case API_OUTCOME_OK: {
		uint64_t images = res->generated_images > 0 ? (uint64_t)res->generated_images : 1;
		jobs->generations += images;
		jobs->images_today += images;
		job->folder->images_today += images;
		job->generated_at = loop_wall_ms();
		if (img_code) {
			/* Paid, and a second call would answer the same: no retry. */
			job_fail(jobs, job, status, img_code, img_why);
			break;
		}
		(void)job_journal_write(jobs, job); /* on failure it holds new generations */
		job->dl = img;
		job_fetch(jobs, job);
		break;
	}
	case API_OUTCOME_FILE_FAIL:
		job_fail(jobs, job, status, res->error_code ? res->error_code : "Unknown",
			 res->error_message ? res->error_message : "");
		break;
	case API_OUTCOME_RETRY:
		job_retry_or_fail(jobs, job, status, res->error_code ? res->error_code : "Unknown",
				  res->error_message ? res->error_message : "",
				  job->retry_after_ms);
		break;
	case API_OUTCOME_PAUSE:
		/* Not this file's fault: it goes back to the front of the queue. */
		jobs_pause(jobs, res);
		job_queue(jobs, job, true);
		jobs_changed(jobs);
		jobs_pump(jobs);
		break;
	}
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
		jobs->left_incomplete++;
		job_finish(jobs, job);
		return;
	}
	log_job(LOG_WARNING, cfg->path, job->rel, NULL, NULL,
		"%s/%s waits: %s has less free space than min_free_space", cfg->path, job->rel,
		cfg->output);
	job_wait(jobs, job, JOBS_STORAGE_RETRY_MS, false);
	jobs_changed(jobs);
}

void job_generate(struct jobs *jobs, struct job *job)
{
	const struct folder_config *cfg = job->folder->cfg;
	struct api_request req = {
	    .model = jobs->config->api.model,
	    .prompt = cfg->prompt,
	    .size = cfg->size,
	    .watermark = cfg->watermark,
	    .response_format =
		jobs->config->api.response_format == RESPONSE_FORMAT_B64_JSON ? "b64_json" : "url",
	    .image_format = image_format_name(job->format),
	};
	char *prefix = NULL, *suffix = NULL, img_tmp[300] = "", hint[OUTPUT_NAME_MAX];
	uint64_t send_size = job->size;
	int fd, img_fd = -1, r;

	fd = job_open_source(job);
	if (fd < 0) {
		job_finish(jobs, job); /* gone since it was queued */
		return;
	}
	if (!job_source_unchanged(job, fd)) {
		close(fd);
		job_settle(jobs, job, cfg->settle_ms);
		return;
	}
	r = job_open_output_dir(job);
	if (r >= 0)
		r = job_choose_stem(jobs, job);
	if (r >= 0 && !job_disk_space_ok(jobs, job->out_dirfd)) {
		/* A result that could not be written would be paid for in vain. */
		close(fd);
		job_hold_for_space(jobs, job);
		return;
	}
	if (r >= 0 && jobs->config->api.response_format == RESPONSE_FORMAT_B64_JSON) {
		/* The image is decoded into it as the answer arrives. */
		(void)snprintf(hint, sizeof(hint), "%s.out", job->stem);
		img_fd = r = output_tmp_open(job->out_dirfd, hint, img_tmp, sizeof(img_tmp));
	}
	if (r < 0) {
		close(fd);
		job_close_output_dir(job);
		job_retry_or_fail(jobs, job, 0, "OutputFolder", strerror(-r), -1);
		return;
	}
	if (job->fitted) {
		/* Send the fitted bytes; keep the source open for the changed-check. */
		int sent = dup(job->fitted->res.fd);
		if (sent < 0) {
			r = -errno;
			close(fd);
			if (img_fd >= 0)
				output_tmp_abort(job->out_dirfd, img_fd, img_tmp);
			job_close_output_dir(job);
			job_retry_or_fail(jobs, job, 0, "LocalError", strerror(-r), -1);
			return;
		}
		if (job->fitted->src_fd >= 0)
			close(job->fitted->src_fd);
		job->fitted->src_fd = fd;
		fd = sent;
		send_size = job->fitted->res.bytes;
		req.image_format = image_format_name(job->fitted->res.format);
	}
	r = api_request_frame(&req, &prefix, &suffix);
	if (r < 0)
		log_oom();
	job->gen = calloc(1, sizeof(*job->gen));
	if (!job->gen)
		log_oom();
	job->gen->fd = -1;
	job->gen->img.fd = img_fd;
	memcpy(job->gen->img.tmp_name, img_tmp, sizeof(img_tmp));
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
	job->folder->images_reserved++;
	job->request_id[0] = '\0';
	job_activate(jobs, job, JOB_GENERATING);
	log_debug("submitting %s/%s (%s, %llu bytes, attempt %u)", cfg->path, job->rel,
		  req.image_format, (unsigned long long)send_size, job->attempts);
}
