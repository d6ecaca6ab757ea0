/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "image.h"

/* A growable byte buffer for building test images. */
struct buf {
	uint8_t d[8192];
	size_t n;
};

static void put(struct buf *b, const void *p, size_t n)
{
	assert_true(b->n + n <= sizeof(b->d));
	memcpy(b->d + b->n, p, n);
	b->n += n;
}

static void put_str(struct buf *b, const char *s)
{
	put(b, s, strlen(s));
}

static void put8(struct buf *b, unsigned v)
{
	uint8_t c = (uint8_t)v;

	put(b, &c, 1);
}

static void put16be(struct buf *b, unsigned v)
{
	put8(b, v >> 8);
	put8(b, v);
}

static void put16le(struct buf *b, unsigned v)
{
	put8(b, v);
	put8(b, v >> 8);
}

static void put32be(struct buf *b, uint32_t v)
{
	put16be(b, v >> 16);
	put16be(b, v & 0xffff);
}

static void put32le(struct buf *b, uint32_t v)
{
	put16le(b, v & 0xffff);
	put16le(b, v >> 16);
}

static void put_zeros(struct buf *b, size_t n)
{
	assert_true(b->n + n <= sizeof(b->d));
	memset(b->d + b->n, 0, n);
	b->n += n;
}

static void set32le(struct buf *b, size_t off, uint32_t v)
{
	b->d[off] = (uint8_t)v;
	b->d[off + 1] = (uint8_t)(v >> 8);
	b->d[off + 2] = (uint8_t)(v >> 16);
	b->d[off + 3] = (uint8_t)(v >> 24);
}

static void make_png(struct buf *b, uint32_t w, uint32_t h)
{
	b->n = 0;
	put(b, "\x89PNG\r\n\x1a\n", 8);
	put32be(b, 13);
	put_str(b, "IHDR");
	put32be(b, w);
	put32be(b, h);
	put(b, "\x08\x02\x00\x00\x00", 5);
	put32be(b, 0x12345678); /* CRC: not checked */
	put32be(b, 0);
	put_str(b, "IDAT");
	put32be(b, 0);
	put(b, "\x00\x00\x00\x00IEND\xae\x42\x60\x82", 12);
}

/* SOI, APP0, an optional APPn of `app_len` bytes, DQT, DHT, then the frame
 * marker `sof`, SOS, a little scan data, EOI. */
static void make_jpeg_with(struct buf *b, unsigned sof, uint32_t w, uint32_t h, size_t app_len)
{
	b->n = 0;
	put(b, "\xff\xd8", 2);
	put(b, "\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00", 18);
	if (app_len) {
		put(b, "\xff\xe1", 2);
		put16be(b, (unsigned)app_len + 2);
		put_zeros(b, app_len);
	}
	put(b, "\xff\xdb\x00\x04\x00\x01", 6);	   /* DQT (short, but only lengths matter) */
	put(b, "\xff\xc4\x00\x05\x00\x00\x00", 7); /* DHT: C4 is not a frame */
	put8(b, 0xff);
	put8(b, sof);
	put16be(b, 17);
	put8(b, 8);
	put16be(b, h);
	put16be(b, w);
	put8(b, 3);
	put_zeros(b, 9);
	put(b, "\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00", 10);
	put(b, "\x12\x34\xff\x00\x56", 5);
	put(b, "\xff\xd9", 2);
}

static void make_jpeg(struct buf *b, uint32_t w, uint32_t h)
{
	make_jpeg_with(b, 0xc0, w, h, 0);
}

static void make_webp_vp8(struct buf *b, uint32_t w, uint32_t h)
{
	b->n = 0;
	put_str(b, "RIFF");
	put32le(b, 0);
	put_str(b, "WEBPVP8 ");
	put32le(b, 10);
	put(b, "\x10\x02\x00\x9d\x01\x2a", 6); /* key frame tag, start code */
	put16le(b, w | 0x4000);		       /* scaling bits must be masked off */
	put16le(b, h | 0x8000);
	set32le(b, 4, (uint32_t)b->n - 8);
}

static void make_webp_vp8l(struct buf *b, uint32_t w, uint32_t h)
{
	b->n = 0;
	put_str(b, "RIFF");
	put32le(b, 0);
	put_str(b, "WEBPVP8L");
	put32le(b, 6);
	put8(b, 0x2f);
	put32le(b, (w - 1) | (h - 1) << 14 | 1u << 28);
	put8(b, 0);
	set32le(b, 4, (uint32_t)b->n - 8);
}

static void make_webp_vp8x(struct buf *b, uint32_t w, uint32_t h)
{
	b->n = 0;
	put_str(b, "RIFF");
	put32le(b, 0);
	put_str(b, "WEBPVP8X");
	put32le(b, 10);
	put32le(b, 0x10);
	put16le(b, (w - 1) & 0xffff);
	put8(b, (w - 1) >> 16);
	put16le(b, (h - 1) & 0xffff);
	put8(b, (h - 1) >> 16);
	set32le(b, 4, (uint32_t)b->n - 8);
}

