/* b64: standard base64 (RFC 4648, with padding), streaming-friendly. Written
 * here rather than taken from a library because it must encode chunk by chunk
 * inside curl's read callback; see bench/ for its speed. */
#ifndef SEEDREAMD_B64_H
#define SEEDREAMD_B64_H

#include <stddef.h>
#include <stdint.h>

#define B64_ENCODED_LEN(n) ((((n) + 2) / 3) * 4)

/* Encodes len bytes into out (B64_ENCODED_LEN(len) bytes, no NUL added).
 * For streaming, feed chunks whose length is a multiple of 3, except the last.
 * Returns the number of characters written. */
size_t b64_encode(const uint8_t *in, size_t len, char *out);

/* Decodes text (whitespace not allowed, padding optional at the end) into out,
 * which must hold at least len / 4 * 3 + 3 bytes. Returns 0 and *ret_len, or
 * -EINVAL on a bad character or length. */
int b64_decode(const char *in, size_t len, uint8_t *out, size_t *ret_len);

/* Lowercase hex, the other text encoding the daemon writes (SHA-256 digests,
 * raw file names in sidecars). out gets 2 * len characters and a NUL. */
void b64_hex(const uint8_t *in, size_t len, char *out);

#endif
