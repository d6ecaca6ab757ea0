/* fdio: whole reads and writes on a file descriptor, through EINTR and short
 * counts; the one copy of those loops. Never logs; returns negative errno. */
#ifndef SEEDREAMD_FDIO_H
#define SEEDREAMD_FDIO_H

#include <stddef.h>
#include <sys/types.h>

/* Reads until len bytes or end of file. The bytes read (< len only at end of
 * file), or -errno. */
ssize_t fdio_read_full(int fd, void *buf, size_t len);
/* The same from offset off, without moving the file offset. */
ssize_t fdio_pread_full(int fd, void *buf, size_t len, off_t off);
/* Writes all len bytes. 0, -errno, or -EIO when write(2) makes no progress.
 * *ret_written (may be NULL) says how many reached the file, also on error. */
int fdio_write_all(int fd, const void *buf, size_t len, size_t *ret_written);

/* Reads a whole regular file of at most max bytes from fd (its offset) into
 * a NUL-terminated buffer the caller frees. 0, -EINVAL (not a regular
 * file), -EFBIG, -ENOMEM or -errno. */
int fdio_read_file(int fd, size_t max, char **ret_buf, size_t *ret_len);

#endif
