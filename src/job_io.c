/* job_io: the storage requests of the job module. Every file-system call of
 * a job runs on a storage worker; this file hands requests out, at most
 * JOBS_STORE_PER_FOLDER per folder at once (so a share that stops answering
 * holds that many workers, and other folders keep flowing), and notices a
 * folder whose oldest request has been out longer than JOBS_STORAGE_STALL_MS:
 * no new generation starts for it until it answers (jobs_pump), and STATUS=
 * names it. */
#include "job_private.h"

static void job_io_run(void *arg)
{
	struct job_io *io = arg;

	io->work(io);
	io->ran = true;
}

static void io_list_push(struct job_io **head, struct job_io **tail, struct job_io *io)
{
	io->next = NULL;
	io->prev = *tail;
	if (*tail)
		(*tail)->next = io;
	else
		*head = io;
	*tail = io;
}

static void io_list_remove(struct job_io **head, struct job_io **tail, struct job_io *io)
{
	if (io->prev)
		io->prev->next = io->next;
	else
		*head = io->next;
	if (io->next)
		io->next->prev = io->prev;
	else if (tail)
		*tail = io->prev;
	io->prev = io->next = NULL;
}

static void job_io_finished(void *arg, bool cancelled);

/* A folder's queue, or state_dir's (folder NULL): the journal is not held
 * up by a folder's share. */
static struct job_io_queue *job_io_queue_of(struct jobs *jobs, struct folder *folder)
{
	return folder ? &folder->io_queue : &jobs->state_queue;
}

/* How many requests of a folder (NULL: state_dir) may be out at once: enough
 * for throughput on slow storage (each waits on its own fsyncs), none more
 * once the folder is stalled, so a hung share holds what it already has. */
static unsigned job_io_room(const struct folder *folder)
{
	return folder && folder->storage_stalled_since ? 0 : JOBS_STORE_PER_FOLDER;
}

/* Books a request just handed to a worker: its queue's count, the out list
 * (no order: at its head) and the time the stall bound counts from. */
static void job_io_went_out(struct jobs *jobs, struct job_io_queue *q, struct job_io *io)
{
	io->out = true;
	io->submitted = loop_now_ms();
	q->busy++;
	io->prev = NULL;
	io->next = jobs->io_out;
	if (io->next)
		io->next->prev = io;
	jobs->io_out = io;
}

/* Hands waiting requests to workers while their queues have room: a pass
 * over the queues that have some waiting, not over the requests. */
static void job_io_start_waiting(struct jobs *jobs)
{
	struct job_io_queue **link = &jobs->ready_queues;

	if (!jobs->store_pool)
		return; /* shutting down: job_io_shutdown ends what waits */

	while (*link) {
		struct job_io_queue *q = *link;
		struct job_io *io;

		while ((io = q->head) && q->busy < job_io_room(io->folder)) {
			int r = work_submit(jobs->store_pool, job_io_run, job_io_finished, io);
			if (r == -ENOMEM)
				log_oom();
			if (r < 0)
				return; /* shutting down: job_io_shutdown ends what waits */
			io_list_remove(&q->head, &q->tail, io);
			q->n_waiting--;
			job_io_went_out(jobs, q, io);
		}
		if (q->head) {
			link = &q->ready_next;
		} else {
			*link = q->ready_next;
			q->ready_next = NULL;
			q->ready = false;
		}
	}
}

/* The oldest request of folder out on a worker (0 if none). */
static uint64_t job_io_oldest(const struct jobs *jobs, const struct folder *folder)
{
	uint64_t oldest = 0;

	for (const struct job_io *io = jobs->io_out; io; io = io->next)
		if (io->folder == folder && (!oldest || io->submitted < oldest))
			oldest = io->submitted;
	return oldest;
}

/* Marks the folders whose storage does not answer, clears those that answer
 * again, and rearms the timer: at the next request to go stale, or in a
 * second while one is (STATUS= counts the seconds). Passes over the requests
 * out on workers only. */
