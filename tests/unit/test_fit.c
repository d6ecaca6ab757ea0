/* fit: images made here with libvips go through fit_run and come out
 * within the limits, upright, sRGB 8-bit, as JPEG (PNG with alpha). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <vips/vips.h>

#include "fit.h"

static char dir[] = "/tmp/test_fit.XXXXXX";

static int setup(void **state)
{
	(void)state;
	assert_non_null(mkdtemp(dir));
	return fit_global_init();
}

static int teardown(void **state)
{
	char cmd[64];

	(void)state;
	fit_global_shutdown();
	(void)snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* A w x h RGB image, black with a white top-left corner block. */
static VipsImage *marked(int w, int h, int bands)
{
	VipsImage *black, *out;
	double white[4] = {255, 255, 255, 255};

	assert_int_equal(vips_black(&black, w, h, "bands", bands, NULL), 0);
	assert_int_equal(vips_cast(black, &out, VIPS_FORMAT_UCHAR, NULL), 0);
	g_object_unref(black);
	/* draw_rect paints in place on a memory copy. */
	{
		VipsImage *mem = vips_image_copy_memory(out);
		g_object_unref(out);
		assert_non_null(mem);
		assert_int_equal(vips_draw_rect(mem, white, bands, 0, 0, w / 4, h / 4, "fill",
						TRUE, NULL),
				 0);
		out = mem;
	}
	return out;
}

static int save(VipsImage *im, const char *name)
{
	char path[256];
	int fd;

	(void)snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(vips_image_write_to_file(im, path, NULL), 0);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

static VipsImage *load_result(const struct fit_result *res)
{
	VipsSource *src = vips_source_new_from_descriptor(res->fd);
	VipsImage *im;

	assert_non_null(src);
	im = vips_image_new_from_source(src, "", NULL);
	g_object_unref(src);
	assert_non_null(im);
	return im;
}

static struct fit_options options(const char *format, unsigned reasons)
{
	return (struct fit_options){.max_pixels = IMAGE_MAX_PIXELS,
				    .max_bytes = 10 * 1024 * 1024,
				    .quality = 92,
				    .reasons = reasons,
				    .tmp_dir = dir,
				    .format = format};
}

static void test_wanted(void **state)
{
	struct image_info info = {.format = IMAGE_FORMAT_JPEG, .width = 4000, .height = 3000};

	(void)state;
	assert_int_equal(fit_wanted(&info, 1000, 2000, FIT_AUTO), 0);
	assert_int_equal(fit_wanted(&info, 1000, 2000, FIT_ALWAYS), FIT_REASON_ALWAYS);
	assert_int_equal(fit_wanted(&info, 3000, 2000, FIT_AUTO), FIT_REASON_BYTES);
	assert_int_equal(fit_wanted(&info, 3000, 2000, FIT_NEVER), 0);
	info.orientation = 6;
	assert_int_equal(fit_wanted(&info, 1000, 2000, FIT_AUTO), FIT_REASON_ORIENTATION);
	assert_int_equal(fit_wanted(&info, 1000, 2000, FIT_ALWAYS), FIT_REASON_ORIENTATION);
	info.orientation = 1;
	info.width = 8000;
	info.height = 6000;
	info.cmyk = true;
	assert_int_equal(fit_wanted(&info, 1000, 2000, FIT_AUTO),
			 FIT_REASON_PIXELS | FIT_REASON_CMYK);
	info = (struct image_info){.format = IMAGE_FORMAT_HEIF};
	assert_int_equal(fit_wanted(&info, 1000, 2000, FIT_AUTO), FIT_REASON_FORMAT);
	info = (struct image_info){.format = IMAGE_FORMAT_PNG, .width = 20, .height = 20, .bits = 16};
	assert_int_equal(fit_wanted(&info, 1000, 2000, FIT_AUTO), FIT_REASON_DEPTH);
	assert_string_equal(fit_reason_name(FIT_REASON_ORIENTATION), "orientation");
	assert_null(fit_reason_name(3));
}

static void test_too_many_pixels(void **state)
{
	VipsImage *im = marked(6200, 6000, 3), *out;
	struct fit_options opt = options("jpeg", FIT_REASON_PIXELS);
	struct fit_result res;
	int fd = save(im, "big.jpg");

	(void)state;
	g_object_unref(im);
	assert_int_equal(fit_run(fd, &opt, &res), 0);
	assert_int_equal(res.format, IMAGE_FORMAT_JPEG);
	assert_true((uint64_t)res.width * res.height <= IMAGE_MAX_PIXELS);
	assert_true(res.width >= 6000 && res.height >= 5800);
	assert_string_equal(res.from, "JPEG 6200x6000");
	assert_int_equal(strlen(res.sha256), 64);
	out = load_result(&res);
	assert_int_equal(vips_image_get_width(out), (int)res.width);
	g_object_unref(out);
	fit_result_clear(&res);
	close(fd);
}

static void test_orientation_applied(void **state)
{
	VipsImage *im = marked(400, 200, 3), *out;
	struct fit_options opt = options("jpeg", FIT_REASON_ORIENTATION);
	struct fit_result res;
	double *px;
	int n, fd;

	(void)state;
	vips_image_set_int(im, VIPS_META_ORIENTATION, 6); /* shown turned 90 degrees clockwise */
	fd = save(im, "rot.jpg");
	g_object_unref(im);
	assert_int_equal(fit_run(fd, &opt, &res), 0);
	assert_int_equal(res.width, 200);
	assert_int_equal(res.height, 400);
	assert_string_equal(res.from, "JPEG 400x200 orientation 6");
	assert_true(res.reasons & FIT_REASON_ORIENTATION);
	out = load_result(&res);
	assert_int_equal(vips_image_get_orientation(out), 1);
	/* Orientation 6: the stored top-left corner is shown top-right. */
	assert_int_equal(vips_getpoint(out, &px, &n, 190, 10, NULL), 0);
	assert_true(px[0] > 200);
	g_free(px);
	assert_int_equal(vips_getpoint(out, &px, &n, 10, 10, NULL), 0);
	assert_true(px[0] < 50);
	g_free(px);
	g_object_unref(out);
	fit_result_clear(&res);
	close(fd);
}

static void test_deep_alpha_png(void **state)
{
	VipsImage *im = marked(64, 48, 4), *deep, *out;
	struct fit_options opt = options("png", FIT_REASON_DEPTH);
	struct fit_result res;
	int fd;

	(void)state;
	assert_int_equal(vips_cast(im, &deep, VIPS_FORMAT_USHORT, NULL), 0);
	deep->Type = VIPS_INTERPRETATION_RGB16;
	fd = save(deep, "deep.png");
	g_object_unref(deep);
	g_object_unref(im);
	assert_int_equal(fit_run(fd, &opt, &res), 0);
	assert_int_equal(res.format, IMAGE_FORMAT_PNG); /* alpha kept */
	assert_string_equal(res.to, "PNG 64x48");
	assert_true(strstr(res.from, "16-bit") != NULL);
	out = load_result(&res);
	assert_int_equal(vips_image_get_format(out), VIPS_FORMAT_UCHAR);
	assert_int_equal(vips_image_get_bands(out), 4);
	g_object_unref(out);
	fit_result_clear(&res);
	close(fd);
}

static void test_bytes_budget(void **state)
{
	VipsImage *noise, *u8;
	struct fit_options opt = options("png", FIT_REASON_BYTES);
	struct fit_result res;
	int fd;

	(void)state;
	/* Noise does not compress: a 1000x1000 JPEG of it is far over 100 kB. */
	assert_int_equal(vips_gaussnoise(&noise, 1000, 1000, "sigma", 60.0, NULL), 0);
	assert_int_equal(vips_cast(noise, &u8, VIPS_FORMAT_UCHAR, NULL), 0);
	fd = save(u8, "noise.png");
	g_object_unref(u8);
	g_object_unref(noise);
	opt.max_bytes = 100 * 1024;
	assert_int_equal(fit_run(fd, &opt, &res), 0);
	assert_true(res.bytes <= opt.max_bytes);
	assert_true(res.width < 1000);
	assert_true(res.reasons & FIT_REASON_BYTES);
	fit_result_clear(&res);
	close(fd);
}

static void test_not_an_image(void **state)
{
	char path[256];
	struct fit_options opt = options("heif", FIT_REASON_FORMAT);
	struct fit_result res;
	int fd;

	(void)state;
	(void)snprintf(path, sizeof(path), "%s/junk.heic", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "\0\0\0\x18" "ftypheic\0\0\0\0mif1heic garbage", 32), 32);
	assert_true(fit_run(fd, &opt, &res) < 0);
	assert_int_equal(res.fd, -1);
	assert_string_equal(res.code, "LocalValidation.Corrupt");
	assert_true(strlen(res.message) > 0);
	close(fd);
}

