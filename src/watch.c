/* watch: finds candidate files in the watched folders. The loop thread reads
 * inotify events and decides; every look at the storage (directory scans, the
 * stat of a new file, inotify_add_watch, the health checks of a folder and its
 * output, statfs) runs on the watch's own worker pool, because on a share
 * that stops answering each of them can block for as long as it likes.
 *
 * Per folder and per kind (scan, health) at most one request is under way;
 * what is asked for meanwhile is gathered and sent as the next one, so a hung
 * share holds at most one worker per kind and timers never pile requests up.
 * A request is self-contained (paths and globs copied): a reload may replace
 * the config, and a folder removed meanwhile detaches its requests, whose
 * completions then only free them. */
#include "watch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "dirlist.h"
#include "log.h"
#include "names.h"
#include "work.h"

#define WATCH_DEPTH_MAX      64
#define WATCH_MISSING_RETRY  5000 /* ms between looks for a missing folder */
#define WATCH_HEALTH_PERIOD  5000 /* ms between checks that folders and outputs are still theirs */
#define WATCH_STALL_MS       10000 /* a look without progress this long: "not answering" */
/* Two kinds of request per folder: a hung share holds two workers, and the
 * others keep serving the other folders. */
#define WATCH_THREADS        4
#define WATCH_HELD_EVENTS_MAX (1024 * 1024) /* bytes of events held for watches not known yet */
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

/* A file found (or to be looked at), relative to its folder. */
struct watch_found {
	char *rel;
	struct stat st;
	enum watch_how how;
};

/* A directory a worker put an inotify watch on (wd), or failed to (err). */
struct watch_wd {
	char *rel;
	int wd;
	int err;
};

struct watch_slot;

/* A walk of subtrees and stats of single files, on a worker. */
struct watch_scan {
	struct watch *w;
	struct watch_slot *slot; /* NULL once detached (folder removed) */
	uint64_t submitted_at;
	_Atomic uint64_t progress_at; /* written by the worker as it goes */
	/* The request. */
	char *root;
	char **exclude;
	size_t n_exclude;
	char **avoid; /* every folder's output and done_dir: never scanned as input */
	size_t n_avoid;
	bool recursive, follow_symlinks;
	bool group;	    /* group: subfolder: its immediate subfolders are walked too */
	char *group_marker; /* with group_ready: marker, the marker's name; else NULL */
	int inotify_fd; /* -1: no watches (polling) */
	char **subs;    /* subtrees to walk, "" the whole folder */
	size_t n_subs;
	struct watch_found *files; /* single files to stat (st filled in) */
	size_t n_files;
	/* The result. */
	struct stat *avoid_st;
	size_t n_avoid_st;
	struct watch_found *found;
	size_t n_found, cap_found;
	struct watch_wd *wds;
	size_t n_wds, cap_wds;
	char **notes; /* for the log */
	size_t n_notes, cap_notes;
	bool oom;
};

/* Whether a folder and its output are still theirs, on a worker. */
struct watch_health {
	struct watch *w;
	struct watch_slot *slot;
	uint64_t submitted_at;
	char *root, *output, *id_file;
	int root_r;
	struct folder_id root_now;
	struct folder_output_seen out;
	bool remote;
	const char *fs_name;
};

/* The watch's side of one folder. */
struct watch_slot {
	struct folder *folder;
	struct watch_scan *scan;     /* under way, or NULL */
	struct watch_health *health; /* under way, or NULL */
	bool need_start;             /* the next health result sets the folder up (first, back) */
	bool scan_after_health;      /* scan in full once the folder checks out */
	/* Asked for while a scan is under way: the next scan. */
	bool want_full;
	char **want_subs;
	size_t n_want_subs;
	struct watch_found *want_files;
	size_t n_want_files;
};

struct watch {
	struct loop *loop;
	const struct watch_events *events;
	void *userdata;
	int inotify_fd; /* -1 without inotify */
	struct loop_source *source;
	struct work_pool *pool; /* NULL (--once): requests run inline */
	struct watch_dir *dirs;
	size_t n_dirs, cap_dirs;
	struct watch_slot **slots;
	size_t n_slots;
	/* Events for watches a scan under way has added but not handed over
	 * yet: kept, and handled once it has. */
	size_t scans_under_way;
	char *held;
	size_t n_held;
	bool held_overflow;
	struct loop_timer *health_timer;
	bool warned_limit;
};

static void watch_folder_timer(void *userdata);
static void watch_scan_done(void *arg, bool cancelled);
static void watch_request_health(struct watch *w, struct watch_slot *slot);

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
/* ---- on a worker: no logging, no folder state ---------------------------- */

static char *join_or_null(const char *a, const char *b)
{
	char *p;

	if (asprintf(&p, "%s%s%s", a, a[0] && b[0] ? "/" : "", b) < 0)
		return NULL;
	return p;
}

/* arr with room for element n (cap elements now), grown if need be; NULL
 * without memory (arr untouched). */
