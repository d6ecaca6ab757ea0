/* job_group_fit: see job_group_fit.h. The fit worker gets a self-contained
 * request (the image's path and identity, the options) and fills a result;
 * the group's job is touched only here, on the loop thread. */
#include "job_private.h"

#include <malloc.h>

/* What one image of the group needs, and what its fit gave. */
struct job_group_image_fit {
	unsigned reasons;      /* fit_wanted's; 0: sent as it is */
	bool fitted;	       /* converted (still said by the sidecar once the bytes are gone) */
	struct fit_result res; /* res.fd: the fitted bytes, -1 once dropped */
	struct sidecar_fitted side;
	const char *reason_names[FIT_REASON_COUNT];
};

struct job_group_fits {
	struct job_group_fit *running; /* the image being fitted, or NULL */
	bool ready;		       /* every image that needs it is fitted */
	int first_src_fd;	       /* see job_group_fit_first_src */
	uint64_t started;
	size_t n;
	struct job_group_image_fit image[];
};

/* One image's fit, on a fit worker. job is NULL once the job is gone or
 * looks again: the result is then dropped when it arrives. */
struct job_group_fit {
	struct jobs *jobs; /* for closing on a worker; outlives f */
	struct job *job;
	size_t i;		   /* which image */
	struct config_reference m; /* its path (absolute) and identity, as checked */
	char *root;		   /* the watched folder, beneath which it is opened */
	bool follow_symlinks;
	char *tmp_dir;
	struct fit_options opt;
	struct fit_result res;
	int src_fd, err;
	bool changed; /* gone, replaced or changed since the group's check */
};

int job_group_fit_judge(const struct refs_look *look, struct config_reference *m,
			enum fit_mode mode, uint64_t max_bytes, unsigned *ret_reasons, char *why,
			size_t whylen)
{
	const struct image_info *info = &look->info;
	const char *code;
	char msg[256];
	unsigned reasons;

	*ret_reasons = 0;
	if (look->pr == IMAGE_PROBE_UNKNOWN && info->found) {
		(void)snprintf(why, whylen,
			       "is a %s: neither the API nor a conversion here can read it",
			       info->found);
		return -EINVAL;
	}
	if (look->pr != IMAGE_PROBE_OK) {
		(void)snprintf(why, whylen, "is not a usable image: %s",
			       image_probe_message(look->pr));
		return -EINVAL;
	}
	reasons = fit_wanted(info, m->size, max_bytes, mode);
	if (!image_api_format(info->format) && !reasons) {
		(void)snprintf(why, whylen,
			       "is %s, which the API does not take, and this folder has fit: never",
			       image_format_name(info->format));
		return -EINVAL;
	}
	if (!look->complete) {
		(void)snprintf(why, whylen, "is an incomplete %s file",
			       image_format_name(info->format));
		return -EINVAL;
	}
	/* The bytes are the caller's to judge; a fit shrinks, but cannot mend
	 * a side under 15 px or a 1:20 strip. */
	code = image_api_format(info->format)
		   ? image_check_limits(info, m->size, UINT64_MAX, msg, sizeof(msg))
		   : NULL;
	if (code && (!reasons || strcmp(code, "LocalValidation.TooSmall") == 0 ||
		     strcmp(code, "LocalValidation.AspectRatio") == 0)) {
		(void)snprintf(why, whylen, "is outside the API's limits: %s", msg);
		return -EINVAL;
	}
	(void)snprintf(m->format, sizeof(m->format), "%s", image_format_name(info->format));
	*ret_reasons = reasons;
	return 0;
}

unsigned job_group_fit_plan(struct job *job, const unsigned *reasons, size_t n)
{
	struct job_group_fits *gf;
	unsigned any = 0;

	job_group_fit_release(job);
	for (size_t i = 0; i < n; i++)
		any |= reasons[i];
	if (!any)
		return 0;
	gf = calloc(1, sizeof(*gf) + n * sizeof(gf->image[0]));
	if (!gf)
		log_oom();
	gf->first_src_fd = -1;
	gf->n = n;
	for (size_t i = 0; i < n; i++) {
		gf->image[i].reasons = reasons[i];
		gf->image[i].res.fd = -1;
	}
	job->group_fits = gf;
	return any;
}

/* On a worker: whether the member's path still names the image that was
 * fitted. A member deleted or renamed away while it was converted keeps the
 * identity of the descriptor the fit read, so only the path can tell. */
