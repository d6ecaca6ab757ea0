#include "image.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* The API's input limits (seedream-api.md). */
#define MIN_SIDE   15u /* "each side > 14 px" */
#define MAX_ASPECT 16u
#define MAX_PIXELS IMAGE_MAX_PIXELS

/* Multi-byte fields are assembled from single bytes: the buffer has no
 * alignment and the host's byte order is irrelevant. */
static uint32_t le16(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static uint32_t be16(const uint8_t *p)
{
	return (uint32_t)p[0] << 8 | (uint32_t)p[1];
}

static uint32_t le24(const uint8_t *p)
{
	return le16(p) | (uint32_t)p[2] << 16;
}

static uint32_t le32(const uint8_t *p)
{
	return le16(p) | le16(p + 2) << 16;
}

static uint32_t be32(const uint8_t *p)
{
	return be16(p) << 16 | be16(p + 2);
}

/* What image_probe() can see of the file. */
struct head {
	const uint8_t *buf;
	size_t len;
	uint64_t file_size;
};

/* A structure needs bytes up to offset `end`, which lie past the buffer. If the
 * file itself is shorter it was cut off; if not, the header is laid out beyond
 * anything a sane writer produces, and we cannot vouch for the file. */
static enum image_probe_result beyond(const struct head *h, uint64_t end)
{
	return end > h->file_size ? IMAGE_PROBE_TRUNCATED : IMAGE_PROBE_CORRUPT;
}

static bool sees(const struct head *h, uint64_t end)
{
	return end <= h->len;
}

static enum image_probe_result set_dims(struct image_info *info, uint32_t width, uint32_t height)
{
	if (width == 0 || height == 0)
		return IMAGE_PROBE_CORRUPT;
	info->width = width;
	info->height = height;
	return IMAGE_PROBE_OK;
}

/* clang-format off */
static const struct magic {
	const char *bytes;
	size_t len;
	enum image_format format;
} magics[] = {
	{"\x89PNG\r\n\x1a\n", 8, IMAGE_FORMAT_PNG},
	{"\xff\xd8\xff", 3, IMAGE_FORMAT_JPEG},
	{"RIFF\0\0\0\0WEBP", 12, IMAGE_FORMAT_WEBP}, /* bytes 4..7 are the RIFF size */
	{"GIF87a", 6, IMAGE_FORMAT_GIF},
	{"GIF89a", 6, IMAGE_FORMAT_GIF},
	{"II*\0", 4, IMAGE_FORMAT_TIFF},
	{"MM\0*", 4, IMAGE_FORMAT_TIFF},
	{"BM", 2, IMAGE_FORMAT_BMP},
};
/* clang-format on */

#define N_MAGICS (sizeof(magics) / sizeof(magics[0]))

/* Whether the first min(len, magic length) bytes agree with the magic. */
static bool magic_agrees(const struct magic *m, const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len && i < m->len; i++) {
		if (m->format == IMAGE_FORMAT_WEBP && i >= 4 && i < 8)
			continue;
		if (p[i] != (uint8_t)m->bytes[i])
			return false;
	}
	return true;
}

const char *image_format_name(enum image_format format)
{
	switch (format) {
	case IMAGE_FORMAT_PNG:
		return "png";
	case IMAGE_FORMAT_JPEG:
		return "jpeg";
	case IMAGE_FORMAT_WEBP:
		return "webp";
	case IMAGE_FORMAT_BMP:
		return "bmp";
	case IMAGE_FORMAT_TIFF:
		return "tiff";
	case IMAGE_FORMAT_GIF:
		return "gif";
	case IMAGE_FORMAT_HEIF:
		return "heif";
	case IMAGE_FORMAT_AVIF:
		return "avif";
	case IMAGE_FORMAT_JXL:
		return "jxl";
	default:
		return NULL;
	}
}

bool image_api_format(enum image_format format)
{
	return format >= IMAGE_FORMAT_PNG && format <= IMAGE_FORMAT_GIF;
}

/* Whether an ISO BMFF "ftyp" box (HEIF, AVIF, CR3, MP4) names brand among
 * its major and compatible brands. */
