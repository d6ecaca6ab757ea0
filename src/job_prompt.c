/* job_prompt: per-file prompts (prompt_file). An image's <stem>.txt is read
 * on the storage worker that checks the image, the same safe way as inputs
 * (job_src_open); the loop then decides the prompt the image is sent with,
 * or that it waits for its file, or fails without an API call. */
#include "job_private.h"

/* "a/photo.jpg" -> "a/photo.txt"; a name without an extension gets ".txt". */
static char *prompt_rel(const char *rel)
{
	const char *base = rel_base(rel), *dot = strrchr(base, '.');
	size_t stem = dot && dot != base ? (size_t)(dot - rel) : strlen(rel);

	return xasprintf("%.*s.txt", (int)stem, rel);
}

void job_prompt_fill(const struct job *job, struct job_prompt_read *p)
{
	memset(p, 0, sizeof(*p));
	p->r = -ENOENT;
	if (job->folder->cfg->prompt_file == PROMPT_FILE_OFF)
		return;
	/* A group's prompt is a file inside its subfolder, beside its images
	 * (never one: only image names are members). */
	p->rel =
	    job->group ? xasprintf("%s/" CONFIG_GROUP_PROMPT_FILE, job->rel) : prompt_rel(job->rel);
}

void job_prompt_read(const struct job_src *src, struct job_prompt_read *p)
{
	struct job_src at = *src;
	struct stat st;
	char *text = NULL;
	size_t len = 0;
	int fd;

	if (!p->rel)
		return;
	at.rel = p->rel;
	fd = job_src_open(&at); /* beneath the folder, links as for images */
	if (fd < 0) {
		p->r = fd == -ELOOP || fd == -ENOTDIR ? -ENOENT : fd;
		return;
	}
	if (fstat(fd, &st) < 0) {
		p->r = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) { /* a FIFO is never read: it could block */
		p->r = -EINVAL;
		goto out;
	}
	p->mtime = st.st_mtim;
	p->r = fdio_read_file(fd, CONFIG_PROMPT_FILE_MAX, &text, &len);
	if (p->r < 0)
		goto out;
	if (memchr(text, '\0', len) || !clean_utf8_valid(text)) {
		p->r = -EILSEQ;
		goto out;
	}
	/* Editors end files with a newline, some Windows ones start with a BOM. */
	while (len > 0 && strchr(" \t\r\n", text[len - 1]))
		text[--len] = '\0';
	if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
		memmove(text, text + 3, len - 2);
	p->text = text;
	text = NULL;
out:
	free(text);
	close(fd);
}

void job_prompt_clear(struct job_prompt_read *p)
{
	free(p->rel);
	free(p->text);
	memset(p, 0, sizeof(*p));
}

const char *job_prompt(const struct job *job)
{
	return job->prompt ? job->prompt : job->folder->cfg->prompt;
}

/* Prompt files that arrived lately, so that one arriving while its image is
 * looked at is not missed by that look: the last PROMPT_ARRIVALS_MAX, each of
 * use for a settle after it arrived (older ones are waited for anyway). */
#define PROMPT_ARRIVALS_MAX 256

struct prompt_arrival {
	const struct folder *folder; /* compared, never followed */
	char *rel;
	uint64_t at;  /* monotonic ms */
	bool renamed; /* renamed in: complete */
	bool woke;    /* its image was looked at again for it */
};

struct job_prompt_arrivals {
	struct prompt_arrival ring[PROMPT_ARRIVALS_MAX];
	size_t next;
};

void job_prompt_arrivals_free(struct jobs *jobs)
{
	if (!jobs->prompt_arrivals)
		return;
	for (size_t i = 0; i < PROMPT_ARRIVALS_MAX; i++)
		free(jobs->prompt_arrivals->ring[i].rel);
	free(jobs->prompt_arrivals);
	jobs->prompt_arrivals = NULL;
}

static struct prompt_arrival *prompt_arrival_named(const struct jobs *jobs,
						   const struct folder *folder, const char *rel)
{
	if (!jobs->prompt_arrivals || !rel)
		return NULL;
	for (size_t i = 0; i < PROMPT_ARRIVALS_MAX; i++) {
		struct prompt_arrival *a = &jobs->prompt_arrivals->ring[i];

		if (a->rel && a->folder == folder && strcmp(a->rel, rel) == 0)
			return a;
	}
	return NULL;
}