static void make_gif(struct buf *b, const char *sig, uint32_t w, uint32_t h)
{
	b->n = 0;
	put_str(b, sig);
	put16le(b, w);
	put16le(b, h);
	put(b, "\x00\x00\x00", 3);
	put(b, "\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00", 15);
	put8(b, 0x3b);
}

static void make_bmp(struct buf *b, uint32_t w, uint32_t h_field)
{
	b->n = 0;
	put_str(b, "BM");
	put32le(b, 0);
	put32le(b, 0);
	put32le(b, 54);
	put32le(b, 40);
	put32le(b, w);
	put32le(b, h_field);
	put16le(b, 1);
	put16le(b, 24);
	put_zeros(b, 24);
	put_zeros(b, 16);
	set32le(b, 2, (uint32_t)b->n);
}

static void make_bmp_core(struct buf *b, uint32_t w, uint32_t h)
{
	b->n = 0;
	put_str(b, "BM");
	put32le(b, 0);
	put32le(b, 0);
	put32le(b, 26);
	put32le(b, 12);
	put16le(b, w);
	put16le(b, h);
	put16le(b, 1);
	put16le(b, 24);
	put_zeros(b, 8);
}

/* An IFD0 at `ifd_at` (padding before it): NewSubfileType, then width as
 * SHORT and height as LONG, then a zero next-IFD offset. */
static void make_tiff(struct buf *b, bool big_endian, uint32_t w, uint32_t h, size_t ifd_at)
{
	void (*p16)(struct buf *, unsigned) = big_endian ? put16be : put16le;
	void (*p32)(struct buf *, uint32_t) = big_endian ? put32be : put32le;

	b->n = 0;
	put_str(b, big_endian ? "MM" : "II");
	p16(b, 42);
	p32(b, (uint32_t)ifd_at);
	put_zeros(b, ifd_at - 8);
	p16(b, 3);
	p16(b, 254); /* NewSubfileType first, as writers do */
	p16(b, 4);
	p32(b, 1);
	p32(b, 0);
	p16(b, 256);
	p16(b, 3);
	p32(b, 1);
	p16(b, w);
	p16(b, 0);
	p16(b, 257);
	p16(b, 4);
	p32(b, 1);
	p32(b, h);
	p32(b, 0);
}

static enum image_probe_result probe(const struct buf *b, struct image_info *info)
{
	return image_probe(b->d, b->n, b->n, info);
}

static void expect_ok(const struct buf *b, enum image_format format, uint32_t w, uint32_t h)
{
	struct image_info info;

	assert_int_equal(image_sniff(b->d, b->n), format);
	assert_int_equal(probe(b, &info), IMAGE_PROBE_OK);
	assert_int_equal(info.format, format);
	assert_int_equal(info.width, w);
	assert_int_equal(info.height, h);
	assert_true(image_tail_complete(format, b->d, b->n));
}

static void expect_result(const struct buf *b, enum image_probe_result expected)
{
	struct image_info info;

	assert_int_equal(probe(b, &info), expected);
	if (expected != IMAGE_PROBE_OK) {
		assert_int_equal(info.width, 0);
		assert_int_equal(info.height, 0);
	}
}

/* Every proper prefix of a valid file, as a whole file, is reported truncated
 * up to `header_end` bytes, and nothing worse than that after. */
static void expect_prefixes_truncated(const struct buf *b, size_t header_end)
{
	struct image_info info;
	enum image_probe_result r;

	for (size_t n = 1; n < b->n; n++) {
		r = image_probe(b->d, n, n, &info);
		if (n < header_end)
			assert_int_equal(r, IMAGE_PROBE_TRUNCATED);
		else
			assert_true(r == IMAGE_PROBE_OK || r == IMAGE_PROBE_TRUNCATED);
	}
}

static void test_format_names(void **state)
{
	(void)state;
	assert_string_equal(image_format_name(IMAGE_FORMAT_PNG), "png");
	assert_string_equal(image_format_name(IMAGE_FORMAT_JPEG), "jpeg");
	assert_string_equal(image_format_name(IMAGE_FORMAT_WEBP), "webp");
	assert_string_equal(image_format_name(IMAGE_FORMAT_BMP), "bmp");
	assert_string_equal(image_format_name(IMAGE_FORMAT_TIFF), "tiff");
	assert_string_equal(image_format_name(IMAGE_FORMAT_GIF), "gif");
	assert_null(image_format_name(IMAGE_FORMAT_UNKNOWN));
	assert_null(image_format_name((enum image_format)99));
}

