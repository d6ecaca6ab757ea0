/* clean: makes what a server (or a planted file) sent safe to keep: valid
 * UTF-8, no secret, bounded size; and checked conversions of JSON numbers.
 * Pure: no I/O, never logs. */
#ifndef SEEDREAMD_CLEAN_H
#define SEEDREAMD_CLEAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#define CLEAN_REDACTED "[redacted]"
/* A text that ends in at least this many leading bytes of the secret (the
 * secret cut by an earlier cap) has that tail redacted too. */
#define CLEAN_PARTIAL_MIN 8

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 when it is
 * invalid: overlong forms, surrogates (D800-DFFF), code points above
 * U+10FFFF and truncated sequences are rejected. */
size_t clean_utf8_seq(const unsigned char *s, size_t n);

/* Whether the NUL-terminated s is well-formed UTF-8. */
bool clean_utf8_valid(const char *s);

/* A new NUL-terminated copy of s (a NUL ends it) in which: every occurrence
 * of secret (when not NULL or empty) and a trailing cut-off part of it are
 * replaced by CLEAN_REDACTED; every byte that is not part of valid UTF-8
 * becomes U+FFFD; and when longer than max bytes (max >= 4), it is cut at a
 * character boundary and ends in U+2026 "…", max bytes in all. The secret is
 * removed before the cut, so no cut can leave part of it. Caller frees; NULL
 * only when out of memory. */
char *clean_text(const char *s, size_t max, const char *secret);

/* Cleans in place every string value and member name under item (the item
 * included), with no cap. 0 or -ENOMEM. */
int clean_json(cJSON *item, const char *secret);

/* Nesting depth of containers: 0 for a scalar, 1 for [] or {"a":1}. */
unsigned clean_json_depth(const cJSON *item);

/* v truncated toward zero, when it is finite and within int64_t; false (and
 * *ret untouched) for NaN, infinities and out-of-range values, whose cast
 * would be undefined behaviour. */
bool clean_int64(double v, int64_t *ret);

#endif
