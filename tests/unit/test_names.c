#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "names.h"

static void test_candidates(void **state)
{
	(void)state;
	assert_true(names_is_candidate_file("photo.jpg"));
	assert_true(names_is_candidate_file("PHOTO.JPEG"));
	assert_true(names_is_candidate_file("a.b.Png"));
	assert_true(names_is_candidate_file("scan.tif"));
	assert_true(names_is_candidate_file("scan.TIFF"));
	assert_true(names_is_candidate_file("x.webp"));
	assert_true(names_is_candidate_file("x.bmp"));
	assert_true(names_is_candidate_file("x.gif"));
	assert_false(names_is_candidate_file(".hidden.png"));
	assert_false(names_is_candidate_file("._photo.jpg"));
	assert_false(names_is_candidate_file("~$photo.jpg"));
	assert_false(names_is_candidate_file("photo.jpg.part"));
	assert_false(names_is_candidate_file("photo.png.tmp"));
	assert_false(names_is_candidate_file("photo.jpg.crdownload"));
	assert_false(names_is_candidate_file("photo.jpg.filepart"));
	assert_false(names_is_candidate_file("notes.txt"));
	assert_false(names_is_candidate_file("png"));
	assert_false(names_is_candidate_file(".png"));
	assert_false(names_is_candidate_file("photo.jpgx"));
}

static void test_ignored_dirs(void **state)
{
	(void)state;
	assert_true(names_is_ignored_dir("@eaDir"));
	assert_true(names_is_ignored_dir("#recycle"));
	assert_true(names_is_ignored_dir("#snapshot"));
	assert_true(names_is_ignored_dir(".snapshot"));
	assert_true(names_is_ignored_dir(".AppleDouble"));
	assert_true(names_is_ignored_dir(".Trashes"));
	assert_true(names_is_ignored_dir("lost+found"));
	assert_true(names_is_ignored_dir(".stfolder"));
	assert_true(names_is_ignored_dir("__MACOSX"));
	assert_false(names_is_ignored_dir("2026"));
	assert_false(names_is_ignored_dir("recycle"));
}

static void test_excluded(void **state)
{
	char *globs[] = {"raw", "*.draft.png", "proofs/*.jpg"};

	(void)state;
	assert_true(names_is_excluded("raw/a.png", globs, 3));
	assert_true(names_is_excluded("2026/raw/a.png", globs, 3));
	assert_true(names_is_excluded("x.draft.png", globs, 3));
	assert_true(names_is_excluded("sub/x.draft.png", globs, 3));
	assert_true(names_is_excluded("proofs/a.jpg", globs, 3));
	assert_false(names_is_excluded("proofs/deeper/a.jpg", globs, 3));
	assert_false(names_is_excluded("rawness/a.png", globs, 3));
	assert_false(names_is_excluded("a.png", globs, 3));
	assert_false(names_is_excluded("a.png", globs, 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_candidates),
		cmocka_unit_test(test_ignored_dirs),
		cmocka_unit_test(test_excluded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