static void test_png(void **state)
{
	struct buf b;

	(void)state;
	make_png(&b, 640, 480);
	expect_ok(&b, IMAGE_FORMAT_PNG, 640, 480);
	expect_prefixes_truncated(&b, 33);

	make_png(&b, 0, 480);
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_png(&b, 640, 0x80000000u);
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_png(&b, 640, 480);
	b.d[12] = 'X'; /* not IHDR */
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_png(&b, 640, 480);
	b.d[11] = 14; /* IHDR length */
	expect_result(&b, IMAGE_PROBE_CORRUPT);
}

static void test_jpeg(void **state)
{
	static const unsigned frames[] = {0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7,
					  0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf};
	struct buf b;

	(void)state;
	for (size_t i = 0; i < sizeof(frames) / sizeof(frames[0]); i++) {
		make_jpeg_with(&b, frames[i], 1920, 1080, 0);
		expect_ok(&b, IMAGE_FORMAT_JPEG, 1920, 1080);
	}
	make_jpeg(&b, 65535, 15);
	expect_ok(&b, IMAGE_FORMAT_JPEG, 65535, 15);
	make_jpeg(&b, 1920, 1080);
	expect_prefixes_truncated(&b, 2 + 18 + 6 + 7 + 2 + 8);

	make_jpeg(&b, 0, 1080);
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_jpeg(&b, 1920, 0); /* height from a DNL marker: not for us */
	expect_result(&b, IMAGE_PROBE_CORRUPT);
}

static void test_jpeg_non_frame_markers(void **state)
{
	static const unsigned not_frames[] = {0xc4, 0xc8, 0xcc};
	struct buf b;

	(void)state;
	/* With C4/C8/CC in the frame's place the walk goes on to SOS: no frame. */
	for (size_t i = 0; i < 3; i++) {
		make_jpeg_with(&b, not_frames[i], 1920, 1080, 0);
		expect_result(&b, IMAGE_PROBE_CORRUPT);
	}
}

static void test_jpeg_fill_and_stray_bytes(void **state)
{
	struct buf b;

	(void)state;
	make_jpeg(&b, 300, 200);
	/* Insert fill bytes before the DQT marker at offset 20. */
	memmove(b.d + 23, b.d + 20, b.n - 20);
	memcpy(b.d + 20, "\xff\xff\xff", 3);
	b.n += 3;
	expect_ok(&b, IMAGE_FORMAT_JPEG, 300, 200);
}

static void test_jpeg_bad_segment_length(void **state)
{
	struct buf b;

	(void)state;
	make_jpeg(&b, 300, 200);
	b.d[4] = 0;
	b.d[5] = 1; /* APP0 length below 2 */
	expect_result(&b, IMAGE_PROBE_CORRUPT);

	make_jpeg(&b, 300, 200);
	b.d[4] = 0xff; /* APP0 runs past the end of the file */
	expect_result(&b, IMAGE_PROBE_TRUNCATED);

	b.n = 0;
	put(&b, "\xff\xd8\xff\xd9", 4); /* EOI before any frame */
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	b.n = 0;
	put(&b, "\xff\xd8\xff\xda\x00\x02", 6);
	expect_result(&b, IMAGE_PROBE_CORRUPT);
}

static void test_jpeg_sof_behind_big_segment(void **state)
{
	struct buf b;
	struct image_info info;
	size_t sof_end;

	(void)state;
	make_jpeg_with(&b, 0xc0, 800, 600, 4000);
	expect_ok(&b, IMAGE_FORMAT_JPEG, 800, 600);
	sof_end = 2 + 18 + 4 + 4000 + 6 + 7 + 2 + 8;

	/* The head buffer stops short of the frame, but the file goes on: we
	 * cannot see the frame, so the file cannot be vouched for. */
	assert_int_equal(image_probe(b.d, 2000, b.n, &info), IMAGE_PROBE_CORRUPT);
	assert_int_equal(image_probe(b.d, sof_end - 1, b.n, &info), IMAGE_PROBE_CORRUPT);
	assert_int_equal(image_probe(b.d, sof_end, b.n, &info), IMAGE_PROBE_OK);
	/* The file itself ends before the frame: truncated. */
	assert_int_equal(image_probe(b.d, 2000, 2000, &info), IMAGE_PROBE_TRUNCATED);
	/* A head longer than the file is clamped to the file. */
	assert_int_equal(image_probe(b.d, b.n, 2000, &info), IMAGE_PROBE_TRUNCATED);
}

