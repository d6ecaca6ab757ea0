#include "dirlist.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int dirlist_open(struct dirlist *list, int dirfd)
{
	list->fd = dirfd;
	list->dir = fdopendir(dirfd);
	if (!list->dir) {
		int r = -errno;

		(void)close(dirfd);
		list->fd = -1;
		return r;
	}
	return 0;
}

static unsigned char type_of(int dirfd, const char *name)
{
	struct stat st;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return DT_WHT; /* gone meanwhile: the caller never sees it */
	if (S_ISDIR(st.st_mode))
		return DT_DIR;
	if (S_ISREG(st.st_mode))
		return DT_REG;
	if (S_ISLNK(st.st_mode))
		return DT_LNK;
	return DT_UNKNOWN;
}

const char *dirlist_next(struct dirlist *list, unsigned char *ret_type, int *ret_err)
{
	for (;;) {
		struct dirent *de;
		unsigned char type;

		errno = 0;
		de = readdir(list->dir);
		if (!de) {
			if (ret_err)
				*ret_err = -errno;
			return NULL;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		type = de->d_type;
		if (type == DT_UNKNOWN)
			type = type_of(list->fd, de->d_name);
		if (type == DT_WHT)
			continue;
		*ret_type = type;
		return de->d_name;
	}
}

void dirlist_close(struct dirlist *list)
{
	if (list->dir)
		(void)closedir(list->dir);
	list->dir = NULL;
	list->fd = -1;
}

int dirlist_open_sub(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	return fd < 0 ? -errno : fd;
}
