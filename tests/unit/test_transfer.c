#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "api.h"
#include "b64.h"
#include "transfer.h"
#include "url.h"

static const struct transfer_net net = {.timeout_ms = 1000, .user_agent = "test"};

static int temp_file(const uint8_t *data, size_t len)
{
	char path[] = "/tmp/test_transfer.XXXXXX";
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	(void)unlink(path);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	return fd;
}

static void sha256_hex(const uint8_t *data, size_t len, char hex[65])
{
	unsigned char md[32];
	unsigned int n = 0;

	assert_int_equal(EVP_Digest(data, len, md, &n, EVP_sha256(), NULL), 1);
	for (unsigned int i = 0; i < n; i++)
		(void)snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/* Pulls the whole body in pieces of the given sizes (cycled). */
static char *pull(struct transfer_gen *g, const size_t *rooms, size_t n_rooms, size_t *ret_len)
{
	size_t cap = 1 << 20, len = 0, i = 0;
	char *body = malloc(cap);

	assert_non_null(body);
	for (;;) {
		size_t room = rooms[i++ % n_rooms], got;
		assert_true(len + room <= cap);
		got = transfer_gen_fill(g, body + len, room);
		assert_true(got != CURL_READFUNC_ABORT);
		assert_true(got <= room);
		if (got == 0)
			break;
		len += got;
	}
	*ret_len = len;
	return body;
}

static void check_body(size_t file_len, const size_t *rooms, size_t n_rooms)
{
	uint8_t *data = malloc(file_len + 1);
	char *want, *body, hex[65];
	struct transfer_gen g = {.fd = -1};
	size_t want_len, len;

	for (size_t i = 0; i < file_len; i++)
		data[i] = (uint8_t)(i * 2654435761u >> 11);
	assert_int_equal(transfer_gen_setup(&g, "http://127.0.0.1:9/x", "Authorization: Bearer k",
					    strdup("{\"image\":\"data:image/png;base64,"),
					    strdup("\",\"size\":\"2K\"}"), temp_file(data, file_len),
					    file_len, &net),
			 0);
	want_len = 32 + B64_ENCODED_LEN(file_len) + 14;
	want = malloc(want_len + 1);
	memcpy(want, "{\"image\":\"data:image/png;base64,", 32);
	assert_int_equal(b64_encode(data, file_len, want + 32), B64_ENCODED_LEN(file_len));
	memcpy(want + 32 + B64_ENCODED_LEN(file_len), "\",\"size\":\"2K\"}", 14);

	body = pull(&g, rooms, n_rooms, &len);
	assert_int_equal(len, want_len);
	assert_memory_equal(body, want, want_len);
	sha256_hex(data, file_len, hex);
	assert_string_equal(g.sha256_hex, hex);
	transfer_gen_clear(&g);
	free(body);
	free(want);
	free(data);
}

static void test_body_large_pieces(void **state)
{
	static const size_t rooms[] = {65536};

	(void)state;
	for (size_t n = 0; n < 10; n++)
		check_body(n, rooms, 1);
	check_body(200000, rooms, 1);
}

/* curl may offer fewer bytes than one base64 group: nothing may be lost. */
static void test_body_tiny_pieces(void **state)
{
	static const size_t rooms[] = {1, 2, 3, 5, 7, 4, 1000, 1, 64};

	(void)state;
	for (size_t n = 0; n < 40; n++)
		check_body(n, rooms, sizeof(rooms) / sizeof(rooms[0]));
	check_body(100001, rooms, sizeof(rooms) / sizeof(rooms[0]));
}

static void test_body_file_shrank(void **state)
{
	static const uint8_t data[4096];
	struct transfer_gen g = {.fd = -1};
	char buf[65536];
	int fd = temp_file(data, sizeof(data));

	(void)state;
	assert_int_equal(transfer_gen_setup(&g, "http://127.0.0.1:9/x", "A: b", strdup("["),
					    strdup("]"), fd, sizeof(data) * 2, &net),
			 0);
	assert_int_equal(transfer_gen_fill(&g, buf, sizeof(buf)), 1);
	assert_int_equal(transfer_gen_fill(&g, buf, sizeof(buf)), CURL_READFUNC_ABORT);
	assert_true(g.file_changed);
	transfer_gen_clear(&g);
}

static void test_url_allowed(void **state)
{
	struct transfer_net insecure = net, local = net;

	(void)state;
	local.allow_private = true;
	assert_true(transfer_url_allowed("https://ark.example/v3", &net));
	assert_true(transfer_url_allowed("http://127.0.0.1:8080/v1", &local));
	assert_true(transfer_url_allowed("http://localhost/v1", &local));
	assert_true(transfer_url_allowed("http://[::1]:80/v1", &local));
	/* Loopback is this machine: not a result URL unless allowed. */
	assert_false(transfer_url_allowed("http://127.0.0.1:8080/v1", &net));
	assert_false(transfer_url_allowed("https://127.0.0.1/x", &net));
	assert_false(transfer_url_allowed("https://10.1.2.3/x", &net));
	assert_false(transfer_url_allowed("https://[fd00::1]/x", &net));
	assert_true(transfer_url_allowed("https://10.1.2.3/x", &local));
	assert_false(transfer_url_allowed("http://example.com/v1", &net));
	assert_false(transfer_url_allowed("http://localhost.evil.example/v1", &net));
	assert_false(transfer_url_allowed("http://127.attacker.example/v1", &local));
	assert_false(transfer_url_allowed("http://127.0.0.1@203.0.113.5/v1", &local));
	assert_false(transfer_url_allowed("http://[::1]@203.0.113.5/v1", &local));
	assert_false(transfer_url_allowed("ftp://example.com/x", &net));
	assert_false(transfer_url_allowed("file:///etc/passwd", &net));
	assert_false(transfer_url_allowed("https://", &net));
	insecure.allow_insecure_http = true;
	assert_true(transfer_url_allowed("http://example.com/v1", &insecure));
	assert_false(transfer_url_allowed("http://10.1.2.3/v1", &insecure));
	assert_false(transfer_url_allowed("file:///etc/passwd", &insecure));
}

/* The host as curl parses and will connect to it. */
static void test_url_classes(void **state)
{
	static const struct {
		const char *url;
		enum url_class host;
	} cases[] = {
	    {"http://127.0.0.1/", URL_LOOPBACK},
	    {"http://127.255.1.2:8/", URL_LOOPBACK},
	    {"http://2130706433/", URL_LOOPBACK},      /* decimal */
	    {"http://0x7f.1/", URL_LOOPBACK},          /* hex, short form */
	    {"http://0177.0.0.1/", URL_LOOPBACK},      /* octal */
	    {"http://127.1/", URL_LOOPBACK},
	    {"http://%31%32%37.0.0.1/", URL_LOOPBACK}, /* escaped */
	    {"http://localhost/", URL_LOOPBACK},
	    {"HTTP://LOCALHOST./", URL_LOOPBACK},
	    {"http://[::1]:80/", URL_LOOPBACK},
	    {"http://[0:0:0:0:0:0:0:1]/", URL_LOOPBACK},
	    {"http://[::ffff:127.0.0.1]/", URL_LOOPBACK},
	    {"http://[::FFFF:7f00:1]/", URL_LOOPBACK},
	    {"http://127.attacker.example/", URL_PUBLIC},
	    {"http://localhost.evil.example/", URL_PUBLIC},
	    {"http://127.0.0.1@203.0.113.5/", URL_PUBLIC}, /* userinfo, then the host */
	    {"http://127.0.0.1:x@example.com/", URL_PUBLIC},
	    {"http://203.0.113.5/", URL_PUBLIC},
	    {"http://[2001:db8::1]/", URL_PUBLIC},
	    {"http://10.1.2.3/", URL_PRIVATE},
	    {"http://167838211/", URL_PRIVATE}, /* 10.1.2.3 */
	    {"http://172.16.0.1/", URL_PRIVATE},
	    {"http://172.31.255.255/", URL_PRIVATE},
	    {"http://172.32.0.1/", URL_PUBLIC},
	    {"http://172.15.0.1/", URL_PUBLIC},
	    {"http://192.168.1.1/", URL_PRIVATE},
	    {"http://169.254.169.254/", URL_PRIVATE},
	    {"http://0/", URL_PRIVATE}, /* 0.0.0.0 reaches this machine */
	    {"http://0.1.2.3/", URL_PRIVATE},
	    {"http://[::]/", URL_PRIVATE},
	    {"http://[fe80::1%25eth0]/", URL_PRIVATE},
	    {"http://[febf::1]/", URL_PRIVATE},
	    {"http://[fec0::1]/", URL_PUBLIC},
	    {"http://[fc00::1]/", URL_PRIVATE},
	    {"http://[fdff::1]/", URL_PRIVATE},
	    {"http://[::ffff:10.1.2.3]/", URL_PRIVATE},
	    {"http://[::ffff:192.168.0.1]/", URL_PRIVATE},
	    {"http://[::ffff:8.8.8.8]/", URL_PUBLIC},
	};
	struct url_info info;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (url_inspect(cases[i].url, &info) != 0)
			fail_msg("%s: not parsed", cases[i].url);
		if (info.host != cases[i].host)
			fail_msg("%s: class %d, expected %d", cases[i].url, info.host,
				 cases[i].host);
	}
	assert_int_equal(url_inspect("ftp://example.com/", &info), -EINVAL);
	assert_int_equal(url_inspect("example.com/v1", &info), -EINVAL);
	assert_int_equal(url_inspect("http://a b/", &info), -EINVAL);
	assert_int_equal(url_inspect("https://x/", &info), 0);
	assert_true(info.https);
	assert_int_equal(url_inspect("hTTp://x/", &info), 0);
	assert_false(info.https);
	assert_int_equal(url_ip_class("::1"), URL_LOOPBACK);
	assert_int_equal(url_ip_class("fe80::1%eth0"), URL_PRIVATE);
	assert_int_equal(url_ip_class("203.0.113.5"), URL_PUBLIC);
	assert_int_equal(url_ip_class("10.255.0.1"), URL_PRIVATE);
}