/* The file's arrival, if it arrived less than a settle ago. */
static struct prompt_arrival *prompt_arrival_find(const struct jobs *jobs,
						  const struct folder *folder, const char *rel)
{
	struct prompt_arrival *a = prompt_arrival_named(jobs, folder, rel);

	return a && loop_now_ms() - a->at < folder->cfg->settle_ms ? a : NULL;
}

static struct prompt_arrival *prompt_arrival_note(struct jobs *jobs, const struct folder *folder,
						  const char *rel, enum watch_how how)
{
	struct prompt_arrival *a = prompt_arrival_named(jobs, folder, rel);

	if (!a) {
		if (!jobs->prompt_arrivals) {
			jobs->prompt_arrivals = calloc(1, sizeof(*jobs->prompt_arrivals));
			if (!jobs->prompt_arrivals)
				log_oom();
		}
		/* Round robin: the slot noted longest ago makes room. */
		a = &jobs->prompt_arrivals->ring[jobs->prompt_arrivals->next];
		jobs->prompt_arrivals->next =
		    (jobs->prompt_arrivals->next + 1) % PROMPT_ARRIVALS_MAX;
		free(a->rel);
		a->rel = xstrdup(rel);
		a->folder = folder;
	}
	a->at = loop_now_ms();
	a->renamed = how == WATCH_MOVED;
	a->woke = false;
	return a;
}

/* Off jobs->prompt_waiters, if on it. */
static void prompt_unwait(struct job *job)
{
	if (!job->prompt_awaited)
		return;
	prompt_waiters_remove(&job->owner->prompt_waiters, &job->prompt_wait);
	free(job->prompt_awaited);
	job->prompt_awaited = NULL;
}

static void prompt_await(struct job *job, const char *rel)
{
	prompt_unwait(job);
	job->prompt_awaited = xstrdup(rel);
	job->prompt_wait.folder = job->folder;
	job->prompt_wait.rel = job->prompt_awaited;
	if (prompt_waiters_add(&job->owner->prompt_waiters, &job->prompt_wait) < 0)
		log_oom();
}

static struct job *prompt_waiter_job(struct prompt_waiter *e)
{
	return e ? (struct job *)(void *)((char *)e - offsetof(struct job, prompt_wait)) : NULL;
}

void job_prompt_waiters_free(struct jobs *jobs)
{
	prompt_waiters_free(&jobs->prompt_waiters);
}

void job_prompt_arrivals_drop_folder(struct jobs *jobs, const struct folder *folder)
{
	/* The folder is freed after a reload: another may come at its address. */
	if (!jobs->prompt_arrivals)
		return;
	for (size_t i = 0; i < PROMPT_ARRIVALS_MAX; i++) {
		struct prompt_arrival *a = &jobs->prompt_arrivals->ring[i];

		if (a->folder == folder) {
			free(a->rel);
			memset(a, 0, sizeof(*a));
		}
	}
}

/* The delay of a look again for a prompt file that arrived: a file written
 * in place waits a settle from now, but no later than the image's
 * incomplete_timeout (one rewritten more often than a settle would put the
 * look off for ever). */
static uint64_t prompt_wake_delay(const struct job *job, const struct prompt_arrival *a)
{
	const struct folder_config *cfg = job->folder->cfg;
	uint64_t now = loop_now_ms(), until = job->first_seen + cfg->incomplete_timeout_ms;

	if (a->renamed || now >= until)
		return 0;
	return cfg->settle_ms < until - now ? cfg->settle_ms : until - now;
}

void jobs_prompt_file_arrived(struct jobs *jobs, struct folder *folder, const char *rel,
			      enum watch_how how)
{
	struct prompt_arrival *a;
	struct prompt_waiter *e, *next;
	bool woke = false;

	if (jobs->stopping)
		return;
	a = prompt_arrival_note(jobs, folder, rel, how);
	for (e = prompt_waiters_first(&jobs->prompt_waiters, folder, rel); e; e = next) {
		struct job *job = prompt_waiter_job(e);

		next = prompt_waiters_next(e);
		if (job->state != JOB_SETTLING)
			continue;
		/* Renamed in is complete, as for images; written waits a settle
		 * from now rather than from the last look. */
		a->woke = woke = true;
		job_settle(jobs, job, prompt_wake_delay(job, a));
	}
	if (woke)
		jobs_changed(jobs);
}

void job_prompt_forget(struct job *job)
{
	prompt_unwait(job);
	free(job->prompt);
	free(job->prompt_file);
	job->prompt = job->prompt_file = NULL;
	job->prompt_source = NULL;
}

