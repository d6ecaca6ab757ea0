/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "clean.h"

#define FFFD "\xef\xbf\xbd"

static void check_text(const char *in, size_t max, const char *secret, const char *expected)
{
	char *out = clean_text(in, max, secret);

	assert_non_null(out);
	assert_string_equal(out, expected);
	assert_true(clean_utf8_valid(out));
	assert_true(strlen(out) <= (max < 4 ? 4 : max));
	free(out);
}

static void test_utf8_valid_forms(void **state)
{
	(void)state;
	check_text("plain", SIZE_MAX, NULL, "plain");
	check_text("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", SIZE_MAX, NULL,
		   "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
	/* the largest code point, and the ones around the surrogates */
	check_text("\xf4\x8f\xbf\xbf\xed\x9f\xbf\xee\x80\x80", SIZE_MAX, NULL,
		   "\xf4\x8f\xbf\xbf\xed\x9f\xbf\xee\x80\x80");
}

static void test_utf8_invalid_forms(void **state)
{
	(void)state;
	/* overlong: "/" as 2, 3 and 4 bytes, and an overlong NUL */
	check_text("a\xc0\xaf"
		   "b",
		   SIZE_MAX, NULL, "a" FFFD FFFD "b");
	check_text("\xe0\x80\xaf", SIZE_MAX, NULL, FFFD FFFD FFFD);
	check_text("\xf0\x80\x80\xaf", SIZE_MAX, NULL, FFFD FFFD FFFD FFFD);
	check_text("\xc0\x80", SIZE_MAX, NULL, FFFD FFFD);
	/* surrogates D800 and DFFF */
	check_text("\xed\xa0\x80", SIZE_MAX, NULL, FFFD FFFD FFFD);
	check_text("\xed\xbf\xbf", SIZE_MAX, NULL, FFFD FFFD FFFD);
	/* above U+10FFFF, and bytes that never occur */
	check_text("\xf4\x90\x80\x80", SIZE_MAX, NULL, FFFD FFFD FFFD FFFD);
	check_text("\xf5\xff\xfe", SIZE_MAX, NULL, FFFD FFFD FFFD);
	/* truncated sequences, at the end and in the middle */
	check_text("x\xe2\x82", SIZE_MAX, NULL, "x" FFFD FFFD);
	check_text("\xf0\x9f\x98"
		   "y",
		   SIZE_MAX, NULL, FFFD FFFD FFFD "y");
	/* a lone continuation byte */
	check_text("\x80", SIZE_MAX, NULL, FFFD);
	assert_false(clean_utf8_valid("\xed\xa0\x80"));
	assert_true(clean_utf8_valid(""));
}

static void test_nul_ends_text(void **state)
{
	(void)state;
	static const char in[] = "ab\0\xff";

	/* A C string ends at its NUL: what follows is never read or kept. */
	check_text(in, SIZE_MAX, NULL, "ab");
	check_text("", SIZE_MAX, "secret-key", "");
}

static void test_cap_at_character_boundary(void **state)
{
	(void)state;
	check_text("abcdefgh", 8, NULL, "abcdefgh");
	check_text("abcdefghi", 8, NULL, "abcde\xe2\x80\xa6");
	/* "é" (2 bytes) straddling the cut is dropped whole */
	check_text("abcd\xc3\xa9xyz", 8, NULL, "abcd\xe2\x80\xa6");
	/* the replacement of a bad byte counts at its real size (3 bytes) */
	check_text("\xff\xff\xff\xff", 8, NULL, FFFD "\xe2\x80\xa6");
}

static void test_secret_scrubbed(void **state)
{
	(void)state;
	const char *key = "sk-0123456789abcdef";

	check_text("bad key sk-0123456789abcdef!", SIZE_MAX, key, "bad key [redacted]!");
	check_text("sk-0123456789abcdefsk-0123456789abcdef", SIZE_MAX, key, "[redacted][redacted]");
	/* cut by someone else's cap: a tail of at least CLEAN_PARTIAL_MIN bytes */
	check_text("rid-sk-0123456789a", SIZE_MAX, key, "rid-[redacted]");
	check_text("ends sk-0123", SIZE_MAX, key, "ends sk-0123"); /* too short to tell */
	/* scrubbed before the cap: the cut never leaves a part of the key */
	check_text("xxxxxxxxxxsk-0123456789abcdef", 16, key, "xxxxxxxxxx[re\xe2\x80\xa6");
	/* no secret, or an empty one, changes nothing */
	check_text("sk-0123456789abcdef", SIZE_MAX, NULL, "sk-0123456789abcdef");
	check_text("sk-0123456789abcdef", SIZE_MAX, "", "sk-0123456789abcdef");
}

static void test_json_recursive(void **state)
{
	(void)state;
	const char *key = "sk-0123456789abcdef";
	cJSON *root =
	    cJSON_Parse("{\"a\":[\"x sk-0123456789abcdef\",{\"sk-0123456789abcdef\":\"\\u00ff\"}],"
			"\"b\":{\"c\":{\"d\":\"ok\"}},\"n\":1}");
	char *text;

	assert_non_null(root);
	/* a raw invalid byte, as a server could send */
	assert_non_null(cJSON_AddStringToObject(root, "bad", "\xc0\xaf"));
	assert_int_equal(clean_json(root, key), 0);
	text = cJSON_PrintUnformatted(root);
	assert_non_null(text);
	assert_null(strstr(text, key));
	assert_true(clean_utf8_valid(text));
	assert_non_null(strstr(text, "\"x [redacted]\""));
	assert_non_null(strstr(text, "{\"[redacted]\":\"\xc3\xbf\"}"));
	assert_non_null(strstr(text, "\"bad\":\"" FFFD FFFD "\""));
	assert_int_equal(clean_json_depth(root), 3);
	cJSON_free(text);
	cJSON_Delete(root);
	assert_int_equal(clean_json(NULL, key), 0);
}

static void test_int64_checked(void **state)
{
	(void)state;
	int64_t v = 42;

	assert_false(clean_int64(NAN, &v));
	assert_false(clean_int64(INFINITY, &v));
	assert_false(clean_int64(-INFINITY, &v));
	assert_false(clean_int64(1e300, &v));
	assert_false(clean_int64(0x1p63, &v));
	assert_int_equal(v, 42); /* untouched on failure */
	assert_true(clean_int64(-0x1p63, &v));
	assert_true(v == INT64_MIN);
	assert_true(clean_int64(1732460214.9, &v));
	assert_int_equal(v, 1732460214);
	assert_true(clean_int64(-1.5, &v));
	assert_int_equal(v, -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_utf8_valid_forms),
	    cmocka_unit_test(test_utf8_invalid_forms),
	    cmocka_unit_test(test_nul_ends_text),
	    cmocka_unit_test(test_cap_at_character_boundary),
	    cmocka_unit_test(test_secret_scrubbed),
	    cmocka_unit_test(test_json_recursive),
	    cmocka_unit_test(test_int64_checked),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