static void test_webp(void **state)
{
	struct buf b;

	(void)state;
	make_webp_vp8(&b, 550, 368);
	expect_ok(&b, IMAGE_FORMAT_WEBP, 550, 368);
	expect_prefixes_truncated(&b, b.n);
	make_webp_vp8l(&b, 16384, 1);
	expect_ok(&b, IMAGE_FORMAT_WEBP, 16384, 1);
	expect_prefixes_truncated(&b, b.n);
	make_webp_vp8x(&b, 1u << 24, 3);
	expect_ok(&b, IMAGE_FORMAT_WEBP, 1u << 24, 3);
	expect_prefixes_truncated(&b, b.n);

	make_webp_vp8(&b, 0, 368);
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_webp_vp8(&b, 550, 368);
	b.d[20] |= 1; /* an interframe cannot start a file */
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_webp_vp8(&b, 550, 368);
	b.d[23] = 0; /* start code */
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_webp_vp8l(&b, 10, 10);
	b.d[20] = 0x2e; /* signature */
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_webp_vp8l(&b, 10, 10);
	b.d[24] |= 0x20; /* version */
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_webp_vp8x(&b, 10, 10);
	memcpy(b.d + 12, "ALPH", 4);
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_webp_vp8x(&b, 10, 10);
	set32le(&b, 4, 4); /* RIFF too small for a chunk */
	expect_result(&b, IMAGE_PROBE_CORRUPT);
}

static void test_webp_riff_size(void **state)
{
	struct buf b;
	struct image_info info;

	(void)state;
	make_webp_vp8(&b, 550, 368);
	set32le(&b, 4, (uint32_t)b.n - 7);
	expect_result(&b, IMAGE_PROBE_TRUNCATED);
	set32le(&b, 4, 0xffffffffu); /* no overflow in size + 8 */
	expect_result(&b, IMAGE_PROBE_TRUNCATED);
	/* The RIFF size is checked against the file, not the head. */
	set32le(&b, 4, 100000);
	assert_int_equal(image_probe(b.d, b.n, 100008, &info), IMAGE_PROBE_OK);
}

static void test_gif(void **state)
{
	struct buf b;

	(void)state;
	make_gif(&b, "GIF89a", 320, 200);
	expect_ok(&b, IMAGE_FORMAT_GIF, 320, 200);
	expect_prefixes_truncated(&b, 13);
	make_gif(&b, "GIF87a", 1, 65535);
	expect_ok(&b, IMAGE_FORMAT_GIF, 1, 65535);
	make_gif(&b, "GIF89a", 320, 0);
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_gif(&b, "GIF88a", 320, 200);
	expect_result(&b, IMAGE_PROBE_UNKNOWN);
}

static void test_bmp(void **state)
{
	struct buf b;

	(void)state;
	make_bmp(&b, 1024, 768);
	expect_ok(&b, IMAGE_FORMAT_BMP, 1024, 768);
	expect_prefixes_truncated(&b, b.n);
	make_bmp(&b, 1024, (uint32_t)-768); /* top-down */
	expect_ok(&b, IMAGE_FORMAT_BMP, 1024, 768);
	make_bmp(&b, 1024, 0x80000001u);
	expect_ok(&b, IMAGE_FORMAT_BMP, 1024, 0x7fffffffu);
	make_bmp(&b, 1024, 0x80000000u); /* INT32_MIN */
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_bmp(&b, (uint32_t)-1024, 768);
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_bmp(&b, 0, 768);
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_bmp(&b, 1024, 0);
	expect_result(&b, IMAGE_PROBE_CORRUPT);

	make_bmp_core(&b, 300, 20);
	expect_ok(&b, IMAGE_FORMAT_BMP, 300, 20);

	make_bmp(&b, 1024, 768);
	set32le(&b, 14, 13); /* no such header */
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_bmp(&b, 1024, 768);
	set32le(&b, 14, 0xffffffffu);
	expect_result(&b, IMAGE_PROBE_CORRUPT);
}

static void test_bmp_file_size_field(void **state)
{
	struct buf b;

	(void)state;
	make_bmp(&b, 64, 64);
	set32le(&b, 2, (uint32_t)b.n + 1);
	expect_result(&b, IMAGE_PROBE_TRUNCATED);
	set32le(&b, 2, 0); /* allowed: some writers leave it zero */
	expect_ok(&b, IMAGE_FORMAT_BMP, 64, 64);
	set32le(&b, 2, (uint32_t)b.n - 10); /* smaller than the file: trailing bytes */
	expect_ok(&b, IMAGE_FORMAT_BMP, 64, 64);
}