static void *grow(void *arr, size_t *cap, size_t n, size_t size)
{
	size_t want;
	void *bigger;

	if (n < *cap)
		return arr;
	want = *cap ? *cap * 2 : 16;
	bigger = reallocarray(arr, want, size);
	if (bigger)
		*cap = want;
	return bigger;
}

static void scan_progress(struct watch_scan *s)
{
	atomic_store_explicit(&s->progress_at, loop_now_ms(), memory_order_relaxed);
}

static void scan_note(struct watch_scan *s, const char *fmt, const char *rel)
{
	char **notes = grow(s->notes, &s->cap_notes, s->n_notes, sizeof(*s->notes));
	char *note;

	if (!notes) {
		s->oom = true;
		return;
	}
	s->notes = notes;
	if (asprintf(&note, fmt, rel) < 0) {
		s->oom = true;
		return;
	}
	s->notes[s->n_notes++] = note;
}

static bool scan_is_avoided(struct watch_scan *s, const char *rel, const struct stat *st)
{
	for (size_t i = 0; i < s->n_avoid_st; i++) {
		if (s->avoid_st[i].st_dev == st->st_dev && s->avoid_st[i].st_ino == st->st_ino) {
			scan_note(s,
				  "\"%s\" is an output folder (reached through a mount or a link); "
				  "not scanned",
				  rel);
			return true;
		}
	}
	return false;
}

static void scan_found(struct watch_scan *s, const char *rel, const struct stat *st,
		       enum watch_how how)
{
	struct watch_found *found = grow(s->found, &s->cap_found, s->n_found, sizeof(*s->found));
	char *copy = strdup(rel);

	if (found)
		s->found = found;
	if (!found || !copy) {
		free(copy);
		s->oom = true;
		return;
	}
	s->found[s->n_found++] = (struct watch_found){copy, *st, how};
}

/* Watch first, then read: a file landing in between is seen twice, never
 * missed, and the job table folds the two. */
static void scan_add_watch(struct watch_scan *s, const char *rel)
{
	struct watch_wd *wds;
	char *abs, *copy;
	int wd;

	if (s->inotify_fd < 0)
		return;
	abs = join_or_null(s->root, rel);
	copy = strdup(rel);
	wds = grow(s->wds, &s->cap_wds, s->n_wds, sizeof(*s->wds));
	if (wds)
		s->wds = wds;
	if (!abs || !copy || !wds) {
		free(abs);
		free(copy);
		s->oom = true;
		return;
	}
	wd = inotify_add_watch(s->inotify_fd, abs, WATCH_DIR_MASK);
	s->wds[s->n_wds++] = (struct watch_wd){copy, wd, wd < 0 ? errno : 0};
	free(abs);
}

static void scan_dir(struct watch_scan *s, int dirfd, const char *rel, unsigned depth);

/* A group's marker file: hidden by name, but a candidate in a group's
 * subfolder (rel, at depth 1). */
static bool watch_is_marker(const char *marker, const char *rel, const char *name)
{
	return marker && rel[0] && !strchr(rel, '/') && !strcmp(name, marker);
}

static void scan_entry(struct watch_scan *s, int dirfd, const char *rel, const char *name,
		       unsigned char type, unsigned depth)
{
	char *child = join_or_null(rel, name);
	struct stat st;

	if (!child) {
		s->oom = true;
		return;
	}
	if (type == DT_DIR) {
		int sub;

		if (!(s->recursive || (s->group && rel[0] == '\0')) || names_is_ignored_dir(name) ||
		    names_is_excluded(child, s->exclude, s->n_exclude))
			goto out;
		sub = dirlist_open_sub(dirfd, name);
		if (sub < 0)
			goto out;
		if (fstat(sub, &st) < 0 || scan_is_avoided(s, child, &st)) {
			close(sub);
			goto out;
		}
		scan_add_watch(s, child);
		scan_dir(s, sub, child, depth + 1); /* closes sub */
	} else if (type == DT_REG || type == DT_LNK) {
		int flags = s->follow_symlinks ? 0 : AT_SYMLINK_NOFOLLOW;

		if (!(names_is_candidate_file(name) ||
		      watch_is_marker(s->group_marker, rel, name)) ||
		    names_is_excluded(child, s->exclude, s->n_exclude))
			goto out;
		/* Gone again already, or not a regular file: FIFOs, sockets, devices
		 * and unfollowed symlinks are never inputs. */
		if (fstatat(dirfd, name, &st, flags) == 0 && S_ISREG(st.st_mode))
			scan_found(s, child, &st, WATCH_SCAN);
	}
out:
	free(child);
}

