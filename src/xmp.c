/* xmp: see xmp.h. */
#include "xmp.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clean.h"
#include "textbuf.h"

#define XMP_HEADER	"http://ns.adobe.com/xap/1.0/"
#define XMP_HEADER_LEN	(sizeof(XMP_HEADER)) /* with its NUL, as the segment holds it */
#define EXIF_HEADER	"Exif\0\0"
#define EXIF_HEADER_LEN 6

/* XML 1.0's Char production: no C0 controls but tab, LF and CR, no
 * U+FFFE/U+FFFF (surrogates are already refused by clean_utf8_seq). */
static bool xml_char(const unsigned char *s, size_t n)
{
	if (n == 1)
		return s[0] >= 0x20 || s[0] == '\t' || s[0] == '\n' || s[0] == '\r';
	if (n == 3 && s[0] == 0xEF && s[1] == 0xBF && (s[2] == 0xBE || s[2] == 0xBF))
		return false;
	return true;
}

/* Appends s as XML character data or attribute text. */
static void buf_text(struct textbuf *b, const char *text)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t len = strlen(text), i = 0;

	while (i < len) {
		size_t n = clean_utf8_seq(s + i, len - i);

		if (n == 0 || !xml_char(s + i, n)) {
			textbuf_str(b, "\xEF\xBF\xBD");
			i += n ? n : 1;
			continue;
		}
		switch (s[i]) {
		case '&':
			textbuf_str(b, "&amp;");
			break;
		case '<':
			textbuf_str(b, "&lt;");
			break;
		case '>':
			textbuf_str(b, "&gt;");
			break;
		case '"':
			textbuf_str(b, "&quot;");
			break;
		case '\'':
			textbuf_str(b, "&apos;");
			break;
		case '\r':
			textbuf_str(b, "&#13;"); /* a bare CR would be read back as LF */
			break;
		default:
			textbuf_put(b, (const char *)s + i, n);
		}
		i += n;
	}
}

static void buf_element(struct textbuf *b, const char *name, const char *value)
{
	textbuf_str(b, "   <");
	textbuf_str(b, name);
	textbuf_str(b, ">");
	buf_text(b, value);
	textbuf_str(b, "</");
	textbuf_str(b, name);
	textbuf_str(b, ">\n");
}

