/* dirlist: one directory's entries, the part every tree walk shares (the
 * index load and cache save, the temporary-file sweep, the watch scan, the
 * old journal folder). Never logs; returns negative errno. */
#ifndef SEEDREAMD_DIRLIST_H
#define SEEDREAMD_DIRLIST_H

#include <dirent.h>

struct dirlist {
	DIR *dir;
	int fd;
};

/* Starts listing the directory dirfd, which it takes over (closed by
 * dirlist_close, or here on error). 0 or -errno. */
int dirlist_open(struct dirlist *list, int dirfd);

/* The next name other than "." and "..", with its type in *ret_type: d_type,
 * or when the file system gives none, from fstatat without following a
 * symlink (DT_DIR, DT_REG, DT_LNK, else DT_UNKNOWN; an entry gone meanwhile is
 * passed over). NULL at the end (*ret_err 0) or on an error (*ret_err
 * -errno); ret_err may be NULL. The name lives until the next call. */
const char *dirlist_next(struct dirlist *list, unsigned char *ret_type, int *ret_err);

void dirlist_close(struct dirlist *list);

/* Opens the subdirectory name of dirfd, never through a symlink. fd or -errno. */
int dirlist_open_sub(int dirfd, const char *name);

#endif
