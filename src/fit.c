/* fit: see fit.h. libvips does the decoding (shrink-on-load for JPEG and
 * HEIF through vips_thumbnail), the colour management and the encoding. */
#include "fit.h"

#include "digest.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vips/vips.h>

#include "digest.h"

/* Encoding again, smaller, when a result is over max_bytes: a few rounds
 * reach any budget a sane configuration sets. */
#define FIT_ENCODE_ROUNDS 6

/* The codes of the failures that are not the image's (fit_failed_locally). */
#define FIT_CODE_LOCAL_ERROR "LocalError"
#define FIT_CODE_UNREADABLE  "LocalValidation.Unreadable"

static const char *const reason_names[FIT_REASON_COUNT] = {
    "format", "pixels", "bytes", "orientation", "cmyk", "depth", "profile", "always",
};

const char *fit_reason_name(unsigned bit)
{
	for (unsigned i = 0; i < FIT_REASON_COUNT; i++)
		if (bit == 1u << i)
			return reason_names[i];
	return NULL;
}

static bool fit_started;
static int fit_init_result;
static char fit_init_error[200]; /* vips's reason when it could not start */
static pthread_once_t fit_once = PTHREAD_ONCE_INIT;

static const char *vips_reason(char *buf, size_t len);

static void fit_quiet(const gchar *domain, GLogLevelFlags level, const gchar *message,
		      gpointer userdata)
{
	(void)domain;
	(void)level;
	(void)message;
	(void)userdata;
}

static void fit_init_once(void)
{
	bool had_home = getenv("VIPSHOME") != NULL;
	int r = VIPS_INIT("seedreamd");

	/* vips_init sets VIPSHOME when it is unset (vips_guess_prefix) and is
	 * the only reader of it: taken away again, so hooks and commands the
	 * daemon starts get the environment the daemon was given. */
	if (!had_home)
		(void)unsetenv("VIPSHOME");
	if (r) {
		(void)vips_reason(fit_init_error, sizeof(fit_init_error));
		fit_init_result = -EIO;
		return;
	}
	fit_started = true;
	/* Decoder warnings (an odd colour box, a short marker) are not the
	 * daemon's to print on stderr; failures still come back as errors. */
	(void)g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING, fit_quiet, NULL);
	/* One vips thread per fit: the parallelism is max_fits worker threads,
	 * each running one fit, so CPU and memory grow with max_fits alone
	 * (vips's default is a thread pool per pipeline sized to the cores). */
	vips_concurrency_set(1);
	/* Every file is read once: vips's operation cache would only hold
	 * decoded images and open files nobody asks for again. */
	vips_cache_set_max(0);
	vips_cache_set_max_mem(0);
	vips_cache_set_max_files(0);
	/* Loaders that are not fuzzed for hostile input (ImageMagick, matrix,
	 * ...) stay off: whatever lands in a hot folder is untrusted. */
	vips_block_untrusted_set(TRUE);
}

int fit_global_init(void)
{
	(void)pthread_once(&fit_once, fit_init_once);
	return fit_init_result;
}

const char *fit_global_error(void)
{
	return fit_init_error;
}

void fit_global_shutdown(void)
{
	if (fit_started)
		vips_shutdown();
	fit_started = false;
}

unsigned fit_wanted(const struct image_info *info, uint64_t file_size, uint64_t max_bytes,
		    enum fit_mode mode)
{
	unsigned reasons = 0;

	if (mode == FIT_NEVER)
		return 0;
	if (!image_api_format(info->format))
		reasons |= FIT_REASON_FORMAT;
	if ((uint64_t)info->width * info->height > IMAGE_MAX_PIXELS)
		reasons |= FIT_REASON_PIXELS;
	if (file_size > max_bytes)
		reasons |= FIT_REASON_BYTES;
	if (info->orientation > 1)
		reasons |= FIT_REASON_ORIENTATION; /* a portrait photo would arrive sideways */
	if (info->cmyk)
		reasons |= FIT_REASON_CMYK;
	if (info->bits > 8)
		reasons |= FIT_REASON_DEPTH;
	if (info->foreign_profile)
		reasons |= FIT_REASON_PROFILE;
	if (mode == FIT_ALWAYS && !reasons)
		reasons = FIT_REASON_ALWAYS;
	return reasons;
}