static bool job_group_fit_still_named(const struct job_group_fit *f)
{
	int fd = job_group_member_open(f->root, f->m.path, f->follow_symlinks);

	fd = fd < 0 ? fd : refs_check_fd(fd, &f->m);
	if (fd < 0)
		return false;
	(void)close(fd);
	return true;
}

static void job_group_fit_work(void *arg)
{
	struct job_group_fit *f = arg;
	struct job_src identity = {
	    .dev = (dev_t)f->m.dev,
	    .ino = (ino_t)f->m.ino,
	    .size = f->m.size,
	    .mtime = {.tv_sec = (time_t)f->m.mtime_sec, .tv_nsec = f->m.mtime_nsec}};
	int fd = job_group_member_open(f->root, f->m.path, f->follow_symlinks);

	/* Opened as inputs are, and only while it is the image checked. */
	f->src_fd = fd < 0 ? fd : refs_check_fd(fd, &f->m);
	if (f->src_fd < 0) {
		f->changed = true;
		return;
	}
	f->err = fit_run(f->src_fd, &f->opt, &f->res);
	/* Changed while being converted: what was fitted is not the image. */
	f->changed = !job_src_unchanged(&identity, f->src_fd) || !job_group_fit_still_named(f);
	/* Give the decoded image's memory back now (job_fit.c says why). */
	(void)malloc_trim(0);
}

static void job_group_fit_free(struct job_group_fit *f)
{
	work_close(f->jobs->store_pool, f->res.fd);
	work_close(f->jobs->store_pool, f->src_fd);
	free(f->m.path);
	free(f->root);
	free(f->tmp_dir);
	free(f);
}

static void job_group_fit_done(void *arg, bool cancelled);

/* Hands the next image that needs it to a fit worker: 1 when one was, 0
 * when none is left, -1 when the job ended (the pool is shutting down). */
