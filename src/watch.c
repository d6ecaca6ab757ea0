#include "watch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "log.h"
#include "names.h"

#define WATCH_DEPTH_MAX      64
#define WATCH_MISSING_RETRY  5000 /* ms between looks for a missing folder */
#define WATCH_HEALTH_PERIOD  5000 /* ms between checks that folders and outputs are still theirs */
#define WATCH_DIR_MASK                                                                             \
	(IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE | IN_DELETE_SELF |   \
	 IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)

/* One inotify watch: a directory of a folder. A linear table: folders have
 * few subdirectories compared to files, and events are looked up once each. */
struct watch_dir {
	int wd;
	struct folder *folder;
	char *rel; /* "" for the root */
};

/* A directory that is some folder's output or done_dir: never scanned as input. */
struct watch_avoid {
	dev_t dev;
	ino_t ino;
};

struct watch {
	struct loop *loop;
	const struct watch_events *events;
	void *userdata;
	int inotify_fd; /* -1 without inotify */
	struct loop_source *source;
	struct watch_dir *dirs;
	size_t n_dirs, cap_dirs;
	struct folder **folders; /* for IN_Q_OVERFLOW rescans */
	size_t n_folders;
	struct watch_avoid *avoid; /* outputs and done_dirs, as of the last scan */
	size_t n_avoid;
	struct loop_timer *health_timer;
	bool warned_limit;
};

static void watch_scan_dir(struct watch *w, struct folder *f, int dirfd, const char *rel,
			   unsigned depth);
static void watch_folder_timer(void *userdata);
static void watch_start_folder(struct watch *w, struct folder *f);

bool watch_is_remote_fs(const char *path, const char **ret_fs_name)
{
	static const struct {
		long magic;
		const char *name;
	} remote[] = {
		{NFS_SUPER_MAGIC, "nfs"},  {SMB_SUPER_MAGIC, "smb"},    {0xff534d42, "cifs"},
		{0xfe534d42, "smb2"},      {0x65735546, "fuse"},        {V9FS_MAGIC, "9p"},
		{CODA_SUPER_MAGIC, "coda"}, {0x6b414653, "afs"},         {0x00c36400, "ceph"},
		{0x47504653, "gpfs"},      {0x0bd00bd0, "lustre"},
	};
	struct statfs sfs;

	*ret_fs_name = "local";
	if (statfs(path, &sfs) < 0)
		return false;
	for (size_t i = 0; i < sizeof(remote) / sizeof(remote[0]); i++) {
		if ((long)sfs.f_type == remote[i].magic) {
			*ret_fs_name = remote[i].name;
			return true;
		}
	}
	return false;
}

static char *path_join(const char *a, const char *b)
{
	char *p;

	if (asprintf(&p, "%s%s%s", a, a[0] ? "/" : "", b) < 0)
		log_oom();
	return p;
}

static void watch_forget_dir(struct watch *w, size_t i)
{
	free(w->dirs[i].rel);
	w->dirs[i] = w->dirs[--w->n_dirs];
}

/* Removes the watches of rel and everything below it ("": the whole folder). */
static void watch_forget_subtree(struct watch *w, const struct folder *f, const char *rel)
{
	size_t n = strlen(rel);

	for (size_t i = 0; i < w->n_dirs;) {
		const char *r = w->dirs[i].rel;
		if (w->dirs[i].folder == f &&
		    (n == 0 || (strncmp(r, rel, n) == 0 && (r[n] == '\0' || r[n] == '/')))) {
			(void)inotify_rm_watch(w->inotify_fd, w->dirs[i].wd);
			watch_forget_dir(w, i);
		} else {
			i++;
		}
	}
}

static struct watch_dir *watch_find_wd(struct watch *w, int wd)
{
	for (size_t i = 0; i < w->n_dirs; i++)
		if (w->dirs[i].wd == wd)
			return &w->dirs[i];
	return NULL;
}

/* Falls back to polling when the kernel is out of watches, rather than
 * dropping the folder. */
static void watch_fall_back_to_polling(struct watch *w, struct folder *f)
{
	if (f->polling)
		return;
	if (!w->warned_limit)
		log_warn("out of inotify watches; raise fs.inotify.max_user_watches "
			 "(sysctl -w fs.inotify.max_user_watches=524288)");
	w->warned_limit = true;
	log_warn("folder %s: polling every %llu ms instead of inotify", f->cfg->path,
		 (unsigned long long)f->cfg->poll_interval_ms);
	watch_forget_subtree(w, f, "");
	f->root_wd = -1;
	f->polling = true;
	(void)loop_timer_arm(f->timer, f->cfg->poll_interval_ms);
}