/* Takes ownership of dirfd. */
static void scan_dir(struct watch_scan *s, int dirfd, const char *rel, unsigned depth)
{
	struct dirlist list;
	const char *name;
	unsigned char type;

	if (depth > WATCH_DEPTH_MAX) {
		scan_note(s, "\"%s\" is nested too deep; not scanned", rel);
		close(dirfd);
		return;
	}
	if (dirlist_open(&list, dirfd) < 0)
		return;
	while (!s->oom && (name = dirlist_next(&list, &type, NULL))) {
		scan_progress(s);
		if (name[0] == '.' && !watch_is_marker(s->group_marker, rel, name))
			continue; /* hidden files and hidden folders */
		scan_entry(s, dirfd, rel, name, type, depth);
	}
	dirlist_close(&list);
}

static void scan_subtree(struct watch_scan *s, const char *rel)
{
	char *abs = join_or_null(s->root, rel);
	struct stat st;
	int fd;

	if (!abs) {
		s->oom = true;
		return;
	}
	fd = open(abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (rel[0] ? O_NOFOLLOW : 0));
	free(abs);
	if (fd < 0)
		return;
	if (fstat(fd, &st) < 0 || scan_is_avoided(s, rel, &st)) {
		close(fd);
		return;
	}
	scan_add_watch(s, rel);
	scan_dir(s, fd, rel, 0);
}

static void watch_scan_run(void *arg)
{
	struct watch_scan *s = arg;
	int flags = s->follow_symlinks ? 0 : AT_SYMLINK_NOFOLLOW;

	/* Where every output and done_dir is now: a scan must not take results
	 * for inputs even when a bind mount or a link the config cannot see puts
	 * an output inside a watched tree. */
	s->avoid_st = calloc(s->n_avoid ? s->n_avoid : 1, sizeof(*s->avoid_st));
	if (!s->avoid_st) {
		s->oom = true;
		return;
	}
	for (size_t i = 0; i < s->n_avoid; i++) {
		struct stat st;
		if (stat(s->avoid[i], &st) == 0 && S_ISDIR(st.st_mode))
			s->avoid_st[s->n_avoid_st++] = st;
		scan_progress(s);
	}
	for (size_t i = 0; i < s->n_subs && !s->oom; i++)
		scan_subtree(s, s->subs[i]);
	for (size_t i = 0; i < s->n_files && !s->oom; i++) {
		struct watch_found *file = &s->files[i];
		char *abs = join_or_null(s->root, file->rel);
		struct stat st;

		if (!abs) {
			s->oom = true;
			break;
		}
		if (fstatat(AT_FDCWD, abs, &st, flags) == 0 && S_ISREG(st.st_mode))
			scan_found(s, file->rel, &st, file->how);
		free(abs);
		scan_progress(s);
	}
}

static void watch_health_run(void *arg)
{
	struct watch_health *h = arg;

	h->root_r = folder_probe(h->root, &h->root_now);
	folder_output_look(h->output, h->id_file, &h->out);
	h->remote = watch_is_remote_fs(h->root, &h->fs_name);
}

/* ---- requests: building, sending, freeing (loop thread) ------------------ */

static char *path_join(const char *a, const char *b)
{
	char *p = join_or_null(a, b);

	if (!p)
		log_oom();
	return p;
}

static char *xstrdup(const char *s)
{
	char *copy = strdup(s);

	if (!copy)
		log_oom();
	return copy;
}

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void found_free(struct watch_found *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].rel);
	free(v);
}

static void watch_scan_free(struct watch_scan *s)
{
	free(s->root);
	free(s->group_marker);
	strv_free(s->exclude, s->n_exclude);
	strv_free(s->avoid, s->n_avoid);
	strv_free(s->subs, s->n_subs);
	found_free(s->files, s->n_files);
	free(s->avoid_st);
	found_free(s->found, s->n_found);
	for (size_t i = 0; i < s->n_wds; i++)
		free(s->wds[i].rel);
	free(s->wds);
	strv_free(s->notes, s->n_notes);
	free(s);
}

static void watch_health_free(struct watch_health *h)
{
	free(h->root);
	free(h->output);
	free(h->id_file);
	folder_id_clear(&h->root_now);
	folder_id_clear(&h->out.id);
	free(h);
}

/* To the pool, or (--once, no pool) right here: a batch run has no loop to
 * keep answering while it scans. */
static void watch_submit(struct watch *w, work_fn fn, work_done_fn done, void *arg)
{
	if (!w->pool) {
		fn(arg);
		done(arg, false);
		return;
	}
	if (work_submit(w->pool, fn, done, arg) < 0)
		log_oom(); /* -ESHUTDOWN only while the watch is freed, when nothing asks */
}

static struct watch_slot *watch_slot_of(const struct watch *w, const struct folder *f)
{
	for (size_t i = 0; i < w->n_slots; i++)
		if (w->slots[i]->folder == f)
			return w->slots[i];
	return NULL;
}

static void watch_changed(struct watch *w, struct folder *f)
{
	if (w->events->changed)
		w->events->changed(w->userdata, f);
}