static int job_group_fit_next(struct jobs *jobs, struct job *job, size_t from)
{
	const struct folder_config *cfg = job->folder->cfg;
	struct job_group_fits *gf = job->group_fits;
	struct job_group_fit *f;
	size_t i = from;
	int r;

	while (i < gf->n && (!gf->image[i].reasons || gf->image[i].fitted))
		i++;
	if (i >= gf->n)
		return 0;
	if (job->dirty) {
		/* An image came, went or changed (job_group_fit_removed): fitting
		 * the rest of what was listed would be wasted. */
		log_info("group %s/%s changed while it was being converted; waiting for it to "
			 "settle",
			 cfg->path, job->rel);
		job->dirty = false;
		if (job->state != JOB_FITTING)
			job_activate_fitting(jobs, job); /* starting: SETTLE is a fit's verdict */
		job_advance(jobs, job, JOB_VERDICT(SETTLE, .delay_ms = cfg->settle_ms));
		return -1;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		log_oom();
	f->jobs = jobs;
	f->job = job;
	f->i = i;
	f->m = job->members[i];
	f->m.path = xstrdup(job->members[i].path);
	f->root = xstrdup(cfg->path);
	f->follow_symlinks = cfg->follow_symlinks;
	f->tmp_dir = jobs->config->state_dir ? xstrdup(jobs->config->state_dir) : NULL;
	f->src_fd = -1;
	f->res.fd = -1;
	f->opt = (struct fit_options){
	    .max_pixels = IMAGE_MAX_PIXELS,
	    .max_bytes = cfg->max_input_bytes,
	    .quality = (int)cfg->fit_quality,
	    .reasons = gf->image[i].reasons,
	    .tmp_dir = f->tmp_dir,
	    .format = f->m.format,
	};
	r = work_submit(jobs->fit_pool, job_group_fit_work, job_group_fit_done, f);
	if (r == -ENOMEM)
		log_oom();
	if (r < 0) {
		job_group_fit_free(f);
		job_finish(jobs, job); /* the pool is shutting down */
		return -1;
	}
	gf->running = f;
	log_debug("converting %s of group %s/%s (%s)", rel_base(f->m.path), cfg->path, job->rel,
		  f->m.format);
	return 1;
}

/* The image's fit failed, or gave what the API would still refuse: the
 * group fails before anything is paid, naming it. */
static void job_group_fit_refuse(struct jobs *jobs, struct job *job, struct job_group_fit *f,
				 const char *what)
{
	char msg[768];

	(void)snprintf(msg, sizeof(msg), "%s cannot be converted: %s; nothing was sent",
		       rel_base(f->m.path), what);
	job_group_fit_free(f);
	job_advance(jobs, job, JOB_VERDICT(FAIL, .code = "Group.InvalidImage", .message = msg));
}

/* The image's fit failed here, not on the image (fit_failed_locally): as
 * for any storage fault, the group waits unpaid and is looked at again. */
static void job_group_fit_hold(struct jobs *jobs, struct job *job, struct job_group_fit *f)
{
	const struct folder_config *cfg = job->folder->cfg;

	log_job(LOG_WARNING, cfg->path, job->rel, NULL, f->res.code,
		"converting %s of group %s/%s failed here (%s: %s); trying again in %u s",
		rel_base(f->m.path), cfg->path, job->rel, f->res.code, f->res.message,
		JOBS_STORAGE_RETRY_MS / 1000);
	job_group_fit_free(f);
	job_advance(jobs, job, JOB_VERDICT(SETTLE, .delay_ms = JOBS_STORAGE_RETRY_MS));
}

static void job_group_fit_keep(struct job *job, struct job_group_fit *f)
{
	struct job_group_image_fit *img = &job->group_fits->image[f->i];

	img->res = f->res;
	f->res.fd = -1; /* moved */
	img->fitted = true;
	img->side = (struct sidecar_fitted){.from = img->res.from,
					    .to = img->res.to,
					    .reasons = img->reason_names,
					    .bytes_sent = img->res.bytes};
	for (unsigned b = 0; b < FIT_REASON_COUNT; b++)
		if (img->res.reasons & (1u << b))
			img->reason_names[img->side.n_reasons++] = fit_reason_name(1u << b);
	/* The group's source_sha256 describes its first image: the original's,
	 * as for a fitted file (the transfer hashes the fitted bytes). */
	if (f->i == 0)
		memcpy(job->sha256, img->res.sha256, sizeof(job->sha256));
}

static void job_group_fit_done(void *arg, bool cancelled)
{
	struct job_group_fit *f = arg;
	struct job *job = f->job;
	struct jobs *jobs;
	const struct folder_config *cfg;
	struct image_info out;
	char msg[256], what[512];
	const char *code;
	size_t i = f->i;

	if (!job) {
		job_group_fit_free(f);
		return;
	}
	jobs = job->owner;
	cfg = job->folder->cfg;
	job->group_fits->running = NULL;
	if (cancelled || jobs->stopping) {
		job_group_fit_free(f);
		job_advance(jobs, job, JOB_VERDICT(DROP));
		return;
	}
	if (job->dirty || f->changed) {
		/* An image came, went or changed: the group is looked at anew. */
		log_info(
		    "group %s/%s changed while %s was being converted; waiting for it to settle",
		    cfg->path, job->rel, rel_base(f->m.path));
		job->dirty = false;
		job_group_fit_free(f);
		job_advance(jobs, job, JOB_VERDICT(SETTLE, .delay_ms = cfg->settle_ms));
		return;
	}
	if (f->err < 0 && fit_failed_locally(&f->res)) {
		job_group_fit_hold(jobs, job, f);
		return;
	}
	if (f->err < 0) {
		(void)snprintf(what, sizeof(what), "%s (%s)", f->res.message,
			       f->res.code ? f->res.code : "LocalValidation.Corrupt");
		job_group_fit_refuse(jobs, job, f, what);
		return;
	}
	/* What no conversion mends (a side under 15 px, a 1:20 panorama). */
	out = (struct image_info){
	    .format = f->res.format, .width = f->res.width, .height = f->res.height};
	code = image_check_limits(&out, f->res.bytes, cfg->max_input_bytes, msg, sizeof(msg));
	if (code) {
		(void)snprintf(what, sizeof(what), "%s (%s)", msg, code);
		job_group_fit_refuse(jobs, job, f, what);
		return;
	}
	job_group_fit_keep(job, f);
	log_job(LOG_INFO, cfg->path, job->rel, NULL, NULL,
		"converted %s of group %s/%s: %s -> %s, %llu bytes", rel_base(f->m.path), cfg->path,
		job->rel, job->group_fits->image[i].res.from, job->group_fits->image[i].res.to,
		(unsigned long long)job->group_fits->image[i].res.bytes);
	job_group_fit_free(f);
	if (job_group_fit_next(jobs, job, i + 1) != 0)
		return; /* the next one is under way, or the job ended */
	job->group_fits->ready = true;
	log_debug("group %s/%s converted in %llu ms", cfg->path, job->rel,
		  (unsigned long long)(loop_now_ms() - job->group_fits->started));
	job_advance(jobs, job, JOB_VERDICT(QUEUE)); /* to the front: it was near the head */
}

void job_group_fit_start(struct jobs *jobs, struct job *job)
{
	struct job_group_fits *gf = job->group_fits;
	int r;

	if (!gf || gf->ready || gf->running) {
		job->fit_reasons = 0; /* nothing (more) to fit: never asked again */
		return;
	}
	if (!job_fit_can_start(jobs, job))
		return;
	gf->started = loop_now_ms();
	r = job_group_fit_next(jobs, job, 0);
	if (r < 0)
		return; /* ended */
	if (r == 0) {
		gf->ready = true; /* nothing left to fit (not planned so) */
		return;
	}
	job_activate_fitting(jobs, job);
}

bool job_group_fit_ready(const struct job *job)
{
	return job->group_fits && job->group_fits->ready;
}

int job_group_fit_swap(struct jobs *jobs, struct job *job, int *fd, uint64_t *size,
		       const char **format, struct config_reference *after, int *after_fds,
		       size_t n_after)
{
	struct job_group_fits *gf = job->group_fits;
	int sent[CONFIG_IMAGES_MAX];

	if (!gf)
		return 0;
	/* Never the originals of images that need fitting (jobs_pump sends a
	 * group only once it is fitted, and its images are what was planned). */
	if (!gf->ready || gf->n != n_after + 1 || gf->n > CONFIG_IMAGES_MAX)
		return -EINVAL;
	/* Every duplicate first: a failure leaves the request as it was. */
	for (size_t i = 0; i < gf->n; i++) {
		sent[i] = gf->image[i].fitted ? dup(gf->image[i].res.fd) : -1;
		if (gf->image[i].fitted && sent[i] < 0) {
			int r = -errno;
			while (i-- > 0)
				work_close(jobs->store_pool, sent[i]);
			return r;
		}
	}
	if (gf->image[0].fitted) {
		/* Kept open: the answer's changed-check looks at the image itself. */
		work_close(jobs->store_pool, gf->first_src_fd);
		gf->first_src_fd = *fd;
		*fd = sent[0];
		*size = gf->image[0].res.bytes;
		*format = image_format_name(gf->image[0].res.format);
	}
	for (size_t i = 1; i < gf->n; i++) {
		const struct fit_result *res = &gf->image[i].res;

		if (!gf->image[i].fitted)
			continue;
		work_close(jobs->store_pool, after_fds[i - 1]);
		after_fds[i - 1] = sent[i];
		after[i - 1].size = res->bytes;
		(void)snprintf(after[i - 1].format, sizeof(after[i - 1].format), "%s",
			       image_format_name(res->format));
	}
	return 0;
}

int job_group_fit_first_src(const struct job *job)
{
	const struct job_group_fits *gf = job->group_fits;

	return gf && gf->n && gf->image[0].fitted ? gf->first_src_fd : -1;
}

void job_group_fit_source(const struct job *job, size_t i, struct sidecar_source *src)
{
	const struct job_group_fits *gf = job->group_fits;

	src->fitted = NULL;
	if (!gf || i >= gf->n || !gf->image[i].fitted)
		return;
	if (gf->image[i].res.sha256[0])
		src->sha256_hex = gf->image[i].res.sha256;
	src->fitted = &gf->image[i].side;
}

void job_group_fit_drop_bytes(struct job *job)
{
	struct job_group_fits *gf = job->group_fits;

	if (!gf)
		return;
	for (size_t i = 0; i < gf->n; i++) {
		work_close(job->owner->store_pool, gf->image[i].res.fd);
		gf->image[i].res.fd = -1;
	}
	work_close(job->owner->store_pool, gf->first_src_fd);
	gf->first_src_fd = -1;
}

void job_group_fit_release(struct job *job)
{
	struct job_group_fits *gf = job->group_fits;

	if (!gf)
		return;
	if (gf->running)
		gf->running->job = NULL;
	job_group_fit_drop_bytes(job);
	free(gf);
	job->group_fits = NULL;
}

void job_group_fit_removed(struct jobs *jobs, struct folder *folder, const char *rel)
{
	char *sub = rel_dir(rel);
	struct job *job = jobs_find(jobs, folder, sub);

	free(sub);
	/* Later, the send's own look at the images notices (job_prepare_done). */
	if (job && job->group && job->state == JOB_FITTING)
		job->dirty = true;
}
