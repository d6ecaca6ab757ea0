#include "refs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fdio.h"
#include "image.h"

static void refs_fill_identity(const struct stat *st, struct config_reference *ref)
{
	ref->size = (uint64_t)st->st_size;
	ref->dev = (uint64_t)st->st_dev;
	ref->ino = (uint64_t)st->st_ino;
	ref->mtime_sec = (int64_t)st->st_mtim.tv_sec;
	ref->mtime_nsec = st->st_mtim.tv_nsec;
}

/* What head and tail say: the same checks a dropped file gets (job_check),
 * except that a reference is never fitted: it must be sendable as it is. */
static int refs_judge(int fd, uint64_t size, struct config_reference *ref, char *why, size_t whylen)
{
	uint8_t *head = malloc(IMAGE_HEAD_MAX), *window = NULL, tail[IMAGE_TAIL_MAX];
	ssize_t head_len, tail_len;
	struct image_info info;
	enum image_probe_result pr;
	const char *code;
	char msg[256];
	int r = -ENOMEM;

	if (!head)
		goto out;
	head_len = fdio_pread_full(fd, head, IMAGE_HEAD_MAX, 0);
	tail_len = fdio_pread_full(fd, tail, sizeof(tail),
				   size > sizeof(tail) ? (off_t)(size - sizeof(tail)) : 0);
	if (head_len < 0 || tail_len < 0) {
		r = (int)(head_len < 0 ? head_len : tail_len);
		(void)snprintf(why, whylen, "cannot be read: %s", strerror(-r));
		goto out;
	}
	pr = image_probe(head, (size_t)head_len, size, &info);
	if (pr == IMAGE_PROBE_CORRUPT && info.format == IMAGE_FORMAT_TIFF) {
		/* A TIFF whose first directory lies beyond the head. */
		uint64_t off = image_tiff_ifd_offset(head, (size_t)head_len);
		if (off >= (uint64_t)head_len && off < size) {
			ssize_t n;
			window = malloc(IMAGE_TIFF_IFD_WINDOW);
			if (!window)
				goto out;
			n = fdio_pread_full(fd, window, IMAGE_TIFF_IFD_WINDOW, (off_t)off);
			if (n >= 0)
				pr = image_probe_tiff_ifd(head, (size_t)head_len, window, (size_t)n,
							  off, size, &info);
		}
	}
	r = -EINVAL;
	if (pr != IMAGE_PROBE_OK) {
		(void)snprintf(why, whylen, "is not a usable image: %s", image_probe_message(pr));
		goto out;
	}
	if (!image_api_format(info.format)) {
		(void)snprintf(why, whylen,
			       "is %s, which the API does not take as it is (it is sent "
			       "unconverted: convert it to PNG or JPEG)",
			       image_format_name(info.format));
		goto out;
	}
	if (!image_tail_complete(info.format, tail, (size_t)tail_len)) {
		(void)snprintf(why, whylen, "is an incomplete %s file",
			       image_format_name(info.format));
		goto out;
	}
	code = image_check_limits(&info, size, UINT64_MAX, msg, sizeof(msg));
	if (code) {
		(void)snprintf(why, whylen, "is outside the API's limits: %s", msg);
		goto out;
	}
	(void)snprintf(ref->format, sizeof(ref->format), "%s", image_format_name(info.format));
	r = 0;
out:
	if (r == -ENOMEM)
		(void)snprintf(why, whylen, "out of memory");
	free(head);
	free(window);
	return r;
}

int refs_probe(const char *path, struct config_reference *ret_ref, char *why, size_t whylen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

	if (fd < 0) {
		int r = -errno;
		(void)snprintf(why, whylen, "cannot be opened: %s", strerror(-r));
		return r;
	}
	return refs_probe_fd(fd, ret_ref, why, whylen);
}

int refs_probe_fd(int fd, struct config_reference *ret_ref, char *why, size_t whylen)
{
	struct stat st;
	int r;

	if (fstat(fd, &st) < 0) {
		r = -errno;
		(void)snprintf(why, whylen, "cannot be examined: %s", strerror(-r));
		goto out;
	}
	r = -EINVAL;
	if (!S_ISREG(st.st_mode)) {
		(void)snprintf(why, whylen, "is not a regular file");
		goto out;
	}
	if (st.st_size == 0) {
		(void)snprintf(why, whylen, "is empty");
		goto out;
	}
	refs_fill_identity(&st, ret_ref);
	r = refs_judge(fd, (uint64_t)st.st_size, ret_ref, why, whylen);
out:
	(void)close(fd);
	return r;
}

int refs_open(const struct config_reference *ref)
{
	int fd = open(ref->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

	if (fd < 0)
		return -errno;
	return refs_check_fd(fd, ref);
}

int refs_check_fd(int fd, const struct config_reference *ref)
{
	struct config_reference now;
	struct stat st;

	if (fstat(fd, &st) < 0) {
		int r = -errno;
		(void)close(fd);
		return r;
	}
	refs_fill_identity(&st, &now);
	if (!S_ISREG(st.st_mode) || now.size != ref->size || now.dev != ref->dev ||
	    now.ino != ref->ino || now.mtime_sec != ref->mtime_sec ||
	    now.mtime_nsec != ref->mtime_nsec) {
		(void)close(fd);
		return -ESTALE;
	}
	return fd;
}

int refs_copy(const struct config_reference *src, size_t n, struct config_reference **ret)
{
	struct config_reference *refs;

	*ret = NULL;
	if (!n)
		return 0;
	refs = calloc(n, sizeof(*refs));
	if (!refs)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		refs[i] = src[i];
		refs[i].path = strdup(src[i].path);
		if (!refs[i].path) {
			refs_free(refs, i);
			return -ENOMEM;
		}
	}
	*ret = refs;
	return 0;
}

void refs_free(struct config_reference *refs, size_t n)
{
	if (!refs)
		return;
	for (size_t i = 0; i < n; i++)
		free(refs[i].path);
	free(refs);
}
