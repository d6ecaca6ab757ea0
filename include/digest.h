/* digest: the SHA-256 of a whole file, the one copy of that loop. Never logs. */
#ifndef SEEDREAMD_DIGEST_H
#define SEEDREAMD_DIGEST_H

/* SHA-256 of fd's contents from offset 0 (pread: the file offset does not
 * move), as 64 lowercase hex digits and a NUL. Its own buffer: any thread may
 * hash at once. 0, -ENOMEM, -EIO or -errno. */
int digest_sha256_fd(int fd, char hex[65]);

#endif
