#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "fdio.h"
#include "output.h"

/* A fresh temporary directory per test, removed (one level deep) after. */
struct tmpdir {
	char path[64];
	int fd;
};

static int setup_dir(void **state)
{
	struct tmpdir *t = calloc(1, sizeof(*t));

	if (!t)
		return -1;
	snprintf(t->path, sizeof(t->path), "/tmp/test_output.XXXXXX");
	if (!mkdtemp(t->path)) {
		free(t);
		return -1;
	}
	t->fd = open(t->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (t->fd < 0) {
		free(t);
		return -1;
	}
	*state = t;
	return 0;
}

static int teardown_dir(void **state)
{
	struct tmpdir *t = *state;
	struct dirent *de;
	DIR *dir = opendir(t->path);

	if (dir) {
		while ((de = readdir(dir)))
			if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
				(void)unlinkat(t->fd, de->d_name, 0);
		closedir(dir);
	}
	close(t->fd);
	rmdir(t->path);
	free(t);
	return 0;
}

static void write_file(int dirfd, const char *name, const char *text)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static char *read_file(int dirfd, const char *name)
{
	static char buf[4096];
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return NULL;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_true(n >= 0);
	buf[n] = '\0';
	return buf;
}

/* Names in the directory that start with '.' (temporary files). */
static int count_hidden(const char *path)
{
	struct dirent *de;
	DIR *dir = opendir(path);
	int n = 0;

	assert_non_null(dir);
	while ((de = readdir(dir)))
		if (de->d_name[0] == '.' && strcmp(de->d_name, ".") != 0 &&
		    strcmp(de->d_name, "..") != 0)
			n++;
	closedir(dir);
	return n;
}

static void check_stem(const char *name, const char *want)
{
	char out[OUTPUT_STEM_MAX + 1];

	assert_int_equal(output_safe_stem(name, out, sizeof(out)), 0);
	assert_string_equal(out, want);
}

static void test_stem_basic(void **state)
{
	(void)state;
	check_stem("photo.jpg", "photo");
	check_stem("a.b.png", "a.b");
	check_stem(".hidden.png", "_hidden");
	check_stem(".hidden", "_hidden");
	check_stem("..jpg", "_");
	check_stem("..", "_");
	check_stem(".", "_");
	check_stem("noext", "noext");
	check_stem("trailing.", "trailing");
	check_stem(".png", "_png");
	check_stem("", "_");
}

static void test_stem_control_and_invalid(void **state)
{
	(void)state;
	check_stem("a\nb.png", "a_b");
	check_stem("a\tb\rc.png", "a_b_c");
	check_stem("del\x7f.png", "del_");
	check_stem("a/b.png", "a_b");
	check_stem("lone\xff.png", "lone_");
	check_stem("cut\xc3.png", "cut_");            /* truncated 2-byte */
	check_stem("cut\xe2\x82.png", "cut__");       /* truncated 3-byte */
	check_stem("over\xc0\xaf.png", "over__");     /* overlong '/' */
	check_stem("over\xe0\x80\xaf.png", "over___"); /* overlong 3-byte */
	check_stem("sur\xed\xa0\x80.png", "sur___");   /* UTF-16 surrogate */
	check_stem("big\xf4\x90\x80\x80.png", "big____");
	check_stem("\n.png", "_");
}

static void test_stem_unicode(void **state)
{
	(void)state;
	check_stem("Fotoğraf çiçek.png", "Fotoğraf çiçek");
	check_stem("写真.jpeg", "写真");
	check_stem("\xf0\x9f\x98\x80.png", "\xf0\x9f\x98\x80");
}

static void test_stem_length(void **state)
{
	char name[300], out[OUTPUT_STEM_MAX + 1];
	size_t i;

	(void)state;
	/* 125 x "ç" (2 bytes each) = 250 bytes, plus one ASCII byte up front so
	 * that byte 200 falls inside a character. */
	name[0] = 'x';
	for (i = 0; i < 125; i++)
		memcpy(name + 1 + 2 * i, "\xc3\xa7", 2);
	strcpy(name + 251, ".png");
	assert_int_equal(output_safe_stem(name, out, sizeof(out)), 0);
	assert_int_equal(strlen(out), 199);
	assert_memory_equal(out, name, 199);

	memset(name, 'a', 250);
	strcpy(name + 250, ".png");
	assert_int_equal(output_safe_stem(name, out, sizeof(out)), 0);
	assert_int_equal(strlen(out), OUTPUT_STEM_MAX);

	assert_int_equal(output_safe_stem(NULL, out, sizeof(out)), -EINVAL);
}

static void test_ext(void **state)
{
	(void)state;
	assert_string_equal(output_ext_for(IMAGE_FORMAT_PNG), ".png");
	assert_string_equal(output_ext_for(IMAGE_FORMAT_JPEG), ".jpeg");
	assert_string_equal(output_ext_for(IMAGE_FORMAT_WEBP), ".webp");
	assert_string_equal(output_ext_for(IMAGE_FORMAT_BMP), ".bmp");
	assert_string_equal(output_ext_for(IMAGE_FORMAT_TIFF), ".tiff");
	assert_string_equal(output_ext_for(IMAGE_FORMAT_GIF), ".gif");
	assert_string_equal(output_ext_for(IMAGE_FORMAT_UNKNOWN), ".bin");
}

static bool reserve_plain(const char *candidate, void *userdata)
{
	return strcmp(candidate, (const char *)userdata) == 0;
}

static void test_choose_stem(void **state)
{
	struct tmpdir *t = *state;
	char stem[OUTPUT_NAME_MAX];

	assert_int_equal(output_choose_stem(t->fd, "photo", "a/photo.jpg", NULL, NULL, stem,
					    sizeof(stem)),
			 0);
	assert_string_equal(stem, "photo");

	write_file(t->fd, "photo.json", "{\"source\": \"a/photo.jpg\"}\n");
	assert_int_equal(output_choose_stem(t->fd, "photo", "a/photo.jpg", NULL, NULL, stem,
					    sizeof(stem)),
			 0);
	assert_string_equal(stem, "photo");

	assert_int_equal(output_choose_stem(t->fd, "photo", "b/photo.png", NULL, NULL, stem,
					    sizeof(stem)),
			 0);
	assert_string_equal(stem, "photo-2");

	write_file(t->fd, "photo-2.error.json", "{\"source\": \"b/photo.png\"}\n");
	assert_int_equal(output_choose_stem(t->fd, "photo", "c/photo.gif", NULL, NULL, stem,
					    sizeof(stem)),
			 0);
	assert_string_equal(stem, "photo-3");
	assert_int_equal(output_choose_stem(t->fd, "photo", "b/photo.png", NULL, NULL, stem,
					    sizeof(stem)),
			 0);
	assert_string_equal(stem, "photo-2");

	/* The same source reserved by an in-flight job elsewhere. */
	assert_int_equal(output_choose_stem(t->fd, "photo", "a/photo.jpg", reserve_plain, "photo",
					    stem, sizeof(stem)),
			 0);
	assert_string_equal(stem, "photo-3");
	assert_int_equal(output_choose_stem(t->fd, "new", "new.jpg", reserve_plain, "new", stem,
					    sizeof(stem)),
			 0);
	assert_string_equal(stem, "new-2");
}

static void test_choose_stem_unreadable(void **state)
{
	struct tmpdir *t = *state;
	char stem[OUTPUT_NAME_MAX];

	/* Garbage, a non-object, a symlink and a directory all count as taken. */
	write_file(t->fd, "g.json", "not json at all");
	write_file(t->fd, "g-2.json", "[\"g.png\"]");
	assert_int_equal(symlinkat("g.json", t->fd, "g-3.json"), 0);
	write_file(t->fd, "g-4.error.json", "{\"source\": 42}");
	assert_int_equal(mkdirat(t->fd, "g-5.json", 0755), 0);
	assert_int_equal(mkfifoat(t->fd, "g-6.json", 0644), 0);
	assert_int_equal(output_choose_stem(t->fd, "g", "g.png", NULL, NULL, stem, sizeof(stem)),
			 0);
	assert_string_equal(stem, "g-7");
	assert_int_equal(unlinkat(t->fd, "g-5.json", AT_REMOVEDIR), 0);

	/* A matching source in one sidecar and a foreign one in the other. */
	write_file(t->fd, "h.json", "{\"source\": \"h.png\"}");
	write_file(t->fd, "h.error.json", "{\"source\": \"other.png\"}");
	assert_int_equal(output_choose_stem(t->fd, "h", "h.png", NULL, NULL, stem, sizeof(stem)),
			 0);
	assert_string_equal(stem, "h-2");

	assert_int_equal(output_choose_stem(t->fd, "", "h.png", NULL, NULL, stem, sizeof(stem)),
			 -EINVAL);
	assert_int_equal(output_choose_stem(t->fd, "h", "h.png", NULL, NULL, stem, 3),
			 -ENAMETOOLONG);
}

static bool reserve_all(const char *candidate, void *userdata)
{
	(void)candidate;
	(void)userdata;
	return true;
}

static void test_choose_stem_exhausted(void **state)
{
	struct tmpdir *t = *state;
	char stem[OUTPUT_NAME_MAX];

	assert_int_equal(output_choose_stem(t->fd, "x", "x.png", reserve_all, NULL, stem,
					    sizeof(stem)),
			 -EEXIST);
}

static void test_write_atomic(void **state)
{
	struct tmpdir *t = *state;

	assert_int_equal(output_write_atomic(t->fd, "a.png", "hello", 5), 0);
	assert_string_equal(read_file(t->fd, "a.png"), "hello");
	assert_int_equal(count_hidden(t->path), 0);

	/* Over an existing file: replaced. */
	assert_int_equal(output_write_atomic(t->fd, "a.png", "bye", 3), 0);
	assert_string_equal(read_file(t->fd, "a.png"), "bye");
	assert_int_equal(count_hidden(t->path), 0);

	assert_int_equal(output_write_atomic(t->fd, "empty", "", 0), 0);
	assert_string_equal(read_file(t->fd, "empty"), "");
	assert_int_equal(output_write_atomic(t->fd, "a/b", "x", 1), -EINVAL);
}

static void test_tmp_open_abort(void **state)
{
	struct tmpdir *t = *state;
	char tmp[OUTPUT_NAME_MAX + 32], tmp2[OUTPUT_NAME_MAX + 32];
	struct stat st;
	int fd, fd2;

	fd = output_tmp_open(t->fd, "b.json", tmp, sizeof(tmp));
	assert_true(fd >= 0);
	assert_true(strncmp(tmp, ".b.json.", 8) == 0);
	assert_true(strlen(tmp) > 12 && strcmp(tmp + strlen(tmp) - 4, ".tmp") == 0);
	assert_int_equal(fstatat(t->fd, tmp, &st, 0), 0);
	assert_int_equal(st.st_mode & 0777 & ~(mode_t)022, 0644 & ~(mode_t)022);

	fd2 = output_tmp_open(t->fd, "b.json", tmp2, sizeof(tmp2));
	assert_true(fd2 >= 0);
	assert_string_not_equal(tmp, tmp2);

	assert_int_equal(write(fd, "x", 1), 1);
	output_tmp_abort(t->fd, fd, tmp);
	output_tmp_abort(t->fd, fd2, tmp2);
	assert_int_equal(count_hidden(t->path), 0);
	assert_int_equal(faccessat(t->fd, "b.json", F_OK, 0), -1);

	assert_int_equal(output_tmp_open(t->fd, "b.json", tmp, 10), -ENAMETOOLONG);
}

static void test_tmp_commit(void **state)
{
	struct tmpdir *t = *state;
	char tmp[OUTPUT_NAME_MAX + 32];
	int fd;

	write_file(t->fd, "c.json", "old");
	fd = output_tmp_open(t->fd, "c.json", tmp, sizeof(tmp));
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "new", 3), 3);
	assert_int_equal(output_tmp_commit(t->fd, fd, tmp, "c.json"), 0);
	assert_string_equal(read_file(t->fd, "c.json"), "new");
	assert_int_equal(count_hidden(t->path), 0);

	/* A rename that fails (into a missing folder) removes the temporary. */
	fd = output_tmp_open(t->fd, "d.json", tmp, sizeof(tmp));
	assert_true(fd >= 0);
	assert_int_equal(output_tmp_commit(t->fd, fd, tmp, "missing/d.json"), -ENOENT);
	assert_int_equal(count_hidden(t->path), 0);
}

