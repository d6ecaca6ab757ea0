#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "stem.h"

static void test_one_output_each(void **state)
{
	(void)state;
	/* cat.png and cat.jpg both wanting cat.jpeg / cat.json */
	assert_true(stem_outputs_meet("cat", 1, "cat", 1));
	assert_true(stem_outputs_meet("cat", 0, "cat", 1));
	/* cat.jpeg and cat-1.jpeg: different bases */
	assert_false(stem_outputs_meet("cat", 1, "cat-1", 1));
	assert_false(stem_outputs_meet("cat-2", 1, "cat", 1));
	assert_false(stem_outputs_meet("cat", 1, "Cat", 1));
}

static void test_numbered_outputs(void **state)
{
	(void)state;
	/* cat with max_images 3 writes cat-1 .. cat-3: cat-1.png's names meet
	 * them, in either order of the arguments */
	assert_true(stem_outputs_meet("cat", 3, "cat-1", 1));
	assert_true(stem_outputs_meet("cat-1", 1, "cat", 3));
	assert_true(stem_outputs_meet("cat-3", 3, "cat", 3));
	assert_true(stem_outputs_meet("cat", 15, "cat-15", 1));
	/* its sidecar cat-1.json would claim cat's image cat-1.jpeg */
	assert_true(stem_outputs_meet("cat", 3, "cat-1", 3));
	/* beyond what it writes, or not a number it writes */
	assert_false(stem_outputs_meet("cat", 3, "cat-4", 1));
	assert_false(stem_outputs_meet("cat", 3, "cat-0", 1));
	assert_false(stem_outputs_meet("cat", 3, "cat-01", 1));
	assert_false(stem_outputs_meet("cat", 3, "cat-1x", 1));
	assert_false(stem_outputs_meet("cat", 3, "cat-", 1));
	assert_false(stem_outputs_meet("cat", 12, "cat-99999999999999999999", 1));
	assert_false(stem_outputs_meet("cat", 3, "cat-1-1", 3));
	assert_true(stem_outputs_meet("cat", 3, "cat-2", 2));
	/* one output writes no numbered names */
	assert_false(stem_outputs_meet("cat", 1, "cat-1", 3));
	/* different stems' numbered names never meet */
	assert_false(stem_outputs_meet("cat-1", 3, "cat-2", 3));
	assert_false(stem_outputs_meet("ca", 3, "cat", 3));
	assert_false(stem_outputs_meet("cat", 3, "ca-1", 1));
}

static void test_error_record(void **state)
{
	(void)state;
	/* cat.error.png's sidecar cat.error.json is a failing cat's error record */
	assert_true(stem_outputs_meet("cat.error", 1, "cat", 1));
	assert_true(stem_outputs_meet("cat", 3, "cat.error", 0));
	assert_true(stem_outputs_meet("cat", 0, "cat.error", 3));
	/* near names that are no one's error record */
	assert_false(stem_outputs_meet("cat.errors", 1, "cat", 1));
	assert_false(stem_outputs_meet("cat.err", 1, "cat", 1));
	assert_false(stem_outputs_meet("cat.error.error", 1, "cat", 1));
	assert_false(stem_outputs_meet("ca.error", 1, "cat", 1));
	assert_false(stem_outputs_meet("cat", 1, "cat.Error", 1));
}

static void test_zero_outputs(void **state)
{
	(void)state;
	/* 0 outputs counts as 1 for its own side only: the other still writes
	 * its numbered bases */
	assert_true(stem_outputs_meet("cat", 3, "cat-1", 0));
	assert_true(stem_outputs_meet("cat-1", 0, "cat", 3));
	assert_false(stem_outputs_meet("cat", 0, "cat-1", 0));
	assert_true(stem_outputs_meet("cat", 0, "cat", 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_one_output_each),
	    cmocka_unit_test(test_numbered_outputs),
	    cmocka_unit_test(test_error_record),
	    cmocka_unit_test(test_zero_outputs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
