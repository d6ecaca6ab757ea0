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

/* Head and tail: what the image is and whether it ends as a complete file
 * of its format. 0, or -errno when it cannot be read. */
static int refs_read_image(int fd, uint64_t size, struct refs_look *look)
{
	uint8_t *head = malloc(IMAGE_HEAD_MAX), *window = NULL, tail[IMAGE_TAIL_MAX];
	ssize_t head_len, tail_len;
	int r = -ENOMEM;

	if (!head)
		goto out;
	head_len = fdio_pread_full(fd, head, IMAGE_HEAD_MAX, 0);
	tail_len = fdio_pread_full(fd, tail, sizeof(tail),
				   size > sizeof(tail) ? (off_t)(size - sizeof(tail)) : 0);
	if (head_len < 0 || tail_len < 0) {
		r = (int)(head_len < 0 ? head_len : tail_len);
		goto out;
	}
	look->pr = image_probe(head, (size_t)head_len, size, &look->info);
	if (look->pr == IMAGE_PROBE_CORRUPT && look->info.format == IMAGE_FORMAT_TIFF) {
		/* A TIFF whose first directory lies beyond the head. */
		uint64_t off = image_tiff_ifd_offset(head, (size_t)head_len);
		if (off >= (uint64_t)head_len && off < size) {
			ssize_t n;
			window = malloc(IMAGE_TIFF_IFD_WINDOW);
			if (!window)
				goto out;
			n = fdio_pread_full(fd, window, IMAGE_TIFF_IFD_WINDOW, (off_t)off);
			if (n >= 0)
				look->pr = image_probe_tiff_ifd(head, (size_t)head_len, window,
								(size_t)n, off, size, &look->info);
		}
	}
	look->complete = look->pr == IMAGE_PROBE_OK &&
			 image_tail_complete(look->info.format, tail, (size_t)tail_len);
	r = 0;
out:
	free(head);
	free(window);
	return r;
}

/* What head and tail say: the same checks a dropped file gets (job_check),
 * except that a reference is never fitted: it must be sendable as it is. */
static int refs_judge(const struct refs_look *look, uint64_t size, struct config_reference *ref,
		      char *why, size_t whylen)
{
	const char *code;
	char msg[256];

	if (look->pr != IMAGE_PROBE_OK) {
		(void)snprintf(why, whylen, "is not a usable image: %s",
			       image_probe_message(look->pr));
		return -EINVAL;
	}
	if (!image_api_format(look->info.format)) {
		(void)snprintf(why, whylen,
			       "is %s, which the API does not take as it is (it is sent "
			       "unconverted: convert it to PNG or JPEG)",
			       image_format_name(look->info.format));
		return -EINVAL;
	}
	if (!look->complete) {
		(void)snprintf(why, whylen, "is an incomplete %s file",
			       image_format_name(look->info.format));
		return -EINVAL;
	}
	code = image_check_limits(&look->info, size, UINT64_MAX, msg, sizeof(msg));
	if (code) {
		(void)snprintf(why, whylen, "is outside the API's limits: %s", msg);
		return -EINVAL;
	}
	(void)snprintf(ref->format, sizeof(ref->format), "%s",
		       image_format_name(look->info.format));
	return 0;
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

int refs_look_fd(int fd, struct config_reference *ret_ref, struct refs_look *ret_look, char *why,
		 size_t whylen)
{
	struct stat st;
	int r;

	if (fstat(fd, &st) < 0) {
		r = -errno;
		(void)snprintf(why, whylen, "cannot be examined: %s", strerror(-r));
		return r;
	}
	if (!S_ISREG(st.st_mode)) {
		(void)snprintf(why, whylen, "is not a regular file");
		return -EINVAL;
	}
	if (st.st_size == 0) {
		(void)snprintf(why, whylen, "is empty");
		return -EINVAL;
	}
	refs_fill_identity(&st, ret_ref);
	r = refs_read_image(fd, (uint64_t)st.st_size, ret_look);
	if (r == -ENOMEM)
		(void)snprintf(why, whylen, "out of memory");
	else if (r < 0)
		(void)snprintf(why, whylen, "cannot be read: %s", strerror(-r));
	return r;
}

int refs_probe_fd(int fd, struct config_reference *ret_ref, char *why, size_t whylen)
{
	struct refs_look look;
	int r = refs_look_fd(fd, ret_ref, &look, why, whylen);

	if (r == 0)
		r = refs_judge(&look, ret_ref->size, ret_ref, why, whylen);
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
