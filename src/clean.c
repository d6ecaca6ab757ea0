#include "clean.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define REPLACEMENT "\xef\xbf\xbd" /* U+FFFD */
#define ELLIPSIS    "\xe2\x80\xa6" /* U+2026 */

size_t clean_utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		cp = c & 0x1fu;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		cp = c & 0x0fu;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		cp = c & 0x07u;
	} else {
		return 0; /* a continuation byte, C0/C1 (overlong) or F5..FF */
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3fu);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000))
		return 0;
	if ((cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return len;
}

bool clean_utf8_valid(const char *s)
{
	size_t n = strlen(s);

	for (size_t i = 0; i < n;) {
		size_t len = clean_utf8_seq((const unsigned char *)s + i, n - i);
		if (len == 0)
			return false;
		i += len;
	}
	return true;
}

/* s with the secret replaced; a trailing part of it too (see the header). */
static char *scrub(const char *s, const char *secret)
{
	size_t n = strlen(s), k = secret ? strlen(secret) : 0, r = strlen(CLEAN_REDACTED);
	size_t hits = 0, o = 0, tail = 0;
	const char *p, *q;
	char *out;

	if (k > 0)
		for (p = s; (q = strstr(p, secret)); p = q + k)
			hits++;
	/* The longest tail that is a proper prefix of the secret. */
	for (size_t t = k > 0 ? (k - 1 < n ? k - 1 : n) : 0; t >= CLEAN_PARTIAL_MIN; t--) {
		if (memcmp(s + n - t, secret, t) == 0) {
			tail = t;
			break;
		}
	}
	out = malloc(n + hits * r + (tail ? r : 0) + 1);
	if (!out)
		return NULL;
	p = s;
	if (k > 0) {
		for (; (q = strstr(p, secret)); p = q + k) {
			memcpy(out + o, p, (size_t)(q - p));
			o += (size_t)(q - p);
			memcpy(out + o, CLEAN_REDACTED, r);
			o += r;
		}
	}
	/* A tail inside a full hit already replaced is gone; keep what remains. */
	if (tail && (size_t)(s + n - p) >= tail) {
		size_t keep = (size_t)(s + n - p) - tail;
		memcpy(out + o, p, keep);
		o += keep;
		memcpy(out + o, CLEAN_REDACTED, r);
		o += r;
	} else {
		memcpy(out + o, p, (size_t)(s + n - p));
		o += (size_t)(s + n - p);
	}
	out[o] = '\0';
	return out;
}

char *clean_text(const char *s, size_t max, const char *secret)
{
	char *scrubbed = scrub(s, secret), *out;
	size_t n, o = 0, limit;

	if (!scrubbed)
		return NULL;
	n = strlen(scrubbed);
	out = malloc(3 * n + 1);
	if (!out) {
		free(scrubbed);
		return NULL;
	}
	for (size_t i = 0; i < n;) {
		size_t len = clean_utf8_seq((const unsigned char *)scrubbed + i, n - i);
		if (len == 0) {
			memcpy(out + o, REPLACEMENT, 3);
			o += 3;
			i++;
		} else {
			memcpy(out + o, scrubbed + i, len);
			o += len;
			i += len;
		}
	}
	free(scrubbed);
	if (max < 4)
		max = 4;
	if (o > max) {
		/* Back up to the start of a character, then add the ellipsis. */
		limit = max - 3;
		while (limit > 0 && ((unsigned char)out[limit] & 0xc0) == 0x80)
			limit--;
		memcpy(out + limit, ELLIPSIS, 3);
		o = limit + 3;
	}
	out[o] = '\0';
	return out;
}

static int clean_one(cJSON *item, const char *secret)
{
	char *c;

	if (item->string && !(item->type & cJSON_StringIsConst)) {
		c = clean_text(item->string, SIZE_MAX, secret);
		if (!c)
			return -ENOMEM;
		if (strcmp(c, item->string) != 0) {
			/* Member names belong to cJSON's allocator. */
			char *name = cJSON_malloc(strlen(c) + 1);
			if (!name) {
				free(c);
				return -ENOMEM;
			}
			strcpy(name, c);
			cJSON_free(item->string);
			item->string = name;
		}
		free(c);
	}
	if (cJSON_IsString(item) && item->valuestring) {
		c = clean_text(item->valuestring, SIZE_MAX, secret);
		if (!c)
			return -ENOMEM;
		if (strcmp(c, item->valuestring) != 0 && !cJSON_SetValuestring(item, c)) {
			free(c);
			return -ENOMEM;
		}
		free(c);
	}
	/* cJSON's parser stops nesting at CJSON_NESTING_LIMIT: bounded recursion. */
	for (cJSON *child = item->child; child; child = child->next)
		if (clean_one(child, secret) < 0)
			return -ENOMEM;
	return 0;
}

int clean_json(cJSON *item, const char *secret)
{
	return item ? clean_one(item, secret) : 0;
}

unsigned clean_json_depth(const cJSON *item)
{
	unsigned deepest = 0;

	if (!cJSON_IsObject(item) && !cJSON_IsArray(item))
		return 0;
	for (const cJSON *c = item->child; c; c = c->next) {
		unsigned d = clean_json_depth(c);
		if (d > deepest)
			deepest = d;
	}
	return deepest + 1;
}

bool clean_int64(double v, int64_t *ret)
{
	/* -2^63 is exact; 2^63 is the first double above INT64_MAX. */
	if (!(v >= -0x1p63 && v < 0x1p63))
		return false;
	*ret = (int64_t)v;
	return true;
}
