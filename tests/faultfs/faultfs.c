/*
 * faultfs.so: a fault-injecting file system for the test suite, as an LD_PRELOAD shim.
 *
 * It interposes the libc file-system calls a daemon makes (open, read, write, fsync, rename,
 * unlink, mkdir, statfs, ...) and, for paths under a configured prefix, delays them, stalls them
 * until released, or fails them with an errno. No FUSE, no root.
 *
 * Rules come from the file named by FAULTFS_CONTROL, re-read whenever its inode, size or mtime
 * changes (a test rewrites it atomically: write a temporary file, rename it over). One rule a
 * line; '#' starts a comment:
 *
 *   delay <op> <prefix> <ms> [count]   sleep <ms> before the call
 *   stall <op> <prefix>                block until the rule is gone (control file polled / 50 ms)
 *   fail  <op> <prefix> <errno> [count] return -1 with errno (EIO, ENOSPC, ... or a number)
 *
 * <op>: fsync (fsync, fdatasync), open, read, write, rename, unlink, mkdir, statfs, or all.
 * [count]: the rule applies to that many matching calls, then no more (until the file changes).
 * A path matches when it is <prefix> or below it; fd calls use /proc/self/fd/N, relative paths
 * the dirfd's (or the working directory's) path; a rename matches on either name.
 * FAULTFS_LOG, if set, names a file that gets one line per rule applied ("fail fsync <path> 5").
 *
 * Inside an interposed call nothing allocates: the rules live in a static table under a mutex,
 * the control file and the log are handled with raw system calls (so the shim never re-enters
 * itself), and paths are built in stack buffers.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum faultfs_op {
	OP_FSYNC = 1 << 0,
	OP_OPEN = 1 << 1,
	OP_READ = 1 << 2,
	OP_WRITE = 1 << 3,
	OP_RENAME = 1 << 4,
	OP_UNLINK = 1 << 5,
	OP_MKDIR = 1 << 6,
	OP_STATFS = 1 << 7,
	OP_ALL = 0xff,
};

enum faultfs_kind { KIND_DELAY, KIND_STALL, KIND_FAIL };

#define FAULTFS_MAX_RULES     64
#define FAULTFS_PREFIX_MAX    1024
#define FAULTFS_STALL_POLL_MS 50

struct faultfs_rule {
	enum faultfs_kind kind;
	unsigned ops;
	char prefix[FAULTFS_PREFIX_MAX];
	size_t prefix_len;
	long arg;	/* ms for delay, errno for fail */
	long remaining; /* < 0: unlimited */
};

static pthread_mutex_t faultfs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct faultfs_rule faultfs_rules[FAULTFS_MAX_RULES];
static size_t faultfs_nrules;
static unsigned faultfs_ops_active; /* union of the rules' ops, read without the lock */
static struct stat faultfs_control_st;
static int faultfs_control_seen;
static char faultfs_readbuf[65536];

static const char *faultfs_control_env, *faultfs_log_env;

/* Read once at load time, before the program can start a thread. */
__attribute__((constructor)) static void faultfs_init(void)
{
	faultfs_control_env = getenv("FAULTFS_CONTROL");
	faultfs_log_env = getenv("FAULTFS_LOG");
}

static const char *faultfs_control_path(void)
{
	return faultfs_control_env;
}

/* ---- raw helpers: no libc wrapper that the shim (or another preload) interposes ---------- */

static int faultfs_raw_stat(const char *path, struct stat *st)
{
	return (int)syscall(SYS_newfstatat, AT_FDCWD, path, st, 0);
}

static void faultfs_sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

	while (syscall(SYS_nanosleep, &ts, &ts) != 0 && errno == EINTR)
		;
}

static const struct {
	const char *name;
	int value;
} faultfs_errnos[] = {
    {"EIO", EIO},	{"ENOSPC", ENOSPC}, {"EACCES", EACCES},	      {"EROFS", EROFS},
    {"EDQUOT", EDQUOT}, {"ENOENT", ENOENT}, {"EPERM", EPERM},	      {"EAGAIN", EAGAIN},
    {"EINTR", EINTR},	{"ENOMEM", ENOMEM}, {"ETIMEDOUT", ETIMEDOUT}, {"EBUSY", EBUSY},
    {"EXDEV", EXDEV},	{"ESTALE", ESTALE}, {"EFBIG", EFBIG},
};

static int faultfs_parse_errno(const char *s)
{
	for (size_t i = 0; i < sizeof(faultfs_errnos) / sizeof(faultfs_errnos[0]); i++)
		if (strcmp(s, faultfs_errnos[i].name) == 0)
			return faultfs_errnos[i].value;
	return atoi(s) > 0 ? atoi(s) : EIO;
}