static bool ftyp_has_brand(const uint8_t *p, size_t len, const char *brand)
{
	uint32_t box;

	if (len < 16 || memcmp(p + 4, "ftyp", 4) != 0)
		return false;
	box = be32(p);
	if (box < 16 || box > 4096)
		return false;
	if (box > len)
		box = (uint32_t)len;
	if (memcmp(p + 8, brand, 4) == 0)
		return true;
	for (uint32_t off = 16; off + 4 <= box; off += 4)
		if (memcmp(p + off, brand, 4) == 0)
			return true;
	return false;
}

static enum image_format sniff_ftyp(const uint8_t *p, size_t len)
{
	static const char *const heif[] = {"heic", "heix", "heim", "heis", "hevc",
					   "hevx", "mif1", "msf1"};

	if (ftyp_has_brand(p, len, "crx "))
		return IMAGE_FORMAT_UNKNOWN; /* a Canon CR3 is HEIF-like, and a raw */
	if (ftyp_has_brand(p, len, "avif") || ftyp_has_brand(p, len, "avis"))
		return IMAGE_FORMAT_AVIF;
	for (size_t i = 0; i < sizeof(heif) / sizeof(heif[0]); i++)
		if (ftyp_has_brand(p, len, heif[i]))
			return IMAGE_FORMAT_HEIF;
	return IMAGE_FORMAT_UNKNOWN;
}

enum image_format image_sniff(const uint8_t *head, size_t len)
{
	for (size_t i = 0; i < N_MAGICS; i++)
		if (len >= magics[i].len && magic_agrees(&magics[i], head, len))
			return magics[i].format;
	if (len >= 2 && head[0] == 0xff && head[1] == 0x0a)
		return IMAGE_FORMAT_JXL; /* a bare codestream */
	if (len >= 12 && memcmp(head, "\0\0\0\x0cJXL \r\n\x87\n", 12) == 0)
		return IMAGE_FORMAT_JXL;
	return sniff_ftyp(head, len);
}

/* Files that are something known which nothing here decodes (or that is not
 * a photo to send): named in the refusal. TIFF-based camera raws are found
 * by probe_tiff. */
static const char *sniff_unsupported(const uint8_t *p, size_t len)
{
	static const struct {
		const char *bytes;
		size_t off, len;
		const char *name;
	} known[] = {
	    {"8BPS", 0, 4, "Photoshop PSD document"},
	    {"%PDF-", 0, 5, "PDF document"},
	    {"FUJIFILMCCD-RAW", 0, 15, "Fujifilm RAF camera raw"},
	    {"IIRO", 0, 4, "Olympus ORF camera raw"},
	    {"IIRS", 0, 4, "Olympus ORF camera raw"},
	    {"MMOR", 0, 4, "Olympus ORF camera raw"},
	    {"IIU\0", 0, 4, "Panasonic RW2 camera raw"},
	    {"HEAPCCDR", 6, 8, "Canon CRW camera raw"},
	    {"FOVb", 0, 4, "Sigma X3F camera raw"},
	};

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (len >= known[i].off + known[i].len &&
		    memcmp(p + known[i].off, known[i].bytes, known[i].len) == 0)
			return known[i].name;
	if (ftyp_has_brand(p, len, "crx "))
		return "Canon CR3 camera raw";
	if (ftyp_has_brand(p, len, "qt  ") || ftyp_has_brand(p, len, "isom") ||
	    ftyp_has_brand(p, len, "mp42"))
		return "video (MP4 or QuickTime)";
	return NULL;
}

/* A whole file shorter than a magic it starts like is one still being written. */
static bool is_magic_prefix(const uint8_t *head, size_t len)
{
	for (size_t i = 0; i < N_MAGICS; i++)
		if (len < magics[i].len && magic_agrees(&magics[i], head, len))
			return true;
	return false;
}

static enum image_probe_result probe_png(const struct head *h, struct image_info *info)
{
	const uint8_t *p = h->buf;
	uint32_t width, height;