/* ---- the answer scanner: transfer_gen_take() ---- */

struct scanned {
	char *body;      /* what was kept */
	uint8_t *image;  /* what was decoded into the file */
	size_t image_len;
	bool ok, found, malformed;
};

static void scanned_free(struct scanned *s)
{
	free(s->body);
	free(s->image);
}

/* Feeds answer in pieces of `piece` bytes, with a file to take the image
 * into when with_file. */
static struct scanned scan(const char *answer, size_t len, size_t piece, bool with_file)
{
	struct transfer_gen g;
	struct scanned s = {0};
	off_t size;

	memset(&g, 0, sizeof(g));
	g.fd = -1;
	g.img.fd = with_file ? temp_file((const uint8_t *)"", 0) : -1;
	s.ok = true;
	for (size_t i = 0; i < len && s.ok; i += piece) {
		size_t n = len - i < piece ? len - i : piece;
		s.ok = transfer_gen_take(&g, answer + i, n) == n;
	}
	s.found = g.img.found;
	s.malformed = g.img.malformed;
	s.body = strndup(g.body ? g.body : "", g.body_len);
	assert_non_null(s.body);
	if (with_file) {
		size = lseek(g.img.fd, 0, SEEK_END);
		assert_true(size >= 0);
		assert_int_equal((uint64_t)size, g.img.written);
		s.image = malloc((size_t)size + 1);
		assert_non_null(s.image);
		assert_int_equal(pread(g.img.fd, s.image, (size_t)size, 0), size);
		s.image_len = (size_t)size;
	}
	transfer_gen_clear(&g);
	return s;
}

