/* folder: the identity of a watched folder and of its output, so that an
 * unmounted share (an empty mount point) is never taken for an empty folder.
 * Never logs; the watch logs what these find. */
#include "folder.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "fdio.h"
#include "fnv.h"
#include "loop.h"
#include "output.h"
#include "work.h"

#define FOLDER_ID_FILE_MAX 16384

/* Whether the directory p (a real path, not "/") is the root of a mount. */
static bool is_mount_root(const char *p)
{
	struct statx sx;
	struct stat self, parent;
	char *up;
	bool root = false;

	if (statx(AT_FDCWD, p, AT_SYMLINK_NOFOLLOW, STATX_INO, &sx) == 0 &&
	    (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
	    (sx.stx_attributes & STATX_ATTR_MOUNT_ROOT))
		return true;
	/* Older kernels: a mount of another filesystem shows as a new device. */
	if (asprintf(&up, "%s/..", p) < 0)
		return false;
	if (stat(p, &self) == 0 && stat(up, &parent) == 0)
		root = self.st_dev != parent.st_dev;
	free(up);
	return root;
}

int folder_probe(const char *path, struct folder_id *ret_id)
{
	struct stat st;
	char *real;

	if (stat(path, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	real = realpath(path, NULL);
	if (!real)
		return -errno;
	/* Walk up to the mount point: cut the last part until a mount root. */
	ret_id->mount_root = !strcmp(real, "/") || is_mount_root(real);
	while (strcmp(real, "/") != 0 && !is_mount_root(real)) {
		char *slash = strrchr(real, '/');
		if (slash == real)
			slash[1] = '\0';
		else
			*slash = '\0';
	}
	ret_id->known = true;
	ret_id->dev = st.st_dev;
	ret_id->ino = st.st_ino;
	ret_id->mount = real;
	return 0;
}

void folder_id_clear(struct folder_id *id)
{
	free(id->mount);
	memset(id, 0, sizeof(*id));
}

void folder_output_id_file(const struct folder *f, char *buf, size_t len)
{
	if (!f->state_dir) {
		(void)snprintf(buf, len, "%s", "");
		return;
	}
	/* A short stable file name for the output path (the path itself is
	 * inside the file, and checked). */
	(void)snprintf(buf, len, "%s/outputs/%016" PRIx64, f->state_dir,
		       fnv1a64_str(f->cfg->output));
}

void folder_index_cache_file(const struct folder *f, char *buf, size_t len)
{
	uint64_t h;

	if (!f->state_dir) {
		(void)snprintf(buf, len, "%s", "");
		return;
	}
	/* The done_dir is skipped by the walk: a cache for each pair. */
	h = fnv1a64_str(f->cfg->output) ^
	    (fnv1a64_str(f->cfg->done_dir ? f->cfg->done_dir : "") * 0x9e3779b97f4a7c15ULL);
	(void)snprintf(buf, len, "%s/index/%016" PRIx64 ".cache", f->state_dir, h);
}

static bool file_exists(const char *path)
{
	return access(path, F_OK) == 0 || errno != ENOENT;
}

/* Reads the saved identity of the output path now configured. */
static void folder_output_load(struct folder *f)
{
	char file[PATH_MAX + 64], *text = NULL, *save = NULL;
	struct folder_id id = {0};
	bool path_ok = false, have_dev = false, have_ino = false;
	size_t len;
	int fd;

	folder_id_clear(&f->out_id);
	free(f->out_id_for);
	f->out_id_for = strdup(f->cfg->output);
	f->out_id_saved = false;
	folder_output_id_file(f, file, sizeof(file));
	if (!file[0] || !f->out_id_for)
		return;
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (fdio_read_file(fd, FOLDER_ID_FILE_MAX, &text, &len) < 0)
		text = NULL;
	close(fd);
	if (!text)
		return;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		unsigned maj, min;
		unsigned long long ino;

		if (!strncmp(line, "path=", 5)) {
			path_ok = !strcmp(line + 5, f->cfg->output);
		} else if (!strncmp(line, "mount=", 6)) {
			free(id.mount);
			id.mount = strdup(line + 6);
		} else if (sscanf(line, "dev=%u:%u", &maj, &min) == 2) {
			id.dev = makedev(maj, min);
			have_dev = true;
		} else if (sscanf(line, "ino=%llu", &ino) == 1) {
			id.ino = (ino_t)ino;
			have_ino = true;
		}
	}
	free(text);
	if (path_ok && id.mount && have_dev && have_ino) {
		id.known = true;
		f->out_id = id;
		f->out_id_saved = true;
		return;
	}
	folder_id_clear(&id);
}

static void folder_output_save(struct folder *f)
{
	char file[PATH_MAX + 64], *dir, *name, *text;
	int dirfd, n;

	f->out_id_saved = false;
	folder_output_id_file(f, file, sizeof(file));
	if (!file[0])
		return;
	n = asprintf(&text,
		     "# seedreamd: the output folder as first seen. While it is not this one\n"
		     "# (a share not mounted), the folder is paused. Delete this file if the\n"
		     "# output really moved.\n"
		     "path=%s\nmount=%s\ndev=%u:%u\nino=%llu\n",
		     f->cfg->output, f->out_id.mount, major(f->out_id.dev), minor(f->out_id.dev),
		     (unsigned long long)f->out_id.ino);
	if (n < 0)
		return;
	name = strrchr(file, '/');
	*name++ = '\0';
	dir = file;
	if (output_mkdir_parents(dir, 0700) == 0) {
		dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dirfd >= 0) {
			f->out_id_saved = output_write_atomic(dirfd, name, text, (size_t)n) == 0;
			close(dirfd);
		}
	}
	free(text);
}

void folder_output_look(const char *output, const char *id_file,
			struct folder_output_seen *ret_seen)
{
	*ret_seen = (struct folder_output_seen){0};
	ret_seen->probe_r = folder_probe(output, &ret_seen->id);
	ret_seen->id_file_exists = id_file[0] && file_exists(id_file);
}

void folder_mark_stale(struct folder *f)
{
	f->index_stale = true;
	f->index_epoch++;
}

bool folder_output_judge(struct folder *f, struct folder_output_seen *seen, char *why,
			 size_t whylen)
{
	const char *out = f->cfg->output;
	char file[PATH_MAX + 64];
	struct folder_id now = seen->id;
	int r = seen->probe_r;

	seen->id = (struct folder_id){0}; /* owned here from now on */
	folder_output_id_file(f, file, sizeof(file));
	if (!f->out_id_for) {
		folder_output_load(f); /* first look */
	} else if (strcmp(f->out_id_for, out) != 0) {
		folder_output_load(f); /* a reload changed the output: its own records */
		folder_mark_stale(f);
	} else if (f->out_id_saved && !seen->id_file_exists) {
		/* Deleted by the user: take the output as it is now. */
		folder_id_clear(&f->out_id);
		f->out_id_saved = false;
		folder_mark_stale(f);
	}
	if (r == -ENOENT && !f->out_id.known)
		return true; /* never seen: the first result creates it */
	/* Whatever the records said while the output was away (read from a
	 * bare mount point, say) cannot be trusted: read them again once it is
	 * back, before anything is judged "not done". */
	if (r < 0)
		folder_mark_stale(f);
	if (r < 0) {
		(void)snprintf(why, whylen, "output %s %s", out,
			       r == -ENOENT ? "is missing (it existed before; share not mounted?)"
					    : strerror(-r));
		return false;
	}
	if (!f->out_id.known) {
		f->out_id = now;
		folder_output_save(f);
		return true;
	}
	if (now.dev == f->out_id.dev && now.ino == f->out_id.ino) {
		/* The very same directory, even if a bind mount over it came or
		 * went (a read-only period, say): its records still hold. */
		if (strcmp(now.mount, f->out_id.mount) != 0) {
			folder_id_clear(&f->out_id);
			f->out_id = now;
			folder_output_save(f);
		} else {
			folder_id_clear(&now);
		}
		return true;
	}
	if (strcmp(now.mount, f->out_id.mount) != 0) {
		(void)snprintf(why, whylen,
			       "output %s is on the mount %s, not on %s as before (share not "
			       "mounted?)%s%s",
			       out, now.mount, f->out_id.mount,
			       file[0] ? "; if it moved on purpose, delete " : "", file);
		folder_id_clear(&now);
		folder_mark_stale(f);
		return false;
	}
	/* The same mount point, mounted again (devices are numbered anew) or
	 * restored: a new directory, whose sidecars are read before anything is
	 * judged. */
	folder_id_clear(&f->out_id);
	f->out_id = now;
	folder_output_save(f);
	folder_mark_stale(f);
	return true;
}

bool folder_output_check(struct folder *f, char *why, size_t whylen)
{
	char file[PATH_MAX + 64];
	struct folder_output_seen seen;

	folder_output_id_file(f, file, sizeof(file));
	folder_output_look(f->cfg->output, file, &seen);
	return folder_output_judge(f, &seen, why, whylen);
}

int folder_reload_index(struct folder *f)
{
	char cache[PATH_MAX + 64];
	struct index *index;
	int r = index_new(&index);

	if (r < 0)
		return r;
	folder_index_cache_file(f, cache, sizeof(cache));
	/* The cache checks every directory's device and inode: a share mounted
	 * again, or another tree, is read from its sidecars. */
	r = index_load_tree_cached(index, f->cfg->output, f->cfg->done_dir, cache[0] ? cache : NULL,
				   NULL, NULL);
	if (r < 0) {
		index_free(index);
		return r;
	}
	index_free(f->index);
	f->index = index;
	f->index_stale = false;
	f->index_changes_saved = index_changes(index);
	return 0;
}

/* A request about a folder's done records for a worker: read them again, or
 * write their cache. The worker has its own copies of the paths. */
struct index_request {
	struct folder *folder; /* only on the loop thread */
	void (*done)(struct folder *folder, int result, void *userdata);
	void *userdata;
	char *output;
	char *done_dir;
	char cache[PATH_MAX + 64];
	struct index *index; /* read (reload), or the copy to write (save) */
	uint64_t epoch;	     /* the folder's index_epoch when the request was made */
	_Atomic uint64_t progress_at; /* stored by the worker as it reads (reload) */
	int result;
};

static void index_request_free(struct index_request *req)
{
	index_free(req->index);
	free(req->output);
	free(req->done_dir);
	free(req);
}

static int index_request_new(struct folder *f,
			     void (*done)(struct folder *folder, int result, void *userdata),
			     void *userdata, struct index_request **ret_req)
{
	struct index_request *req = calloc(1, sizeof(*req));

	if (!req)
		return -ENOMEM;
	req->folder = f;
	req->done = done;
	req->userdata = userdata;
	req->output = strdup(f->cfg->output);
	req->done_dir = f->cfg->done_dir ? strdup(f->cfg->done_dir) : NULL;
	if (!req->output || (f->cfg->done_dir && !req->done_dir)) {
		index_request_free(req);
		return -ENOMEM;
	}
	folder_index_cache_file(f, req->cache, sizeof(req->cache));
	req->epoch = f->index_epoch;
	*ret_req = req;
	return 0;
}

static void reload_work(void *arg)
{
	struct index_request *req = arg;

	req->result = index_new(&req->index);
	if (req->result < 0)
		return;
	req->result = index_load_tree_progress(req->index, req->output, req->done_dir,
					       req->cache[0] ? req->cache : NULL, NULL, NULL,
					       &req->progress_at);
}

static void reload_done(void *arg, bool cancelled)
{
	struct index_request *req = arg;
	struct folder *f = req->folder;
	int r = cancelled ? -ECANCELED : req->result;

	f->index_reloading = false;
	f->records_loading_since = 0;
	f->records_progress_at = NULL;
	if (r == 0 && strcmp(req->output, f->cfg->output) != 0)
		r = -ESTALE; /* another output now: its records are still to be read */
	/* Judged missing, remounted or replaced while read: what was read may
	 * lack the parts that were away (a load skips what it cannot read). */
	if (r == 0 && f->index_epoch != req->epoch)
		r = -ESTALE;
	if (r == 0) {
		index_free(f->index);
		f->index = req->index;
		req->index = NULL;
		f->index_stale = false;
		f->index_changes_saved = index_changes(f->index);
	}
	if (req->done)
		req->done(f, r, req->userdata);
	index_request_free(req);
}

int folder_reload_index_async(struct folder *f, struct work_pool *pool,
			      void (*done)(struct folder *folder, int result, void *userdata),
			      void *userdata)
{
	struct index_request *req;
	int r;

	if (f->index_reloading)
		return -EBUSY;
	r = index_request_new(f, done, userdata, &req);
	if (r < 0)
		return r;
	r = work_submit(pool, reload_work, reload_done, req);
	if (r < 0) {
		index_request_free(req);
		return r;
	}
	f->index_reloading = true;
	f->records_loading_since = loop_now_ms();
	f->records_progress_at = &req->progress_at;
	return 0;
}

static void save_work(void *arg)
{
	struct index_request *req = arg;

	req->result = index_save_cache(req->index, req->output, req->done_dir, req->cache);
}

static void save_done(void *arg, bool cancelled)
{
	struct index_request *req = arg;
	struct folder *f = req->folder;
	int r = cancelled ? -ECANCELED : req->result;

	f->index_saving = false;
	if (r == 0)
		f->index_changes_saved = index_changes(req->index);
	if (req->done)
		req->done(f, r, req->userdata);
	index_request_free(req);
}

int folder_save_index_cache_async(struct folder *f, struct work_pool *pool,
				  void (*done)(struct folder *folder, int result, void *userdata),
				  void *userdata)
{
	struct index_request *req;
	int r;

	if (f->index_saving)
		return -EBUSY;
	r = index_request_new(f, done, userdata, &req);
	if (r == 0 && !req->cache[0]) {
		index_request_free(req);
		r = -EINVAL;
	}
	if (r < 0)
		return r;
	r = index_clone(f->index, &req->index);
	if (r == 0)
		r = work_submit(pool, save_work, save_done, req);
	if (r < 0) {
		index_request_free(req);
		return r;
	}
	f->index_saving = true;
	return 0;
}

void folder_clear_ids(struct folder *f)
{
	folder_id_clear(&f->root_id);
	folder_id_clear(&f->out_id);
	free(f->out_id_for);
	f->out_id_for = NULL;
	free(f->state_dir);
	f->state_dir = NULL;
}