	/* Signature, then IHDR: length, type, 13 bytes of data, CRC. */
	if (!sees(h, 33))
		return beyond(h, 33);
	if (be32(p + 8) != 13 || memcmp(p + 12, "IHDR", 4) != 0)
		return IMAGE_PROBE_CORRUPT;
	width = be32(p + 16);
	height = be32(p + 20);
	if (width > INT32_MAX || height > INT32_MAX)
		return IMAGE_PROBE_CORRUPT;
	info->bits = p[24];
	/* An iCCP chunk comes before the image data; its keyword names the profile. */
	for (uint64_t pos = 33; sees(h, pos + 8);) {
		uint64_t len = be32(p + pos);
		if (memcmp(p + pos + 4, "IDAT", 4) == 0)
			break;
		if (memcmp(p + pos + 4, "iCCP", 4) == 0) {
			char name[80] = {0};
			for (size_t i = 0; i < 79 && i < len && sees(h, pos + 8 + i + 1); i++)
				name[i] = (char)p[pos + 8 + i];
			info->foreign_profile = !strstr(name, "sRGB") && !strstr(name, "srgb");
			break;
		}
		pos += 12 + len;
	}
	return set_dims(info, width, height);
}

static bool is_jpeg_sof(uint8_t marker)
{
	/* C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames. */
	return marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 &&
	       marker != 0xcc;
}

/* The orientation (tag 0x0112) in IFD0 of a TIFF structure (EXIF's, or a
 * TIFF file's own), 0 when absent or out of reach. */
static uint8_t tiff_orientation(const uint8_t *t, size_t len)
{
	bool big;
	uint32_t (*u16)(const uint8_t *);
	uint64_t ifd;
	uint32_t count;

	if (len < 8 || (memcmp(t, "II*\0", 4) != 0 && memcmp(t, "MM\0*", 4) != 0))
		return 0;
	big = t[0] == 'M';
	u16 = big ? be16 : le16;
	ifd = big ? be32(t + 4) : le32(t + 4);
	if (ifd < 8 || ifd + 2 > len)
		return 0;
	count = u16(t + ifd);
	for (uint64_t i = 0; i < count && ifd + 2 + 12 * (i + 1) <= len; i++) {
		const uint8_t *e = t + ifd + 2 + 12 * i;
		uint32_t v = u16(e + 8);
		if (u16(e) == 0x0112 && u16(e + 2) == 3)
			return v >= 1 && v <= 8 ? (uint8_t)v : 0;
	}
	return 0;
}

/* Whether an ICC profile's bytes name it sRGB (its description tag says so
 * in plain ASCII in every sRGB profile met in practice). */
static bool icc_says_srgb(const uint8_t *d, size_t len)
{
	for (size_t i = 0; i + 4 <= len; i++) {
		if (d[i] == 's' && d[i + 1] == 'R' && d[i + 2] == 'G' && d[i + 3] == 'B')
			return true;
		/* ICC v4 descriptions are UTF-16BE. */
		if (i + 8 <= len && d[i] == 0 && d[i + 1] == 's' && d[i + 2] == 0 &&
		    d[i + 3] == 'R' && d[i + 4] == 0 && d[i + 5] == 'G' && d[i + 6] == 0 &&
		    d[i + 7] == 'B')
			return true;
	}
	return false;
}

/* APP1 Exif (orientation) and APP2 ICC_PROFILE segments before the frame. */
static void jpeg_app_segment(uint8_t marker, const uint8_t *d, size_t len, struct image_info *info)
{
	if (marker == 0xe1 && len > 6 && memcmp(d, "Exif\0\0", 6) == 0 && !info->orientation)
		info->orientation = tiff_orientation(d + 6, len - 6);
	else if (marker == 0xe2 && len > 14 && memcmp(d, "ICC_PROFILE\0", 12) == 0 &&
		 d[12] == 1 && !icc_says_srgb(d + 14, len - 14))
		info->foreign_profile = true; /* judged by its first chunk */
}

static enum image_probe_result probe_jpeg(const struct head *h, struct image_info *info)
{
	const uint8_t *p = h->buf;
	uint64_t pos = 2; /* after SOI */
	uint32_t seglen;
	uint8_t marker;