static int build(const struct xmp_fields *f, bool with_prompt, struct textbuf *b)
{
	char when[32];
	time_t sec = (time_t)f->created;
	struct tm tm;

	if (!gmtime_r(&sec, &tm) || strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		return -EINVAL;
	/* The BOM in begin= is what the XMP spec asks for in a UTF-8 packet. */
	textbuf_str(b, "<?xpacket begin=\"\xEF\xBB\xBF\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n"
		   "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\">\n"
		   " <rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\n"
		   "  <rdf:Description rdf:about=\"\"\n"
		   "    xmlns:Iptc4xmpExt=\"http://iptc.org/std/Iptc4xmpExt/2008-02-29/\"\n"
		   "    xmlns:xmp=\"http://ns.adobe.com/xap/1.0/\"\n"
		   "    xmlns:seedreamd=\"" XMP_SEEDREAMD_NS "\">\n");
	buf_element(b, "Iptc4xmpExt:DigitalSourceType", XMP_DIGITAL_SOURCE_TYPE);
	buf_element(b, "xmp:CreatorTool", f->tool);
	buf_element(b, "xmp:CreateDate", when);
	buf_element(b, "seedreamd:Model", f->model);
	buf_element(b, "seedreamd:SourceFile", f->source);
	buf_element(b, "seedreamd:PromptSHA256", f->prompt_sha256);
	if (with_prompt && f->prompt)
		buf_element(b, "seedreamd:Prompt", f->prompt);
	textbuf_str(b, "  </rdf:Description>\n"
		   " </rdf:RDF>\n"
		   "</x:xmpmeta>\n"
		   "<?xpacket end=\"r\"?>");
	return b->oom ? -ENOMEM : 0;
}

int xmp_build_packet(const struct xmp_fields *f, char **ret_packet, size_t *ret_len)
{
	struct textbuf b = {0};
	int r;

	if (!f || !f->tool || !f->model || !f->source || !f->prompt_sha256 || f->created < 0 ||
	    f->created > XMP_CREATED_MAX)
		return -EINVAL;
	r = build(f, true, &b);
	if (r == 0 && b.len > XMP_PACKET_MAX && f->prompt) {
		free(b.p);
		b = (struct textbuf){0};
		r = build(f, false, &b);
	}
	if (r == 0 && b.len > XMP_PACKET_MAX)
		r = -E2BIG;
	if (r < 0) {
		free(b.p);
		return r;
	}
	*ret_packet = b.p;
	*ret_len = b.len;
	return 0;
}

/* Walks the segments from SOI to SOS. ret_offset (may be NULL): the end of
 * the leading APP0 and Exif APP1 segments. -EEXIST when an XMP APP1 is
 * there already. */
static int walk(const uint8_t *p, size_t len, size_t *ret_offset)
{
	size_t i = 2, insert = 2;
	bool leading = true;

	if (!p || len < 4 || p[0] != 0xFF || p[1] != 0xD8)
		return -EINVAL;
	for (;;) {
		uint8_t m;
		size_t seglen;

		if (i >= len || p[i] != 0xFF)
			return -EINVAL;
		while (i < len && p[i] == 0xFF) /* fill bytes */
			i++;
		if (i >= len)
			return -EINVAL;
		m = p[i++];
		if (m == 0x00 || m == 0xD8 || m == 0xD9)
			return -EINVAL; /* no scan: not an image we can stand behind */
		if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
			leading = false; /* standalone markers, no length */
			continue;
		}
		if (i + 2 > len)
			return -EINVAL;
		seglen = (size_t)p[i] << 8 | p[i + 1];
		if (seglen < 2 || seglen > len - i)
			return -EINVAL;
		if (m == 0xDA)
			break;
		if (m == 0xE1 && seglen - 2 >= XMP_HEADER_LEN &&
		    memcmp(p + i + 2, XMP_HEADER, XMP_HEADER_LEN) == 0)
			return -EEXIST;
		if (leading &&
		    (m == 0xE0 || (m == 0xE1 && seglen - 2 >= EXIF_HEADER_LEN &&
				   memcmp(p + i + 2, EXIF_HEADER, EXIF_HEADER_LEN) == 0)))
			insert = i + seglen;
		else
			leading = false;
		i += seglen;
	}
	if (ret_offset)
		*ret_offset = insert;
	return 0;
}

int xmp_jpeg_insert_offset(const uint8_t *jpeg, size_t len, size_t *ret_offset)
{
	return walk(jpeg, len, ret_offset);
}

int xmp_jpeg_check(const uint8_t *jpeg, size_t len)
{
	int r = walk(jpeg, len, NULL);

	return r == -EEXIST ? 0 : r;
}

int xmp_jpeg_segment(const char *packet, size_t packet_len, uint8_t **ret_seg, size_t *ret_len)
{
	size_t body = 2 + XMP_HEADER_LEN + packet_len;
	uint8_t *seg;

	if (packet_len > XMP_PACKET_MAX)
		return -E2BIG;
	seg = malloc(2 + body);
	if (!seg)
		return -ENOMEM;
	seg[0] = 0xFF;
	seg[1] = 0xE1;
	seg[2] = (uint8_t)(body >> 8);
	seg[3] = (uint8_t)(body & 0xFF);
	memcpy(seg + 4, XMP_HEADER, XMP_HEADER_LEN);
	memcpy(seg + 4 + XMP_HEADER_LEN, packet, packet_len);
	*ret_seg = seg;
	*ret_len = 2 + body;
	return 0;
}