static void watch_add_dir(struct watch *w, struct folder *f, const char *rel)
{
	struct watch_dir *d;
	char *abs;
	int wd;

	if (w->inotify_fd < 0 || f->polling)
		return;
	abs = rel[0] ? path_join(f->cfg->path, rel) : strdup(f->cfg->path);
	if (!abs)
		log_oom();
	wd = inotify_add_watch(w->inotify_fd, abs, WATCH_DIR_MASK);
	free(abs);
	if (wd < 0) {
		if (errno == ENOSPC)
			watch_fall_back_to_polling(w, f);
		else
			log_warn("folder %s: cannot watch \"%s\": %s", f->cfg->path, rel,
				 strerror(errno));
		return;
	}
	if (!rel[0])
		f->root_wd = wd;
	d = watch_find_wd(w, wd);
	if (d) {
		/* The same directory again: a rescan, or under a new name. */
		if (strcmp(d->rel, rel) != 0) {
			char *copy = strdup(rel);
			if (!copy)
				log_oom();
			free(d->rel);
			d->rel = copy;
		}
		return;
	}
	if (w->n_dirs == w->cap_dirs) {
		size_t cap = w->cap_dirs ? w->cap_dirs * 2 : 16;
		struct watch_dir *dirs = reallocarray(w->dirs, cap, sizeof(*dirs));
		if (!dirs)
			log_oom();
		w->dirs = dirs;
		w->cap_dirs = cap;
	}
	w->dirs[w->n_dirs].wd = wd;
	w->dirs[w->n_dirs].folder = f;
	w->dirs[w->n_dirs].rel = strdup(rel);
	if (!w->dirs[w->n_dirs].rel)
		log_oom();
	w->n_dirs++;
}

/* Looks up where every folder's output and done_dir are now: a scan must not
 * take results for inputs even when a bind mount or a link the config cannot
 * see puts an output inside a watched tree. */
static void watch_refresh_avoid(struct watch *w)
{
	struct watch_avoid *a = reallocarray(w->avoid, 2 * w->n_folders + 1, sizeof(*a));

	if (!a)
		log_oom();
	w->avoid = a;
	w->n_avoid = 0;
	for (size_t i = 0; i < w->n_folders; i++) {
		const char *paths[2] = {w->folders[i]->cfg->output, w->folders[i]->cfg->done_dir};
		for (size_t k = 0; k < 2; k++) {
			struct stat st;
			if (stat(paths[k], &st) == 0 && S_ISDIR(st.st_mode))
				w->avoid[w->n_avoid++] = (struct watch_avoid){st.st_dev, st.st_ino};
		}
	}
}

static bool watch_is_avoided(const struct watch *w, const struct folder *f, const char *rel,
			     const struct stat *st)
{
	for (size_t i = 0; i < w->n_avoid; i++) {
		if (w->avoid[i].dev == st->st_dev && w->avoid[i].ino == st->st_ino) {
			log_warn("folder %s: \"%s\" is an output folder (reached through a mount or "
				 "a link); not scanned",
				 f->cfg->path, rel);
			return true;
		}
	}
	return false;
}

static void watch_offer(struct watch *w, struct folder *f, int dirfd, const char *name,
			const char *rel, enum watch_how how)
{
	struct stat st;
	int flags = f->cfg->follow_symlinks ? 0 : AT_SYMLINK_NOFOLLOW;

	if (!names_is_candidate_file(name) ||
	    names_is_excluded(rel, f->cfg->exclude, f->cfg->n_exclude))
		return;
	if (fstatat(dirfd, name, &st, flags) < 0)
		return; /* gone again already */
	if (!S_ISREG(st.st_mode))
		return; /* FIFOs, sockets, devices and unfollowed symlinks are never inputs */
	w->events->file(w->userdata, f, rel, &st, how);
}

static void watch_scan_entry(struct watch *w, struct folder *f, int dirfd, const char *rel,
			     struct dirent *de, unsigned depth)
{
	char *child = path_join(rel, de->d_name);
	unsigned char type = de->d_type;
	struct stat st;