	for (;;) {
		/* Like libjpeg, skip stray bytes and 0xFF fill before a marker. */
		while (pos < h->len && p[pos] != 0xff)
			pos++;
		while (pos < h->len && p[pos] == 0xff)
			pos++;
		if (!sees(h, pos + 1))
			return beyond(h, pos + 1);
		marker = p[pos++];

		if (marker == 0x00 || marker == 0x01 || (marker >= 0xd0 && marker <= 0xd7))
			continue; /* stuffed byte, TEM, RSTn: no length */
		if (marker == 0xd8 || marker == 0xd9 || marker == 0xda)
			return IMAGE_PROBE_CORRUPT; /* SOI, EOI or scan before any frame */

		if (!sees(h, pos + 2))
			return beyond(h, pos + 2);
		seglen = be16(p + pos);
		if (seglen < 2)
			return IMAGE_PROBE_CORRUPT;
		if (is_jpeg_sof(marker)) {
			/* length, precision, height, width, component count */
			if (seglen < 8)
				return IMAGE_PROBE_CORRUPT;
			if (!sees(h, pos + 8))
				return beyond(h, pos + 8);
			info->bits = p[pos + 2];
			info->cmyk = p[pos + 7] == 4;
			return set_dims(info, be16(p + pos + 5), be16(p + pos + 3));
		}
		if (sees(h, pos + seglen))
			jpeg_app_segment(marker, p + pos + 2, seglen - 2, info);
		pos += seglen;
	}
}

static enum image_probe_result probe_webp(const struct head *h, struct image_info *info)
{
	const uint8_t *p = h->buf;
	uint32_t riff_size, chunk_size, bits;

	riff_size = le32(p + 4);
	if ((uint64_t)riff_size + 8 > h->file_size)
		return IMAGE_PROBE_TRUNCATED;
	if (riff_size < 4 + 8) /* "WEBP" and one chunk header */
		return IMAGE_PROBE_CORRUPT;
	if (!sees(h, 20))
		return beyond(h, 20);
	chunk_size = le32(p + 16);

	if (memcmp(p + 12, "VP8 ", 4) == 0) {
		/* Frame tag (3 bytes), start code 9D 01 2A, then 14-bit width and
		 * height, each with 2 bits of scaling on top. */
		if (chunk_size < 10)
			return IMAGE_PROBE_CORRUPT;
		if (!sees(h, 30))
			return beyond(h, 30);
		if ((p[20] & 1) != 0 || p[23] != 0x9d || p[24] != 0x01 || p[25] != 0x2a)
			return IMAGE_PROBE_CORRUPT;
		return set_dims(info, le16(p + 26) & 0x3fff, le16(p + 28) & 0x3fff);
	}
	if (memcmp(p + 12, "VP8L", 4) == 0) {
		/* Signature 0x2f, then width-1 and height-1 in 14 bits each and a
		 * 3-bit version that must be 0. */
		if (chunk_size < 5)
			return IMAGE_PROBE_CORRUPT;
		if (!sees(h, 25))
			return beyond(h, 25);
		bits = le32(p + 21);
		if (p[20] != 0x2f || bits >> 29 != 0)
			return IMAGE_PROBE_CORRUPT;
		return set_dims(info, (bits & 0x3fff) + 1, (bits >> 14 & 0x3fff) + 1);
	}
	if (memcmp(p + 12, "VP8X", 4) == 0) {
		/* Flags (1), reserved (3), canvas width-1 and height-1 in 24 bits. */
		if (chunk_size < 10)
			return IMAGE_PROBE_CORRUPT;
		if (!sees(h, 30))
			return beyond(h, 30);
		return set_dims(info, le24(p + 24) + 1, le24(p + 27) + 1);
	}
	return IMAGE_PROBE_CORRUPT;
}

static enum image_probe_result probe_gif(const struct head *h, struct image_info *info)
{
	/* Signature (6), then the 7-byte logical screen descriptor. */
	if (!sees(h, 13))
		return beyond(h, 13);
	return set_dims(info, le16(h->buf + 6), le16(h->buf + 8));
}

static enum image_probe_result probe_bmp(const struct head *h, struct image_info *info)
{
	const uint8_t *p = h->buf;
	uint32_t file_size_field, dib_size, width, height;

	if (!sees(h, 18))
		return beyond(h, 18);
	file_size_field = le32(p + 2);
	if (file_size_field != 0 && file_size_field > h->file_size)
		return IMAGE_PROBE_TRUNCATED;
	dib_size = le32(p + 14);

