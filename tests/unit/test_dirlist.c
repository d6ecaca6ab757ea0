#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dirlist.h"

/* Every name but "." and "..", hidden ones too, each with its type; a
 * symlink is reported as one and never opened as a directory. */
static void test_list(void **state)
{
	char root[] = "/tmp/test_dirlist.XXXXXX";
	int fd, sub, r = 1, seen = 0;
	struct dirlist list;
	unsigned char type;
	const char *name;

	(void)state;
	assert_non_null(mkdtemp(root));
	fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(mkdirat(fd, "d", 0700), 0);
	assert_int_equal(mkdirat(fd, ".hidden", 0700), 0);
	sub = openat(fd, "f", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	assert_true(sub >= 0);
	close(sub);
	assert_int_equal(symlinkat("d", fd, "l"), 0);
	assert_int_equal(mkfifoat(fd, "p", 0600), 0);

	assert_int_equal(dirlist_open(&list, dup(fd)), 0);
	while ((name = dirlist_next(&list, &type, &r))) {
		seen++;
		if (!strcmp(name, "d") || !strcmp(name, ".hidden"))
			assert_int_equal(type, DT_DIR);
		else if (!strcmp(name, "f"))
			assert_int_equal(type, DT_REG);
		else if (!strcmp(name, "l"))
			assert_int_equal(type, DT_LNK);
		else if (!strcmp(name, "p"))
			assert_int_equal(type, DT_FIFO);
		else
			fail_msg("unexpected name %s", name);
	}
	assert_int_equal(r, 0);
	assert_int_equal(seen, 5);
	dirlist_close(&list);

	sub = dirlist_open_sub(fd, "d");
	assert_true(sub >= 0);
	close(sub);
	/* Linux says ENOTDIR for a symlink with O_DIRECTORY | O_NOFOLLOW. */
	r = dirlist_open_sub(fd, "l");
	assert_true(r == -ELOOP || r == -ENOTDIR);
	assert_int_equal(dirlist_open_sub(fd, "f"), -ENOTDIR);
	assert_int_equal(dirlist_open_sub(fd, "missing"), -ENOENT);
	/* Not a directory: refused, and the descriptor is closed. */
	sub = openat(fd, "f", O_RDONLY | O_CLOEXEC);
	assert_true(sub >= 0);
	assert_int_equal(dirlist_open(&list, sub), -ENOTDIR);
	assert_int_equal(fcntl(sub, F_GETFD), -1);

	unlinkat(fd, "p", 0);
	unlinkat(fd, "l", 0);
	unlinkat(fd, "f", 0);
	unlinkat(fd, "d", AT_REMOVEDIR);
	unlinkat(fd, ".hidden", AT_REMOVEDIR);
	close(fd);
	rmdir(root);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_list),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