static void test_tmp_commit_opath(void **state)
{
	struct tmpdir *t = *state;
	char tmp[OUTPUT_NAME_MAX + 32];
	int dfd, fd;

	/* fsync() refuses O_PATH descriptors; the commit still syncs the folder. */
	dfd = open(t->path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	fd = output_tmp_open(dfd, "e.json", tmp, sizeof(tmp));
	assert_true(fd >= 0);
	assert_int_equal(output_tmp_commit(dfd, fd, tmp, "e.json"), 0);
	assert_string_equal(read_file(t->fd, "e.json"), "");
	close(dfd);
}

static void test_sweep_tmp(void **state)
{
	struct tmpdir *t = *state;
	char tmp[OUTPUT_NAME_MAX + 32], sub_tmp[OUTPUT_NAME_MAX + 32], path[512];
	size_t removed = 99;
	int fd, sub;

	assert_true(output_is_tmp_name(".a.jpeg.0123456789abcdef.tmp"));
	assert_false(output_is_tmp_name(".a.jpeg.0123456789abcdeg.tmp"));
	assert_false(output_is_tmp_name("a.jpeg.0123456789abcdef.tmp"));
	assert_false(output_is_tmp_name(".0123456789abcdef.tmp"));
	assert_false(output_is_tmp_name(".notes.tmp"));

	fd = output_tmp_open(t->fd, "a.jpeg", tmp, sizeof(tmp));
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(mkdirat(t->fd, "sub", 0755), 0);
	sub = openat(t->fd, "sub", O_RDONLY | O_DIRECTORY);
	assert_true(sub >= 0);
	fd = output_tmp_open(sub, "b.json", sub_tmp, sizeof(sub_tmp));
	assert_true(fd >= 0);
	close(fd);
	write_file(t->fd, ".keep.tmp", "not ours");
	write_file(t->fd, "a.jpeg", "done");

	assert_int_equal(output_sweep_tmp(t->path, &removed), 0);
	assert_int_equal(removed, 2);
	assert_int_equal(faccessat(t->fd, tmp, F_OK, 0), -1);
	assert_int_equal(faccessat(sub, sub_tmp, F_OK, 0), -1);
	assert_int_equal(faccessat(t->fd, ".keep.tmp", F_OK, 0), 0);
	assert_int_equal(faccessat(t->fd, "a.jpeg", F_OK, 0), 0);
	(void)unlinkat(t->fd, ".keep.tmp", 0);
	(void)unlinkat(t->fd, "a.jpeg", 0);
	(void)unlinkat(t->fd, "sub", AT_REMOVEDIR);
	close(sub);

	(void)snprintf(path, sizeof(path), "%s/missing", t->path);
	assert_int_equal(output_sweep_tmp(path, &removed), 0);
}

/* ---- shared directory syncs and remembered folders ---------------------- */

#define COMMITTERS	  8
#define COMMITS_EACH	  40
#define NAS_SYNC_DELAY_US 2000

struct committer {
	const char *dir;
	int id;
	int failed;
};

static void *committer_main(void *arg)
{
	struct committer *c = arg;
	/* each its own descriptor (half of them O_PATH): the sharing is by folder */
	int dirfd = open(c->dir, (c->id % 2 ? O_PATH : O_RDONLY) | O_DIRECTORY | O_CLOEXEC);
	char name[32], text[32];

	if (dirfd < 0) {
		c->failed++;
		return NULL;
	}
	for (int i = 0; i < COMMITS_EACH; i++) {
		int n = snprintf(text, sizeof(text), "%d-%d", c->id, i);

		(void)snprintf(name, sizeof(name), "f%d-%d", c->id, i);
		if (output_write_atomic(dirfd, name, text, (size_t)n) < 0)
			c->failed++;
	}
	close(dirfd);
	return NULL;
}

static void rm_rf(const char *dir)
{
	char cmd[256];

	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_dir_sync_shared(void **state)
{
	char dir[] = "/tmp/test_output_sync.XXXXXX", path[128], *buf;
	struct committer c[COMMITTERS];
	pthread_t t[COMMITTERS];
	unsigned long before, syncs;
	size_t len;
	int dirfd, fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	output_test_set_sync_delay(NAS_SYNC_DELAY_US);
	/* Alone, every commit syncs the folder itself. */
	dirfd = open(dir, O_RDONLY | O_DIRECTORY);
	assert_true(dirfd >= 0);
	before = output_dir_sync_count();
	for (int i = 0; i < 10; i++) {
		(void)snprintf(path, sizeof(path), "alone-%d", i);
		assert_int_equal(output_write_atomic(dirfd, path, "x", 1), 0);
	}
	assert_int_equal(output_dir_sync_count() - before, 10);
	close(dirfd);

	before = output_dir_sync_count();
	for (int i = 0; i < COMMITTERS; i++) {
		c[i] = (struct committer){.dir = dir, .id = i};
		assert_int_equal(pthread_create(&t[i], NULL, committer_main, &c[i]), 0);
	}
	for (int i = 0; i < COMMITTERS; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(c[i].failed, 0);
	}
	syncs = output_dir_sync_count() - before;
	output_test_set_sync_delay(0);
	print_message("shared directory fsync: %d commits by %d threads, %lu fsync calls\n",
		      COMMITTERS * COMMITS_EACH, COMMITTERS, syncs);
	/* One per commit without sharing (320). */
	assert_true(syncs <= COMMITTERS * COMMITS_EACH / 2);
	for (int i = 0; i < COMMITTERS; i++)
		for (int k = 0; k < COMMITS_EACH; k++) {
			char want[32];

			(void)snprintf(path, sizeof(path), "%s/f%d-%d", dir, i, k);
			(void)snprintf(want, sizeof(want), "%d-%d", i, k);
			fd = open(path, O_RDONLY);
			assert_true(fd >= 0);
			assert_int_equal(fdio_read_file(fd, 64, &buf, &len), 0);
			assert_string_equal(buf, want);
			free(buf);
			close(fd);
		}
	rm_rf(dir);
}

static void test_mkdir_remembered(void **state)
{
	char dir[] = "/tmp/test_output_mkdir.XXXXXX", deep[128], mid[128];
	unsigned long mkdirs, syncs;
	struct stat st;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	(void)snprintf(deep, sizeof(deep), "%s/a/b/c", dir);
	(void)snprintf(mid, sizeof(mid), "%s/a/b", dir);

	/* the existing parents: known (and synced into theirs) once */
	assert_int_equal(output_mkdir_parents(dir, 0755), 0);
	/* three new folders, each fsync'd into its parent */
	syncs = output_dir_sync_count();
	assert_int_equal(output_mkdir_parents(deep, 0755), 0);
	assert_int_equal(stat(deep, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(output_dir_sync_count() - syncs, 3);

	/* known now: no mkdir at all, and no sync */
	mkdirs = output_mkdir_count();
	syncs = output_dir_sync_count();
	for (int i = 0; i < 100; i++)
		assert_int_equal(output_mkdir_parents(deep, 0755), 0);
	fd = output_mkdir_open(deep, 0755);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(output_mkdir_count(), mkdirs);
	assert_int_equal(output_dir_sync_count(), syncs);

	/* removed behind its back: output_mkdir_parents notices (one stat) */
	assert_int_equal(rmdir(deep), 0);
	assert_int_equal(output_mkdir_parents(deep, 0755), 0);
	assert_int_equal(stat(deep, &st), 0);

	/* and output_mkdir_open, on the ENOENT of its open */
	assert_int_equal(rmdir(deep), 0);
	assert_int_equal(rmdir(mid), 0);
	syncs = output_dir_sync_count();
	fd = output_mkdir_open(deep, 0755);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(stat(deep, &st), 0);
	assert_int_equal(output_dir_sync_count() - syncs, 2); /* b and c were new */

	/* forgetting a folder forgets what is under it */
	output_mkdir_forget(mid);
	mkdirs = output_mkdir_count();
	assert_int_equal(output_mkdir_parents(deep, 0755), 0);
	assert_true(output_mkdir_count() > mkdirs);

	/* a file where a folder should be is an error, as before */
	(void)snprintf(deep, sizeof(deep), "%s/file", dir);
	fd = open(deep, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	close(fd);
	(void)snprintf(deep, sizeof(deep), "%s/file/sub", dir);
	assert_int_equal(output_mkdir_parents(deep, 0755), -ENOTDIR);
	rm_rf(dir);
}

/* Output names: another source's file under a name the stem would write
 * takes the stem; a commit never replaces a file its own sidecar does not list. */
static void test_output_names_never_replace(void **state)
{
	struct tmpdir *t = *state;
	char stem[OUTPUT_NAME_MAX], tmp[OUTPUT_NAME_MAX + 32], name[OUTPUT_NAME_MAX], *text;
	int fd;

	write_file(t->fd, "cat-1.jpeg", "theirs");
	write_file(t->fd, "cat-1.json",
		   "{\"source\": \"cat-1.png\", \"output\": \"cat-1.jpeg\"}\n");
	assert_int_equal(
	    output_choose_stem_n(t->fd, "cat", "cat.png", 3, NULL, NULL, stem, sizeof(stem)), 0);
	assert_string_equal(stem, "cat-2");
	assert_int_equal(
	    output_choose_stem_n(t->fd, "cat", "cat.png", 1, NULL, NULL, stem, sizeof(stem)), 0);
	assert_string_equal(stem, "cat");

	/* A name taken meanwhile: the image goes in beside it, under ~2. */
	fd = output_tmp_open(t->fd, "cat-1.jpeg", tmp, sizeof(tmp));
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "ours", 4), 4);
	assert_int_equal(output_tmp_commit_image(t->fd, fd, tmp, "cat-1", ".jpeg", "cat.png",
						 name, sizeof(name)),
			 0);
	assert_string_equal(name, "cat-1~2.jpeg");
	text = read_file(t->fd, "cat-1.jpeg");
	assert_string_equal(text, "theirs");

	/* The same source's own earlier output is replaced. */
	write_file(t->fd, "cat.jpeg", "old");
	write_file(t->fd, "cat.json", "{\"source\": \"cat.png\", \"output\": \"cat.jpeg\"}\n");
	fd = output_tmp_open(t->fd, "cat.jpeg", tmp, sizeof(tmp));
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "new", 3), 3);
	assert_int_equal(output_tmp_commit_image(t->fd, fd, tmp, "cat", ".jpeg", "cat.png",
						 name, sizeof(name)),
			 0);
	assert_string_equal(name, "cat.jpeg");
	text = read_file(t->fd, "cat.jpeg");
	assert_string_equal(text, "new");

	/* A file no sidecar claims (its sidecar deleted to have it made again):
	 * nobody's, replaced. */
	write_file(t->fd, "dog.jpeg", "orphan");
	assert_int_equal(output_choose_stem_n(t->fd, "dog", "dog.png", 1, NULL, NULL, stem,
					      sizeof(stem)),
			 0);
	assert_string_equal(stem, "dog");
	fd = output_tmp_open(t->fd, "dog.jpeg", tmp, sizeof(tmp));
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "made", 4), 4);
	assert_int_equal(output_tmp_commit_image(t->fd, fd, tmp, "dog", ".jpeg", "dog.png", name,
						 sizeof(name)),
			 0);
	assert_string_equal(name, "dog.jpeg");
	text = read_file(t->fd, "dog.jpeg");
	assert_string_equal(text, "made");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_stem_basic),
	    cmocka_unit_test(test_stem_control_and_invalid),
	    cmocka_unit_test(test_stem_unicode),
	    cmocka_unit_test(test_stem_length),
	    cmocka_unit_test(test_ext),
	    cmocka_unit_test_setup_teardown(test_choose_stem, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_output_names_never_replace, setup_dir,
					    teardown_dir),
	    cmocka_unit_test_setup_teardown(test_choose_stem_unreadable, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_choose_stem_exhausted, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_write_atomic, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_tmp_open_abort, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_sweep_tmp, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_tmp_commit, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_tmp_commit_opath, setup_dir, teardown_dir),
	    cmocka_unit_test(test_dir_sync_shared),
	    cmocka_unit_test(test_mkdir_remembered),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