	if (dib_size == 12) {
		/* BITMAPCOREHEADER: unsigned 16-bit sides. */
		if (!sees(h, 22))
			return beyond(h, 22);
		return set_dims(info, le16(p + 18), le16(p + 20));
	}
	/* OS/2 2.x (16..64 bytes), BITMAPINFOHEADER (40) up to BITMAPV5HEADER
	 * (124): signed 32-bit sides. */
	if (dib_size < 16 || dib_size > 124)
		return IMAGE_PROBE_CORRUPT;
	if (!sees(h, 26))
		return beyond(h, 26);
	width = le32(p + 18);
	height = le32(p + 22);
	if (width & 0x80000000u)
		return IMAGE_PROBE_CORRUPT;
	/* A negative height means top-down rows. Negate in unsigned arithmetic;
	 * INT32_MIN has no positive counterpart. */
	if (height & 0x80000000u) {
		if (height == 0x80000000u)
			return IMAGE_PROBE_CORRUPT;
		height = 0u - height;
	}
	return set_dims(info, width, height);
}

/* The IFD0 tags other than the sides that matter: bits per sample,
 * photometric CMYK, orientation, and what makes a TIFF a camera raw (a DNG
 * version, or the maker of a NEF or an ARW). -1 for a raw. */
static int tiff_side_tag(const uint8_t *p, const struct head *h, uint32_t tag, uint32_t type,
			 uint32_t n, uint64_t entry, uint32_t (*u16)(const uint8_t *),
			 uint32_t (*u32)(const uint8_t *), struct image_info *info)
{
	switch (tag) {
	case 258: /* BitsPerSample: SHORTs, inline when two fit */
		if (type == 3 && n >= 1 && n <= 2)
			info->bits = (uint8_t)(u16(p + entry + 8) > 255 ? 255 : u16(p + entry + 8));
		else if (type == 3 && n > 2 && sees(h, (uint64_t)u32(p + entry + 8) + 2))
			info->bits = (uint8_t)(u16(p + u32(p + entry + 8)) > 255
						   ? 255
						   : u16(p + u32(p + entry + 8)));
		break;
	case 262: /* PhotometricInterpretation 5: separated (CMYK) */
		info->cmyk = type == 3 && u16(p + entry + 8) == 5;
		break;
	case 271: { /* Make */
		uint64_t at = n > 4 ? u32(p + entry + 8) : entry + 8;
		if (type == 2 && n >= 4 && sees(h, at + 4)) {
			if (memcmp(p + at, "NIKO", 4) == 0) {
				info->found = "Nikon NEF camera raw";
				return -1;
			}
			if (memcmp(p + at, "SONY", 4) == 0) {
				info->found = "Sony ARW camera raw";
				return -1;
			}
		}
		break;
	}
	case 274: /* Orientation */
		if (type == 3 && u16(p + entry + 8) >= 1 && u16(p + entry + 8) <= 8)
			info->orientation = (uint8_t)u16(p + entry + 8);
		break;
	case 50706: /* DNGVersion */
		info->found = "DNG camera raw";
		return -1;
	default:
		break;
	}
	return 0;
}

static enum image_probe_result probe_tiff(const struct head *h, struct image_info *info)
{
	const uint8_t *p = h->buf;
	bool big = p[0] == 'M';
	uint32_t (*u16)(const uint8_t *) = big ? be16 : le16;
	uint32_t (*u32)(const uint8_t *) = big ? be32 : le32;
	uint32_t width = 0, height = 0, count, tag, type, n, value;
	uint64_t ifd, entry;

	if (!sees(h, 8))
		return beyond(h, 8);
	ifd = u32(p + 4);
	if (ifd < 8)
		return IMAGE_PROBE_CORRUPT;
	if (!sees(h, ifd + 2))
		return beyond(h, ifd + 2);
	count = u16(p + ifd);
	if (count == 0)
		return IMAGE_PROBE_CORRUPT;

