#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "api.h"
#include "b64.h"
#include "digest.h"
#include "loop.h"
#include "stream.h"
#include "transfer.h"
#include "url.h"
#include "work.h"

static const struct transfer_net net = {.timeout_ms = 1000, .user_agent = "test"};
static struct loop *loop;
static struct work_pool *pool;

static int setup(void **state)
{
	(void)state;
	if (loop_new(&loop) < 0 || work_pool_new(loop, 2, &pool) < 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	work_pool_free(pool);
	loop_free(loop);
	return 0;
}

/* Runs the loop until the transfer no longer waits for a worker (bit). */
static void wait_unpaused(const int *paused, int bit)
{
	for (int i = 0; i < 1000 && (*paused & bit); i++)
		assert_true(loop_run_once(loop, 1000) >= 0);
	assert_false(*paused & bit);
}

static void drain_pool(void)
{
	for (int i = 0; i < 1000 && work_pending(pool) > 0; i++)
		assert_true(loop_run_once(loop, 1000) >= 0);
	assert_int_equal(work_pending(pool), 0);
}

struct ended {
	bool done;
	CURLcode result;
};

static void on_end(CURL *easy, CURLcode result, void *userdata)
{
	struct ended *e = userdata;

	(void)easy;
	e->done = true;
	e->result = result;
}

static void wait_ended(struct ended *e)
{
	for (int i = 0; i < 1000 && !e->done; i++)
		assert_true(loop_run_once(loop, 1000) >= 0);
	assert_true(e->done);
}

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

/* Pulls the body in pieces of the given sizes (cycled), at most limit
 * bytes, waiting for the worker whenever it pauses; counts the pauses. */
static char *pull_some(struct transfer_gen *g, const size_t *rooms, size_t n_rooms, size_t limit,
		       size_t *ret_len, unsigned *ret_pauses)
{
	size_t cap = 4 << 20, len = 0, i = 0;
	char *body = malloc(cap);

	assert_non_null(body);
	while (len < limit) {
		size_t room = rooms[i++ % n_rooms], got;
		assert_true(len + room <= cap);
		got = transfer_gen_fill(g, body + len, room);
		assert_true(got != CURL_READFUNC_ABORT);
		if (got == CURL_READFUNC_PAUSE) {
			assert_true(g->paused & CURLPAUSE_SEND);
			(*ret_pauses)++;
			wait_unpaused(&g->paused, CURLPAUSE_SEND);
			continue;
		}
		assert_true(got <= room);
		if (got == 0)
			break;
		len += got;
	}
	*ret_len = len;
	return body;
}

static char *pull(struct transfer_gen *g, const size_t *rooms, size_t n_rooms, size_t *ret_len)
{
	unsigned pauses = 0;
	char *body = pull_some(g, rooms, n_rooms, SIZE_MAX, ret_len, &pauses);

	/* The loop never reads the file: the first bytes are always waited for. */
	if (g->file_size)
		assert_true(pauses >= 1);
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
					    file_len, &net, pool),
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
	drain_pool();
	free(body);
	free(want);
	free(data);
}

/* The image array: the file, then each part's separator and bytes, each
 * hashed on its own; through tiny pieces and a rewind. */
