/* image: format sniffing and header dimensions from magic bytes, without
 * decoding pixels. Pure functions over buffers; fuzzed. */
#ifndef SEEDREAMD_IMAGE_H
#define SEEDREAMD_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How much of the start of a file image_probe() wants to see (JPEG SOF can sit
 * behind large EXIF/ICC segments). */
#define IMAGE_HEAD_MAX (1024 * 1024)
/* How much of the end of a file image_tail_complete() wants to see. */
#define IMAGE_TAIL_MAX 4096

enum image_format {
	IMAGE_FORMAT_UNKNOWN = 0,
	IMAGE_FORMAT_PNG,
	IMAGE_FORMAT_JPEG,
	IMAGE_FORMAT_WEBP,
	IMAGE_FORMAT_BMP,
	IMAGE_FORMAT_TIFF,
	IMAGE_FORMAT_GIF,
	/* Decodable here but not taken by the API: fitted (fit.h) or refused. */
	IMAGE_FORMAT_HEIF,
	IMAGE_FORMAT_AVIF,
	IMAGE_FORMAT_JXL,
};

/* The API's pixel limit (6000x6000). */
#define IMAGE_MAX_PIXELS 36000000u

struct image_info {
	enum image_format format;
	uint32_t width;	 /* 0 for HEIF, AVIF and JPEG XL: only a decoder knows */
	uint32_t height;
	/* What the API would take but a model would read wrongly; seen in JPEG
	 * (EXIF, SOF, APP2), PNG (IHDR, iCCP) and TIFF (IFD0) heads only. */
	uint8_t orientation;   /* EXIF 1..8; 0 when none is recorded */
	uint8_t bits;	       /* per sample; 0 when unknown */
	bool cmyk;
	bool foreign_profile;  /* an embedded ICC profile that does not call itself sRGB */
	/* For IMAGE_PROBE_UNKNOWN: what the file is when it is something known
	 * that nothing here decodes ("Canon CR3 camera raw", "PDF document"),
	 * else NULL. A static string. */
	const char *found;
};

/* Lowercase name as the API wants it in data URLs: "png", "jpeg", "webp",
 * "bmp", "tiff", "gif"; "heif", "avif", "jxl" for the formats it does not
 * take; NULL for unknown. */
const char *image_format_name(enum image_format format);

/* Whether the API takes the format as it is (the six above HEIF). */
bool image_api_format(enum image_format format);

/* Only the format from magic bytes; UNKNOWN if none matches. */
enum image_format image_sniff(const uint8_t *head, size_t len);

enum image_probe_result {
	IMAGE_PROBE_OK = 0,
	IMAGE_PROBE_EMPTY,       /* zero bytes */
	IMAGE_PROBE_UNKNOWN,     /* not one of the six formats */
	IMAGE_PROBE_TRUNCATED,   /* header cut short, or a declared size larger than the file */
	IMAGE_PROBE_CORRUPT,     /* header present but inconsistent (zero dimensions, bad chunk) */
};

/* Reads format, width and height. `head` is the first min(file_size,
 * IMAGE_HEAD_MAX) bytes of a file of `file_size` bytes. */
enum image_probe_result image_probe(const uint8_t *head, size_t len, uint64_t file_size,
				    struct image_info *ret_info);

/* TIFF may keep its first directory (IFD0) anywhere; libtiff writes it at the
 * end. When image_probe() cannot see it in the head, the caller reads up to
 * IMAGE_TIFF_IFD_WINDOW bytes at image_tiff_ifd_offset() and calls
 * image_probe_tiff_ifd() with them. The offset is 0 for a head that is not TIFF. */
#define IMAGE_TIFF_IFD_WINDOW (64 * 1024)
uint64_t image_tiff_ifd_offset(const uint8_t *head, size_t len);
enum image_probe_result image_probe_tiff_ifd(const uint8_t *head, size_t head_len,
					     const uint8_t *ifd, size_t ifd_len,
					     uint64_t ifd_offset, uint64_t file_size,
					     struct image_info *ret_info);

/* Whether the file ends the way a complete file of this format ends (PNG: the
 * IEND chunk; JPEG: the EOI marker FF D9, tolerating trailing padding). Other
 * formats give true: GIFs without their 0x3B trailer are common and decode. `tail` is the last
 * min(file_size, IMAGE_TAIL_MAX) bytes. */
bool image_tail_complete(enum image_format format, const uint8_t *tail, size_t len);

/* The API's input limits: each side > 14 px, aspect ratio within [1/16, 16],
 * at most 36,000,000 pixels, at most max_bytes. Returns NULL when the image
 * passes, else a code such as "LocalValidation.TooSmall" with a sentence in msg.
 * Codes: LocalValidation.TooSmall, .TooLarge (pixels), .AspectRatio,
 * .FileTooLarge. */
const char *image_check_limits(const struct image_info *info, uint64_t file_size,
			       uint64_t max_bytes, char *msg, size_t msglen);

/* The code and sentence for a failed probe: LocalValidation.Empty,
 * .UnsupportedFormat, .Truncated, .Corrupt. */
const char *image_probe_code(enum image_probe_result result);
const char *image_probe_message(enum image_probe_result result);

#endif