	if (h->len >= 10 && p[8] == 'C' && p[9] == 'R') {
		info->found = "Canon CR2 camera raw";
		return IMAGE_PROBE_UNKNOWN;
	}
	for (uint32_t i = 0; i < count; i++) {
		entry = ifd + 2 + 12 * (uint64_t)i;
		if (!sees(h, entry + 12)) {
			if (width && height)
				break; /* the rest is only what fit_wanted looks at */
			return beyond(h, entry + 12);
		}
		tag = u16(p + entry);
		type = u16(p + entry + 2);
		n = u32(p + entry + 4);
		if (tiff_side_tag(p, h, tag, type, n, entry, u16, u32, info) < 0)
			return IMAGE_PROBE_UNKNOWN; /* a camera raw */
		if (tag != 256 && tag != 257)
			continue;
		/* A SHORT sits left-justified in the 4-byte value field. */
		if (n < 1)
			return IMAGE_PROBE_CORRUPT;
		if (type == 3)
			value = u16(p + entry + 8);
		else if (type == 4)
			value = u32(p + entry + 8);
		else
			return IMAGE_PROBE_CORRUPT;
		if (value == 0)
			return IMAGE_PROBE_CORRUPT;
		if (tag == 256)
			width = value;
		else
			height = value;
	}
	return set_dims(info, width, height);
}

uint64_t image_tiff_ifd_offset(const uint8_t *head, size_t len)
{
	if (len < 8 || image_sniff(head, len) != IMAGE_FORMAT_TIFF)
		return 0;
	return head[0] == 'M' ? be32(head + 4) : le32(head + 4);
}

enum image_probe_result image_probe_tiff_ifd(const uint8_t *head, size_t head_len,
					     const uint8_t *ifd, size_t ifd_len,
					     uint64_t ifd_offset, uint64_t file_size,
					     struct image_info *ret_info)
{
	/* A file of its header and its directory, with the directory moved to
	 * offset 8: the width and height tags hold their values inline. */
	uint8_t buf[8 + IMAGE_TIFF_IFD_WINDOW];
	struct head h = {.buf = buf};
	struct image_info info = {.format = IMAGE_FORMAT_TIFF};
	enum image_probe_result r;

	memset(ret_info, 0, sizeof(*ret_info));
	if (head_len < 8 || image_sniff(head, head_len) != IMAGE_FORMAT_TIFF ||
	    ifd_offset < 8 || ifd_offset >= file_size)
		return IMAGE_PROBE_CORRUPT;
	if (ifd_len > IMAGE_TIFF_IFD_WINDOW)
		ifd_len = IMAGE_TIFF_IFD_WINDOW;
	memcpy(buf, head, 4);
	if (head[0] == 'M') {
		buf[4] = buf[5] = buf[6] = 0;
		buf[7] = 8;
	} else {
		buf[4] = 8;
		buf[5] = buf[6] = buf[7] = 0;
	}
	memcpy(buf + 8, ifd, ifd_len);
	h.len = 8 + ifd_len;
	h.file_size = 8 + (file_size - ifd_offset);
	r = probe_tiff(&h, &info);
	ret_info->format = IMAGE_FORMAT_TIFF;
	ret_info->found = info.found;
	if (r == IMAGE_PROBE_OK)
		*ret_info = info;
	return r;
}

enum image_probe_result image_probe(const uint8_t *head, size_t len, uint64_t file_size,
				    struct image_info *ret_info)
{
	struct head h = {.buf = head, .len = len, .file_size = file_size};
	struct image_info info = {0};
	enum image_probe_result r;

	*ret_info = info;
	if (file_size == 0)
		return IMAGE_PROBE_EMPTY;
	if (h.len > file_size)
		h.len = (size_t)file_size;

	info.format = image_sniff(head, h.len);
	switch (info.format) {
	case IMAGE_FORMAT_PNG:
		r = probe_png(&h, &info);
		break;
	case IMAGE_FORMAT_JPEG:
		r = probe_jpeg(&h, &info);
		break;
	case IMAGE_FORMAT_WEBP:
		r = probe_webp(&h, &info);
		break;
	case IMAGE_FORMAT_GIF:
		r = probe_gif(&h, &info);
		break;
	case IMAGE_FORMAT_BMP:
		r = probe_bmp(&h, &info);
		break;
	case IMAGE_FORMAT_TIFF:
		r = probe_tiff(&h, &info);
		break;
	case IMAGE_FORMAT_HEIF:
	case IMAGE_FORMAT_AVIF:
	case IMAGE_FORMAT_JXL:
		/* The sides sit in boxes a decoder finds; a fit reads them. */
		*ret_info = info;
		return IMAGE_PROBE_OK;
	default:
		ret_info->found = sniff_unsupported(head, h.len);
		if (ret_info->found)
			return IMAGE_PROBE_UNKNOWN;
		if (h.len == file_size && is_magic_prefix(head, h.len))
			return IMAGE_PROBE_TRUNCATED;
		return IMAGE_PROBE_UNKNOWN;
	}
	if (r == IMAGE_PROBE_OK) {
		*ret_info = info;
	} else {
		ret_info->format = r == IMAGE_PROBE_UNKNOWN ? IMAGE_FORMAT_UNKNOWN : info.format;
		ret_info->found = info.found;
	}
	return r;
}

