/* textbuf: a growing text buffer with a sticky out-of-memory flag, so that a
 * writer appends freely and checks once at the end. Always NUL-terminated
 * once anything (even "") was put; the caller owns and frees p. */
#ifndef SEEDREAMD_TEXTBUF_H
#define SEEDREAMD_TEXTBUF_H

#include <stdbool.h>
#include <stddef.h>

struct textbuf {
	char *p;
	size_t len, cap;
	bool oom; /* an allocation failed: nothing more is added */
};

/* Makes room for more bytes and the NUL (doubling from 1 KiB). */
void textbuf_reserve(struct textbuf *b, size_t more);
void textbuf_put(struct textbuf *b, const void *data, size_t n);
void textbuf_str(struct textbuf *b, const char *s);
void textbuf_printf(struct textbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