static void test_body_parts(void **state)
{
	static const size_t rooms[] = {1, 2, 3, 5, 7, 4, 1000, 1, 64, 65536};
	static const size_t lens[] = {1000, STREAM_READ_CHUNK + 5, 2};
	uint8_t *data[3];
	struct transfer_gen g = {.fd = -1};
	char *want, *body, hex[65];
	size_t want_len = 0, len, off = 0;
	unsigned pauses = 0;

	(void)state;
	for (size_t k = 0; k < 3; k++) {
		data[k] = malloc(lens[k]);
		assert_non_null(data[k]);
		for (size_t i = 0; i < lens[k]; i++)
			data[k][i] = (uint8_t)((i + 7 * k) * 2654435761u >> 11);
		want_len += B64_ENCODED_LEN(lens[k]);
	}
	want_len += 2 + 2 * 3;
	want = malloc(want_len);
	assert_non_null(want);
	want[off++] = '[';
	off += b64_encode(data[0], lens[0], want + off);
	for (size_t k = 1; k < 3; k++) {
		memcpy(want + off, "|S|", 3);
		want[off + 1] = (char)('0' + k);
		off += 3;
		off += b64_encode(data[k], lens[k], want + off);
	}
	want[off++] = ']';
	assert_int_equal(off, want_len);

	assert_int_equal(
	    transfer_gen_add_part(&g, strdup("|1|"), temp_file(data[1], lens[1]), lens[1]), 0);
	assert_int_equal(
	    transfer_gen_add_part(&g, strdup("|2|"), temp_file(data[2], lens[2]), lens[2]), 0);
	assert_int_equal(transfer_gen_setup(&g, "http://127.0.0.1:9/x", "A: b", strdup("["),
					    strdup("]"), temp_file(data[0], lens[0]), lens[0], &net,
					    pool),
			 0);
	for (int round = 0; round < 2; round++) {
		body =
		    pull_some(&g, rooms, sizeof(rooms) / sizeof(rooms[0]), SIZE_MAX, &len, &pauses);
		assert_int_equal(len, want_len);
		assert_memory_equal(body, want, want_len);
		free(body);
		sha256_hex(data[0], lens[0], hex);
		assert_string_equal(g.sha256_hex, hex);
		for (size_t k = 1; k < 3; k++) {
			sha256_hex(data[k], lens[k], hex);
			assert_string_equal(g.parts[k - 1].sha256_hex, hex);
		}
		assert_int_equal(transfer_gen_seek(&g, 0, SEEK_SET), CURL_SEEKFUNC_OK);
		assert_string_equal(g.parts[0].sha256_hex, "");
	}
	transfer_gen_clear(&g);
	drain_pool();
	free(want);
	for (size_t k = 0; k < 3; k++)
		free(data[k]);
}

/* A part that comes up short says which one. */
static void test_body_part_shrank(void **state)
{
	static const uint8_t data[300];
	struct transfer_gen g = {.fd = -1};
	char buf[65536];
	size_t got;

	(void)state;
	assert_int_equal(
	    transfer_gen_add_part(&g, strdup(","), temp_file(data, sizeof(data)), sizeof(data) * 2),
	    0);
	assert_int_equal(transfer_gen_setup(&g, "http://127.0.0.1:9/x", "A: b", strdup("["),
					    strdup("]"), temp_file(data, 3), 3, &net, pool),
			 0);
	for (int i = 0; i < 20; i++) {
		got = transfer_gen_fill(&g, buf, sizeof(buf));
		if (got == CURL_READFUNC_PAUSE) {
			wait_unpaused(&g.paused, CURLPAUSE_SEND);
			continue;
		}
		if (got == CURL_READFUNC_ABORT)
			break;
		assert_true(got > 0);
	}
	assert_int_equal(got, CURL_READFUNC_ABORT);
	assert_true(g.file_changed);
	assert_int_equal(g.changed_part, 1);
	transfer_gen_clear(&g);
	drain_pool();
}

static void test_body_large_pieces(void **state)
{
	static const size_t rooms[] = {65536};

	(void)state;
	for (size_t n = 0; n < 10; n++)
		check_body(n, rooms, 1);
	check_body(200000, rooms, 1);
	check_body(3 * STREAM_READ_CHUNK + 7, rooms, 1); /* through both buffers, refilled */
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
					    strdup("]"), fd, sizeof(data) * 2, &net, pool),
			 0);
	assert_int_equal(transfer_gen_fill(&g, buf, sizeof(buf)), 1);
	assert_int_equal(transfer_gen_fill(&g, buf, sizeof(buf)), CURL_READFUNC_PAUSE);
	wait_unpaused(&g.paused, CURLPAUSE_SEND);
	assert_int_equal(transfer_gen_fill(&g, buf, sizeof(buf)), CURL_READFUNC_ABORT);
	assert_true(g.file_changed);
	assert_int_equal(g.read_errno, 0);
	transfer_gen_clear(&g);
	drain_pool();
}

/* A file that cannot be read fails the transfer, with the errno. */
static void test_body_read_error(void **state)
{
	struct transfer_gen g = {.fd = -1};
	char buf[65536];
	int fd = open("/tmp", O_RDONLY | O_DIRECTORY);

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(transfer_gen_setup(&g, "http://127.0.0.1:9/x", "A: b", strdup(""),
					    strdup(""), fd, 100, &net, pool),
			 0);
	assert_int_equal(transfer_gen_fill(&g, buf, sizeof(buf)), CURL_READFUNC_PAUSE);
	wait_unpaused(&g.paused, CURLPAUSE_SEND);
	assert_int_equal(transfer_gen_fill(&g, buf, sizeof(buf)), CURL_READFUNC_ABORT);
	assert_true(g.file_changed);
	assert_int_equal(g.read_errno, EISDIR);
	transfer_gen_clear(&g);
	drain_pool();
}