static void jobs_update_stalls(struct jobs *jobs, struct folder *answered)
{
	uint64_t now = loop_now_ms(), next = 0;
	size_t n_stalled = 0;
	const struct folder *first = NULL;
	bool resumed = false;

	if (answered && answered->storage_stalled_since) {
		uint64_t oldest = job_io_oldest(jobs, answered);
		if (!oldest || now - oldest < JOBS_STORAGE_STALL_MS) {
			log_info(
			    "folder %s: storage answers again after %llu s", answered->cfg->path,
			    (unsigned long long)((now - answered->storage_stalled_since) / 1000));
			answered->storage_stalled_since = 0;
			resumed = true;
		}
	}
	for (struct job_io *io = jobs->io_out; io; io = io->next) {
		struct folder *f = io->folder;
		if (!f)
			continue;
		if (now - io->submitted >= JOBS_STORAGE_STALL_MS) {
			if (!f->storage_stalled_since) {
				f->storage_stalled_since = job_io_oldest(jobs, f);
				log_warn(
				    "folder %s: its storage has not answered for %llu s; no new "
				    "work starts for it until it does",
				    f->cfg->path,
				    (unsigned long long)((now - f->storage_stalled_since) / 1000));
			}
			if (!next || now + 1000 < next)
				next = now + 1000;
		} else if (!next || io->submitted + JOBS_STORAGE_STALL_MS < next) {
			next = io->submitted + JOBS_STORAGE_STALL_MS;
		}
	}
	/* The reason names the folder stalled longest; a stalled folder has a
	 * request out (it has not answered), so the out list finds them all. */
	for (struct job_io *io = jobs->io_out; io; io = io->next) {
		const struct folder *f = io->folder;
		bool seen = false;
		if (!f || !f->storage_stalled_since)
			continue;
		for (struct job_io *o = jobs->io_out; o != io && !seen; o = o->next)
			seen = o->folder == f;
		if (seen)
			continue;
		n_stalled++;
		if (!first || f->storage_stalled_since < first->storage_stalled_since)
			first = f;
	}
	if (first)
		(void)snprintf(jobs->storage_reason, sizeof(jobs->storage_reason),
			       "storage of folder %s not answering for %llu s%s", first->cfg->path,
			       (unsigned long long)((now - first->storage_stalled_since) / 1000),
			       n_stalled > 1 ? " (and other folders)" : "");
	else
		jobs->storage_reason[0] = '\0';
	if (next)
		(void)loop_timer_arm_at(jobs->stall_timer, next);
	else
		loop_timer_disarm(jobs->stall_timer);
	if (resumed)
		jobs_pump(jobs);
}

void jobs_stall_timer(void *userdata)
{
	struct jobs *jobs = userdata;

	jobs_update_stalls(jobs, NULL);
	jobs_changed(jobs);
}

static void job_io_finished(void *arg, bool cancelled)
{
	struct job_io *io = arg;
	struct jobs *jobs = io->jobs;
	struct folder *folder = io->folder;
	struct job *job = io->job;

	(void)cancelled; /* io->ran says whether the work was done */
	io_list_remove(&jobs->io_out, NULL, io);
	job_io_queue_of(jobs, folder)->busy--;
	jobs->n_io--;
	if (job)
		job->io = NULL;
	/* Before done: a request waiting for this folder goes first. */
	job_io_start_waiting(jobs);
	jobs_update_stalls(jobs, folder);
	io->done(jobs, job, io);
}

void job_io_submit(struct jobs *jobs, struct job *job, struct folder *folder, struct job_io *io)
{
	struct job_io_queue *q = job_io_queue_of(jobs, folder);

	io->jobs = jobs;
	io->job = job;
	io->folder = folder;
	io->ran = io->out = false;
	io->submitted = 0;
	if (job)
		job->io = io;
	io_list_push(&q->head, &q->tail, io);
	q->n_waiting++;
	if (!q->ready) {
		q->ready = true;
		q->ready_next = jobs->ready_queues;
		jobs->ready_queues = q;
	}
	jobs->n_io++;
	job_io_start_waiting(jobs);
	jobs_update_stalls(jobs, NULL);
}

void job_io_submit_urgent(struct jobs *jobs, struct job *job, struct folder *folder,
			  struct job_io *io)
{
	int r;

	io->jobs = jobs;
	io->job = job;
	io->folder = folder;
	io->ran = io->out = false;
	if (job)
		job->io = io;
	jobs->n_io++;
	r = jobs->store_pool ? work_submit(jobs->store_pool, job_io_run, job_io_finished, io)
			     : -ESHUTDOWN;
	if (r == -ENOMEM)
		log_oom();
	if (r < 0) {
		/* Shutting down: ended now, as job_io_shutdown ends what waits. */
		jobs->n_io--;
		if (job)
			job->io = NULL;
		io->done(jobs, NULL, io);
		return;
	}
	job_io_went_out(jobs, job_io_queue_of(jobs, folder), io);
	jobs_update_stalls(jobs, NULL);
}

