#include "stem.h"

#include <string.h>

/* Whether name is "<stem>-<k>" with k in 1..n written without leading zeros. */
static bool stem_is_numbered(const char *name, const char *stem, unsigned n)
{
	size_t len = strlen(stem);
	unsigned long k = 0;
	const char *p;

	if (strncmp(name, stem, len) != 0 || name[len] != '-')
		return false;
	p = name + len + 1;
	if (*p < '1' || *p > '9')
		return false;
	for (; *p >= '0' && *p <= '9'; p++) {
		k = k * 10 + (unsigned long)(*p - '0');
		if (k > n)
			return false;
	}
	return *p == '\0';
}

/* Whether name is "<stem>.error": its sidecar <stem>.error.json is the
 * error record a failing stem writes. */
static bool stem_is_error_of(const char *name, const char *stem)
{
	size_t len = strlen(stem);

	return strncmp(name, stem, len) == 0 && strcmp(name + len, ".error") == 0;
}

bool stem_outputs_meet(const char *a, unsigned a_outputs, const char *b, unsigned b_outputs)
{
	/* Two different stems' numbered bases never meet: "<a>-<i>" == "<b>-<j>"
	 * splits at the same last '-', so a == b. */
	return strcmp(a, b) == 0 || stem_is_error_of(a, b) || stem_is_error_of(b, a) ||
	       (b_outputs > 1 && stem_is_numbered(a, b, b_outputs)) ||
	       (a_outputs > 1 && stem_is_numbered(b, a, a_outputs));
}
