/* xmp: provenance metadata (XMP) for output JPEGs, built and inserted as one
 * APP1 segment, never re-encoding the image. Pure: no I/O, never logs.
 *
 * Why not libgexiv2: Exiv2 re-parses and rewrites the whole file through a
 * C++ library with its own allocator and error model; inserting one APP1
 * segment after SOI/JFIF/Exif is a few dozen lines that leave every other
 * byte as it was, can be fuzzed here, and needs no new dependency. */
#ifndef SEEDREAMD_XMP_H
#define SEEDREAMD_XMP_H

#include <stddef.h>
#include <stdint.h>

/* An APP1 segment holds 65533 bytes after its marker and length; the XMP
 * namespace header takes 29 of them, leaving 65504: keep two spare. */
#define XMP_PACKET_MAX 65502

#define XMP_DIGITAL_SOURCE_TYPE                                                                    \
	"http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
#define XMP_SEEDREAMD_NS "https://seedreamd.invalid/ns/provenance/1.0/"

#define XMP_CREATED_MAX 253402300799LL /* 9999-12-31T23:59:59Z: four year digits */

struct xmp_fields {
	const char *tool;	   /* xmp:CreatorTool, e.g. "seedreamd 1.4" */
	const char *model;	   /* seedreamd:Model */
	int64_t created;	   /* xmp:CreateDate, epoch seconds, 0..XMP_CREATED_MAX */
	const char *source;	   /* seedreamd:SourceFile: any bytes */
	const char *prompt_sha256; /* seedreamd:PromptSHA256, 64 hex digits */
	const char *prompt;	   /* seedreamd:Prompt, or NULL (embed_prompt off) */
};

/* The XMP packet (NUL-terminated, caller frees) with every value made valid
 * XML text: bytes that are not valid UTF-8 or not XML characters become
 * U+FFFD, and & < > " ' are escaped. When the packet would exceed
 * XMP_PACKET_MAX with the prompt, the prompt is left out (its hash stays).
 * 0, -E2BIG (too big even without it), -EINVAL or -ENOMEM. */
int xmp_build_packet(const struct xmp_fields *f, char **ret_packet, size_t *ret_len);

/* Where a new APP1 segment goes in jpeg: after SOI and the APP0 (JFIF) and
 * APP1 Exif segments that must come first. Every segment up to SOS is
 * walked, so a JPEG whose header does not parse, or that already holds an
 * XMP APP1, is refused with -EINVAL. 0 and *ret_offset otherwise. */
int xmp_jpeg_insert_offset(const uint8_t *jpeg, size_t len, size_t *ret_offset);

/* The APP1 segment (FFE1, length, XMP header, packet); caller frees.
 * -E2BIG when packet_len > XMP_PACKET_MAX, or -ENOMEM. */
int xmp_jpeg_segment(const char *packet, size_t packet_len, uint8_t **ret_seg, size_t *ret_len);

/* Whether the segments of jpeg parse from SOI to SOS (each marker, each
 * length within the buffer), for tests and fuzzers. 0 or -EINVAL. */
int xmp_jpeg_check(const uint8_t *jpeg, size_t len);

#endif
