#include "fdio.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* off < 0: read(2) at the file offset; else pread(2) at off. */
static ssize_t read_full_at(int fd, void *buf, size_t len, off_t off)
{
	char *p = buf;
	size_t got = 0;

	while (got < len) {
		ssize_t k = off < 0 ? read(fd, p + got, len - got)
				    : pread(fd, p + got, len - got, off + (off_t)got);

		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (k == 0)
			break;
		got += (size_t)k;
	}
	return (ssize_t)got;
}

ssize_t fdio_read_full(int fd, void *buf, size_t len)
{
	return read_full_at(fd, buf, len, -1);
}

ssize_t fdio_pread_full(int fd, void *buf, size_t len, off_t off)
{
	if (off < 0)
		return -EINVAL;
	return read_full_at(fd, buf, len, off);
}

int fdio_write_all(int fd, const void *buf, size_t len, size_t *ret_written)
{
	const char *p = buf;
	size_t done = 0;
	int r = 0;

	while (done < len) {
		ssize_t k = write(fd, p + done, len - done);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			r = k < 0 ? -errno : -EIO;
			break;
		}
		done += (size_t)k;
	}
	if (ret_written)
		*ret_written = done;
	return r;
}

int fdio_read_file(int fd, size_t max, char **ret_buf, size_t *ret_len)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0, cap;
	int r;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if (st.st_size < 0 || (uint64_t)st.st_size > max)
		return -EFBIG;
	/* One byte past the size tells whether the file grew meanwhile. */
	cap = (size_t)st.st_size + 2;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t k = fdio_read_full(fd, buf + len, cap - 1 - len);

		if (k < 0) {
			r = (int)k;
			goto fail;
		}
		len += (size_t)k;
		if (len > max) {
			r = -EFBIG;
			goto fail;
		}
		if (len < cap - 1)
			break; /* end of file */
		{
			char *bigger;

			cap = cap * 2 > max + 2 ? max + 2 : cap * 2;
			bigger = realloc(buf, cap);
			if (!bigger) {
				r = -ENOMEM;
				goto fail;
			}
			buf = bigger;
		}
	}
	buf[len] = '\0';
	*ret_buf = buf;
	*ret_len = len;
	return 0;
fail:
	free(buf);
	return r;
}