/* Since when the folder's oldest look under way has made no progress (0: none under way). */
static uint64_t watch_slot_quiet_since(const struct watch_slot *slot)
{
	const struct folder *f = slot->folder;
	uint64_t since = 0;

	if (slot->scan) {
		uint64_t p = atomic_load_explicit(&slot->scan->progress_at, memory_order_relaxed);
		since = p > slot->scan->submitted_at ? p : slot->scan->submitted_at;
	}
	if (slot->health && (!since || slot->health->submitted_at < since))
		since = slot->health->submitted_at;
	/* Its done records read on a worker (by the watch or a reload's intake):
	 * a long read that goes on is not a storage that hangs. */
	if (f->records_loading_since) {
		uint64_t r = f->records_loading_since, p = 0;
		if (f->records_progress_at)
			p = atomic_load_explicit(f->records_progress_at, memory_order_relaxed);
		if (p > r)
			r = p;
		if (!since || r < since)
			since = r;
	}
	return since;
}

/* Says when a folder's storage stops answering and when it answers again;
 * while it does not, reports again (STATUS= counts the seconds). */
static void watch_update_stall(struct watch *w, struct watch_slot *slot, uint64_t now)
{
	struct folder *f = slot->folder;
	uint64_t since = watch_slot_quiet_since(slot);
	/* A worker's progress stamp may be newer than now. */
	bool stalled = since && now > since && now - since >= WATCH_STALL_MS;
	bool was = f->look_stalled_since != 0;

	if (stalled && !was)
		log_warn("folder %s: its storage has not answered for %llu s (a share that hangs?); "
			 "it is looked at again once it answers",
			 f->cfg->path, (unsigned long long)(now - since) / 1000);
	else if (!stalled && was)
		log_info("folder %s: its storage answers again", f->cfg->path);
	f->look_stalled_since = stalled ? since : 0;
	if ((stalled || was) && w->events->stalled)
		w->events->stalled(w->userdata, f);
}

/* Sends what the folder wants scanned, unless a scan of it is under way. */
static void watch_send_scan(struct watch *w, struct watch_slot *slot)
{
	struct folder *f = slot->folder;
	struct watch_scan *s;
	size_t n_avoid = 0;

	if (slot->scan || (!slot->want_full && !slot->n_want_subs && !slot->n_want_files))
		return;
	s = calloc(1, sizeof(*s));
	if (!s)
		log_oom();
	s->w = w;
	s->slot = slot;
	s->submitted_at = loop_now_ms();
	s->root = xstrdup(f->cfg->path);
	s->recursive = f->cfg->recursive;
	s->group = f->cfg->group == GROUP_SUBFOLDER;
	if (s->group && f->cfg->group_ready == GROUP_READY_MARKER)
		s->group_marker = xstrdup(f->cfg->group_marker);
	s->follow_symlinks = f->cfg->follow_symlinks;
	s->inotify_fd = f->polling ? -1 : w->inotify_fd;
	s->exclude = calloc(f->cfg->n_exclude + 1, sizeof(*s->exclude));
	s->avoid = calloc(2 * w->n_slots + 1, sizeof(*s->avoid));
	if (!s->exclude || !s->avoid)
		log_oom();
	for (; s->n_exclude < f->cfg->n_exclude; s->n_exclude++)
		s->exclude[s->n_exclude] = xstrdup(f->cfg->exclude[s->n_exclude]);
	for (size_t i = 0; i < w->n_slots; i++) {
		const struct folder_config *c = w->slots[i]->folder->cfg;
		if (c->output)
			s->avoid[n_avoid++] = xstrdup(c->output);
		if (c->done_dir)
			s->avoid[n_avoid++] = xstrdup(c->done_dir);
	}
	s->n_avoid = n_avoid;
	if (slot->want_full) {
		/* The whole folder covers every subtree asked for. */
		strv_free(slot->want_subs, slot->n_want_subs);
		s->subs = calloc(1, sizeof(*s->subs));
		if (!s->subs)
			log_oom();
		s->subs[0] = xstrdup("");
		s->n_subs = 1;
	} else {
		s->subs = slot->want_subs;
		s->n_subs = slot->n_want_subs;
	}
	s->files = slot->want_files;
	s->n_files = slot->n_want_files;
	slot->want_full = false;
	slot->want_subs = NULL;
	slot->n_want_subs = 0;
	slot->want_files = NULL;
	slot->n_want_files = 0;
	slot->scan = s;
	w->scans_under_way++;
	watch_submit(w, watch_scan_run, watch_scan_done, s);
}

static void watch_want_full_scan(struct watch *w, struct watch_slot *slot)
{
	slot->want_full = true;
	watch_send_scan(w, slot);
}

static void watch_want_subtree(struct watch *w, struct watch_slot *slot, const char *rel)
{
	char **subs = reallocarray(slot->want_subs, slot->n_want_subs + 1, sizeof(*subs));

	if (!subs)
		log_oom();
	slot->want_subs = subs;
	slot->want_subs[slot->n_want_subs++] = xstrdup(rel);
	watch_send_scan(w, slot);
}