void job_io_forget(struct job *job)
{
	if (job->io) {
		job->io->job = NULL;
		job->io = NULL;
	}
}

bool job_io_folder_busy(const struct jobs *jobs, const struct folder *folder)
{
	(void)jobs;
	return folder->io_queue.n_waiting > 0 || folder->io_queue.busy > 0;
}

void job_io_shutdown(struct jobs *jobs)
{
	/* Waits for what runs (their done comes from work_pool_free). */
	work_pool_free(jobs->store_pool);
	jobs->store_pool = NULL;
	/* Still out on a worker: a share that never answered; the abandoned
	 * thread owns it now (see work_pool_free). */
	while (jobs->io_out) {
		struct job_io *io = jobs->io_out;
		io_list_remove(&jobs->io_out, NULL, io);
		jobs->n_io--;
		if (io->job)
			io->job->io = NULL;
	}
	/* Never started: done with ran false. A done may queue another request
	 * (discarding a temporary file): it is ended the same way. */
	while (jobs->ready_queues) {
		struct job_io_queue *q = jobs->ready_queues;
		struct job_io *io;

		if (!q->head) {
			jobs->ready_queues = q->ready_next;
			q->ready_next = NULL;
			q->ready = false;
			continue;
		}
		io = q->head;
		io_list_remove(&q->head, &q->tail, io);
		q->n_waiting--;
		jobs->n_io--;
		if (io->job)
			io->job->io = NULL;
		io->done(jobs, NULL, io);
	}
}

/* ---- discarding a temporary file --------------------------------------- */

struct job_io_discard {
	struct job_io io;
	int dirfd, fd;
	char tmp[300];
};

static void job_io_discard_work(struct job_io *io)
{
	struct job_io_discard *d = (struct job_io_discard *)io;

	if (d->fd >= 0 && d->dirfd >= 0 && d->tmp[0])
		output_tmp_abort(d->dirfd, d->fd, d->tmp);
	else if (d->fd >= 0)
		close(d->fd);
	d->fd = -1;
}

static void job_io_discard_done(struct jobs *jobs, struct job *job, struct job_io *io)
{
	struct job_io_discard *d = (struct job_io_discard *)io;

	(void)job;
	/* never ran (shutdown): the next start sweeps the file */
	work_close(jobs->store_pool, d->fd);
	work_close(jobs->store_pool, d->dirfd);
	free(d);
}

