/* job_fit: images the API would refuse or read sideways (fit.h) are
 * converted before any money is spent, on the fit workers. The worker gets
 * a self-contained request (the source's descriptor and the options) and
 * fills a result; the job is touched only here, on the loop thread. */
#include "job_private.h"

#include <malloc.h>

/* A fit under way. job is NULL once the job is gone or looks again: the
 * result is then dropped when it arrives. */
struct job_fit {
	struct jobs *jobs; /* for closing on a worker; outlives f */
	struct job *job;
	struct job_src src; /* opened by the worker */
	int src_fd;
	bool gone, changed;
	char *tmp_dir;
	struct fit_options opt;
	struct fit_result res;
	int err;
	uint64_t started;
};

static void job_fit_work(void *arg)
{
	struct job_fit *f = arg;

	f->src_fd = job_src_open(&f->src);
	if (f->src_fd < 0) {
		f->gone = true;
		return;
	}
	if (!job_src_unchanged(&f->src, f->src_fd)) {
		f->changed = true;
		return;
	}
	f->err = fit_run(f->src_fd, &f->opt, &f->res);
	/* Changed while being converted: what was fitted is not the file. */
	f->changed = !job_src_unchanged(&f->src, f->src_fd);
	/* Give the decoded image's memory back now, not when this thread's
	 * malloc arena happens to shrink. */
	(void)malloc_trim(0);
}

static void job_fit_free(struct job_fit *f)
{
	work_close(f->jobs->store_pool, f->res.fd);
	f->res.fd = -1;
	work_close(f->jobs->store_pool, f->src_fd);
	job_src_clear(&f->src);
	free(f->tmp_dir);
	free(f);
}

static void job_fit_done(void *arg, bool cancelled)
{
	struct job_fit *f = arg;
	struct job *job = f->job;
	struct jobs *jobs;
	const struct folder_config *cfg;
	struct image_info out;
	char msg[256];
	const char *code;

	if (!job) {
		job_fit_free(f);
		return;
	}
	jobs = job->owner;
	cfg = job->folder->cfg;
	job->fit = NULL;
	if (cancelled || jobs->stopping || f->gone) {
		/* Stopping (nothing more is started), or gone. */
		job_fit_free(f);
		job_advance(jobs, job, JOB_VERDICT(DROP));
		return;
	}
	if (job->dirty || f->changed) {
		/* Changed while being converted: what was fitted is not the file. */
		log_info("%s/%s changed while it was being converted; waiting for it to settle",
			 cfg->path, job->rel);
		job->dirty = false;
		job_fit_free(f);
		job_advance(jobs, job, JOB_VERDICT(SETTLE, .delay_ms = cfg->settle_ms));
		return;
	}
	if (f->err < 0 && fit_failed_locally(&f->res)) {
		/* Not the image's fault: a storage fault holds and retries. */
		log_job(LOG_WARNING, cfg->path, job->rel, NULL, f->res.code,
			"converting %s/%s failed here (%s: %s); trying again in %u s", cfg->path,
			job->rel, f->res.code, f->res.message, JOBS_STORAGE_RETRY_MS / 1000);
		job_fit_free(f);
		job_advance(jobs, job, JOB_VERDICT(SETTLE, .delay_ms = JOBS_STORAGE_RETRY_MS));
		return;
	}
	/* A fit that failed before reading the file has no hash: keep the one
	 * the job had rather than record an empty source_sha256. */
	if (f->res.sha256[0])
		memcpy(job->sha256, f->res.sha256, sizeof(job->sha256));
	if (f->err < 0) {
		code = f->res.code ? f->res.code : "LocalValidation.Corrupt";
		(void)snprintf(msg, sizeof(msg), "%s", f->res.message);
		job_fit_free(f);
		job_advance(jobs, job, JOB_VERDICT(FAIL, .code = code, .message = msg));
		return;
	}
	/* What no conversion mends (a side under 15 px, a 1:20 panorama). */
	out = (struct image_info){.format = f->res.format,
				  .width = f->res.width,
				  .height = f->res.height};
	code = image_check_limits(&out, f->res.bytes, cfg->max_input_bytes, msg, sizeof(msg));
	if (code) {
		job_fit_free(f);
		job_advance(jobs, job, JOB_VERDICT(FAIL, .code = code, .message = msg));
		return;
	}
	job->fitted = calloc(1, sizeof(*job->fitted));
	if (!job->fitted)
		log_oom();
	job->fitted->res = f->res;
	job->fitted->src_fd = -1;
	f->res.fd = -1; /* moved */
	job->format = f->res.format;
	log_job(LOG_INFO, cfg->path, job->rel, NULL, NULL,
		"converted %s/%s: %s -> %s, %llu bytes, in %llu ms", cfg->path, job->rel,
		job->fitted->res.from, job->fitted->res.to,
		(unsigned long long)job->fitted->res.bytes,
		(unsigned long long)(loop_now_ms() - f->started));
	job_fit_free(f);
	job_advance(jobs, job, JOB_VERDICT(QUEUE)); /* to the front: it was near the head */
}