	if (type == DT_UNKNOWN) {
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			goto out;
		type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
		if (S_ISLNK(st.st_mode))
			type = DT_LNK;
	}
	if (type == DT_DIR) {
		int sub;

		if (!f->cfg->recursive || names_is_ignored_dir(de->d_name) ||
		    names_is_excluded(child, f->cfg->exclude, f->cfg->n_exclude))
			goto out;
		sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0)
			goto out;
		if (fstat(sub, &st) < 0 || watch_is_avoided(w, f, child, &st)) {
			close(sub);
			goto out;
		}
		watch_add_dir(w, f, child);
		watch_scan_dir(w, f, sub, child, depth + 1); /* closes sub */
	} else if (type == DT_REG || type == DT_LNK) {
		watch_offer(w, f, dirfd, de->d_name, child, WATCH_SCAN);
	}
out:
	free(child);
}

/* Takes ownership of dirfd. */
static void watch_scan_dir(struct watch *w, struct folder *f, int dirfd, const char *rel,
			   unsigned depth)
{
	DIR *dir;
	struct dirent *de;

	if (depth > WATCH_DEPTH_MAX) {
		log_warn("folder %s: \"%s\" is nested too deep; not scanned", f->cfg->path, rel);
		close(dirfd);
		return;
	}
	dir = fdopendir(dirfd);
	if (!dir) {
		close(dirfd);
		return;
	}
	while ((de = readdir(dir))) {
		if (de->d_name[0] == '.')
			continue; /* ".", "..", hidden files and hidden folders */
		watch_scan_entry(w, f, dirfd, rel, de, depth);
	}
	closedir(dir);
}

static void watch_scan_folder(struct watch *w, struct folder *f, const char *rel)
{
	char *abs = rel[0] ? path_join(f->cfg->path, rel) : strdup(f->cfg->path);
	int fd;

	struct stat st;

	if (!abs)
		log_oom();
	fd = open(abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (rel[0] ? O_NOFOLLOW : 0));
	free(abs);
	if (fd < 0)
		return;
	watch_refresh_avoid(w);
	if (fstat(fd, &st) < 0 || watch_is_avoided(w, f, rel, &st)) {
		close(fd);
		return;
	}
	watch_scan_dir(w, f, fd, rel, 0);
}

static void watch_changed(struct watch *w, struct folder *f)
{
	if (w->events->changed)
		w->events->changed(w->userdata, f);
}

/* Pauses the folder (its watched folder or its output is not the one it was)
 * and looks again every few seconds. */
static void watch_folder_missing(struct watch *w, struct folder *f, const char *why)
{
	bool was = f->present, same = !strcmp(f->pause_reason, why);

	if (was || !same)
		log_warn("folder %s is paused (missing or away): %s; it resumes when it is back",
			 f->cfg->path, why);
	(void)snprintf(f->pause_reason, sizeof(f->pause_reason), "%s", why);
	f->present = false;
	watch_forget_subtree(w, f, "");
	f->root_wd = -1;
	if (w->inotify_fd >= 0)
		(void)loop_timer_arm(f->timer, WATCH_MISSING_RETRY);
	if (was || !same)
		watch_changed(w, f);
}

/* The watched folder as it is now, against what it was: <0 not usable (why
 * filled), 0 the same, 1 another directory (mounted again): scan it anew. An
 * empty mount point where a mount was is not the folder. */
static int watch_check_root(struct folder *f, char *why, size_t whylen)
{
	struct folder_id now = {0};
	bool changed;
	int r = folder_probe(f->cfg->path, &now);

	if (r < 0) {
		(void)snprintf(why, whylen, "%s %s", f->cfg->path,
			       r == -ENOTDIR ? "is not a directory" : strerror(-r));
		return -1;
	}
	if (f->root_id.known && f->root_id.mount_root && !now.mount_root) {
		(void)snprintf(why, whylen,
			       "%s is not mounted (an empty mount point on %s, where a mount was)",
			       f->cfg->path, now.mount);
		folder_id_clear(&now);
		return -1;
	}
	changed = !f->root_id.known || now.dev != f->root_id.dev || now.ino != f->root_id.ino;
	folder_id_clear(&f->root_id);
	f->root_id = now;
	return changed ? 1 : 0;
}

/* Checks a present folder; pauses it, or starts it over when it came back as
 * another directory. Returns whether it is (still) present. */
static bool watch_check_folder(struct watch *w, struct folder *f)
{
	char why[sizeof(f->pause_reason)];
	int r = watch_check_root(f, why, sizeof(why));

	if (r >= 0 && !folder_output_check(f, why, sizeof(why)))
		r = -1;
	if (r < 0) {
		watch_folder_missing(w, f, why);
		return false;
	}
	if (r > 0 || f->index_stale) {
		log_info("folder %s: it or its output is another directory than before (mounted "
			 "again?); reading its records and scanning it anew",
			 f->cfg->path);
		watch_forget_subtree(w, f, "");
		f->root_wd = -1;
		watch_start_folder(w, f);
		return false; /* scanned already */
	}
	return true;
}