static void test_tiff(void **state)
{
	struct buf b;

	(void)state;
	make_tiff(&b, false, 4000, 3000, 8);
	expect_ok(&b, IMAGE_FORMAT_TIFF, 4000, 3000);
	expect_prefixes_truncated(&b, b.n - 4); /* the next-IFD offset is not needed */
	make_tiff(&b, true, 4000, 3000, 8);
	expect_ok(&b, IMAGE_FORMAT_TIFF, 4000, 3000);
	expect_prefixes_truncated(&b, b.n - 4);
	make_tiff(&b, true, 17, 70000, 100);
	expect_ok(&b, IMAGE_FORMAT_TIFF, 17, 70000);

	make_tiff(&b, false, 0, 3000, 8);
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_tiff(&b, false, 4000, 3000, 8);
	b.d[8 + 2 + 12 + 2] = 5; /* width as RATIONAL */
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_tiff(&b, false, 4000, 3000, 8);
	b.d[8 + 2 + 12 + 4] = 0; /* width with a count of zero */
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_tiff(&b, false, 4000, 3000, 8);
	b.d[8 + 2 + 12] = 1; /* tag 257 only: no width */
	b.d[8 + 2 + 12 + 1] = 1;
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_tiff(&b, false, 4000, 3000, 8);
	b.d[8] = 0; /* no entries */
	expect_result(&b, IMAGE_PROBE_CORRUPT);
	make_tiff(&b, false, 4000, 3000, 8);
	b.d[4] = 4; /* IFD0 inside the header */
	expect_result(&b, IMAGE_PROBE_CORRUPT);
}

/* libtiff writes IFD0 at the end: a large TIFF keeps it beyond the head. */
static void test_tiff_ifd_beyond_head(void **state)
{
	static struct buf b;
	struct image_info info;
	const size_t at = 6000; /* beyond the 1 KiB and 64-byte heads given below */
	uint64_t off;

	(void)state;
	make_tiff(&b, false, 5000, 4000, at);
	assert_int_equal(image_probe(b.d, 1024, b.n, &info), IMAGE_PROBE_CORRUPT);
	off = image_tiff_ifd_offset(b.d, 1024);
	assert_int_equal(off, at);
	assert_int_equal(image_probe_tiff_ifd(b.d, 1024, b.d + off, b.n - off, off, b.n, &info),
			 IMAGE_PROBE_OK);
	assert_int_equal(info.format, IMAGE_FORMAT_TIFF);
	assert_int_equal(info.width, 5000);
	assert_int_equal(info.height, 4000);
	make_tiff(&b, true, 300, 200, at);
	off = image_tiff_ifd_offset(b.d, 64);
	assert_int_equal(image_probe_tiff_ifd(b.d, 64, b.d + off, b.n - off, off, b.n, &info),
			 IMAGE_PROBE_OK);
	assert_int_equal(info.width, 300);
	/* The directory cut short by the end of the file: still arriving. */
	assert_int_equal(image_probe_tiff_ifd(b.d, 64, b.d + off, 10, off, off + 10, &info),
			 IMAGE_PROBE_TRUNCATED);
	/* An offset past the end of the file. */
	assert_int_equal(image_probe_tiff_ifd(b.d, 64, b.d, 0, b.n + 5, b.n, &info),
			 IMAGE_PROBE_CORRUPT);
	assert_int_equal(image_tiff_ifd_offset((const uint8_t *)"\x89PNG\r\n\x1a\n", 8), 0);
}

static void test_tiff_ifd_offsets(void **state)
{
	struct buf b;
	struct image_info info;

	(void)state;
	make_tiff(&b, false, 40, 30, 8);
	set32le(&b, 4, 0xfffffff0u);
	expect_result(&b, IMAGE_PROBE_TRUNCATED);

	/* IFD0 behind the head buffer in a longer file: cannot be seen. */
	make_tiff(&b, false, 40, 30, 2000);
	assert_int_equal(image_probe(b.d, 1000, b.n, &info), IMAGE_PROBE_CORRUPT);
	assert_int_equal(image_probe(b.d, b.n, b.n, &info), IMAGE_PROBE_OK);

	/* More entries declared than the file holds. */
	make_tiff(&b, false, 40, 30, 8);
	b.d[8] = 200;
	b.d[8 + 2 + 12] = 1; /* spoil tag 256 so the walk goes on */
	expect_result(&b, IMAGE_PROBE_TRUNCATED);
}