/* Every piece size from 1 to the whole gives the same. */
static void expect_scan(const char *answer, bool with_file, const char *body, const void *image,
			size_t image_len, bool malformed)
{
	size_t len = strlen(answer);

	for (size_t piece = 1; piece <= len; piece++) {
		struct scanned s = scan(answer, len, piece, with_file);
		assert_true(s.ok);
		if (strcmp(s.body, body) != 0)
			fail_msg("pieces of %zu: kept\n%s\nnot\n%s", piece, s.body, body);
		assert_int_equal(s.found, image != NULL);
		assert_int_equal(s.malformed, malformed);
		if (image && !malformed) {
			assert_int_equal(s.image_len, image_len);
			assert_memory_equal(s.image, image, image_len);
		}
		if (!image && with_file)
			assert_int_equal(s.image_len, 0);
		scanned_free(&s);
	}
}

static void test_scan_takes_first_image(void **state)
{
	/* Bytes whose base64 has '+' and '/'; the slashes escaped as some
	 * encoders do. */
	static const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n',
					     0x00, 0xfb, 0xef, 0xbe, 0xff, 0xff, 0xff, 0xfe};
	char b64[64], escaped[128], answer[512], body[512];
	size_t n = b64_encode(png, sizeof(png), b64), e = 0;
	struct api_result res;

	(void)state;
	b64[n] = '\0';
	assert_non_null(strchr(b64, '/'));
	assert_non_null(strchr(b64, '+'));
	for (size_t i = 0; i < n; i++) {
		if (b64[i] == '/')
			escaped[e++] = '\\';
		escaped[e++] = b64[i];
	}
	escaped[e] = '\0';
	for (int esc = 0; esc < 2; esc++) {
		(void)snprintf(answer, sizeof(answer),
			       "{\"model\":\"m\",\"note\":\"\\\"data\\\":[{\\\"b64_json\\\":\\\"QUJD\\\"}]\","
			       " \"created\" : 17, \"data\" : [ { \"size\":\"2x2\", \"b64_json\" : \"%s\" },"
			       "{\"b64_json\":\"REVG\"}], \"usage\":{\"generated_images\":1}}",
			       esc ? escaped : b64);
		(void)snprintf(body, sizeof(body),
			       "{\"model\":\"m\",\"note\":\"\\\"data\\\":[{\\\"b64_json\\\":\\\"QUJD\\\"}]\","
			       " \"created\" : 17, \"data\" : [ { \"size\":\"2x2\", \"b64_json\" : \"\" },"
			       "{\"b64_json\":\"REVG\"}], \"usage\":{\"generated_images\":1}}");
		expect_scan(answer, true, body, png, sizeof(png), false);
	}
	/* What is kept still parses, with the image standing in as streamed. */
	assert_int_equal(api_parse_streamed(200, body, strlen(body), true, NULL, &res), 0);
	assert_int_equal(res.outcome, API_OUTCOME_OK);
	assert_true(res.b64_streamed);
	assert_null(res.b64_json);
	assert_string_equal(res.model, "m");
	assert_int_equal(res.created, 17);
	assert_int_equal(res.generated_images, 1);
	api_result_clear(&res);
	/* Without the scanner's word, an empty b64_json is no image. */
	assert_int_equal(api_parse_response(200, body, strlen(body), NULL, &res), 0);
	assert_int_equal(res.outcome, API_OUTCOME_RETRY);
	api_result_clear(&res);
}