/* Loop thread only (it logs once). */
static bool job_fit_unavailable_logged;

bool job_fit_can_start(struct jobs *jobs, struct job *job)
{
	const struct folder_config *cfg = job->folder->cfg;

	if (fit_global_init() == 0)
		return true;
	/* Nothing is wrong with the image: no error record, the job waits as
	 * for a storage fault. libvips cannot be started twice in a process,
	 * so it waits until the daemon is restarted with libvips mended. */
	if (!job_fit_unavailable_logged) {
		log_error("libvips cannot start (%s): images that need converting wait and are "
			  "not sent until the daemon is restarted with libvips working",
			  fit_global_error());
		job_fit_unavailable_logged = true;
	}
	if (jobs->once) {
		/* Waiting would never end the run: left for a later one (the exit
		 * status says files were left). */
		log_debug("%s/%s needs converting; left: libvips cannot start", cfg->path, job->rel);
		job_advance(jobs, job, JOB_VERDICT(LEAVE));
		return false;
	}
	log_debug("%s/%s needs converting and waits: libvips cannot start", cfg->path, job->rel);
	job_activate_fitting(jobs, job); /* SETTLE is a fit's verdict */
	job_advance(jobs, job, JOB_VERDICT(SETTLE, .delay_ms = JOBS_STORAGE_RETRY_MS));
	return false;
}

void job_fit_start(struct jobs *jobs, struct job *job, unsigned reasons)
{
	const struct folder_config *cfg = job->folder->cfg;
	struct job_fit *f;
	int r;

	if (job->group) {
		job_group_fit_start(jobs, job); /* its images, one after another */
		return;
	}
	if (!job_fit_can_start(jobs, job))
		return;
	f = calloc(1, sizeof(*f));
	if (!f)
		log_oom();
	f->jobs = jobs;
	f->job = job;
	f->src_fd = -1;
	job_src_fill(job, &f->src);
	f->tmp_dir = jobs->config->state_dir ? xstrdup(jobs->config->state_dir) : NULL;
	f->opt = (struct fit_options){
	    .max_pixels = IMAGE_MAX_PIXELS,
	    .max_bytes = cfg->max_input_bytes,
	    .quality = (int)cfg->fit_quality,
	    .reasons = reasons,
	    .tmp_dir = f->tmp_dir,
	    .format = image_format_name(job->format),
	};
	f->res.fd = -1;
	f->started = loop_now_ms();
	r = work_submit(jobs->fit_pool, job_fit_work, job_fit_done, f);
	if (r == -ENOMEM)
		log_oom();
	if (r < 0) {
		job_fit_free(f);
		job_finish(jobs, job); /* the pool is shutting down */
		return;
	}
	job_fit_release(job);
	job->fit = f;
	job_activate_fitting(jobs, job);
	log_debug("converting %s/%s (%s)", cfg->path, job->rel, f->opt.format);
}

void job_fit_drop_bytes(struct job *job)
{
	job_group_fit_drop_bytes(job);
	if (!job->fitted)
		return;
	work_close(job->owner->store_pool, job->fitted->res.fd);
	job->fitted->res.fd = -1;
	work_close(job->owner->store_pool, job->fitted->src_fd);
	job->fitted->src_fd = -1;
}

void job_fit_release(struct job *job)
{
	job_group_fit_release(job);
	if (job->fit) {
		job->fit->job = NULL;
		job->fit = NULL;
	}
	if (job->fitted) {
		work_close(job->owner->store_pool, job->fitted->res.fd);
		work_close(job->owner->store_pool, job->fitted->src_fd);
		free(job->fitted);
		job->fitted = NULL;
	}
}

const struct sidecar_fitted *job_fit_sidecar(const struct job *job, struct sidecar_fitted *buf,
					     const char **names, size_t n_names)
{
	const struct fit_result *res;

	if (!job->fitted)
		return NULL;
	res = &job->fitted->res;
	buf->from = res->from;
	buf->to = res->to;
	buf->n_reasons = 0;
	for (unsigned i = 0; i < FIT_REASON_COUNT && buf->n_reasons < n_names; i++)
		if (res->reasons & (1u << i))
			names[buf->n_reasons++] = fit_reason_name(1u << i);
	buf->reasons = names;
	buf->bytes_sent = res->bytes;
	return buf;
}