static void test_unknown_empty_and_prefixes(void **state)
{
	struct image_info info;
	static const uint8_t text[] = "hello, world";

	(void)state;
	assert_int_equal(image_probe(text, 0, 0, &info), IMAGE_PROBE_EMPTY);
	assert_int_equal(image_probe(NULL, 0, 0, &info), IMAGE_PROBE_EMPTY);
	assert_int_equal(image_probe(text, sizeof(text), sizeof(text), &info), IMAGE_PROBE_UNKNOWN);
	assert_int_equal(info.format, IMAGE_FORMAT_UNKNOWN);
	assert_int_equal(image_sniff(text, sizeof(text)), IMAGE_FORMAT_UNKNOWN);
	assert_int_equal(image_sniff(NULL, 0), IMAGE_FORMAT_UNKNOWN);

	/* A whole file that is the start of a magic is a file being written. */
	assert_int_equal(image_probe((const uint8_t *)"\x89PN", 3, 3, &info),
			 IMAGE_PROBE_TRUNCATED);
	assert_int_equal(image_probe((const uint8_t *)"RIFF\x10\0\0\0WE", 10, 10, &info),
			 IMAGE_PROBE_TRUNCATED);
	assert_int_equal(image_probe((const uint8_t *)"RIFF\x10\0\0\0WAVE", 12, 12, &info),
			 IMAGE_PROBE_UNKNOWN);
	/* BigTIFF is not among the API's formats. */
	assert_int_equal(image_probe((const uint8_t *)"II+\0\x08\0\0\0", 8, 8, &info),
			 IMAGE_PROBE_UNKNOWN);
	/* The same bytes in a head of a longer file are just unknown. */
	assert_int_equal(image_probe((const uint8_t *)"\x89PN", 3, 100, &info),
			 IMAGE_PROBE_UNKNOWN);
}

static void test_tail_png(void **state)
{
	struct buf b;

	(void)state;
	make_png(&b, 20, 20);
	assert_true(image_tail_complete(IMAGE_FORMAT_PNG, b.d, b.n));
	assert_true(image_tail_complete(IMAGE_FORMAT_PNG, b.d + b.n - 12, 12));
	assert_false(image_tail_complete(IMAGE_FORMAT_PNG, b.d + b.n - 11, 11));
	assert_false(image_tail_complete(IMAGE_FORMAT_PNG, b.d, b.n - 1));
	b.d[b.n++] = 0; /* anything after IEND */
	assert_false(image_tail_complete(IMAGE_FORMAT_PNG, b.d, b.n));
	assert_false(image_tail_complete(IMAGE_FORMAT_PNG, NULL, 0));
}

static void test_tail_jpeg(void **state)
{
	struct buf b;

	(void)state;
	make_jpeg(&b, 20, 20);
	assert_true(image_tail_complete(IMAGE_FORMAT_JPEG, b.d, b.n));
	assert_false(image_tail_complete(IMAGE_FORMAT_JPEG, b.d, b.n - 1));
	assert_false(image_tail_complete(IMAGE_FORMAT_JPEG, NULL, 0));
	/* Zero padding after EOI. */
	put_zeros(&b, 100);
	assert_true(image_tail_complete(IMAGE_FORMAT_JPEG, b.d, b.n));
	/* A trailer after EOI (some cameras), still within the tail. */
	put_str(&b, "SAMSUNG trailer \xff\xfe");
	assert_true(image_tail_complete(IMAGE_FORMAT_JPEG, b.d, b.n));
	/* A lone FF D9 split by the tail's start does not count. */
	assert_false(image_tail_complete(IMAGE_FORMAT_JPEG, (const uint8_t *)"\xd9\x00\x01", 3));
	assert_true(image_tail_complete(IMAGE_FORMAT_JPEG, (const uint8_t *)"\xff\xd9", 2));
	assert_false(image_tail_complete(IMAGE_FORMAT_JPEG, (const uint8_t *)"\xff", 1));
}

static void test_tail_gif_and_others(void **state)
{
	struct buf b;

	(void)state;
	/* GIFs without their 0x3B trailer are common and decode: not truncation. */
	make_gif(&b, "GIF89a", 20, 20);
	assert_true(image_tail_complete(IMAGE_FORMAT_GIF, b.d, b.n));
	assert_true(image_tail_complete(IMAGE_FORMAT_GIF, b.d, b.n - 4));

	assert_true(image_tail_complete(IMAGE_FORMAT_WEBP, (const uint8_t *)"x", 1));
	assert_true(image_tail_complete(IMAGE_FORMAT_BMP, NULL, 0));
	assert_true(image_tail_complete(IMAGE_FORMAT_TIFF, (const uint8_t *)"x", 1));
	assert_true(image_tail_complete(IMAGE_FORMAT_UNKNOWN, NULL, 0));
}

static const char *limits(uint32_t w, uint32_t h, uint64_t size, uint64_t max, char *msg,
			  size_t msglen)
{
	struct image_info info = {.format = IMAGE_FORMAT_PNG, .width = w, .height = h};

	return image_check_limits(&info, size, max, msg, msglen);
}