/* What failed here is told from what failed on the image: an unreadable
 * source (here a descriptor open for writing only) is local, a corrupt one
 * is not. */
static void test_failed_locally(void **state)
{
	char path[256];
	struct fit_options opt = options("heif", FIT_REASON_FORMAT);
	struct fit_result res, made = {.code = "LocalError"};
	int fd;

	(void)state;
	(void)snprintf(path, sizeof(path), "%s/junk.heic", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd,
			       "\0\0\0\x18"
			       "ftypheic\0\0\0\0mif1heic garbage",
			       32),
			 32);
	assert_true(fit_run(fd, &opt, &res) < 0);
	assert_false(fit_failed_locally(&res)); /* corrupt: the image's */
	close(fd);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_true(fit_run(fd, &opt, &res) < 0);
	assert_string_equal(res.code, "LocalValidation.Unreadable");
	assert_true(fit_failed_locally(&res));
	close(fd);
	assert_true(fit_failed_locally(&made)); /* no temporary file */
	made.code = NULL;
	assert_false(fit_failed_locally(&made));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_wanted),
	    cmocka_unit_test(test_too_many_pixels),
	    cmocka_unit_test(test_orientation_applied),
	    cmocka_unit_test(test_deep_alpha_png),
	    cmocka_unit_test(test_bytes_budget),
	    cmocka_unit_test(test_not_an_image),
	    cmocka_unit_test(test_failed_locally),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