static unsigned faultfs_parse_op(const char *s)
{
	static const struct {
		const char *name;
		unsigned ops;
	} names[] = {{"fsync", OP_FSYNC},   {"fdatasync", OP_FSYNC}, {"open", OP_OPEN},
		     {"read", OP_READ},	    {"write", OP_WRITE},     {"rename", OP_RENAME},
		     {"unlink", OP_UNLINK}, {"mkdir", OP_MKDIR},     {"statfs", OP_STATFS},
		     {"all", OP_ALL}};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(s, names[i].name) == 0)
			return names[i].ops;
	return 0;
}

/* Parses the control file's text into the table; called with the lock held. */
static void faultfs_parse(char *text)
{
	char *save = NULL;

	faultfs_nrules = 0;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *words[6] = {0};
		char *wsave = NULL;
		int n = 0;
		struct faultfs_rule *r;

		if (faultfs_nrules == FAULTFS_MAX_RULES)
			break;
		for (char *w = strtok_r(line, " \t\r", &wsave); w && n < 6;
		     w = strtok_r(NULL, " \t\r", &wsave)) {
			if (w[0] == '#')
				break;
			words[n++] = w;
		}
		if (n < 3)
			continue;
		r = &faultfs_rules[faultfs_nrules];
		if (strcmp(words[0], "delay") == 0 && n >= 4)
			r->kind = KIND_DELAY;
		else if (strcmp(words[0], "stall") == 0)
			r->kind = KIND_STALL;
		else if (strcmp(words[0], "fail") == 0 && n >= 4)
			r->kind = KIND_FAIL;
		else
			continue;
		r->ops = faultfs_parse_op(words[1]);
		r->prefix_len = strlen(words[2]);
		if (!r->ops || r->prefix_len == 0 || r->prefix_len >= FAULTFS_PREFIX_MAX)
			continue;
		memcpy(r->prefix, words[2], r->prefix_len + 1);
		while (r->prefix_len > 1 && r->prefix[r->prefix_len - 1] == '/')
			r->prefix[--r->prefix_len] = '\0';
		r->arg = 0;
		r->remaining = -1;
		if (r->kind == KIND_DELAY)
			r->arg = atol(words[3]);
		else if (r->kind == KIND_FAIL)
			r->arg = faultfs_parse_errno(words[3]);
		if (r->kind != KIND_STALL && n >= 5)
			r->remaining = atol(words[4]);
		faultfs_nrules++;
	}
	unsigned ops = 0;
	for (size_t i = 0; i < faultfs_nrules; i++)
		ops |= faultfs_rules[i].ops;
	__atomic_store_n(&faultfs_ops_active, ops, __ATOMIC_RELEASE);
}

/* Re-reads the control file when it changed; one stat per call, the lock only on a change. */
static void faultfs_refresh(void)
{
	const char *path = faultfs_control_path();
	struct stat st;

	if (!path)
		return;
	if (faultfs_raw_stat(path, &st) != 0)
		memset(&st, 0, sizeof(st)); /* no file: no rules */
	pthread_mutex_lock(&faultfs_lock);
	if (faultfs_control_seen && st.st_ino == faultfs_control_st.st_ino &&
	    st.st_size == faultfs_control_st.st_size &&
	    st.st_mtim.tv_sec == faultfs_control_st.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == faultfs_control_st.st_mtim.tv_nsec)
		goto out;
	faultfs_control_st = st;
	faultfs_control_seen = 1;
	size_t len = 0;
	if (st.st_ino) {
		int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			ssize_t got;
			while (len < sizeof(faultfs_readbuf) - 1 &&
			       (got = syscall(SYS_read, fd, faultfs_readbuf + len,
					      sizeof(faultfs_readbuf) - 1 - len)) > 0)
				len += (size_t)got;
			syscall(SYS_close, fd);
		}
	}
	faultfs_readbuf[len] = '\0';
	faultfs_parse(faultfs_readbuf);
out:
	pthread_mutex_unlock(&faultfs_lock);
}

static int faultfs_under(const struct faultfs_rule *r, const char *path)
{
	if (!path || strncmp(path, r->prefix, r->prefix_len) != 0)
		return 0;
	return path[r->prefix_len] == '\0' || path[r->prefix_len] == '/' ||
	       (r->prefix_len == 1 && r->prefix[0] == '/');
}