static void test_limits(void **state)
{
	char msg[200];
	const uint64_t mib10 = 10 * 1024 * 1024;

	(void)state;
	assert_null(limits(15, 15, 100, mib10, msg, sizeof(msg)));
	assert_string_equal(msg, "");
	assert_null(limits(6000, 6000, mib10, mib10, msg, sizeof(msg)));
	assert_null(limits(15, 240, 100, mib10, msg, sizeof(msg)));
	assert_null(limits(240, 15, 100, mib10, msg, sizeof(msg)));

	assert_string_equal(limits(10, 10, 100, mib10, msg, sizeof(msg)),
			    "LocalValidation.TooSmall");
	assert_string_equal(msg, "image is 10x10 pixels; each side must be more than 14");
	assert_string_equal(limits(14, 100, 100, mib10, msg, sizeof(msg)),
			    "LocalValidation.TooSmall");
	assert_string_equal(limits(100, 14, 100, mib10, msg, sizeof(msg)),
			    "LocalValidation.TooSmall");

	assert_string_equal(limits(15, 241, 100, mib10, msg, sizeof(msg)),
			    "LocalValidation.AspectRatio");
	assert_non_null(strstr(msg, "15x241"));
	assert_string_equal(limits(4000, 200, 100, mib10, msg, sizeof(msg)),
			    "LocalValidation.AspectRatio");
	assert_non_null(strstr(msg, "4000x200"));

	assert_string_equal(limits(6000, 6001, 100, mib10, msg, sizeof(msg)),
			    "LocalValidation.TooLarge");
	assert_string_equal(msg, "image is 6000x6001 = 36006000 pixels; at most 36000000 "
				 "are allowed");
	/* No overflow in the product. */
	assert_string_equal(limits(0xffffffffu, 0xffffffffu, 100, mib10, msg, sizeof(msg)),
			    "LocalValidation.TooLarge");

	assert_string_equal(limits(100, 100, mib10 + 1, mib10, msg, sizeof(msg)),
			    "LocalValidation.FileTooLarge");
	assert_string_equal(msg, "file is 10485761 bytes; at most 10485760 are allowed");

	/* A short or absent message buffer is fine. */
	assert_string_equal(limits(10, 10, 100, mib10, msg, 6), "LocalValidation.TooSmall");
	assert_string_equal(msg, "image");
	assert_string_equal(limits(10, 10, 100, mib10, NULL, 0), "LocalValidation.TooSmall");
}

static enum image_probe_result probe_bytes(const void *d, size_t n, struct image_info *info)
{
	return image_probe(d, n, n + 100000, info);
}

static void test_fit_formats_and_refusals(void **state)
{
	static const uint8_t heic[] = "\0\0\0\x18" "ftypheic\0\0\0\0mif1heic";
	static const uint8_t avif[] = "\0\0\0\x1c" "ftypavif\0\0\0\0avifmif1miaf";
	static const uint8_t cr3[] = "\0\0\0\x18" "ftypcrx \0\0\0\x01" "crx isom";
	static const uint8_t jxl[] = "\xff\x0a\xfa\x7f\x01\x90\x08";
	static const uint8_t psd[] = "8BPS\0\x01\0\0\0\0\0\0";
	static const uint8_t pdf[] = "%PDF-1.7\n%\xe2\xe3";
	/* A TIFF whose IFD0 holds only Make = "NIKON CORPORATION". */
	static const uint8_t nef[] = "II*\0\x08\0\0\0\x01\0\x0f\x01\x02\0\x12\0\0\0\x1a\0\0\0"
				     "\0\0\0\0NIKON CORPORATION";
	struct image_info info;

	(void)state;
	assert_int_equal(probe_bytes(heic, sizeof(heic) - 1, &info), IMAGE_PROBE_OK);
	assert_int_equal(info.format, IMAGE_FORMAT_HEIF);
	assert_false(image_api_format(info.format));
	assert_string_equal(image_format_name(info.format), "heif");
	assert_int_equal(probe_bytes(avif, sizeof(avif) - 1, &info), IMAGE_PROBE_OK);
	assert_int_equal(info.format, IMAGE_FORMAT_AVIF);
	assert_int_equal(probe_bytes(jxl, sizeof(jxl) - 1, &info), IMAGE_PROBE_OK);
	assert_int_equal(info.format, IMAGE_FORMAT_JXL);
	assert_int_equal(probe_bytes(cr3, sizeof(cr3) - 1, &info), IMAGE_PROBE_UNKNOWN);
	assert_string_equal(info.found, "Canon CR3 camera raw");
	assert_int_equal(probe_bytes(psd, sizeof(psd) - 1, &info), IMAGE_PROBE_UNKNOWN);
	assert_string_equal(info.found, "Photoshop PSD document");
	assert_int_equal(probe_bytes(pdf, sizeof(pdf) - 1, &info), IMAGE_PROBE_UNKNOWN);
	assert_string_equal(info.found, "PDF document");
	assert_int_equal(probe_bytes(nef, sizeof(nef) - 1, &info), IMAGE_PROBE_UNKNOWN);
	assert_string_equal(info.found, "Nikon NEF camera raw");
	assert_true(image_api_format(IMAGE_FORMAT_GIF));
	assert_false(image_api_format(IMAGE_FORMAT_UNKNOWN));
}

