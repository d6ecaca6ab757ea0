/* digest: see digest.h. */
#include "digest.h"

#include "b64.h"
#include "fdio.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define DIGEST_CHUNK (256 * 1024)

int digest_sha256_fd(int fd, char hex[65])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	uint8_t *buf = malloc(DIGEST_CHUNK);
	off_t off = 0;
	int r = 0;

	if (!ctx || !buf) {
		r = -ENOMEM;
		goto out;
	}
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		r = -EIO;
		goto out;
	}
	for (;;) {
		ssize_t n = fdio_pread_full(fd, buf, DIGEST_CHUNK, off);

		if (n < 0) {
			r = (int)n;
			goto out;
		}
		if (n == 0)
			break;
		(void)EVP_DigestUpdate(ctx, buf, (size_t)n);
		off += n;
	}
	if (EVP_DigestFinal_ex(ctx, md, &md_len) != 1 || md_len != 32) {
		r = -EIO;
		goto out;
	}
	b64_hex(md, md_len, hex);
out:
	EVP_MD_CTX_free(ctx);
	free(buf);
	return r;
}

int digest_sha256_buf(const void *buf, size_t len, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;

	if (EVP_Digest(buf, len, md, &md_len, EVP_sha256(), NULL) != 1 || md_len != 32)
		return -EIO;
	b64_hex(md, md_len, hex);
	return 0;
}