/* curl rewinds (a dead reused connection, an auth retry): the body comes
 * again whole from the start, whatever was read or under way, and the hash
 * is of the whole file once. */
static void test_body_rewind(void **state)
{
	static const size_t rooms[] = {65536, 1, 3000};
	size_t file_len = 2 * STREAM_READ_CHUNK + 1000, len = 0, want_len;
	uint8_t *data = malloc(file_len);
	struct transfer_gen g = {.fd = -1};
	char *body, *want, hex[65];
	unsigned pauses = 0;

	(void)state;
	assert_non_null(data);
	for (size_t i = 0; i < file_len; i++)
		data[i] = (uint8_t)(i * 2654435761u >> 9);
	want_len = 1 + B64_ENCODED_LEN(file_len) + 1;
	want = malloc(want_len);
	assert_non_null(want);
	want[0] = '[';
	(void)b64_encode(data, file_len, want + 1);
	want[want_len - 1] = ']';
	sha256_hex(data, file_len, hex);
	assert_int_equal(transfer_gen_setup(&g, "http://127.0.0.1:9/x", "A: b", strdup("["),
					    strdup("]"), temp_file(data, file_len), file_len, &net,
					    pool),
			 0);
	assert_int_equal(transfer_gen_seek(&g, 5, SEEK_SET), CURL_SEEKFUNC_CANTSEEK);
	for (size_t stop = 0; stop < 3; stop++) {
		/* Part of the body: nothing, a little, past the first buffer. */
		size_t limit = stop == 0 ? 0 : stop == 1 ? 1000 : STREAM_READ_CHUNK * 4 / 3 + 10;
		body = pull_some(&g, rooms, 3, limit, &len, &pauses);
		free(body);
		assert_int_equal(transfer_gen_seek(&g, 0, SEEK_SET), CURL_SEEKFUNC_OK);
		assert_string_equal(g.sha256_hex, "");
		body = pull_some(&g, rooms, 3, SIZE_MAX, &len, &pauses);
		assert_int_equal(len, want_len);
		assert_memory_equal(body, want, want_len);
		assert_string_equal(g.sha256_hex, hex);
		free(body);
		assert_int_equal(transfer_gen_seek(&g, 0, SEEK_SET), CURL_SEEKFUNC_OK);
	}
	/* Rewound with a read under way: it is dropped, not delivered. */
	{
		char buf[16];
		assert_int_equal(transfer_gen_fill(&g, buf, 1), 1);
		assert_int_equal(transfer_gen_fill(&g, buf, sizeof(buf)), CURL_READFUNC_PAUSE);
		assert_int_equal(transfer_gen_seek(&g, 0, SEEK_SET), CURL_SEEKFUNC_OK);
		body = pull_some(&g, rooms, 3, SIZE_MAX, &len, &pauses);
		assert_int_equal(len, want_len);
		assert_memory_equal(body, want, want_len);
		assert_string_equal(g.sha256_hex, hex);
		free(body);
	}
	transfer_gen_clear(&g);
	drain_pool();
	free(want);
	free(data);
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
	struct transfer_gen g = {.fd = -1};
	struct scanned s = {0};
	struct ended e = {0};
	off_t size;

	g.img.fd = with_file ? temp_file((const uint8_t *)"", 0) : -1;
	assert_int_equal(transfer_gen_setup(&g, "http://127.0.0.1:9/x", "A: b", strdup(""),
					    strdup(""), temp_file((const uint8_t *)"", 0), 0, &net,
					    pool),
			 0);
	s.ok = true;
	for (size_t i = 0; i < len && s.ok;) {
		size_t n = len - i < piece ? len - i : piece, took;
		took = transfer_gen_take(&g, answer + i, n);
		if (took == CURL_WRITEFUNC_PAUSE) {
			/* Too much waits for the disk: the same bytes again later. */
			assert_true(g.paused & CURLPAUSE_RECV);
			wait_unpaused(&g.paused, CURLPAUSE_RECV);
			continue;
		}
		s.ok = took == n;
		i += n;
	}
	transfer_gen_finish(&g, CURLE_OK, on_end, &e);
	wait_ended(&e);
	assert_int_equal(g.img.write_errno, 0);
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
	drain_pool();
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
	/* Without the scanner's word, an empty b64_json is no image: data[0] is
	 * recorded as failed, and data[1] (paid for too) is the image. */
	assert_int_equal(api_parse_response(200, body, strlen(body), NULL, &res), 0);
	assert_int_equal(res.outcome, API_OUTCOME_OK);
	assert_int_equal(res.n_images, 2);
	assert_int_equal(res.n_ok, 1);
	assert_string_equal(res.images[0].error_code, "MalformedResponse");
	assert_string_equal(res.b64_json, "REVG");
	api_result_clear(&res);
	/* And with nothing else in data[], the answer is no image at all. */
	(void)snprintf(body, sizeof(body), "{\"data\":[{\"b64_json\":\"\"}]}");
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

/* The disk fails under a b64_json image: the answer still completes, and
 * the whole image is there as text (what reached the file and the rest). */
static void test_image_write_error_keeps_image(void **state)
{
	const size_t img_len = 300000;
	uint8_t *img = malloc(img_len), *back = NULL;
	char *answer = malloc(B64_ENCODED_LEN(img_len) + 64), *text = NULL;
	struct transfer_gen g = {.fd = -1};
	struct ended e = {0};
	size_t len, back_len = 0;

	(void)state;
	assert_non_null(img);
	assert_non_null(answer);
	for (size_t i = 0; i < img_len; i++)
		img[i] = (uint8_t)(i * 2654435761u >> 7);
	len = (size_t)sprintf(answer, "{\"data\":[{\"b64_json\":\"");
	len += b64_encode(img, img_len, answer + len);
	len += (size_t)sprintf(answer + len, "\"}]}");
	g.img.fd = open("/dev/full", O_RDWR | O_CLOEXEC);
	assert_true(g.img.fd >= 0);
	assert_int_equal(transfer_gen_setup(&g, "http://127.0.0.1:9/x", "A: b", strdup(""),
					    strdup(""), temp_file((const uint8_t *)"", 0), 0, &net,
					    pool),
			 0);
	for (size_t i = 0; i < len;) {
		size_t n = len - i < 16384 ? len - i : 16384;
		size_t took = transfer_gen_take(&g, answer + i, n);
		assert_true(took != CURL_WRITEFUNC_PAUSE); /* never over the cap after an error */
		assert_int_equal(took, n);
		i += n;
		drain_pool(); /* let the writes fail as they go */
	}
	transfer_gen_finish(&g, CURLE_OK, on_end, &e);
	wait_ended(&e);
	assert_int_equal(e.result, CURLE_OK);
	assert_true(g.img.found);
	assert_int_equal(g.img.write_errno, ENOSPC);
	assert_int_equal(g.img.written, 0);
	assert_int_equal(transfer_image_text(&g, &text), 0);
	back = malloc(img_len);
	assert_non_null(back);
	assert_int_equal(b64_decode(text, strlen(text), back, &back_len), 0);
	assert_int_equal(back_len, img_len);
	assert_memory_equal(back, img, img_len);
	transfer_gen_clear(&g);
	drain_pool();
	free(text);
	free(back);
	free(answer);
	free(img);
}

/* A download: pieces in order on the file, a pause over the cap, and the
 * end only once all of it is written. */
static void test_dl_writes_in_order(void **state)
{
	const size_t total = 6u * 1024 * 1024 + 123;
	uint8_t *data = malloc(total), *got = malloc(total);
	struct transfer_dl d = {.fd = temp_file((const uint8_t *)"", 0)};
	struct ended e = {0};
	unsigned pauses = 0;

	(void)state;
	assert_non_null(data);
	assert_non_null(got);
	for (size_t i = 0; i < total; i++)
		data[i] = (uint8_t)(i * 2654435761u >> 5);
	assert_int_equal(transfer_dl_setup(&d, "http://127.0.0.1:9/x", &net, pool), 0);
	for (size_t i = 0; i < total;) {
		size_t n = total - i < 16384 ? total - i : 16384;
		size_t took = transfer_dl_take(&d, (const char *)data + i, n);
		if (took == CURL_WRITEFUNC_PAUSE) {
			pauses++;
			wait_unpaused(&d.paused, CURLPAUSE_RECV);
			continue;
		}
		assert_int_equal(took, n);
		i += n;
	}
	assert_true(pauses > 0); /* 6 MiB without the loop running: over 4 MiB */
	assert_memory_equal(d.magic, data, sizeof(d.magic));
	transfer_dl_finish(&d, CURLE_OK, on_end, &e);
	wait_ended(&e);
	assert_int_equal(e.result, CURLE_OK);
	assert_int_equal(lseek(d.fd, 0, SEEK_END), (off_t)total);
	assert_int_equal(pread(d.fd, got, total, 0), (ssize_t)total);
	assert_memory_equal(got, data, total);
	transfer_dl_clear(&d);
	drain_pool();
	close(d.fd);
	free(data);
	free(got);
}

/* A download onto a full disk: never a success, with the errno. */
static void test_dl_write_error(void **state)
{
	static const char data[1000];
	struct transfer_dl d = {.fd = open("/dev/full", O_WRONLY | O_CLOEXEC)};
	struct ended e = {0};

	(void)state;
	assert_true(d.fd >= 0);
	assert_int_equal(transfer_dl_setup(&d, "http://127.0.0.1:9/x", &net, pool), 0);
	assert_int_equal(transfer_dl_take(&d, data, sizeof(data)), sizeof(data));
	transfer_dl_finish(&d, CURLE_OK, on_end, &e);
	wait_ended(&e);
	assert_int_equal(e.result, CURLE_WRITE_ERROR);
	assert_int_equal(d.write_errno, ENOSPC);
	transfer_dl_clear(&d);
	close(d.fd);
	/* Found while curl still sends: the next piece aborts. */
	d = (struct transfer_dl){.fd = open("/dev/full", O_WRONLY | O_CLOEXEC)};
	assert_int_equal(transfer_dl_setup(&d, "http://127.0.0.1:9/x", &net, pool), 0);
	for (size_t i = 0; i < STREAM_WRITE_CHUNK / sizeof(data) + 1; i++)
		assert_int_equal(transfer_dl_take(&d, data, sizeof(data)), sizeof(data));
	drain_pool();
	assert_int_equal(transfer_dl_take(&d, data, sizeof(data)), 0);
	assert_int_equal(d.write_errno, ENOSPC);
	transfer_dl_clear(&d);
	drain_pool();
	close(d.fd);
}

/* Safe on any thread: two threads hashing at once get their own answers. */
struct hash_job {
	int fd;
	char hex[65];
	int r;
};

static void *hash_thread(void *arg)
{
	struct hash_job *j = arg;

	for (int i = 0; i < 20 && j->r == 0; i++)
		j->r = digest_sha256_fd(j->fd, j->hex);
	return NULL;
}

static void test_sha256_fd_threads(void **state)
{
	const size_t len = 700000;
	uint8_t *a = malloc(len), *b = malloc(len);
	struct hash_job ja = {0}, jb = {0};
	char want_a[65], want_b[65];
	pthread_t ta, tb;

	(void)state;
	assert_non_null(a);
	assert_non_null(b);
	memset(a, 'a', len);
	memset(b, 'b', len);
	sha256_hex(a, len, want_a);
	sha256_hex(b, len, want_b);
	ja.fd = temp_file(a, len);
	jb.fd = temp_file(b, len);
	assert_int_equal(pthread_create(&ta, NULL, hash_thread, &ja), 0);
	assert_int_equal(pthread_create(&tb, NULL, hash_thread, &jb), 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	assert_int_equal(ja.r, 0);
	assert_int_equal(jb.r, 0);
	assert_string_equal(ja.hex, want_a);
	assert_string_equal(jb.hex, want_b);
	close(ja.fd);
	close(jb.fd);
	free(a);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_body_large_pieces),
	    cmocka_unit_test(test_body_parts),
	    cmocka_unit_test(test_body_part_shrank),
	    cmocka_unit_test(test_body_tiny_pieces),
	    cmocka_unit_test(test_body_file_shrank),
	    cmocka_unit_test(test_body_read_error),
	    cmocka_unit_test(test_body_rewind),
	    cmocka_unit_test(test_image_write_error_keeps_image),
	    cmocka_unit_test(test_dl_writes_in_order),
	    cmocka_unit_test(test_dl_write_error),
	    cmocka_unit_test(test_sha256_fd_threads),
	    cmocka_unit_test(test_url_allowed),
	    cmocka_unit_test(test_url_classes),
	    cmocka_unit_test(test_scan_takes_first_image),
	    cmocka_unit_test(test_scan_leaves_other_images),
	    cmocka_unit_test(test_scan_malformed),
	    cmocka_unit_test(test_scan_json_cap),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