static void test_jpeg_exif_orientation_and_cmyk(void **state)
{
	/* SOI, APP1 Exif with IFD0 { Orientation = 6 }, SOF0 8-bit 4 components. */
	static const uint8_t jpeg[] = "\xff\xd8"
				      "\xff\xe1\0\x22" "Exif\0\0"
				      "MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0"
				      "\0\0\0\0"
				      "\xff\xc0\0\x14\x08\0\x30\0\x40\x04"
				      "\x01\x11\0\x02\x11\0\x03\x11\0\x04\x11\0"
				      "\xff\xd9";
	struct image_info info;

	(void)state;
	assert_int_equal(probe_bytes(jpeg, sizeof(jpeg) - 1, &info), IMAGE_PROBE_OK);
	assert_int_equal(info.width, 64);
	assert_int_equal(info.height, 48);
	assert_int_equal(info.orientation, 6);
	assert_true(info.cmyk);
	assert_int_equal(info.bits, 8);
}

static void test_probe_codes(void **state)
{
	(void)state;
	assert_null(image_probe_code(IMAGE_PROBE_OK));
	assert_null(image_probe_message(IMAGE_PROBE_OK));
	assert_string_equal(image_probe_code(IMAGE_PROBE_EMPTY), "LocalValidation.Empty");
	assert_string_equal(image_probe_code(IMAGE_PROBE_UNKNOWN),
			    "LocalValidation.UnsupportedFormat");
	assert_string_equal(image_probe_code(IMAGE_PROBE_TRUNCATED), "LocalValidation.Truncated");
	assert_string_equal(image_probe_code(IMAGE_PROBE_CORRUPT), "LocalValidation.Corrupt");
	for (int r = IMAGE_PROBE_EMPTY; r <= IMAGE_PROBE_CORRUPT; r++)
		assert_non_null(image_probe_message((enum image_probe_result)r));
}

/* Random damage to valid files never reads out of bounds (run under ASan or
 * valgrind) and never yields an OK with a zero side. */
static void test_mutations(void **state)
{
	struct buf b, m;
	struct image_info info;

	(void)state;
	srand(4242);
	for (int kind = 0; kind < 9; kind++) {
		switch (kind) {
		case 0:
			make_png(&b, 100, 100);
			break;
		case 1:
			make_jpeg(&b, 100, 100);
			break;
		case 2:
			make_webp_vp8(&b, 100, 100);
			break;
		case 3:
			make_webp_vp8l(&b, 100, 100);
			break;
		case 4:
			make_webp_vp8x(&b, 100, 100);
			break;
		case 5:
			make_gif(&b, "GIF89a", 100, 100);
			break;
		case 6:
			make_bmp(&b, 100, 100);
			break;
		case 7:
			make_tiff(&b, false, 100, 100, 8);
			break;
		default:
			make_tiff(&b, true, 100, 100, 8);
			break;
		}
		for (int round = 0; round < 2000; round++) {
			m = b;
			for (int k = rand() % 4; k >= 0; k--)
				m.d[rand() % (int)m.n] = (uint8_t)rand();
			m.n = (size_t)(rand() % (int)m.n) + 1;
			if (image_probe(m.d, m.n, m.n + (size_t)(rand() % 3), &info) ==
			    IMAGE_PROBE_OK) {
				assert_true(info.width > 0 && info.height > 0);
				assert_int_not_equal(info.format, IMAGE_FORMAT_UNKNOWN);
			}
			(void)image_tail_complete(info.format, m.d, m.n);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_format_names),
	    cmocka_unit_test(test_png),
	    cmocka_unit_test(test_jpeg),
	    cmocka_unit_test(test_jpeg_non_frame_markers),
	    cmocka_unit_test(test_jpeg_fill_and_stray_bytes),
	    cmocka_unit_test(test_jpeg_bad_segment_length),
	    cmocka_unit_test(test_jpeg_sof_behind_big_segment),
	    cmocka_unit_test(test_webp),
	    cmocka_unit_test(test_webp_riff_size),
	    cmocka_unit_test(test_gif),
	    cmocka_unit_test(test_bmp),
	    cmocka_unit_test(test_bmp_file_size_field),
	    cmocka_unit_test(test_tiff),
	    cmocka_unit_test(test_tiff_ifd_offsets),
	    cmocka_unit_test(test_unknown_empty_and_prefixes),
	    cmocka_unit_test(test_tail_png),
	    cmocka_unit_test(test_tail_jpeg),
	    cmocka_unit_test(test_tail_gif_and_others),
	    cmocka_unit_test(test_tiff_ifd_beyond_head),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_probe_codes),
	    cmocka_unit_test(test_fit_formats_and_refusals),
	    cmocka_unit_test(test_jpeg_exif_orientation_and_cmyk),
	    cmocka_unit_test(test_mutations),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
