#include "fnv.h"

#include <string.h>

uint64_t fnv1a64_update(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;

	while (len--)
		h = (h ^ *p++) * 0x100000001b3ULL;
	return h;
}

uint64_t fnv1a64_str(const char *s)
{
	return fnv1a64_update(FNV1A64_INIT, s, strlen(s));
}