/* Sets the folder up if it is there: mode, watches, first scan. */
static void watch_start_folder(struct watch *w, struct folder *f)
{
	char why[sizeof(f->pause_reason)];
	const char *fs_name;
	bool remote, was = f->present;
	int r;

	if (watch_check_root(f, why, sizeof(why)) < 0 || !folder_output_check(f, why, sizeof(why))) {
		watch_folder_missing(w, f, why);
		return;
	}
	if (f->index_stale) {
		/* The output is another directory than the records came from. */
		r = folder_reload_index(f);
		if (r < 0) {
			(void)snprintf(why, sizeof(why), "cannot read the output %s: %s",
				       f->cfg->output, strerror(-r));
			watch_folder_missing(w, f, why);
			return;
		}
	}
	if (!was)
		log_info("folder %s is present", f->cfg->path);
	f->present = true;
	f->pause_reason[0] = '\0';
	remote = watch_is_remote_fs(f->cfg->path, &fs_name);
	if (w->inotify_fd < 0) {
		f->polling = false;
	} else if (f->cfg->mode == FOLDER_MODE_POLL || (f->cfg->mode == FOLDER_MODE_AUTO && remote)) {
		f->polling = true;
		log_info("folder %s: polling every %llu ms (%s)", f->cfg->path,
			 (unsigned long long)f->cfg->poll_interval_ms,
			 f->cfg->mode == FOLDER_MODE_POLL ? "mode: poll"
							  : "remote filesystem, no inotify events");
	} else {
		f->polling = false;
		log_info("folder %s: inotify (%s%s filesystem)", f->cfg->path,
			 f->cfg->mode == FOLDER_MODE_INOTIFY ? "mode: inotify, " : "", fs_name);
		watch_add_dir(w, f, "");
	}
	watch_scan_folder(w, f, "");
	if (f->polling)
		(void)loop_timer_arm(f->timer, f->cfg->poll_interval_ms);
	if (!was)
		watch_changed(w, f);
}

static void watch_folder_timer(void *userdata)
{
	struct folder *f = userdata;
	struct watch *w = f->watch;

	if (!f->present) {
		watch_start_folder(w, f);
		return;
	}
	if (f->polling) {
		if (!watch_check_folder(w, f))
			return; /* paused (looked at again soon), or started over */
		watch_scan_folder(w, f, "");
		(void)loop_timer_arm(f->timer, f->cfg->poll_interval_ms);
	}
}

/* A share can go away without an inotify event reaching us (a lazy unmount
 * with files still open, NFS that stops answering): look every few seconds. */
static void watch_health_timer(void *userdata)
{
	struct watch *w = userdata;

	for (size_t i = 0; i < w->n_folders; i++) {
		struct folder *f = w->folders[i];
		if (!f->removed && f->present)
			(void)watch_check_folder(w, f);
	}
	(void)loop_timer_arm(w->health_timer, WATCH_HEALTH_PERIOD);
}

static void watch_handle_event(struct watch *w, const struct inotify_event *ev)
{
	struct watch_dir *d;
	struct folder *f;
	char *rel;

	if (ev->mask & IN_Q_OVERFLOW) {
		log_warn("inotify queue overflowed; rescanning every folder");
		watch_rescan(w, w->folders, w->n_folders);
		return;
	}
	d = watch_find_wd(w, ev->wd);
	if (!d)
		return;
	f = d->folder;
	if (ev->mask & IN_IGNORED) {
		bool root = d->rel[0] == '\0';
		watch_forget_dir(w, (size_t)(d - w->dirs));
		if (root && f->present)
			watch_folder_missing(w, f, "removed or unmounted");
		return;
	}
	if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
		if (d->rel[0] == '\0')
			watch_folder_missing(w, f, "removed or moved away");
		return;
	}
	if (ev->len == 0 || ev->name[0] == '.')
		return;
	rel = path_join(d->rel, ev->name);
	if ((ev->mask & IN_ISDIR) && (ev->mask & IN_MOVED_FROM)) {
		/* Renamed within the folder or moved away: its watches name the old
		 * path. Drop them; a rename brings an IN_MOVED_TO that adds it anew. */
		watch_forget_subtree(w, f, rel);
	} else if (ev->mask & IN_ISDIR) {
		if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) && f->cfg->recursive &&
		    !names_is_ignored_dir(ev->name) &&
		    !names_is_excluded(rel, f->cfg->exclude, f->cfg->n_exclude)) {
			char *abs = path_join(f->cfg->path, rel);
			struct stat st;
			bool skip;

			if (!abs)
				log_oom();
			watch_refresh_avoid(w);
			skip = stat(abs, &st) < 0 || watch_is_avoided(w, f, rel, &st);
			free(abs);
			/* Watch first, then scan: a file landing in between is seen twice,
			 * never missed, and the job table folds the two. */
			if (!skip) {
				watch_add_dir(w, f, rel);
				watch_scan_folder(w, f, rel);
			}
		}
	} else if (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO)) {
		char *dir = d->rel[0] ? path_join(f->cfg->path, d->rel) : strdup(f->cfg->path);
		int dirfd;

		if (!dir)
			log_oom();
		dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		free(dir);
		if (dirfd >= 0) {
			watch_offer(w, f, dirfd, ev->name, rel,
				    (ev->mask & IN_MOVED_TO) ? WATCH_MOVED : WATCH_CLOSED);
			close(dirfd);
		}
	} else if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
		if (names_is_candidate_file(ev->name))
			w->events->removed(w->userdata, f, rel);
	}
	free(rel);
}

