/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "b64.h"

static void check_encode(const char *plain, const char *expected)
{
	char out[64];
	size_t n = b64_encode((const uint8_t *)plain, strlen(plain), out);

	assert_int_equal(n, strlen(expected));
	assert_int_equal(n, B64_ENCODED_LEN(strlen(plain)));
	assert_memory_equal(out, expected, n);
}

static void check_decode(const char *text, const char *expected)
{
	uint8_t out[64];
	size_t n = 0;

	assert_int_equal(b64_decode(text, strlen(text), out, &n), 0);
	assert_int_equal(n, strlen(expected));
	assert_memory_equal(out, expected, n);
}

static void test_rfc4648_vectors(void **state)
{
	(void)state;
	check_encode("", "");
	check_encode("f", "Zg==");
	check_encode("fo", "Zm8=");
	check_encode("foo", "Zm9v");
	check_encode("foob", "Zm9vYg==");
	check_encode("fooba", "Zm9vYmE=");
	check_encode("foobar", "Zm9vYmFy");

	check_decode("", "");
	check_decode("Zg==", "f");
	check_decode("Zm8=", "fo");
	check_decode("Zm9v", "foo");
	check_decode("Zm9vYg==", "foob");
	check_decode("Zm9vYmE=", "fooba");
	check_decode("Zm9vYmFy", "foobar");
}

static void test_decode_without_padding(void **state)
{
	(void)state;
	check_decode("Zg", "f");
	check_decode("Zm8", "fo");
	check_decode("Zm9vYg", "foob");
	check_decode("Zm9vYmE", "fooba");
}

static void test_full_alphabet(void **state)
{
	uint8_t in[48], back[51];
	char out[64];
	size_t n;

	(void)state;
	/* 0x00, 0x10, 0x83, ... covers every sextet value 0..63 in order. */
	for (unsigned i = 0; i < 16; i++) {
		uint32_t v = (4 * i) << 18 | (4 * i + 1) << 12 | (4 * i + 2) << 6 | (4 * i + 3);

		in[3 * i] = (uint8_t)(v >> 16);
		in[3 * i + 1] = (uint8_t)(v >> 8);
		in[3 * i + 2] = (uint8_t)v;
	}
	n = b64_encode(in, sizeof(in), out);
	assert_int_equal(n, 64);
	assert_memory_equal(out, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
			    64);
	assert_int_equal(b64_decode(out, n, back, &n), 0);
	assert_int_equal(n, sizeof(in));
	assert_memory_equal(back, in, sizeof(in));
}

static void test_round_trip_every_length(void **state)
{
	uint8_t in[300], back[300 / 4 * 3 + 300];
	char out[B64_ENCODED_LEN(300)];
	size_t n, m;

	(void)state;
	srand(12345);
	for (size_t len = 0; len <= 300; len++) {
		for (size_t i = 0; i < len; i++)
			in[i] = (uint8_t)rand();
		n = b64_encode(in, len, out);
		assert_int_equal(n, B64_ENCODED_LEN(len));
		assert_int_equal(b64_decode(out, n, back, &m), 0);
		assert_int_equal(m, len);
		if (len)
			assert_memory_equal(back, in, len);
		/* Without the padding too. */
		while (n > 0 && out[n - 1] == '=')
			n--;
		assert_int_equal(b64_decode(out, n, back, &m), 0);
		assert_int_equal(m, len);
		if (len)
			assert_memory_equal(back, in, len);
	}
}

static void test_chunked_equals_whole(void **state)
{
	static const size_t chunks[] = {3, 6, 9, 30, 300, 3000};
	uint8_t in[1000];
	char whole[B64_ENCODED_LEN(1000)], parts[B64_ENCODED_LEN(1000)];
	size_t n_whole, n_parts, off, step;

	(void)state;
	srand(777);
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)rand();
	for (size_t len = 990; len <= 1000; len++) {
		n_whole = b64_encode(in, len, whole);
		for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
			n_parts = 0;
			for (off = 0; off < len; off += step) {
				step = len - off < chunks[c] ? len - off : chunks[c];
				n_parts += b64_encode(in + off, step, parts + n_parts);
			}
			assert_int_equal(n_parts, n_whole);
			assert_memory_equal(parts, whole, n_whole);
		}
	}
}

static void expect_invalid(const char *text)
{
	uint8_t out[64];
	size_t n = 12345;

	assert_int_equal(b64_decode(text, strlen(text), out, &n), -EINVAL);
}

