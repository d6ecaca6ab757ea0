/* refs: reference images (a folder's references:), the fixed images sent
 * after the dropped one in the request's "image" array. Validated when the
 * configuration is read (--check, start, reload), and opened again for each
 * request on a storage worker, which sends one only while it is still the
 * file that was validated. Never logs; returns negative errno. */
#ifndef SEEDREAMD_REFS_H
#define SEEDREAMD_REFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "image.h"

/* Opens path and checks that it is a regular, readable, complete image in a
 * format the API takes, within its pixel and aspect limits; fills ret_ref's
 * identity, size and format (not path, line or column). The size is judged
 * by the caller (the folder's max_input_bytes). 0, or -EINVAL (-errno for
 * open/read failures) with a sentence in why. Blocking: configuration time
 * only, never on the event loop of a running daemon's jobs. */
int refs_probe(const char *path, struct config_reference *ret_ref, char *why, size_t whylen);

/* On a worker: opens the reference for a request. The descriptor, -ESTALE
 * when the file is not the one validated (replaced, changed, or its size or
 * mtime differ), or -errno (-ENOENT when it vanished). */
int refs_open(const struct config_reference *ref);

/* As refs_probe for a file the caller opened (a group's image, opened
 * beneath its folder); closes fd in every case. */
int refs_probe_fd(int fd, struct config_reference *ret_ref, char *why, size_t whylen);

/* What refs_look_fd saw of an image, before any judgement. */
struct refs_look {
	enum image_probe_result pr;
	struct image_info info;
	bool complete; /* ends the way a complete file of its format ends */
};

/* The first half of refs_probe_fd, for a caller that judges by other rules
 * (a group's image, which may be fitted): ret_ref's identity, size and
 * what head and tail say (format not set). fd stays open. 0, -EINVAL (not a
 * regular file, empty) or -errno, with a sentence in why. */
int refs_look_fd(int fd, struct config_reference *ret_ref, struct refs_look *ret_look, char *why,
		 size_t whylen);

/* As refs_open for a file the caller opened: fd, or -ESTALE (fd closed)
 * when it is not the one validated, or -errno (fd closed). */
int refs_check_fd(int fd, const struct config_reference *ref);

/* A deep copy of n references (NULL for n == 0); -ENOMEM. */
int refs_copy(const struct config_reference *src, size_t n, struct config_reference **ret);
/* Frees n references and the array; accepts NULL. */
void refs_free(struct config_reference *refs, size_t n);

#endif
