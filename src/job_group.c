/* job_group: group: subfolder. Each immediate subfolder of such a folder is
 * one job, keyed by the subfolder's path (its rel), whose inputs are the
 * subfolder's images in bytewise name order. The files' offers only make the
 * group settle again; once it has been quiet for settle (or, with
 * group_ready: marker, once the marker is there) a worker lists the
 * subfolder, checks every image as a dropped file is checked (refs.h reads
 * it, job_group_fit.h judges it: an image the API would refuse or read
 * sideways is fitted first, as a file is) and compares the listing with the
 * group's done record. From then on the group goes the way of a file:
 * queued, fitted where needed, sent (members first, then the folder's
 * references, each opened on a worker and sent only while it is the file
 * checked), committed as <output>/<subfolder>.jpeg with a sidecar listing
 * every source, journalled under the subfolder's name.
 *
 * A group done (or failed) is not sent again when files are added or
 * changed: the sidecar says what was sent, and the log says once per run
 * that it changed; deleting the sidecar makes it a new group. */
#include "job_private.h"

#include "dirlist.h"
#include "names.h"

#define GROUP_LIST_MAX 64 /* names kept: more images than a request takes are only counted */

/* On a worker, which never logs: out of memory is reported to the loop. */
static char *group_join(const char *a, const char *b)
{
	char *s;

	return asprintf(&s, "%s/%s", a, b) < 0 ? NULL : s;
}

enum group_look {
	GROUP_READY,	     /* members checked: send it */
	GROUP_GONE,	     /* the subfolder is not there (any more) */
	GROUP_EMPTY,	     /* no image in it */
	GROUP_NOT_READY,     /* marker mode, no marker yet */
	GROUP_DONE_SAME,     /* done before, with these very files */
	GROUP_DONE_CHANGED,  /* done before, with other files */
	GROUP_FAILED_BEFORE, /* its .error.json is there */
	GROUP_REFUSED,	     /* too many images, or one that cannot be sent */
	GROUP_LOCAL_ERROR,   /* it could not be read: look again later */
};

struct job_group_check {
	struct job_io io;
	/* The request. */
	char *dir;	    /* the subfolder, absolute */
	char *root;	    /* the watched folder, beneath which members are opened */
	char *sub;	    /* its rel, for excludes */
	char *marker;	    /* group_ready: marker: its name; else NULL */
	char *done_sidecar; /* the done record's sidecar, absolute, or NULL */
	bool done_failed;
	bool follow_symlinks;
	char **exclude;
	size_t n_exclude;
	size_t limit; /* images a request may hold besides the references */
	size_t n_references;
	unsigned outputs; /* max_images: the API's limit counts outputs too */
	uint64_t max_bytes;
	enum fit_mode fit;
	/* The result. */
	enum group_look look;
	int err;
	const char *code;
	char why[768];
	struct config_reference *members;
	size_t n_members;
	unsigned reasons[CONFIG_IMAGES_MAX]; /* each member's fit_wanted, for job_group_fit_plan */
	/* prompt_file: the group's prompt.txt, read once the group is ready. */
	struct job_src src;
	struct job_prompt_read prompt;
};

static int group_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b); /* bytewise */
}

/* The candidate images of the subfolder, sorted (all of them while they
 * are at most GROUP_LIST_MAX), their count, and whether the marker is in it. */
