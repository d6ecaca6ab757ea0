/* Unit tests for xmp: the packet builder's escaping and bounds, and the APP1
 * insertion point in JPEGs, including a fuzz-like pass over generated and
 * mutated JPEG headers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "xmp.h"

#define SHA "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static struct xmp_fields fields(const char *source, const char *prompt)
{
	return (struct xmp_fields){.tool = "seedreamd 1.0",
				   .model = "doubao-seedream-4-5-251128",
				   .created = 1764468000,
				   .source = source,
				   .prompt_sha256 = SHA,
				   .prompt = prompt};
}

static void test_packet_fields(void **state)
{
	struct xmp_fields f = fields("in/a.png", "make it blue");
	char *p = NULL;
	size_t len = 0;

	(void)state;
	assert_int_equal(xmp_build_packet(&f, &p, &len), 0);
	assert_int_equal(strlen(p), len);
	assert_non_null(strstr(p, "<Iptc4xmpExt:DigitalSourceType>" XMP_DIGITAL_SOURCE_TYPE
				  "</Iptc4xmpExt:DigitalSourceType>"));
	assert_non_null(strstr(p, "<xmp:CreateDate>2025-11-30T02:00:00Z</xmp:CreateDate>"));
	assert_non_null(strstr(p, "<seedreamd:SourceFile>in/a.png</seedreamd:SourceFile>"));
	assert_non_null(strstr(p, "<seedreamd:PromptSHA256>" SHA "</seedreamd:PromptSHA256>"));
	assert_non_null(strstr(p, "<seedreamd:Prompt>make it blue</seedreamd:Prompt>"));
	free(p);

	f.prompt = NULL; /* embed_prompt off */
	assert_int_equal(xmp_build_packet(&f, &p, &len), 0);
	assert_null(strstr(p, "seedreamd:Prompt>"));
	free(p);
}

static void test_packet_escapes(void **state)
{
	/* quotes, markup, an invalid byte, a control character, U+FFFE, CR */
	struct xmp_fields f = fields("a\"b'<c>&d\xff\x01\xef\xbf\xbe\re.png", NULL);
	char *p = NULL;
	size_t len = 0, i;

	(void)state;
	assert_int_equal(xmp_build_packet(&f, &p, &len), 0);
	assert_non_null(
	    strstr(p, "<seedreamd:SourceFile>a&quot;b&apos;&lt;c&gt;&amp;d"
		      "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD&#13;e.png</seedreamd:SourceFile>"));
	for (i = 0; i < len; i++)
		assert_true((unsigned char)p[i] >= 0x20 || p[i] == '\n');
	free(p);
}

static void test_packet_bounds(void **state)
{
	char *big = malloc(20001), *p = NULL;
	struct xmp_fields f;
	size_t len = 0;

	(void)state;
	assert_non_null(big);
	memset(big, '&', 20000); /* 100000 bytes escaped: over the limit */
	big[20000] = '\0';
	f = fields("a.png", big);
	assert_int_equal(xmp_build_packet(&f, &p, &len), 0);
	assert_null(strstr(p, "seedreamd:Prompt>")); /* left out, the hash stays */
	assert_non_null(strstr(p, SHA));
	assert_true(len <= XMP_PACKET_MAX);
	free(p);
	f = fields(big, NULL);
	assert_int_equal(xmp_build_packet(&f, &p, &len), -E2BIG);
	f = fields(NULL, NULL);
	assert_int_equal(xmp_build_packet(&f, &p, &len), -EINVAL);
	free(big);
}

/* Appends a segment marker m with payload (header + filler) to buf. */
static size_t put_seg(uint8_t *buf, size_t at, uint8_t m, const char *head, size_t head_len,
		      size_t filler)
{
	size_t len = 2 + head_len + filler;

	buf[at++] = 0xFF;
	buf[at++] = m;
	buf[at++] = (uint8_t)(len >> 8);
	buf[at++] = (uint8_t)len;
	memcpy(buf + at, head, head_len);
	at += head_len;
	memset(buf + at, 0x5A, filler);
	return at + filler;
}

static size_t put_scan(uint8_t *buf, size_t at)
{
	at = put_seg(buf, at, 0xDA, "", 0, 10);
	memcpy(buf + at, "\x12\x34\xFF\x00\x56\xFF\xD9", 7);
	return at + 7;
}