static void watch_want_file(struct watch *w, struct watch_slot *slot, const char *rel,
			    enum watch_how how)
{
	struct watch_found *files =
	    reallocarray(slot->want_files, slot->n_want_files + 1, sizeof(*files));

	if (!files)
		log_oom();
	slot->want_files = files;
	slot->want_files[slot->n_want_files++] = (struct watch_found){.rel = xstrdup(rel), .how = how};
	watch_send_scan(w, slot);
}

static void watch_health_done(void *arg, bool cancelled);

static void watch_request_health(struct watch *w, struct watch_slot *slot)
{
	struct folder *f = slot->folder;
	struct watch_health *h;
	char file[PATH_MAX + 64];

	if (slot->health)
		return; /* its answer serves this ask too */
	h = calloc(1, sizeof(*h));
	if (!h)
		log_oom();
	folder_output_id_file(f, file, sizeof(file));
	h->w = w;
	h->slot = slot;
	h->submitted_at = loop_now_ms();
	h->root = xstrdup(f->cfg->path);
	h->output = xstrdup(f->cfg->output);
	h->id_file = xstrdup(file);
	slot->health = h;
	watch_submit(w, watch_health_run, watch_health_done, h);
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

/* Takes a watch a worker added into the table. */
static void watch_keep_dir(struct watch *w, struct folder *f, const char *rel, int wd)
{
	struct watch_dir *d;

	if (!rel[0])
		f->root_wd = wd;
	d = watch_find_wd(w, wd);
	if (d) {
		/* The same directory again: a rescan, or under a new name. */
		if (strcmp(d->rel, rel) != 0) {
			free(d->rel);
			d->rel = xstrdup(rel);
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
	w->dirs[w->n_dirs].rel = xstrdup(rel);
	w->n_dirs++;
}

/* The watches of a scan whose folder no longer wants them. A wd the table
 * knows is another folder's watch of the same directory: kept. */
static void watch_drop_wds(struct watch *w, const struct watch_scan *s, size_t from)
{
	for (size_t i = from; i < s->n_wds; i++)
		if (s->wds[i].wd >= 0 && !watch_find_wd(w, s->wds[i].wd))
			(void)inotify_rm_watch(w->inotify_fd, s->wds[i].wd);
}

static void watch_handle_event(struct watch *w, const struct inotify_event *ev);

/* Handles the events held for watches not known yet that now are; drops the
 * rest once no scan can still hand them over. */
static void watch_replay_held(struct watch *w)
{
	char *held = w->held;
	size_t n = w->n_held;
	bool overflow = w->held_overflow;

	if (overflow && w->scans_under_way)
		return; /* a rescan of everything once the scans are in */
	w->held = NULL;
	w->n_held = 0;
	w->held_overflow = false;
	if (overflow) {
		free(held);
		log_warn("too many inotify events while scans were under way; rescanning every "
			 "folder");
		for (size_t i = 0; i < w->n_slots; i++)
			watch_rescan(w, &w->slots[i]->folder, 1);
		return;
	}
	for (size_t off = 0; off < n;) {
		const struct inotify_event *ev = (const struct inotify_event *)(void *)(held + off);
		watch_handle_event(w, ev); /* holds it again if still unknown and scans run */
		off += sizeof(*ev) + ev->len;
	}
	free(held);
}

static void watch_scan_done(void *arg, bool cancelled)
{
	struct watch_scan *s = arg;
	struct watch *w = s->w;
	struct watch_slot *slot = s->slot;
	struct folder *f;
	size_t i = 0;

	if (!slot) {
		if (w->inotify_fd >= 0)
			watch_drop_wds(w, s, 0);
		watch_scan_free(s);
		return;
	}
	f = slot->folder;
	slot->scan = NULL;
	w->scans_under_way--;
	if (s->oom)
		log_oom();
	(void)cancelled; /* only when the watch is freed, after every folder detached */
	for (size_t k = 0; k < s->n_notes; k++)
		log_warn("folder %s: %s", f->cfg->path, s->notes[k]);
	/* The folder may have gone away, or fallen back to polling, meanwhile. */
	if (f->present && !f->polling && w->inotify_fd >= 0) {
		for (; i < s->n_wds; i++) {
			const struct watch_wd *d = &s->wds[i];
			if (d->wd >= 0) {
				watch_keep_dir(w, f, d->rel, d->wd);
			} else if (d->err == ENOSPC) {
				watch_fall_back_to_polling(w, f);
				break;
			} else {
				log_warn("folder %s: cannot watch \"%s\": %s", f->cfg->path, d->rel,
					 strerror(d->err));
			}
		}
	}
	if (w->inotify_fd >= 0)
		watch_drop_wds(w, s, i);
	if (f->present)
		for (size_t k = 0; k < s->n_found; k++)
			w->events->file(w->userdata, f, s->found[k].rel, &s->found[k].st,
					s->found[k].how);
	watch_update_stall(w, slot, loop_now_ms());
	watch_scan_free(s);
	watch_replay_held(w);
	watch_send_scan(w, slot);
}

/* ---- folder health (loop thread) ----------------------------------------- */

/* Pauses the folder (its watched folder or its output is not the one it was)
 * and looks again every few seconds. */
static void watch_folder_missing(struct watch *w, struct folder *f, const char *why)
{
	struct watch_slot *slot = watch_slot_of(w, f);
	bool was = f->present, same = !strcmp(f->pause_reason, why);

	if (was || !same)
		log_warn("folder %s is paused (missing or away): %s; it resumes when it is back",
			 f->cfg->path, why);
	(void)snprintf(f->pause_reason, sizeof(f->pause_reason), "%s", why);
	f->present = false;
	if (slot) {
		slot->need_start = true;
		slot->scan_after_health = false;
	}
	watch_forget_subtree(w, f, "");
	f->root_wd = -1;
	if (w->inotify_fd >= 0)
		(void)loop_timer_arm(f->timer, WATCH_MISSING_RETRY);
	if (was || !same)
		watch_changed(w, f);
}

/* The watched folder as a worker found it, against what it was: <0 not
 * usable (why filled), 0 the same, 1 another directory (mounted again): scan
 * it anew. An empty mount point where a mount was is not the folder. Takes
 * over now. */
static int watch_judge_root(struct folder *f, int probe_r, struct folder_id *now, char *why,
			    size_t whylen)
{
	bool changed;

	if (probe_r < 0) {
		(void)snprintf(why, whylen, "%s %s", f->cfg->path,
			       probe_r == -ENOTDIR ? "is not a directory" : strerror(-probe_r));
		return -1;
	}
	if (f->root_id.known && f->root_id.mount_root && !now->mount_root) {
		(void)snprintf(why, whylen,
			       "%s is not mounted (an empty mount point on %s, where a mount was)",
			       f->cfg->path, now->mount);
		folder_id_clear(now);
		return -1;
	}
	changed = !f->root_id.known || now->dev != f->root_id.dev || now->ino != f->root_id.ino;
	folder_id_clear(&f->root_id);
	f->root_id = *now;
	*now = (struct folder_id){0};
	return changed ? 1 : 0;
}

/* The done records of a folder whose output changed are read again (or the
 * output was reconfigured meanwhile, -ESTALE): look at it afresh, which starts
 * it now that index_stale is clear. A folder dropped meanwhile has no slot. */
static void watch_index_reloaded(struct folder *f, int result, void *userdata)
{
	struct watch *w = userdata;
	struct watch_slot *slot = watch_slot_of(w, f);
	char why[sizeof(f->pause_reason)];

	if (!slot || result == -ECANCELED)
		return;
	if (result < 0 && result != -ESTALE) {
		(void)snprintf(why, sizeof(why), "cannot read the output %s: %s", f->cfg->output,
			       strerror(-result));
		watch_folder_missing(w, f, why);
		return;
	}
	if (result == 0 && w->events->records_read)
		w->events->records_read(w->userdata, f);
	slot->need_start = true;
	watch_request_health(w, slot);
}

/* Sets up a folder that checked out: mode, watches and a first full scan. */
static void watch_start_folder(struct watch *w, struct watch_slot *slot,
			       const struct watch_health *h)
{
	struct folder *f = slot->folder;
	char why[sizeof(f->pause_reason)];
	bool was = f->present;
	int r;

	if (f->index_reloading)
		return; /* watch_index_reloaded looks again */
	if (f->index_stale) {
		/* The output is another directory than the records came from.
		 * Reading a whole tree of sidecars may take long on a share: on
		 * the watch's workers, the folder staying paused meanwhile. */
		r = w->pool ? folder_reload_index_async(f, w->pool, watch_index_reloaded, w)
			    : folder_reload_index(f);
		if (r >= 0 && w->pool)
			return;
		if (r < 0) {
			(void)snprintf(why, sizeof(why), "cannot read the output %s: %s",
				       f->cfg->output, strerror(-r));
			watch_folder_missing(w, f, why);
			return;
		}
		if (w->events->records_read)
			w->events->records_read(w->userdata, f);
	}
	if (!was)
		log_info("folder %s is present", f->cfg->path);
	f->present = true;
	f->pause_reason[0] = '\0';
	slot->need_start = false;
	slot->scan_after_health = false;
	if (w->inotify_fd < 0) {
		f->polling = false;
	} else if (f->cfg->mode == FOLDER_MODE_POLL ||
		   (f->cfg->mode == FOLDER_MODE_AUTO && h->remote)) {
		f->polling = true;
		log_info("folder %s: polling every %llu ms (%s)", f->cfg->path,
			 (unsigned long long)f->cfg->poll_interval_ms,
			 f->cfg->mode == FOLDER_MODE_POLL ? "mode: poll"
							  : "remote filesystem, no inotify events");
	} else {
		f->polling = false;
		log_info("folder %s: inotify (%s%s filesystem)", f->cfg->path,
			 f->cfg->mode == FOLDER_MODE_INOTIFY ? "mode: inotify, " : "", h->fs_name);
	}
	/* With inotify, the scan watches the root and every directory before
	 * reading it. */
	watch_want_full_scan(w, slot);
	if (f->polling)
		(void)loop_timer_arm(f->timer, f->cfg->poll_interval_ms);
	if (!was)
		watch_changed(w, f);
}

static void watch_health_done(void *arg, bool cancelled)
{
	struct watch_health *h = arg;
	struct watch *w = h->w;
	struct watch_slot *slot = h->slot;
	struct folder *f;
	char why[sizeof(((struct folder *)0)->pause_reason)];
	int r;

	(void)cancelled; /* only when the watch is freed, after every folder detached */
	if (!slot) {
		watch_health_free(h);
		return;
	}
	f = slot->folder;
	slot->health = NULL;
	if (strcmp(h->output, f->cfg->output) != 0) {
		/* A reload changed the output meanwhile: look at the new one. */
		watch_health_free(h);
		watch_request_health(w, slot);
		return;
	}
	r = watch_judge_root(f, h->root_r, &h->root_now, why, sizeof(why));
	if (r >= 0 && !folder_output_judge(f, &h->out, why, sizeof(why)))
		r = -1;
	if (r < 0) {
		watch_folder_missing(w, f, why);
	} else if (slot->need_start || !f->present) {
		watch_start_folder(w, slot, h);
	} else if (r > 0 || f->index_stale) {
		log_info("folder %s: it or its output is another directory than before (mounted "
			 "again?); reading its records and scanning it anew",
			 f->cfg->path);
		watch_forget_subtree(w, f, "");
		f->root_wd = -1;
		watch_start_folder(w, slot, h);
	} else if (slot->scan_after_health) {
		slot->scan_after_health = false;
		watch_want_full_scan(w, slot);
		if (f->polling)
			(void)loop_timer_arm(f->timer, f->cfg->poll_interval_ms);
	}
	watch_update_stall(w, slot, loop_now_ms());
	watch_health_free(h);
}

static void watch_folder_timer(void *userdata)
{
	struct folder *f = userdata;
	struct watch *w = f->watch;
	struct watch_slot *slot = watch_slot_of(w, f);

	if (!slot)
		return;
	if (!f->present) {
		watch_request_health(w, slot); /* comes back through watch_start_folder */
		return;
	}
	if (f->polling) {
		/* Checked, then scanned; the timer is armed again when the check is in. */
		slot->scan_after_health = true;
		watch_request_health(w, slot);
	}
}

/* A share can go away without an inotify event reaching us (a lazy unmount
 * with files still open, NFS that stops answering): look every few seconds.
 * A check still under way is not asked again. */
static void watch_health_timer(void *userdata)
{
	struct watch *w = userdata;
	uint64_t now = loop_now_ms();

	for (size_t i = 0; i < w->n_slots; i++) {
		struct watch_slot *slot = w->slots[i];
		struct folder *f = slot->folder;
		if (!f->removed && f->present)
			watch_request_health(w, slot);
		watch_update_stall(w, slot, now);
	}
	(void)loop_timer_arm(w->health_timer, WATCH_HEALTH_PERIOD);
}

/* ---- inotify events (loop thread) ---------------------------------------- */

/* An event for a watch a scan under way added but has not handed over yet. */
static void watch_hold_event(struct watch *w, const struct inotify_event *ev)
{
	size_t size = sizeof(*ev) + ev->len;
	char *held;

	if (w->held_overflow)
		return;
	if (w->n_held + size > WATCH_HELD_EVENTS_MAX) {
		w->held_overflow = true;
		return;
	}
	held = realloc(w->held, w->n_held + size);
	if (!held)
		log_oom();
	memcpy(held + w->n_held, ev, size);
	w->held = held;
	w->n_held += size;
}

/* Prompt files are "<stem>.txt" (job_prompt.c), exactly so spelt. */
static bool watch_is_text_name(const char *name)
{
	size_t n = strlen(name);

	return n > 4 && strcmp(name + n - 4, ".txt") == 0;
}

static void watch_handle_event(struct watch *w, const struct inotify_event *ev)
{
	struct watch_dir *d;
	struct watch_slot *slot;
	struct folder *f;
	bool marker;
	char *rel;

	if (ev->mask & IN_Q_OVERFLOW) {
		log_warn("inotify queue overflowed; rescanning every folder");
		for (size_t i = 0; i < w->n_slots; i++)
			watch_rescan(w, &w->slots[i]->folder, 1);
		return;
	}
	d = watch_find_wd(w, ev->wd);
	if (!d) {
		if (w->scans_under_way)
			watch_hold_event(w, ev);
		return;
	}
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
	marker = f->cfg->group == GROUP_SUBFOLDER && f->cfg->group_ready == GROUP_READY_MARKER &&
		 ev->len && watch_is_marker(f->cfg->group_marker, d->rel, ev->name);
	if (ev->len == 0 || (ev->name[0] == '.' && !marker))
		return;
	slot = watch_slot_of(w, f);
	if (!slot)
		return;
	rel = path_join(d->rel, ev->name);
	if ((ev->mask & IN_ISDIR) && (ev->mask & IN_MOVED_FROM)) {
		/* Renamed within the folder or moved away: its watches name the old
		 * path. Drop them; a rename brings an IN_MOVED_TO that adds it anew. */
		watch_forget_subtree(w, f, rel);
	} else if (ev->mask & IN_ISDIR) {
		if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) &&
		    (f->cfg->recursive || (f->cfg->group == GROUP_SUBFOLDER && !d->rel[0])) &&
		    !names_is_ignored_dir(ev->name) &&
		    !names_is_excluded(rel, f->cfg->exclude, f->cfg->n_exclude))
			watch_want_subtree(w, slot, rel); /* watched, then scanned */
	} else if (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO)) {
		enum watch_how how = (ev->mask & IN_MOVED_TO) ? WATCH_MOVED : WATCH_CLOSED;

		if ((names_is_candidate_file(ev->name) || marker) &&
		    !names_is_excluded(rel, f->cfg->exclude, f->cfg->n_exclude))
			watch_want_file(w, slot, rel, how);
		else if (w->events->prompt_file && f->cfg->prompt_file != PROMPT_FILE_OFF &&
			 watch_is_text_name(ev->name))
			w->events->prompt_file(w->userdata, f, rel, how);
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

/* ---- the public side ----------------------------------------------------- */

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
			goto fail;
		}
		r = loop_add(loop, w->inotify_fd, EPOLLIN, watch_inotify_ready, w, &w->source);
		if (r < 0)
			goto fail;
		r = loop_timer_new(loop, watch_health_timer, w, &w->health_timer);
		if (r < 0)
			goto fail;
		r = work_pool_new(loop, WATCH_THREADS, &w->pool);
		if (r < 0)
			goto fail;
		(void)loop_timer_arm(w->health_timer, WATCH_HEALTH_PERIOD);
	}
	*ret_watch = w;
	return 0;