static int group_list(struct job_group_check *g, char ***ret_names, size_t *ret_n,
		      size_t *ret_total, bool *ret_marker)
{
	struct dirlist list;
	const char *name;
	unsigned char type;
	char **names = NULL;
	size_t n = 0, total = 0;
	int fd, r = 0;

	*ret_marker = false;
	fd = open(g->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = dirlist_open(&list, fd);
	if (r < 0)
		return r;
	while ((name = dirlist_next(&list, &type, &r))) {
		char *rel, **grown;
		struct stat st;
		bool excluded;

		if (g->marker && !strcmp(name, g->marker)) {
			*ret_marker = true;
			continue;
		}
		if (!names_is_candidate_file(name) || (type != DT_REG && type != DT_LNK))
			continue;
		rel = group_join(g->sub, name);
		if (!rel) {
			r = -ENOMEM;
			break;
		}
		excluded = names_is_excluded(rel, g->exclude, g->n_exclude);
		free(rel);
		if (excluded ||
		    fstatat(list.fd, name, &st, g->follow_symlinks ? 0 : AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		if (total++ >= GROUP_LIST_MAX)
			continue;
		grown = realloc(names, (n + 1) * sizeof(*names));
		if (grown)
			names = grown;
		if (!grown || !(names[n] = strdup(name))) {
			r = -ENOMEM;
			break;
		}
		n++;
	}
	dirlist_close(&list);
	if (n)
		qsort(names, n, sizeof(*names), group_name_cmp);
	*ret_names = names;
	*ret_n = n;
	*ret_total = total;
	return r;
}

static void group_names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

static bool group_has_sources(const char *text, size_t len)
{
	cJSON *root = cJSON_ParseWithLength(text, len);
	bool has = cJSON_HasObjectItem(root, "sources");

	cJSON_Delete(root);
	return has;
}

/* Compares the listing with the done sidecar: GROUP_DONE_SAME or _CHANGED,
 * or -ENOENT when the sidecar is gone (the group is new again). */
static int group_against_done(struct job_group_check *g, char **names, size_t n)
{
	struct sidecar_source *srcs = calloc(n ? n : 1, sizeof(*srcs));
	char *text = NULL;
	size_t len = 0;
	int fd, r;

	if (!srcs)
		return -ENOMEM;
	fd = open(g->done_sidecar, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	r = fdio_read_file(fd, SIDECAR_RECORD_MAX, &text, &len);
	(void)close(fd);
	if (r < 0 && r != -EFBIG && r != -EINVAL)
		goto out;
	for (size_t i = 0; i < n; i++) {
		char *path = group_join(g->dir, names[i]);
		struct stat st;
		int s;

		if (!path) {
			r = -ENOMEM;
			goto out;
		}
		s = g->follow_symlinks ? stat(path, &st) : lstat(path, &st);
		free(path);
		if (s < 0) {
			r = GROUP_DONE_CHANGED; /* gone meanwhile: not the same */
			goto out;
		}
		srcs[i].source = names[i];
		srcs[i].size = (uint64_t)st.st_size;
		srcs[i].mtime_sec = (int64_t)st.st_mtim.tv_sec;
		srcs[i].mtime_nsec = st.st_mtim.tv_nsec;
	}
	if (text && !group_has_sources(text, len))
		r = GROUP_DONE_SAME; /* written from the journal: what was sent is not known */
	else
		r = text && sidecar_sources_equal(text, len, srcs, n) ? GROUP_DONE_SAME
								      : GROUP_DONE_CHANGED;
out:
	free(text);
	free(srcs);
	return r;
}

int job_group_member_open(const char *root, const char *path, bool follow_symlinks)
{
	size_t n = strlen(root);
	struct job_src src = {.follow_symlinks = follow_symlinks};

	if (!n || strncmp(path, root, n) != 0 || (path[n] != '/' && root[n - 1] != '/'))
		return -EINVAL;
	src.root = (char *)root;
	src.rel = (char *)path + n;
	while (*src.rel == '/')
		src.rel++;
	return job_src_open(&src);
}

/* A member's open or read failed on the storage, not on the image (a NAS
 * answering EIO or ESTALE for a while, descriptors running out): the group
 * is looked at again later rather than refused for good. */
static bool job_group_storage_fault(int r)
{
	return r == -EIO || r == -ESTALE || r == -ETIMEDOUT || r == -EMFILE || r == -ENFILE ||
	       r == -EAGAIN || r == -EINTR;
}

/* A member looked at and judged as a dropped file is (job_group_fit_judge:
 * what it needs fitting for in ret_reasons), opened as job_src_open opens
 * inputs: a member swapped for a link to a file elsewhere is not read
 * (follow_symlinks: false). */
static int job_group_probe_member(const struct job_group_check *g, struct config_reference *m,
				  unsigned *ret_reasons, char *why, size_t whylen)
{
	int fd = job_group_member_open(g->root, m->path, g->follow_symlinks);
	struct refs_look look;
	int r;

	if (fd < 0) {
		(void)snprintf(why, whylen, "cannot be opened: %s", strerror(-fd));
		return fd == -ELOOP || fd == -EXDEV ? -EINVAL : fd;
	}
	r = refs_look_fd(fd, m, &look, why, whylen);
	(void)close(fd);
	if (r < 0)
		return r;
	return job_group_fit_judge(&look, m, g->fit, g->max_bytes, ret_reasons, why, whylen);
}

static void job_group_check_work(struct job_io *io)
{
	struct job_group_check *g = (struct job_group_check *)io;
	char **names = NULL;
	size_t n = 0, total = 0;
	bool marker;
	int r = group_list(g, &names, &n, &total, &marker);

	if (r == -ENOENT || r == -ENOTDIR) {
		g->look = GROUP_GONE;
		goto out;
	}
	if (r < 0) {
		g->look = GROUP_LOCAL_ERROR;
		g->err = r;
		goto out;
	}
	if (g->done_sidecar && g->done_failed) {
		/* Its error record stands until it is deleted, like a file's. */
		if (access(g->done_sidecar, F_OK) == 0) {
			g->look = GROUP_FAILED_BEFORE;
			goto out;
		}
	} else if (g->done_sidecar) {
		r = group_against_done(g, names, n);
		if (r != -ENOENT) {
			g->look = r < 0 ? GROUP_LOCAL_ERROR : (enum group_look)r;
			g->err = r < 0 ? r : 0;
			goto out;
		}
	}
	if (g->marker && !marker) {
		g->look = GROUP_NOT_READY;
		goto out;
	}
	if (n == 0) {
		g->look = GROUP_EMPTY;
		goto out;
	}
	g->look = GROUP_REFUSED;
	if (total > g->limit) {
		g->code = "Group.TooManyImages";
		(void)snprintf(g->why, sizeof(g->why),
			       "the group has %zu images; a request takes at most %zu here: the "
			       "API's limit of %d images counts the outputs too (%zu references, "
			       "max_images %u); nothing was sent",
			       total, g->limit, CONFIG_IO_IMAGES_MAX, g->n_references, g->outputs);
		goto out;
	}
	g->members = calloc(n, sizeof(*g->members));
	if (!g->members) {
		g->look = GROUP_LOCAL_ERROR;
		g->err = -ENOMEM;
		goto out;
	}
	g->n_members = n;
	for (size_t i = 0; i < n; i++) {
		struct config_reference *m = &g->members[i];
		char why[512];

		m->path = group_join(g->dir, names[i]);
		r = m->path ? job_group_probe_member(g, m, &g->reasons[i], why, sizeof(why))
			    : -ENOMEM;
		if (r == -ENOMEM || job_group_storage_fault(r)) {
			g->look = GROUP_LOCAL_ERROR;
			g->err = r;
			goto out;
		}
		if (r < 0) {
			g->code = r == -EINVAL ? "Group.InvalidImage" : "Group.Unreadable";
			(void)snprintf(g->why, sizeof(g->why), "%s %s; nothing was sent", names[i],
				       why);
			goto out;
		}
		if (m->size > g->max_bytes && !(g->reasons[i] & FIT_REASON_BYTES)) {
			g->code = "Group.InvalidImage";
			(void)snprintf(
			    g->why, sizeof(g->why),
			    "%s has %llu bytes, more than max_input_bytes (%llu); nothing "
			    "was sent",
			    names[i], (unsigned long long)m->size,
			    (unsigned long long)g->max_bytes);
			goto out;
		}
	}
	g->look = GROUP_READY;
	job_prompt_read(&g->src, &g->prompt); /* nothing without prompt_file */
out:
	group_names_free(names, n);
}

static void job_group_check_free(struct job_group_check *g)
{
	free(g->dir);
	free(g->root);
	free(g->sub);
	free(g->marker);
	free(g->done_sidecar);
	for (size_t i = 0; i < g->n_exclude; i++)
		free(g->exclude[i]);
	free(g->exclude);
	refs_free(g->members, g->n_members);
	job_src_clear(&g->src);
	job_prompt_clear(&g->prompt);
	free(g);
}

/* Once a run: the group changed after it was done. */
static void job_group_log_changed(struct jobs *jobs, struct job *job, bool failed)
{
	const struct folder_config *cfg = job->folder->cfg;
	char *key = xasprintf("%s/%s", cfg->path, job->rel), **grown;
	const struct index_entry *e = index_get(job->folder->index, job->rel);

	for (size_t i = 0; i < jobs->n_group_logged; i++) {
		if (!strcmp(jobs->group_logged[i], key)) {
			free(key);
			return;
		}
	}
	grown = realloc(jobs->group_logged, (jobs->n_group_logged + 1) * sizeof(*grown));
	if (!grown)
		log_oom();
	jobs->group_logged = grown;
	jobs->group_logged[jobs->n_group_logged++] = key;
	log_job(LOG_WARNING, cfg->path, job->rel, NULL, NULL,
		"group %s changed after it was %s; nothing is sent again: delete its sidecar "
		"%s/%s to redo it",
		key, failed ? "refused" : "done", cfg->output, e ? e->sidecar : "?");
}

static void job_group_check_done(struct jobs *jobs, struct job *job, struct job_io *io)
{
	struct job_group_check *g = (struct job_group_check *)io;
	const struct folder_config *cfg;

	if (!job || !io->ran) {
		job_group_check_free(g);
		return;
	}
	cfg = job->folder->cfg;
	if (jobs->stopping) {
		job_group_check_free(g);
		job_advance(jobs, job, JOB_VERDICT(DROP));
		return;
	}
	if (job->dirty) {
		/* A file came or changed while it was looked at: quiet first. */
		job->dirty = false;
		job_group_check_free(g);
		job_advance(jobs, job, JOB_VERDICT(SETTLE, .delay_ms = cfg->settle_ms));
		return;
	}
	switch (g->look) {
	case GROUP_READY:
		/* Its prompt.txt: a wait, a refusal, or the prompt to send. */
		if (!job_prompt_decide(jobs, job, &g->prompt)) {
			job_group_check_free(g);
			return;
		}
		refs_free(job->members, job->n_members);
		job->members = g->members;
		job->n_members = g->n_members;
		g->members = NULL;
		g->n_members = 0;
		/* The job's identity is its first image's: the answer's
		 * changed-check looks at it as at a file's. */
		job->size = job->members[0].size;
		job->dev = (dev_t)job->members[0].dev;
		job->ino = (ino_t)job->members[0].ino;
		job->mtime.tv_sec = (time_t)job->members[0].mtime_sec;
		job->mtime.tv_nsec = job->members[0].mtime_nsec;
		job->format = IMAGE_FORMAT_UNKNOWN;
		for (enum image_format f = IMAGE_FORMAT_PNG; f <= IMAGE_FORMAT_GIF; f++)
			if (!strcmp(image_format_name(f), job->members[0].format))
				job->format = f;
		/* Its images to fit first, if any (jobs_pump fits it near the head). */
		job->fit_reasons = job_group_fit_plan(job, g->reasons, job->n_members);
		job->group_live = false;
		log_job(LOG_INFO, cfg->path, job->rel, NULL, NULL,
			"group %s/%s: %zu image%s, queued", cfg->path, job->rel, job->n_members,
			job->n_members == 1 ? "" : "s");
		job_group_check_free(g);
		job_advance(jobs, job, JOB_VERDICT(QUEUE));
		return;
	case GROUP_DONE_CHANGED:
	case GROUP_FAILED_BEFORE:
		if (g->look == GROUP_DONE_CHANGED || job->group_live)
			job_group_log_changed(jobs, job, g->look == GROUP_FAILED_BEFORE);
		job->group_live = false;
		job_group_check_free(g);
		job_advance(jobs, job, JOB_VERDICT(SKIP));
		return;
	case GROUP_DONE_SAME:
		job_group_check_free(g);
		job_advance(jobs, job, JOB_VERDICT(SKIP));
		return;
	case GROUP_NOT_READY:
		log_debug("group %s/%s waits for its marker %s", cfg->path, job->rel,
			  cfg->group_marker);
		/* The marker's arrival offers it again. */
		__attribute__((fallthrough));
	case GROUP_GONE:
	case GROUP_EMPTY:
		job_group_check_free(g);
		job_advance(jobs, job, JOB_VERDICT(DROP));
		return;
	case GROUP_REFUSED: {
		char code[64], why[sizeof(g->why)];

		(void)snprintf(code, sizeof(code), "%s", g->code);
		memcpy(why, g->why, sizeof(why));
		job_group_check_free(g);
		job_advance(jobs, job, JOB_VERDICT(FAIL, .code = code, .message = why));
		return;
	}
	case GROUP_LOCAL_ERROR:
		if (g->err == -ENOMEM)
			log_oom();
		log_job(LOG_WARNING, cfg->path, job->rel, NULL, NULL,
			"group %s/%s cannot be read (%s); looking again later", cfg->path, job->rel,
			strerror(-g->err));
		job_group_check_free(g);
		job_advance(jobs, job, JOB_VERDICT(SETTLE, .delay_ms = JOBS_STORAGE_RETRY_MS));
		return;
	}
}

void job_group_validate(struct jobs *jobs, struct job *job)
{
	const struct folder_config *cfg = job->folder->cfg;
	const struct index_entry *e = index_get(job->folder->index, job->rel);
	struct job_group_check *g = calloc(1, sizeof(*g));

	if (!g)
		log_oom();
	g->dir = xasprintf("%s/%s", cfg->path, job->rel);
	g->root = xstrdup(cfg->path);
	g->sub = xstrdup(job->rel);
	g->marker = cfg->group_ready == GROUP_READY_MARKER ? xstrdup(cfg->group_marker) : NULL;
	if (e) {
		g->done_sidecar = xasprintf("%s/%s", cfg->output, e->sidecar);
		g->done_failed = e->failed;
	}
	g->follow_symlinks = cfg->follow_symlinks;
	g->exclude = calloc(cfg->n_exclude + 1, sizeof(*g->exclude));
	if (!g->exclude)
		log_oom();
	for (; g->n_exclude < cfg->n_exclude; g->n_exclude++)
		g->exclude[g->n_exclude] = xstrdup(cfg->exclude[g->n_exclude]);
	/* Inputs at most CONFIG_IMAGES_MAX, inputs and outputs at most
	 * CONFIG_IO_IMAGES_MAX (--check keeps references + max_images below). */
	g->n_references = cfg->n_references;
	g->outputs = cfg->max_images ? cfg->max_images : 1;
	g->limit = CONFIG_IMAGES_MAX - cfg->n_references;
	if (cfg->n_references + g->outputs > CONFIG_IO_IMAGES_MAX)
		g->limit = 0;
	else if (CONFIG_IO_IMAGES_MAX - cfg->n_references - g->outputs < g->limit)
		g->limit = CONFIG_IO_IMAGES_MAX - cfg->n_references - g->outputs;
	g->max_bytes = cfg->max_input_bytes;
	g->fit = cfg->fit;
	job_src_fill(job, &g->src);
	job_prompt_fill(job, &g->prompt);
	g->io.work = job_group_check_work;
	g->io.done = job_group_check_done;
	job_activate_checking(jobs, job);
	job_io_submit(jobs, job, job->folder, &g->io);
}

void job_group_offer(struct jobs *jobs, struct folder *folder, const char *rel,
		     const struct stat *st, enum watch_how how)
{
	char *sub = rel_dir(rel);
	struct job *job;
	uint64_t delay = folder->cfg->settle_ms, now = loop_now_ms();

	if (jobs->stopping || strchr(sub, '/')) {
		free(sub); /* deeper than a group's subfolder: not an input */
		return;
	}
	job = jobs_find(jobs, folder, sub);
	if (how == WATCH_SCAN) {
		int64_t age_ms = loop_wall_ms() - ((int64_t)st->st_mtim.tv_sec * 1000 +
						   st->st_mtim.tv_nsec / 1000000);
		if (age_ms >= (int64_t)folder->cfg->settle_ms)
			delay = 0; /* untouched for a settle already */
	}
	if (!job) {
		job = jobs_create(jobs, folder, sub);
		job->group = true;
	} else if (job->state != JOB_SETTLING) {
		/* Looked at, queued or sent already: what was listed is what goes
		 * (the sidecar says which); a change is looked at afterwards. */
		if (how != WATCH_SCAN) {
			job->dirty = true;
			job->group_live = true;
		}
		free(sub);
		return;
	} else if (job->deadline > now + delay) {
		delay = job->deadline - now; /* another file keeps it settling longer */
	}
	if (how != WATCH_SCAN)
		job->group_live = true;
	free(sub);
	job_settle(jobs, job, delay);
	jobs_changed(jobs);
}

const struct sidecar_source *job_group_sources(const struct job *job, struct sidecar_source *buf,
					       size_t n)
{
	if (!job->group || !job->n_members || job->n_members > n ||
	    job->n_refs_sent + 1 < job->n_members)
		return NULL;
	for (size_t i = 0; i < job->n_members; i++) {
		const struct config_reference *m = &job->members[i];
		const char *sha = i == 0 ? job->sha256 : job->refs_sent[i - 1].sha256;

		buf[i].source = rel_base(m->path);
		buf[i].sha256_hex = sha[0] ? sha : NULL;
		buf[i].size = m->size;
		buf[i].mtime_sec = m->mtime_sec;
		buf[i].mtime_nsec = m->mtime_nsec;
		job_group_fit_source(job, i, &buf[i]); /* the original's sha256, and "fitted" */
	}
	return buf;
}
