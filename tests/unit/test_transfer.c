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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_body_large_pieces),
		cmocka_unit_test(test_body_tiny_pieces),
		cmocka_unit_test(test_body_file_shrank),
		cmocka_unit_test(test_url_allowed),
		cmocka_unit_test(test_url_classes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
