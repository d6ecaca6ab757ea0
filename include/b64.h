/* b64: standard base64 (RFC 4648, with padding), streaming-friendly. Written
 * here rather than taken from a library because it must encode chunk by chunk
 * inside curl's read callback; see bench/ for its speed. */
#ifndef SEEDREAMD_B64_H
#define SEEDREAMD_B64_H

#include <stdbool.h>
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

/* Incremental decoding, for text that arrives in pieces of any size (a
 * b64_json answer streamed to a file): the same strict rules as b64_decode().
 * Start from a zeroed struct. */
struct b64_stream {
	uint8_t group[4]; /* the sextets of a group not yet complete */
	size_t n;
	size_t pad; /* '=' seen in this group: the text ends with it */
	bool ended; /* a padded group is complete: nothing may follow */
};

/* Room out needs for len more characters. */
#define B64_STREAM_OUT_MAX(len) ((len) / 4 * 3 + 3)

/* Decodes the next len characters into out (B64_STREAM_OUT_MAX(len) bytes).
 * Returns 0 and *ret_len, or -EINVAL on a bad character or a misplaced '='. */
int b64_stream_decode(struct b64_stream *s, const char *in, size_t len, uint8_t *out,
		      size_t *ret_len);

/* The end of the text: a last group of 2 or 3 characters gives 1 or 2 bytes
 * (out holds 2). -EINVAL for one lone character or a padded group cut short. */
int b64_stream_finish(struct b64_stream *s, uint8_t *out, size_t *ret_len);

/* Lowercase hex, the other text encoding the daemon writes (SHA-256 digests,
 * raw file names in sidecars). out gets 2 * len characters and a NUL. */
void b64_hex(const uint8_t *in, size_t len, char *out);

#endif