static void test_decode_rejects_garbage(void **state)
{
	(void)state;
	expect_invalid("Z");
	expect_invalid("Zm9vY");
	expect_invalid("Zm9v\n");
	expect_invalid("Zm 9v");
	expect_invalid("Zm9v-_=="); /* base64url is not base64 */
	expect_invalid("Zg=");	    /* padding that does not complete the group */
	expect_invalid("Z===");
	expect_invalid("====");
	expect_invalid("=");
	expect_invalid("Zg==Zg=="); /* padding in the middle */
	expect_invalid("Z=g=");
	expect_invalid("Zm9v\x80\x81\x82\x83");
	expect_invalid("Zm9v\xff===");
}

static void test_decode_embedded_nul(void **state)
{
	uint8_t out[8];
	size_t n;

	(void)state;
	assert_int_equal(b64_decode("Zm\0v", 4, out, &n), -EINVAL);
}

/* Streams text in pieces of `piece` characters; -EINVAL or 0 with the bytes. */
static int stream_decode(const char *text, size_t len, size_t piece, uint8_t *out, size_t *ret_len)
{
	struct b64_stream s = {0};
	size_t o = 0, n;

	for (size_t i = 0; i < len; i += piece) {
		size_t take = len - i < piece ? len - i : piece;
		if (b64_stream_decode(&s, text + i, take, out + o, &n) < 0)
			return -EINVAL;
		assert_true(n <= B64_STREAM_OUT_MAX(take));
		o += n;
	}
	if (b64_stream_finish(&s, out + o, &n) < 0)
		return -EINVAL;
	*ret_len = o + n;
	return 0;
}

/* The streaming decoder agrees with b64_decode on every valid and invalid
 * text, whatever the piece size. */
static void test_stream_equals_whole(void **state)
{
	static const char *const texts[] = {
	    "", "QQ", "QUI", "QUJD", "QQ==", "QUI=", "QUJDRA==", "QUJDREU=", "+/+/", "A/B+",
	    "Q", "QQ=", "QQ=A", "Q===", "QUJD=", "QUJD====", "QQ==QQ==", "QU JD", "QUJ\\n",
	    "QUJD\\/", "QUJDR", "====", "=", "QQ===", "QUJ-", "QU_D", "QUJDQUJDQUJDQUJDQUJD",
	};
	uint8_t whole[64], streamed[64];

	(void)state;
	for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
		size_t len = strlen(texts[t]), wn = 0, sn = 0;
		int wr = b64_decode(texts[t], len, whole, &wn);
		for (size_t piece = 1; piece <= len + 1; piece++) {
			int sr = stream_decode(texts[t], len, piece, streamed, &sn);
			if (sr != wr)
				fail_msg("\"%s\" in pieces of %zu: %d, whole: %d", texts[t], piece, sr, wr);
			if (wr == 0) {
				assert_int_equal(sn, wn);
				assert_memory_equal(streamed, whole, wn);
			}
		}
	}
}

static void test_stream_round_trip(void **state)
{
	uint8_t plain[3000], out[3000 + 8];
	char text[B64_ENCODED_LEN(3000)];

	(void)state;
	for (size_t i = 0; i < sizeof(plain); i++)
		plain[i] = (uint8_t)(i * 131 + (i >> 3));
	for (size_t len = 2990; len <= sizeof(plain); len++) {
		size_t n = b64_encode(plain, len, text), got = 0;
		for (size_t piece = 1; piece <= 9; piece++) {
			assert_int_equal(stream_decode(text, n, piece, out, &got), 0);
			assert_int_equal(got, len);
			assert_memory_equal(out, plain, len);
		}
		assert_int_equal(stream_decode(text, n, 1000, out, &got), 0);
		assert_int_equal(got, len);
	}
}

static void test_hex(void **state)
{
	static const uint8_t in[] = {0x00, 0x0f, 0xa5, 0xff};
	char out[2 * sizeof(in) + 1];

	(void)state;
	b64_hex(in, sizeof(in), out);
	assert_string_equal(out, "000fa5ff");
	b64_hex(in, 0, out);
	assert_string_equal(out, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc4648_vectors),
	    cmocka_unit_test(test_hex),
	    cmocka_unit_test(test_decode_without_padding),
	    cmocka_unit_test(test_full_alphabet),
	    cmocka_unit_test(test_round_trip_every_length),
	    cmocka_unit_test(test_chunked_equals_whole),
	    cmocka_unit_test(test_decode_rejects_garbage),
	    cmocka_unit_test(test_decode_embedded_nul),
	    cmocka_unit_test(test_stream_equals_whole),
	    cmocka_unit_test(test_stream_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