static void test_insert_offset(void **state)
{
	uint8_t j[512];
	size_t n, off = 0, after_exif;

	(void)state;
	j[0] = 0xFF;
	j[1] = 0xD8;
	n = put_seg(j, 2, 0xE0, "JFIF\0", 5, 9);
	n = put_seg(j, n, 0xE1, "Exif\0\0", 6, 20);
	after_exif = n;
	n = put_seg(j, n, 0xDB, "", 0, 65);
	n = put_scan(j, n);
	assert_int_equal(xmp_jpeg_insert_offset(j, n, &off), 0);
	assert_int_equal(off, after_exif);

	/* an ICC APP2 first: insert right after SOI's run, before it */
	n = put_seg(j, 2, 0xE2, "ICC_PROFILE\0", 12, 4);
	after_exif = n;
	n = put_seg(j, n, 0xE0, "JFIF\0", 5, 9);
	n = put_scan(j, n);
	assert_int_equal(xmp_jpeg_insert_offset(j, n, &off), 0);
	assert_int_equal(off, 2);
	(void)after_exif;

	/* an XMP packet already there */
	n = put_seg(j, 2, 0xE1, "http://ns.adobe.com/xap/1.0/\0", 29, 4);
	n = put_scan(j, n);
	assert_int_equal(xmp_jpeg_insert_offset(j, n, &off), -EEXIST);

	/* cut short, not a JPEG, a length past the end */
	assert_int_equal(xmp_jpeg_insert_offset(j, 20, &off), -EINVAL);
	assert_int_equal(xmp_jpeg_insert_offset((const uint8_t *)"\x89PNG\r\n\x1a\n", 8, &off),
			 -EINVAL);
	j[4] = 0xFF;
	assert_int_equal(xmp_jpeg_insert_offset(j, n, &off), -EINVAL);
}

static uint32_t rng_next(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* Random headers of APPn/DQT/SOF/COM segments, some mutated: whatever the
 * insertion point accepts must come out as a JPEG whose segments parse and
 * whose other bytes are unchanged. */
static void test_insert_fuzz(void **state)
{
	static const uint8_t markers[] = {0xE0, 0xE1, 0xE2, 0xED, 0xEE, 0xDB, 0xC0, 0xC4, 0xFE};
	uint32_t seed = 12345;
	struct xmp_fields f = fields("x.png", "p");
	char *packet = NULL;
	uint8_t *seg = NULL, j[4096], out[4096 + 70000];
	size_t packet_len = 0, seg_len = 0, accepted = 0;
	int round;

	(void)state;
	assert_int_equal(xmp_build_packet(&f, &packet, &packet_len), 0);
	assert_int_equal(xmp_jpeg_segment(packet, packet_len, &seg, &seg_len), 0);
	assert_int_equal(seg_len, 2 + 2 + 29 + packet_len);
	for (round = 0; round < 20000; round++) {
		size_t n = 2, k, nseg = rng_next(&seed) % 6, off;
		int r;

		j[0] = 0xFF;
		j[1] = 0xD8;
		for (k = 0; k < nseg; k++) {
			uint8_t m = markers[rng_next(&seed) % sizeof(markers)];

			if (m == 0xE1 && rng_next(&seed) % 2)
				n = put_seg(j, n, m, "Exif\0\0", 6, rng_next(&seed) % 40);
			else
				n = put_seg(j, n, m, "", 0, rng_next(&seed) % 40);
		}
		n = put_scan(j, n);
		if (round % 2) { /* mutate a few bytes */
			unsigned flips = 1 + rng_next(&seed) % 3;

			while (flips--)
				j[rng_next(&seed) % n] = (uint8_t)rng_next(&seed);
		}
		r = xmp_jpeg_insert_offset(j, n, &off);
		if (round % 2 == 0)
			assert_int_equal(r, 0);
		if (r != 0)
			continue;
		accepted++;
		assert_true(off >= 2 && off <= n);
		memcpy(out, j, off);
		memcpy(out + off, seg, seg_len);
		memcpy(out + off + seg_len, j + off, n - off);
		assert_int_equal(xmp_jpeg_check(out, n + seg_len), 0);
		/* and a second insertion sees the first */
		assert_int_equal(xmp_jpeg_insert_offset(out, n + seg_len, &off), -EEXIST);
	}
	assert_true(accepted > 10000);
	free(packet);
	free(seg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_packet_fields), cmocka_unit_test(test_packet_escapes),
	    cmocka_unit_test(test_packet_bounds), cmocka_unit_test(test_insert_offset),
	    cmocka_unit_test(test_insert_fuzz),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
