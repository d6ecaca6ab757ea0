/* digest: the SHA-256 of a whole file, safe to call from any thread (its
 * buffer is the caller's stack or heap, nothing static). */
#ifndef SEEDREAMD_DIGEST_H
#define SEEDREAMD_DIGEST_H

#include <stddef.h>

/* Hashes fd from offset 0 to its end with pread (the offset is untouched).
 * hex gets 64 lowercase hex digits and a NUL. 0, -ENOMEM, -EIO or -errno. */
int digest_sha256_fd(int fd, char hex[65]);

/* The same for len bytes at buf. 0, -ENOMEM or -EIO. */
int digest_sha256_buf(const void *buf, size_t len, char hex[65]);

#endif