fail:
	watch_free(w);
	return r;
}

void watch_free(struct watch *w)
{
	if (!w)
		return;
	/* Every folder is removed, so what completes here only frees itself. */
	work_pool_free(w->pool);
	for (size_t i = 0; i < w->n_dirs; i++)
		free(w->dirs[i].rel);
	free(w->dirs);
	free(w->slots);
	free(w->held);
	if (w->health_timer)
		loop_timer_free(w->loop, w->health_timer);
	if (w->source)
		loop_remove(w->loop, w->source);
	if (w->inotify_fd >= 0)
		close(w->inotify_fd);
	free(w);
}

int watch_add_folder(struct watch *w, struct folder *f)
{
	struct watch_slot **slots = reallocarray(w->slots, w->n_slots + 1, sizeof(*slots));
	struct watch_slot *slot;
	int r;

	if (!slots)
		return -ENOMEM;
	w->slots = slots;
	slot = calloc(1, sizeof(*slot));
	if (!slot)
		return -ENOMEM;
	slot->folder = f;
	slot->need_start = true;
	f->watch = w;
	f->root_wd = -1;
	f->present = true; /* so that a missing folder is logged once */
	f->look_stalled_since = 0;
	r = loop_timer_new(w->loop, watch_folder_timer, f, &f->timer);
	if (r < 0) {
		free(slot);
		return r;
	}
	w->slots[w->n_slots++] = slot;
	watch_request_health(w, slot);
	return 0;
}