static bool prompt_fail(struct jobs *jobs, struct job *job, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static bool prompt_fail(struct jobs *jobs, struct job *job, const char *code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	job_advance(jobs, job, JOB_VERDICT(FAIL, .code = code, .message = msg));
	return false;
}

/* prompt_file: required and none there yet: wait like an incomplete image.
 * arrival: the file arrived lately, perhaps after this look read. */
static bool prompt_wait(struct jobs *jobs, struct job *job, const struct job_prompt_read *p,
			struct prompt_arrival *arrival)
{
	const struct folder_config *cfg = job->folder->cfg;
	bool in_time = loop_now_ms() - job->first_seen < cfg->incomplete_timeout_ms;
	uint64_t delay = cfg->settle_ms > 1000 ? cfg->settle_ms : 1000;

	if (in_time && !jobs->once) {
		/* Looked at again after each settle, or when the file arrives
		 * (jobs_prompt_file_arrived), or at once when it arrived while
		 * this look was under way (once: it may have gone again). */
		if (arrival && !arrival->woke) {
			arrival->woke = true;
			delay = 0;
		}
		prompt_await(job, p->rel);
		job_advance(jobs, job, JOB_VERDICT(SETTLE, .delay_ms = delay));
		return false;
	}
	if (in_time) {
		log_warn("%s/%s waits for its prompt file %s; left for a later run", cfg->path,
			 job->rel, p->rel);
		job_advance(jobs, job, JOB_VERDICT(LEAVE));
		return false;
	}
	return prompt_fail(jobs, job, "LocalValidation.PromptFile.Missing",
			   "prompt_file is required and %s did not appear within "
			   "incomplete_timeout",
			   p->rel);
}

bool job_prompt_decide(struct jobs *jobs, struct job *job, struct job_prompt_read *p)
{
	const struct folder_config *cfg = job->folder->cfg;
	struct prompt_arrival *arrival;
	int64_t age_ms;

	job_prompt_forget(job);
	if (!p->rel)
		return true;
	arrival = prompt_arrival_find(jobs, job->folder, p->rel);
	switch (p->r) {
	case 0:
		break;
	case -ENOENT:
		if (cfg->prompt_file == PROMPT_FILE_REQUIRED)
			return prompt_wait(jobs, job, p, arrival);
		job->prompt_source = "folder";
		return true;
	case -EFBIG:
		return prompt_fail(jobs, job, "LocalValidation.PromptFile.TooLarge",
				   "the prompt file %s is larger than %d bytes", p->rel,
				   CONFIG_PROMPT_FILE_MAX);
	case -EILSEQ:
		return prompt_fail(jobs, job, "LocalValidation.PromptFile.NotUTF8",
				   "the prompt file %s is not UTF-8 text", p->rel);
	default:
		return prompt_fail(jobs, job, "LocalValidation.PromptFile.Unreadable",
				   "the prompt file %s: %s", p->rel,
				   p->r == -EINVAL ? "not a regular file" : strerror(-p->r));
	}
	/* A prompt file still being written waits a settle, like an image;
	 * one renamed in is complete. */
	age_ms = loop_wall_ms() - ((int64_t)p->mtime.tv_sec * 1000 + p->mtime.tv_nsec / 1000000);
	if (!(arrival && arrival->renamed) && age_ms >= 0 && (uint64_t)age_ms < cfg->settle_ms &&
	    !jobs->once) {
		/* Up to incomplete_timeout: one rewritten more often than a
		 * settle would hold its image for ever. */
		if (loop_now_ms() - job->first_seen < cfg->incomplete_timeout_ms) {
			job_advance(jobs, job, JOB_VERDICT(SETTLE, .delay_ms = cfg->settle_ms));
			return false;
		}
		log_warn("%s/%s: its prompt file %s still changes after incomplete_timeout; "
			 "sent with the text it has now",
			 cfg->path, job->rel, p->rel);
	}
	if (!p->text[0])
		return prompt_fail(jobs, job, "LocalValidation.PromptFile.Empty",
				   "the prompt file %s is empty", p->rel);
	if (cfg->prompt_file == PROMPT_FILE_APPEND) {
		job->prompt = xasprintf("%s\n%s", cfg->prompt, p->text);
		job->prompt_source = "folder+file";
	} else {
		job->prompt = p->text;
		p->text = NULL;
		job->prompt_source = "file";
	}
	job->prompt_file = p->rel;
	p->rel = NULL;
	return true;
}