static void test_scan_leaves_other_images(void **state)
{
	static const char *const untouched[] = {
	    /* in an error object, at the top or in the item */
	    "{\"error\":{\"code\":\"X\",\"message\":\"m\",\"b64_json\":\"QUJD\"}}",
	    "{\"data\":[{\"error\":{\"code\":\"X\",\"b64_json\":\"QUJD\"}}]}",
	    /* the second data item only */
	    "{\"data\":[{\"url\":\"https://x.example/a\"},{\"b64_json\":\"QUJD\"}]}",
	    /* deeper, or not under data */
	    "{\"data\":[{\"x\":{\"b64_json\":\"QUJD\"}}]}",
	    "{\"data\":[[{\"b64_json\":\"QUJD\"}]]}",
	    "{\"meta\":{\"data\":[{\"b64_json\":\"QUJD\"}]}}",
	    "{\"b64_json\":\"QUJD\",\"data\":[]}",
	    "[{\"data\":[{\"b64_json\":\"QUJD\"}]}]",
	    /* the second "data" member (cJSON reads the first) */
	    "{\"data\":{},\"data\":[{\"b64_json\":\"QUJD\"}]}",
	    /* a key that only decodes to b64_json, a value that is no string */
	    "{\"data\":[{\"b64\\u005fjson\":\"QUJD\"}]}",
	    "{\"data\":[{\"b64_json\":null,\"url\":\"b64_json\"}]}",
	    "{\"data\":[{\"b64_json_x\":\"QUJD\",\"xb64_json\":\"QUJD\"}]}",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(untouched) / sizeof(untouched[0]); i++) {
		expect_scan(untouched[i], true, untouched[i], NULL, 0, false);
		expect_scan(untouched[i], false, untouched[i], NULL, 0, false);
	}
	/* No file to take it into (response_format url): kept whole. */
	expect_scan("{\"data\":[{\"b64_json\":\"QUJD\"}]}", false, "{\"data\":[{\"b64_json\":\"QUJD\"}]}",
		    NULL, 0, false);
	/* Only the first of two b64_json members. */
	expect_scan("{\"data\":[{\"b64_json\":\"QUJD\",\"b64_json\":\"REVG\"}]}", true,
		    "{\"data\":[{\"b64_json\":\"\",\"b64_json\":\"REVG\"}]}", "ABC", 3, false);
}