static void fail(struct fit_result *res, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(struct fit_result *res, const char *code, const char *fmt, ...)
{
	va_list ap;

	res->code = code;
	va_start(ap, fmt);
	(void)vsnprintf(res->message, sizeof(res->message), fmt, ap);
	va_end(ap);
}

/* vips's last error, one line, for a message; clears it. */
static const char *vips_reason(char *buf, size_t len)
{
	/* vips keeps one error buffer for the process: take a copy and clear it
	 * in one step, under its lock, so fits on other workers cannot mix in. */
	char *e = vips_error_buffer_copy();

	(void)snprintf(buf, len, "%.*s", e ? (int)strcspn(e, "\n") : 0, e ? e : "");
	g_free(e);
	return buf[0] ? buf : "unknown error";
}

/* An unnamed file for the result: O_TMPFILE in tmp_dir (gone when closed,
 * even after a crash), else memory. Never next to the user's files. */
static int open_result(const char *tmp_dir)
{
	int fd = -1;

	if (tmp_dir)
		fd = open(tmp_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		fd = memfd_create("seedreamd-fit", MFD_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

struct source_header {
	int width, height, orientation, bands;
	bool alpha, cmyk, deep, profile;
	VipsInterpretation interpretation;
};

/* The descriptor as a path that opens the very same file (not whatever the
 * name points at now). vips's file loaders, unlike its source loaders in
 * 8.14, honour fail_on: a truncated image is an error, not grey pixels. */
static void fd_path(int fd, char *buf, size_t len)
{
	(void)snprintf(buf, len, "/proc/self/fd/%d", fd);
}

static int read_header(int fd, struct source_header *sh, char *err, size_t errlen)
{
	char path[64];
	VipsImage *im;

	fd_path(fd, path, sizeof(path));
	/* Only the header: loaders are lazy until pixels are asked for. */
	im = vips_image_new_from_file(path, "access", VIPS_ACCESS_SEQUENTIAL, NULL);
	if (!im) {
		(void)vips_reason(err, errlen);
		return -EINVAL;
	}
	sh->width = vips_image_get_width(im);
	sh->height = vips_image_get_height(im);
	sh->orientation = vips_image_get_orientation(im);
	sh->bands = vips_image_get_bands(im);
	sh->alpha = vips_image_hasalpha(im);
	sh->interpretation = vips_image_get_interpretation(im);
	sh->cmyk = sh->interpretation == VIPS_INTERPRETATION_CMYK;
	sh->deep = vips_format_sizeof(vips_image_get_format(im)) > 1;
	sh->profile = vips_image_get_typeof(im, VIPS_META_ICC_NAME) != 0;
	g_object_unref(im);
	return 0;
}

/* One round: thumbnail to fit a side x side box (never enlarged), upright,
 * sRGB, 8 bits, then encoded into out_fd from offset 0. */
static int encode_round(int fd, int out_fd, int side, const struct fit_options *opt, bool *alpha,
			uint32_t *ret_w, uint32_t *ret_h, uint64_t *ret_bytes, char *err,
			size_t errlen)
{
	VipsTarget *target = NULL;
	VipsImage *thumb = NULL, *srgb = NULL, *u8 = NULL;
	char path[64];
	struct stat st;
	int r = -EINVAL;

	fd_path(fd, path, sizeof(path));
	/* thumbnail: shrink-on-load (JPEG by 2/4/8, HEIF from its largest
	 * sufficient image), EXIF autorotate, embedded profile imported (CMYK
	 * without one through vips's CMYK profile) and exported to sRGB. */
	if (vips_thumbnail(path, &thumb, side, "height", side, "size", VIPS_SIZE_DOWN,
				  "fail_on", VIPS_FAIL_ON_ERROR, "intent",
				  VIPS_INTENT_RELATIVE, NULL))
		goto vips_fail;
	if (vips_colourspace(thumb, &srgb, VIPS_INTERPRETATION_sRGB, NULL) ||
	    vips_cast(srgb, &u8, VIPS_FORMAT_UCHAR, NULL))
		goto vips_fail;
	*alpha = vips_image_hasalpha(u8);
	if (ftruncate(out_fd, 0) < 0 || lseek(out_fd, 0, SEEK_SET) < 0) {
		r = -errno;
		(void)snprintf(err, errlen, "%s", strerror(errno));
		goto out;
	}
	target = vips_target_new_to_descriptor(out_fd);
	if (!target)
		goto vips_fail;
	/* strip: EXIF (GPS, the orientation already applied), XMP, IPTC and
	 * the profile go; the pixels are sRGB, which is what a data URL means.
	 * No optimize_coding: libjpeg would hold every coefficient of the
	 * image (some 200 MB at 36 MP) for its second pass; without it the
	 * encoder streams, a few percent larger. */
	if (*alpha ? vips_pngsave_target(u8, target, "strip", TRUE, "compression", 6, NULL)
		   : vips_jpegsave_target(u8, target, "Q", opt->quality, "strip", TRUE, NULL))
		goto vips_fail;
	if (fstat(out_fd, &st) < 0) {
		r = -errno;
		(void)snprintf(err, errlen, "%s", strerror(errno));
		goto out;
	}
	*ret_w = (uint32_t)vips_image_get_width(u8);
	*ret_h = (uint32_t)vips_image_get_height(u8);
	*ret_bytes = (uint64_t)st.st_size;
	r = 0;
	goto out;
vips_fail:
	(void)vips_reason(err, errlen);
out:
	if (target)
		g_object_unref(target);
	if (u8)
		g_object_unref(u8);
	if (srgb)
		g_object_unref(srgb);
	if (thumb)
		g_object_unref(thumb);
	return r;
}

static void describe_from(const struct fit_options *opt, const struct source_header *sh,
			  char *buf, size_t len)
{
	char fmt[16];
	size_t i;

	for (i = 0; opt->format && opt->format[i] && i + 1 < sizeof(fmt); i++)
		fmt[i] = (char)(opt->format[i] >= 'a' && opt->format[i] <= 'z'
				    ? opt->format[i] - 'a' + 'A'
				    : opt->format[i]);
	fmt[i] = '\0';
	(void)snprintf(buf, len, "%s %dx%d", fmt[0] ? fmt : "image", sh->width, sh->height);
	if (sh->orientation > 1)
		(void)snprintf(buf + strlen(buf), len - strlen(buf), " orientation %d",
			       sh->orientation);
	if (sh->cmyk)
		(void)snprintf(buf + strlen(buf), len - strlen(buf), " CMYK");
	if (sh->deep)
		(void)snprintf(buf + strlen(buf), len - strlen(buf), " 16-bit");
	if (sh->profile)
		(void)snprintf(buf + strlen(buf), len - strlen(buf), " ICC");
}

int fit_run(int fd, const struct fit_options *opt, struct fit_result *res)
{
	struct source_header sh = {0};
	uint64_t pixels, bytes = 0;
	uint32_t w = 0, h = 0;
	bool alpha = false;
	char err[200] = "";
	double scale = 1.0;
	int side, r;

	memset(res, 0, sizeof(*res));
	res->fd = -1;
	r = fit_global_init();
	if (r < 0) {
		fail(res, "LocalError.FitUnavailable", "libvips could not be initialised: %s",
		     fit_init_error);
		return r;
	}
	/* source_sha256 stays the hash of what the user dropped, not of what was sent. */
	r = digest_sha256_fd(fd, res->sha256);
	if (r < 0) {
		fail(res, FIT_CODE_UNREADABLE, "%s", strerror(-r));
		goto out;
	}
	r = read_header(fd, &sh, err, sizeof(err));
	if (r < 0) {
		fail(res, "LocalValidation.Corrupt", "the %s image cannot be decoded: %s",
		     opt->format ? opt->format : "", err);
		goto out;
	}
	describe_from(opt, &sh, res->from, sizeof(res->from));
	pixels = (uint64_t)sh.width * (uint64_t)sh.height;
	if (pixels > FIT_SOURCE_PIXELS_MAX) {
		r = -E2BIG;
		fail(res, "LocalValidation.TooLarge",
		     "image is %dx%d pixels; at most %llu are fitted", sh.width, sh.height,
		     (unsigned long long)FIT_SOURCE_PIXELS_MAX);
		goto out;
	}
	res->reasons = opt->reasons;
	if (pixels > opt->max_pixels)
		res->reasons |= FIT_REASON_PIXELS;
	if (sh.orientation > 1)
		res->reasons |= FIT_REASON_ORIENTATION;
	if (sh.cmyk)
		res->reasons |= FIT_REASON_CMYK;
	if (sh.deep)
		res->reasons |= FIT_REASON_DEPTH;
	if (res->reasons & ~(unsigned)FIT_REASON_ALWAYS)
		res->reasons &= ~(unsigned)FIT_REASON_ALWAYS;
	if (pixels > opt->max_pixels)
		/* A hair under the limit: vips rounds the short side. */
		scale = sqrt((double)opt->max_pixels / (double)pixels) * 0.999;
	side = (int)floor((sh.width > sh.height ? sh.width : sh.height) * scale);
	res->fd = open_result(opt->tmp_dir);
	if (res->fd < 0) {
		r = res->fd;
		fail(res, FIT_CODE_LOCAL_ERROR, "a temporary file for the fitted image: %s",
		     strerror(-r));
		goto out;
	}
	for (int round = 0; round < FIT_ENCODE_ROUNDS; round++) {
		r = encode_round(fd, res->fd, side, opt, &alpha, &w, &h, &bytes, err, sizeof(err));
		if (r < 0) {
			fail(res, "LocalValidation.Corrupt", "the %s image cannot be decoded: %s",
			     opt->format ? opt->format : "", err);
			goto out;
		}
		if (bytes <= opt->max_bytes && (uint64_t)w * h <= opt->max_pixels)
			break;
		/* Bytes scale roughly with pixels: shrink the side by the square
		 * root of what is over, with a margin. */
		scale = bytes > opt->max_bytes ? sqrt((double)opt->max_bytes / (double)bytes) * 0.95
					       : 0.99;
		side = (int)floor((w > h ? w : h) * scale);
		if (side < 16)
			break;
		if (bytes > opt->max_bytes)
			res->reasons |= FIT_REASON_BYTES;
	}
	if (bytes > opt->max_bytes || (uint64_t)w * h > opt->max_pixels) {
		r = -EFBIG;
		fail(res, "LocalValidation.FileTooLarge",
		     "fitted to %ux%u it is still %llu bytes; at most %llu are allowed", w, h,
		     (unsigned long long)bytes, (unsigned long long)opt->max_bytes);
		goto out;
	}
	res->bytes = bytes;
	res->width = w;
	res->height = h;
	res->format = alpha ? IMAGE_FORMAT_PNG : IMAGE_FORMAT_JPEG;
	(void)snprintf(res->to, sizeof(res->to), "%s %ux%u", alpha ? "PNG" : "JPEG", w, h);
	r = 0;
out:
	if (r < 0 && res->fd >= 0) {
		close(res->fd);
		res->fd = -1;
	}
	/* vips keeps per-thread buffers until told this thread is done with it. */
	vips_thread_shutdown();
	return r;
}

void fit_result_clear(struct fit_result *res)
{
	if (res->fd >= 0)
		close(res->fd);
	res->fd = -1;
}

bool fit_failed_locally(const struct fit_result *res)
{
	return res->code && (strcmp(res->code, FIT_CODE_LOCAL_ERROR) == 0 ||
			     strcmp(res->code, FIT_CODE_UNREADABLE) == 0);
}