static void watch_inotify_ready(int fd, uint32_t events, void *userdata)
{
	struct watch *w = userdata;
	char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));

	(void)events;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			return; /* EAGAIN: drained */
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
			watch_handle_event(w, ev);
			p += sizeof(*ev) + ev->len;
		}
	}
}

int watch_new(struct loop *loop, bool use_inotify, const struct watch_events *events,
	      void *userdata, struct watch **ret_watch)
{
	struct watch *w = calloc(1, sizeof(*w));
	int r;

	if (!w)
		return -ENOMEM;
	w->loop = loop;
	w->events = events;
	w->userdata = userdata;
	w->inotify_fd = -1;
	if (use_inotify) {
		w->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
		if (w->inotify_fd < 0) {
			r = -errno;
			free(w);
			return r;
		}
		r = loop_add(loop, w->inotify_fd, EPOLLIN, watch_inotify_ready, w, &w->source);
		if (r < 0) {
			close(w->inotify_fd);
			free(w);
			return r;
		}
		r = loop_timer_new(loop, watch_health_timer, w, &w->health_timer);
		if (r < 0) {
			loop_remove(loop, w->source);
			close(w->inotify_fd);
			free(w);
			return r;
		}
		(void)loop_timer_arm(w->health_timer, WATCH_HEALTH_PERIOD);
	}
	*ret_watch = w;
	return 0;
}

void watch_free(struct watch *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n_dirs; i++)
		free(w->dirs[i].rel);
	free(w->dirs);
	free(w->folders);
	free(w->avoid);
	if (w->health_timer)
		loop_timer_free(w->loop, w->health_timer);
	if (w->inotify_fd >= 0) {
		loop_remove(w->loop, w->source);
		close(w->inotify_fd);
	}
	free(w);
}

int watch_add_folder(struct watch *w, struct folder *f)
{
	struct folder **fs = reallocarray(w->folders, w->n_folders + 1, sizeof(*fs));
	int r;

	if (!fs)
		return -ENOMEM;
	w->folders = fs;
	w->folders[w->n_folders++] = f;
	f->watch = w;
	f->root_wd = -1;
	f->present = true; /* so that a missing folder is logged once */
	r = loop_timer_new(w->loop, watch_folder_timer, f, &f->timer);
	if (r < 0)
		return r;
	watch_start_folder(w, f);
	return 0;
}

void watch_remove_folder(struct watch *w, struct folder *f)
{
	watch_forget_subtree(w, f, "");
	for (size_t i = 0; i < w->n_folders; i++) {
		if (w->folders[i] == f) {
			w->folders[i] = w->folders[--w->n_folders];
			break;
		}
	}
	loop_timer_free(w->loop, f->timer);
	f->timer = NULL;
}

void watch_rescan(struct watch *w, struct folder **folders, size_t n_folders)
{
	for (size_t i = 0; i < n_folders; i++) {
		struct folder *f = folders[i];
		if (f->removed)
			continue;
		if (!f->present) {
			watch_start_folder(w, f);
			continue;
		}
		if (!watch_check_folder(w, f))
			continue; /* paused, or started over with a scan */
		if (f->polling) {
			watch_scan_folder(w, f, "");
			continue;
		}
		/* Re-adding watches is idempotent; it also picks up missed subfolders. */
		watch_add_dir(w, f, "");
		watch_scan_folder(w, f, "");
	}
}
