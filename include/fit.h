/* fit: makes an image the API would refuse (or mis-read) into one it takes:
 * decoded with libvips, rotated upright from its EXIF orientation, converted
 * to sRGB 8-bit, shrunk (never enlarged) to the pixel limit and max_bytes,
 * and encoded as JPEG (PNG when it has alpha) with its metadata stripped.
 * fit_run() blocks and is meant for a worker thread; it neither logs nor
 * touches the event loop. fit_wanted() is pure and runs on the loop. */
#ifndef SEEDREAMD_FIT_H
#define SEEDREAMD_FIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "image.h"

/* Why an image is fitted; a bit set, in the order fit_reason_name() knows. */
enum {
	FIT_REASON_FORMAT = 1u << 0,	  /* HEIF, AVIF, JPEG XL: not a format the API takes */
	FIT_REASON_PIXELS = 1u << 1,	  /* over the pixel limit */
	FIT_REASON_BYTES = 1u << 2,	  /* over max_input_bytes */
	FIT_REASON_ORIENTATION = 1u << 3, /* an EXIF orientation other than 1 */
	FIT_REASON_CMYK = 1u << 4,
	FIT_REASON_DEPTH = 1u << 5,	  /* more than 8 bits per sample */
	FIT_REASON_PROFILE = 1u << 6,	  /* an embedded ICC profile that is not sRGB */
	FIT_REASON_ALWAYS = 1u << 7,	  /* fit: always, and nothing else */
	FIT_REASON_COUNT = 8,
};

/* Images this large (decoded) are refused rather than fitted: a
 * decompression bomb must not keep a core busy for minutes. */
#define FIT_SOURCE_PIXELS_MAX 400000000ull

struct fit_options {
	uint64_t max_pixels;  /* the API's limit */
	uint64_t max_bytes;   /* max_input_bytes */
	int quality;	      /* JPEG Q, 1..100 */
	unsigned reasons;     /* what the loop saw already (fit_wanted) */
	const char *tmp_dir;  /* where the result lives (O_TMPFILE); NULL: memory */
	const char *format;   /* the format the loop sniffed, for "from" */
};

struct fit_result {
	int fd;		      /* the encoded image, unlinked; -1 on failure */
	uint64_t bytes;
	enum image_format format; /* JPEG or PNG */
	uint32_t width, height;
	unsigned reasons;
	char from[128];	      /* "HEIF 4032x3024 orientation 6" */
	char to[64];	      /* "JPEG 3024x4032" */
	char sha256[65];      /* of the original file, as read */
	const char *code;     /* on failure: a LocalValidation code */
	char message[256];    /* on failure */
};

/* Starts libvips once per process, so that libvips and its loader modules
 * (about 10 MB of RSS) are loaded only by a daemon that fits an image.
 * vips_init must run while no other thread reads or changes the environment
 * (it may set VIPSHOME, taken away again here): the daemon calls this on the
 * loop thread before its first fit request (job_fit_can_start); fit_run
 * calls it too, for callers with one thread. Returns 0 or -EIO (every later
 * call too: libvips cannot be started a second time). */
int fit_global_init(void);
/* Why fit_global_init failed (vips's error, one line); "" if it did not. */
const char *fit_global_error(void);
/* At exit (leak checkers); no fit_run may be running. */
void fit_global_shutdown(void);

/* Whether (and why) an image with this header is fitted in mode; 0: send it
 * as it is (or refuse it, for mode never). Pure. */
unsigned fit_wanted(const struct image_info *info, uint64_t file_size, uint64_t max_bytes,
		    enum fit_mode mode);

/* "format", "pixels", "bytes", "orientation", "cmyk", "depth", "profile",
 * "always" for one bit; NULL otherwise. */
const char *fit_reason_name(unsigned bit);

/* Fits the image read from fd (from offset 0, with pread; fd stays open).
 * Returns 0 with res filled (res->fd owned by the caller), or a negative
 * errno with res->code and res->message saying why (res->fd is -1). */
int fit_run(int fd, const struct fit_options *opt, struct fit_result *res);

/* Whether a failed fit_run failed here rather than on the image: no
 * temporary file for the result (EMFILE, ENOSPC), or the original could not
 * be read (EIO, ESTALE on a NAS). Such a failure says nothing about the
 * image: the caller tries again later instead of refusing it. Pure. */
bool fit_failed_locally(const struct fit_result *res);

/* Closes res->fd; accepts a cleared result. */
void fit_result_clear(struct fit_result *res);

#endif