void watch_remove_folder(struct watch *w, struct folder *f)
{
	watch_forget_subtree(w, f, "");
	for (size_t i = 0; i < w->n_slots; i++) {
		struct watch_slot *slot = w->slots[i];
		if (slot->folder != f)
			continue;
		/* What is under way completes later, for nobody. */
		if (slot->scan) {
			slot->scan->slot = NULL;
			w->scans_under_way--;
		}
		if (slot->health)
			slot->health->slot = NULL;
		strv_free(slot->want_subs, slot->n_want_subs);
		found_free(slot->want_files, slot->n_want_files);
		free(slot);
		w->slots[i] = w->slots[--w->n_slots];
		break;
	}
	f->look_stalled_since = 0;
	loop_timer_free(w->loop, f->timer);
	f->timer = NULL;
}

void watch_rescan(struct watch *w, struct folder **folders, size_t n_folders)
{
	for (size_t i = 0; i < n_folders; i++) {
		struct folder *f = folders[i];
		struct watch_slot *slot = watch_slot_of(w, f);
		if (f->removed || !slot)
			continue;
		/* Checked first (a missing folder is started when back); re-adding
		 * watches is idempotent and picks up missed subfolders. */
		if (f->present)
			slot->scan_after_health = true;
		watch_request_health(w, slot);
	}
}