static size_t strip_trailing_zeros(const uint8_t *p, size_t len)
{
	while (len > 0 && p[len - 1] == 0x00)
		len--;
	return len;
}

bool image_tail_complete(enum image_format format, const uint8_t *tail, size_t len)
{
	static const uint8_t iend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82};

	switch (format) {
	case IMAGE_FORMAT_PNG:
		return len >= sizeof(iend) && memcmp(tail + len - sizeof(iend), iend, 12) == 0;
	case IMAGE_FORMAT_JPEG:
		/* Some cameras append trailers after EOI, so an EOI anywhere in
		 * the tail counts; entropy-coded data never holds FF D9. */
		len = strip_trailing_zeros(tail, len);
		for (size_t i = len; i >= 2; i--)
			if (tail[i - 2] == 0xff && tail[i - 1] == 0xd9)
				return true;
		return false;
	default:
		return true;
	}
}

static void say(char *msg, size_t msglen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(char *msg, size_t msglen, const char *fmt, ...)
{
	va_list ap;

	if (!msg || msglen == 0)
		return;
	va_start(ap, fmt);
	(void)vsnprintf(msg, msglen, fmt, ap);
	va_end(ap);
}

const char *image_check_limits(const struct image_info *info, uint64_t file_size,
			       uint64_t max_bytes, char *msg, size_t msglen)
{
	uint64_t w = info->width, h = info->height;

	if (file_size > max_bytes) {
		say(msg, msglen, "file is %" PRIu64 " bytes; at most %" PRIu64 " are allowed",
		    file_size, max_bytes);
		return "LocalValidation.FileTooLarge";
	}
	if (w < MIN_SIDE || h < MIN_SIDE) {
		say(msg, msglen,
		    "image is %" PRIu64 "x%" PRIu64 " pixels; each side must be more than %u", w, h,
		    MIN_SIDE - 1);
		return "LocalValidation.TooSmall";
	}
	if (w > MAX_ASPECT * h || h > MAX_ASPECT * w) {
		say(msg, msglen,
		    "image is %" PRIu64 "x%" PRIu64
		    " pixels; the aspect ratio must be within 1:%u and %u:1",
		    w, h, MAX_ASPECT, MAX_ASPECT);
		return "LocalValidation.AspectRatio";
	}
	if (w * h > MAX_PIXELS) {
		say(msg, msglen,
		    "image is %" PRIu64 "x%" PRIu64 " = %" PRIu64 " pixels; at most %u are allowed",
		    w, h, w * h, MAX_PIXELS);
		return "LocalValidation.TooLarge";
	}
	if (msg && msglen > 0)
		msg[0] = '\0';
	return NULL;
}

const char *image_probe_code(enum image_probe_result result)
{
	switch (result) {
	case IMAGE_PROBE_OK:
		return NULL;
	case IMAGE_PROBE_EMPTY:
		return "LocalValidation.Empty";
	case IMAGE_PROBE_UNKNOWN:
		return "LocalValidation.UnsupportedFormat";
	case IMAGE_PROBE_TRUNCATED:
		return "LocalValidation.Truncated";
	default:
		return "LocalValidation.Corrupt";
	}
}

const char *image_probe_message(enum image_probe_result result)
{
	switch (result) {
	case IMAGE_PROBE_OK:
		return NULL;
	case IMAGE_PROBE_EMPTY:
		return "the file is empty";
	case IMAGE_PROBE_UNKNOWN:
		return "not a PNG, JPEG, WebP, BMP, TIFF, GIF, HEIF, AVIF or JPEG XL image";
	case IMAGE_PROBE_TRUNCATED:
		return "the file ends before its header does, or is shorter than it declares";
	default:
		return "the image header is inconsistent or unreadable";
	}
}