void job_io_discard_tmp(struct jobs *jobs, struct folder *folder, int dirfd, int fd,
			const char *tmp_name)
{
	struct job_io_discard *d;

	if (fd < 0) {
		work_close(jobs->store_pool, dirfd);
		return;
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		log_oom();
	d->dirfd = dirfd;
	d->fd = fd;
	(void)snprintf(d->tmp, sizeof(d->tmp), "%s", tmp_name ? tmp_name : "");
	d->io.work = job_io_discard_work;
	d->io.done = job_io_discard_done;
	job_io_submit(jobs, NULL, folder, &d->io);
}

/* ---- the source, from a worker ------------------------------------------ */

void job_src_fill(const struct job *job, struct job_src *src)
{
	src->root = xstrdup(job->folder->cfg->path);
	src->rel = xstrdup(job->rel);
	src->follow_symlinks = job->folder->cfg->follow_symlinks;
	src->dev = job->dev;
	src->ino = job->ino;
	src->size = job->size;
	src->mtime = job->mtime;
}

void job_src_clear(struct job_src *src)
{
	free(src->root);
	free(src->rel);
	src->root = src->rel = NULL;
}

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

int job_src_open(const struct job_src *src)
{
	int dirfd, fd, flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC;

	dirfd = open(src->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return -errno;
	/* O_NONBLOCK: a FIFO dropped in must not block on open. */
	if (src->follow_symlinks) {
		fd = openat(dirfd, src->rel, flags);
		if (fd < 0)
			fd = -errno;
	} else {
		fd = open_beneath(dirfd, src->rel, flags);
	}
	close(dirfd);
	return fd;
}

/* The folder holding the source, opened the same safe way, for on_success. */
static int job_src_open_dir(const struct job_src *src)
{
	int dirfd = open(src->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC), fd;
	const char *slash = strrchr(src->rel, '/');
	char *dir;

	if (dirfd < 0)
		return -errno;
	if (!slash) {
		fd = dup(dirfd);
		if (fd < 0)
			fd = -errno;
		close(dirfd);
		return fd;
	}
	dir = strndup(src->rel, (size_t)(slash - src->rel));
	if (!dir) {
		close(dirfd);
		return -ENOMEM;
	}
	fd = open_beneath(dirfd, dir, O_RDONLY | O_DIRECTORY);
	free(dir);
	close(dirfd);
	return fd;
}

bool job_src_unchanged(const struct job_src *src, int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_dev == src->dev &&
	       st.st_ino == src->ino && (uint64_t)st.st_size == src->size &&
	       same_mtime(&st.st_mtim, &src->mtime);
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
		ssize_t n = fdio_pread_full(src_fd, buf, sizeof(buf), off);
		if (n <= 0) {
			r = n < 0 ? (int)n : 0;
			break;
		}
		r = fdio_write_all(out, buf, (size_t)n, NULL);
		if (r < 0)
			goto out;
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

int job_src_after_success(const struct job_src *src, enum on_success mode, const char *done_dir,
			  bool *ret_left)
{
	char *dest_dir = NULL, name[OUTPUT_NAME_MAX + 16];
	const char *base = rel_base(src->rel), *dot, *slash = strrchr(src->rel, '/');
	int src_dir = -1, fd = -1, dest_fd = -1, r = 0;
	struct stat st;

	*ret_left = false;
	if (mode == ON_SUCCESS_KEEP)
		return 0;
	src_dir = job_src_open_dir(src);
	fd = job_src_open(src);
	/* The name must still be the very file that was sent, reached without
	 * a link on the way: never move or delete anything else. */
	if (src_dir < 0 || fd < 0 || !job_src_unchanged(src, fd) ||
	    fstatat(src_dir, base, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_ino != src->ino ||
	    st.st_dev != src->dev) {
		*ret_left = true;
		goto out;
	}
	if (mode == ON_SUCCESS_DELETE) {
		if (unlinkat(src_dir, base, 0) < 0)
			r = -errno;
		goto out;
	}
	if (slash) {
		if (asprintf(&dest_dir, "%s/%.*s", done_dir, (int)(slash - src->rel), src->rel) < 0)
			dest_dir = NULL;
	} else {
		dest_dir = strdup(done_dir);
	}
	if (!dest_dir) {
		r = -ENOMEM;
		goto out;
	}
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
	if (dest_fd >= 0)
		close(dest_fd);
	if (fd >= 0)
		close(fd);
	if (src_dir >= 0) {
		(void)fsync(src_dir);
		close(src_dir);
	}
	free(dest_dir);
	return r;
}

/* ---- the output folder, from a worker ------------------------------------ */

void job_out_fill(const struct job *job, struct job_out *out, bool trusted)
{
	const struct folder *f = job->folder;
	char *dir = rel_dir(job->rel);

	out->root = xstrdup(f->cfg->output);
	out->path = dir[0] ? xasprintf("%s/%s", f->cfg->output, dir) : xstrdup(f->cfg->output);
	free(dir);
	out->known = f->out_id.known && f->out_id_for && strcmp(f->out_id_for, f->cfg->output) == 0;
	out->dev = f->out_id.dev;
	out->ino = f->out_id.ino;
	out->trusted = trusted;
}

int job_out_recheck(struct job *job)
{
	char why[512];

	/* The worker found the share answering a moment ago: this is quick. */
	if (!folder_output_check(job->folder, why, sizeof(why)))
		return -ENODEV;
	if (job->folder->index_stale)
		return -EAGAIN; /* back, but its records are not read again yet */
	return 0;
}

void job_out_clear(struct job_out *out)
{
	free(out->root);
	free(out->path);
	out->root = out->path = NULL;
}

int job_out_open(const struct job_out *out)
{
	struct stat st;
	int fd, r;

	/* Never write into (or create again) an output that is not the one the
	 * done records came from: an unmounted share's bare mount point. The
	 * loop judges anything but the very directory it knows (-ESTALE). */
	if (!out->trusted) {
		if (stat(out->root, &st) < 0) {
			if (errno != ENOENT || out->known)
				return -ESTALE;
			/* never seen: the first result creates it */
		} else if (!out->known || st.st_dev != out->dev || st.st_ino != out->ino) {
			return -ESTALE;
		}
	}
	r = output_mkdir_parents(out->path, 0755);
	if (r < 0)
		return r;
	fd = open(out->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

bool job_out_space_ok(int dirfd, uint64_t min_free)
{
	struct statvfs sv;

	if (fstatvfs(dirfd, &sv) < 0)
		return true;
	return (uint64_t)sv.f_bavail * sv.f_frsize >= min_free;
}