static void faultfs_log(const char *what, unsigned op, const char *path, long arg)
{
	const char *log_path = faultfs_log_env;
	char line[FAULTFS_PREFIX_MAX + 128];
	const char *opname = op == OP_FSYNC    ? "fsync"
			     : op == OP_OPEN   ? "open"
			     : op == OP_READ   ? "read"
			     : op == OP_WRITE  ? "write"
			     : op == OP_RENAME ? "rename"
			     : op == OP_UNLINK ? "unlink"
			     : op == OP_MKDIR  ? "mkdir"
					       : "statfs";

	if (!log_path)
		return;
	int n = snprintf(line, sizeof(line), "%s %s %s %ld\n", what, opname, path, arg);
	if (n <= 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = (int)sizeof(line) - 1;
	int fd = (int)syscall(SYS_openat, AT_FDCWD, log_path,
			      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	(void)syscall(SYS_write, fd, line, (size_t)n);
	syscall(SYS_close, fd);
}

/* Applies the first rule matching op on path (or path2). 0: go on with the real call; -1 with
 * errno set: fail it. */
static int faultfs_apply(unsigned op, const char *path, const char *path2)
{
	int stall_logged = 0;

	for (;;) {
		enum faultfs_kind kind = KIND_DELAY;
		long arg = 0;
		int found = 0;

		pthread_mutex_lock(&faultfs_lock);
		for (size_t i = 0; i < faultfs_nrules; i++) {
			struct faultfs_rule *r = &faultfs_rules[i];
			if (!(r->ops & op) || r->remaining == 0)
				continue;
			if (!faultfs_under(r, path) && !faultfs_under(r, path2))
				continue;
			if (r->remaining > 0)
				r->remaining--;
			kind = r->kind;
			arg = r->arg;
			found = 1;
			break;
		}
		pthread_mutex_unlock(&faultfs_lock);
		if (!found)
			return 0;
		switch (kind) {
		case KIND_DELAY:
			faultfs_log("delay", op, path, arg);
			faultfs_sleep_ms(arg);
			return 0;
		case KIND_FAIL:
			faultfs_log("fail", op, path, arg);
			errno = (int)arg;
			return -1;
		case KIND_STALL:
			/* Blocks until the rule is removed; logged once per stalled call. */
			if (!stall_logged)
				faultfs_log("stall", op, path, 0);
			stall_logged = 1;
			faultfs_sleep_ms(FAULTFS_STALL_POLL_MS);
			faultfs_refresh();
			break;
		}
	}
}

/* ---- paths ----------------------------------------------------------------------------- */

static int faultfs_fd_path(int fd, char *buf, size_t size)
{
	char link[64];
	long n;

	(void)snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = syscall(SYS_readlinkat, AT_FDCWD, link, buf, size - 1);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return 0;
}

/* An absolute form of (dirfd, path) in buf; path itself when already absolute. */
static const char *faultfs_at_path(int dirfd, const char *path, char *buf, size_t size)
{
	size_t len;

	if (!path)
		return NULL;
	if (path[0] == '/')
		return path;
	if (dirfd == AT_FDCWD) {
		if (syscall(SYS_getcwd, buf, size) <= 0)
			return path;
	} else if (faultfs_fd_path(dirfd, buf, size) != 0) {
		return path;
	}
	len = strlen(buf);
	if (path[0] == '\0')
		return buf;
	(void)snprintf(buf + len, size - len, "/%s", path);
	return buf;
}

/* Whether any rule could apply to op: the fast path when nothing is configured. */
static int faultfs_wanted(unsigned op)
{
	if (!faultfs_control_path())
		return 0;
	faultfs_refresh();
	return (__atomic_load_n(&faultfs_ops_active, __ATOMIC_ACQUIRE) & op) != 0;
}

/* Per-thread guard: a call the shim makes while in the shim goes straight through. */
static __thread int faultfs_busy;

static int faultfs_check_fd(unsigned op, int fd)
{
	char path[PATH_MAX];
	int r;

	if (faultfs_busy || !faultfs_wanted(op))
		return 0;
	/* An O_PATH descriptor fails these calls with EBADF without reaching the storage. */
	if (syscall(SYS_fcntl, fd, F_GETFL) & O_PATH)
		return 0;
	faultfs_busy = 1;
	r = faultfs_fd_path(fd, path, sizeof(path)) == 0 ? faultfs_apply(op, path, NULL) : 0;
	faultfs_busy = 0;
	return r;
}

static int faultfs_check_at(unsigned op, int dirfd, const char *p, int dirfd2, const char *p2)
{
	char a[PATH_MAX], b[PATH_MAX];
	int r;

	if (faultfs_busy || !faultfs_wanted(op))
		return 0;
	faultfs_busy = 1;
	r = faultfs_apply(op, faultfs_at_path(dirfd, p, a, sizeof(a)),
			  p2 ? faultfs_at_path(dirfd2, p2, b, sizeof(b)) : NULL);
	faultfs_busy = 0;
	return r;
}

/* The next definition of a symbol (libc's, or a sanitizer's interceptor). A race between two
 * first calls stores the same value twice; memcpy: ISO C has no object-to-function cast. */
static void *faultfs_next(void **slot, const char *name)
{
	void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);

	if (!p) {
		p = dlsym(RTLD_NEXT, name);
		__atomic_store_n(slot, p, __ATOMIC_RELEASE);
	}
	return p;
}

#define FAULTFS_REAL(name, type)                                                                   \
	static void *slot_##name;                                                                  \
	__typeof__(type) real_##name;                                                              \
	do {                                                                                       \
		void *p_ = faultfs_next(&slot_##name, #name);                                      \
		memcpy(&real_##name, &p_, sizeof(p_));                                             \
	} while (0)

/* ---- the interposed calls -------------------------------------------------------------- */

int fsync(int fd)
{
	FAULTFS_REAL(fsync, int (*)(int));
	if (faultfs_check_fd(OP_FSYNC, fd) != 0)
		return -1;
	return real_fsync(fd);
}

int fdatasync(int fd)
{
	FAULTFS_REAL(fdatasync, int (*)(int));
	if (faultfs_check_fd(OP_FSYNC, fd) != 0)
		return -1;
	return real_fdatasync(fd);
}

static mode_t faultfs_mode(int flags, va_list ap)
{
	return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

#define FAULTFS_OPEN(name)                                                                         \
	int name(const char *path, int flags, ...)                                                 \
	{                                                                                          \
		va_list ap;                                                                        \
		mode_t mode;                                                                       \
		FAULTFS_REAL(name, int (*)(const char *, int, ...));                               \
		va_start(ap, flags);                                                               \
		mode = faultfs_mode(flags, ap);                                                    \
		va_end(ap);                                                                        \
		if (faultfs_check_at(OP_OPEN, AT_FDCWD, path, 0, NULL) != 0)                       \
			return -1;                                                                 \
		return real_##name(path, flags, mode);                                             \
	}
FAULTFS_OPEN(open)
FAULTFS_OPEN(open64)

#define FAULTFS_OPENAT(name)                                                                       \
	int name(int dirfd, const char *path, int flags, ...)                                      \
	{                                                                                          \
		va_list ap;                                                                        \
		mode_t mode;                                                                       \
		FAULTFS_REAL(name, int (*)(int, const char *, int, ...));                          \
		va_start(ap, flags);                                                               \
		mode = faultfs_mode(flags, ap);                                                    \
		va_end(ap);                                                                        \
		if (faultfs_check_at(OP_OPEN, dirfd, path, 0, NULL) != 0)                          \
			return -1;                                                                 \
		return real_##name(dirfd, path, flags, mode);                                      \
	}
FAULTFS_OPENAT(openat)
FAULTFS_OPENAT(openat64)

ssize_t read(int fd, void *buf, size_t count)
{
	FAULTFS_REAL(read, ssize_t(*)(int, void *, size_t));
	if (faultfs_check_fd(OP_READ, fd) != 0)
		return -1;
	return real_read(fd, buf, count);
}

ssize_t pread(int fd, void *buf, size_t count, off_t off)
{
	FAULTFS_REAL(pread, ssize_t(*)(int, void *, size_t, off_t));
	if (faultfs_check_fd(OP_READ, fd) != 0)
		return -1;
	return real_pread(fd, buf, count, off);
}

ssize_t pread64(int fd, void *buf, size_t count, off64_t off)
{
	FAULTFS_REAL(pread64, ssize_t(*)(int, void *, size_t, off64_t));
	if (faultfs_check_fd(OP_READ, fd) != 0)
		return -1;
	return real_pread64(fd, buf, count, off);
}

ssize_t write(int fd, const void *buf, size_t count)
{
	FAULTFS_REAL(write, ssize_t(*)(int, const void *, size_t));
	if (faultfs_check_fd(OP_WRITE, fd) != 0)
		return -1;
	return real_write(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t off)
{
	FAULTFS_REAL(pwrite, ssize_t(*)(int, const void *, size_t, off_t));
	if (faultfs_check_fd(OP_WRITE, fd) != 0)
		return -1;
	return real_pwrite(fd, buf, count, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t off)
{
	FAULTFS_REAL(pwrite64, ssize_t(*)(int, const void *, size_t, off64_t));
	if (faultfs_check_fd(OP_WRITE, fd) != 0)
		return -1;
	return real_pwrite64(fd, buf, count, off);
}

int rename(const char *from, const char *to)
{
	FAULTFS_REAL(rename, int (*)(const char *, const char *));
	if (faultfs_check_at(OP_RENAME, AT_FDCWD, from, AT_FDCWD, to) != 0)
		return -1;
	return real_rename(from, to);
}

int renameat(int fromfd, const char *from, int tofd, const char *to)
{
	FAULTFS_REAL(renameat, int (*)(int, const char *, int, const char *));
	if (faultfs_check_at(OP_RENAME, fromfd, from, tofd, to) != 0)
		return -1;
	return real_renameat(fromfd, from, tofd, to);
}

int renameat2(int fromfd, const char *from, int tofd, const char *to, unsigned flags)
{
	FAULTFS_REAL(renameat2, int (*)(int, const char *, int, const char *, unsigned));
	if (faultfs_check_at(OP_RENAME, fromfd, from, tofd, to) != 0)
		return -1;
	return real_renameat2(fromfd, from, tofd, to, flags);
}

int unlink(const char *path)
{
	FAULTFS_REAL(unlink, int (*)(const char *));
	if (faultfs_check_at(OP_UNLINK, AT_FDCWD, path, 0, NULL) != 0)
		return -1;
	return real_unlink(path);
}

int unlinkat(int dirfd, const char *path, int flags)
{
	FAULTFS_REAL(unlinkat, int (*)(int, const char *, int));
	if (faultfs_check_at(OP_UNLINK, dirfd, path, 0, NULL) != 0)
		return -1;
	return real_unlinkat(dirfd, path, flags);
}

int mkdir(const char *path, mode_t mode)
{
	FAULTFS_REAL(mkdir, int (*)(const char *, mode_t));
	if (faultfs_check_at(OP_MKDIR, AT_FDCWD, path, 0, NULL) != 0)
		return -1;
	return real_mkdir(path, mode);
}

int mkdirat(int dirfd, const char *path, mode_t mode)
{
	FAULTFS_REAL(mkdirat, int (*)(int, const char *, mode_t));
	if (faultfs_check_at(OP_MKDIR, dirfd, path, 0, NULL) != 0)
		return -1;
	return real_mkdirat(dirfd, path, mode);
}

int statfs(const char *path, struct statfs *buf)
{
	FAULTFS_REAL(statfs, int (*)(const char *, struct statfs *));
	if (faultfs_check_at(OP_STATFS, AT_FDCWD, path, 0, NULL) != 0)
		return -1;
	return real_statfs(path, buf);
}

int fstatfs(int fd, struct statfs *buf)
{
	FAULTFS_REAL(fstatfs, int (*)(int, struct statfs *));
	if (faultfs_check_fd(OP_STATFS, fd) != 0)
		return -1;
	return real_fstatfs(fd, buf);
}

int statvfs(const char *path, struct statvfs *buf)
{
	FAULTFS_REAL(statvfs, int (*)(const char *, struct statvfs *));
	if (faultfs_check_at(OP_STATFS, AT_FDCWD, path, 0, NULL) != 0)
		return -1;
	return real_statvfs(path, buf);
}

int fstatvfs(int fd, struct statvfs *buf)
{
	FAULTFS_REAL(fstatvfs, int (*)(int, struct statvfs *));
	if (faultfs_check_fd(OP_STATFS, fd) != 0)
		return -1;
	return real_fstatvfs(fd, buf);
}

int statfs64(const char *path, struct statfs64 *buf)
{
	FAULTFS_REAL(statfs64, int (*)(const char *, struct statfs64 *));
	if (faultfs_check_at(OP_STATFS, AT_FDCWD, path, 0, NULL) != 0)
		return -1;
	return real_statfs64(path, buf);
}

int fstatfs64(int fd, struct statfs64 *buf)
{
	FAULTFS_REAL(fstatfs64, int (*)(int, struct statfs64 *));
	if (faultfs_check_fd(OP_STATFS, fd) != 0)
		return -1;
	return real_fstatfs64(fd, buf);
}

int statvfs64(const char *path, struct statvfs64 *buf)
{
	FAULTFS_REAL(statvfs64, int (*)(const char *, struct statvfs64 *));
	if (faultfs_check_at(OP_STATFS, AT_FDCWD, path, 0, NULL) != 0)
		return -1;
	return real_statvfs64(path, buf);
}

int fstatvfs64(int fd, struct statvfs64 *buf)
{
	FAULTFS_REAL(fstatvfs64, int (*)(int, struct statvfs64 *));
	if (faultfs_check_fd(OP_STATFS, fd) != 0)
		return -1;
	return real_fstatvfs64(fd, buf);
}