static void test_scan_malformed(void **state)
{
	static const char *const bad[] = {
	    "QU JD", "QUJ\\nD", "QUJD\\u0041", "QUJD\\\"", "QQ=", "Q", "QQ==QQ==", "QU\tJD", "QUJD=",
	    "QUJ\\\\D", "Q\xc3\xa9JD",
	};
	char answer[128], body[128];

	(void)state;
	(void)snprintf(body, sizeof(body), "{\"data\":[{\"b64_json\":\"\"}],\"created\":1}");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		(void)snprintf(answer, sizeof(answer), "{\"data\":[{\"b64_json\":\"%s\"}],\"created\":1}",
			       bad[i]);
		expect_scan(answer, true, body, "", 0, true);
	}
	/* The empty string is taken (and is no image, which the caller judges). */
	expect_scan(body, true, body, "", 0, false);
}

static void test_scan_json_cap(void **state)
{
	size_t len = TRANSFER_JSON_MAX + 64;
	char *answer = malloc(len + 1);
	struct scanned s;

	(void)state;
	assert_non_null(answer);
	/* Megabytes of text around the image are refused... */
	memset(answer, 'a', len);
	memcpy(answer, "{\"x\":\"", 6);
	answer[len] = '\0';
	s = scan(answer, len, 65536, true);
	assert_false(s.ok);
	scanned_free(&s);
	/* ...the same inside data[0].b64_json is the image, not kept. */
	memset(answer, 'Q', len);
	(void)snprintf(answer, len, "{\"data\":[{\"b64_json\":\"");
	answer[strlen(answer)] = 'Q';
	memcpy(answer + len - 4, "\"}]}", 4);
	s = scan(answer, len, 65536, true);
	assert_true(s.ok);
	assert_true(s.found);
	assert_string_equal(s.body, "{\"data\":[{\"b64_json\":\"\"}]}");
	scanned_free(&s);
	free(answer);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_body_large_pieces),
		cmocka_unit_test(test_body_tiny_pieces),
		cmocka_unit_test(test_body_file_shrank),
		cmocka_unit_test(test_url_allowed),
		cmocka_unit_test(test_url_classes),
		cmocka_unit_test(test_scan_takes_first_image),
		cmocka_unit_test(test_scan_leaves_other_images),
		cmocka_unit_test(test_scan_malformed),
		cmocka_unit_test(test_scan_json_cap),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
