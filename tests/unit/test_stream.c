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
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "loop.h"
#include "stream.h"
#include "work.h"

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

static void fill_pattern(uint8_t *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)((i + seed) * 2654435761u >> 13);
}

static int temp_file(const uint8_t *data, size_t len)
{
	char path[] = "/tmp/test_stream.XXXXXX";
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	(void)unlink(path);
	if (len)
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

static unsigned wakes;

static void count_wake(void *userdata)
{
	(void)userdata;
	wakes++;
}

/* Runs the loop until wake was called (or the pool is idle). */
static void wait_wake(void)
{
	unsigned before = wakes;

	for (int i = 0; i < 1000 && wakes == before; i++)
		assert_true(loop_run_once(loop, 1000) >= 0);
	assert_true(wakes > before);
}

static void drain_pool(void)
{
	for (int i = 0; i < 1000 && work_pending(pool) > 0; i++)
		assert_true(loop_run_once(loop, 1000) >= 0);
	assert_int_equal(work_pending(pool), 0);
}

/* Reads the whole file through the reader; returns how often it had to wait. */
static unsigned read_all(struct stream_reader *r, uint8_t *out, size_t cap, size_t *ret_len)
{
	unsigned waits = 0;
	size_t len = 0;

	for (;;) {
		const uint8_t *p = NULL;
		ssize_t n = stream_reader_peek(r, &p);
		if (n == -EAGAIN) {
			waits++;
			wait_wake();
			continue;
		}
		assert_true(n >= 0);
		if (n == 0)
			break;
		/* Take it in odd pieces: the reader must not care. */
		if (n > 7)
			n = n / 2 + 1;
		assert_true(len + (size_t)n <= cap);
		memcpy(out + len, p, (size_t)n);
		stream_reader_consume(r, (size_t)n);
		len += (size_t)n;
	}
	*ret_len = len;
	return waits;
}

static void test_reader_whole_file(void **state)
{
	static const size_t sizes[] = {0, 1, 2, 3, 29, 30, 31, 60, 61, 1000};
	uint8_t data[1000], got[1000];
	char want_hex[65];

	(void)state;
	fill_pattern(data, sizeof(data), 1);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct stream_reader *r = NULL;
		int fd = temp_file(data, sizes[i]);
		size_t len = 0;
		unsigned waits;

		assert_int_equal(stream_reader_new(pool, fd, sizes[i], 30, count_wake, NULL, &r),
				 0);
		/* The caller's descriptor is its own: the reader reads a copy. */
		assert_int_equal(close(fd), 0);
		waits = read_all(r, got, sizeof(got), &len);
		assert_int_equal(len, sizes[i]);
		assert_memory_equal(got, data, len);
		sha256_hex(data, sizes[i], want_hex);
		assert_string_equal(stream_reader_sha256(r), want_hex);
		/* Completions come through the loop only: the first read is
		 * always waited for. */
		assert_true(sizes[i] == 0 ? waits == 0 : waits >= 1);
		stream_reader_free(r);
		drain_pool();
	}
	{
		struct stream_reader *r = NULL;
		assert_int_equal(stream_reader_new(pool, 0, 10, 32, count_wake, NULL, &r), -EINVAL);
	}
}

/* Two buffers are read ahead, no more; consuming one queues the next. */
static void test_reader_double_buffer(void **state)
{
	uint8_t data[300];
	struct stream_reader *r = NULL;
	const uint8_t *p = NULL;
	int fd;

	(void)state;
	fill_pattern(data, sizeof(data), 2);
	fd = temp_file(data, sizeof(data));
	assert_int_equal(stream_reader_new(pool, fd, sizeof(data), 30, count_wake, NULL, &r), 0);
	assert_int_equal(work_pending(pool), 1); /* the first read starts at once */
	assert_int_equal(stream_reader_peek(r, &p), -EAGAIN);
	wait_wake();
	/* The second read was queued by the first one's completion. */
	drain_pool();
	assert_int_equal(work_pending(pool), 0); /* both full: nothing more */
	assert_int_equal(stream_reader_peek(r, &p), 30);
	assert_memory_equal(p, data, 30);
	stream_reader_consume(r, 30);
	assert_int_equal(stream_reader_peek(r, &p), 30); /* the second, already there */
	assert_memory_equal(p, data + 30, 30);
	assert_int_equal(work_pending(pool), 1); /* the first buffer is being refilled */
	stream_reader_consume(r, 30);
	drain_pool();
	assert_int_equal(stream_reader_peek(r, &p), 30);
	assert_memory_equal(p, data + 60, 30);
	stream_reader_free(r);
	drain_pool();
	close(fd);
}

/* A rewind while a read is under way: the stale read is dropped, and the
 * file comes again from 0 with the right hash. */
static void test_reader_rewind(void **state)
{
	uint8_t data[200], got[200];
	struct stream_reader *r = NULL;
	const uint8_t *p = NULL;
	char want_hex[65];
	size_t len = 0;
	int fd;

	(void)state;
	fill_pattern(data, sizeof(data), 3);
	sha256_hex(data, sizeof(data), want_hex);
	fd = temp_file(data, sizeof(data));
	/* Part of the file, then back to 0 while the next read is in flight. */
	assert_int_equal(stream_reader_new(pool, fd, sizeof(data), 30, count_wake, NULL, &r), 0);
	assert_int_equal(stream_reader_peek(r, &p), -EAGAIN);
	wait_wake();
	assert_int_equal(stream_reader_peek(r, &p), 30);
	stream_reader_consume(r, 30);
	assert_int_equal(stream_reader_peek(r, &p), -EAGAIN);
	assert_int_equal(work_pending(pool), 1);
	stream_reader_rewind(r);
	assert_string_equal(stream_reader_sha256(r), "");
	(void)read_all(r, got, sizeof(got), &len);
	assert_int_equal(len, sizeof(data));
	assert_memory_equal(got, data, sizeof(data));
	assert_string_equal(stream_reader_sha256(r), want_hex);
	/* And once more after the end. */
	stream_reader_rewind(r);
	(void)read_all(r, got, sizeof(got), &len);
	assert_int_equal(len, sizeof(data));
	assert_memory_equal(got, data, sizeof(data));
	assert_string_equal(stream_reader_sha256(r), want_hex);
	stream_reader_free(r);
	drain_pool();
	close(fd);
}

static void test_reader_errors(void **state)
{
	uint8_t data[100];
	struct stream_reader *r = NULL;
	const uint8_t *p = NULL;
	ssize_t n;
	int fd;

	(void)state;
	/* The file is shorter than it was said to be. */
	fill_pattern(data, sizeof(data), 4);
	fd = temp_file(data, sizeof(data));
	assert_int_equal(stream_reader_new(pool, fd, 150, 30, count_wake, NULL, &r), 0);
	for (int i = 0; i < 100; i++) {
		n = stream_reader_peek(r, &p);
		if (n == -EAGAIN) {
			wait_wake();
			continue;
		}
		if (n <= 0)
			break;
		stream_reader_consume(r, (size_t)n);
	}
	assert_int_equal(n, -ENODATA);
	assert_int_equal(stream_reader_peek(r, &p), -ENODATA); /* sticky */
	assert_string_equal(stream_reader_sha256(r), "");
	stream_reader_free(r);
	close(fd);
	/* A read that fails: a directory. */
	fd = open("/tmp", O_RDONLY | O_DIRECTORY);
	assert_true(fd >= 0);
	assert_int_equal(stream_reader_new(pool, fd, 10, 30, count_wake, NULL, &r), 0);
	assert_int_equal(stream_reader_peek(r, &p), -EAGAIN);
	wait_wake();
	assert_int_equal(stream_reader_peek(r, &p), -EISDIR);
	stream_reader_free(r);
	close(fd);
	drain_pool();
}

/* Freed with a read under way: the completion cleans up (ASan checks). */
static void test_reader_free_in_flight(void **state)
{
	uint8_t data[100] = {0};
	struct stream_reader *r = NULL;
	int fd = temp_file(data, sizeof(data));

	(void)state;
	assert_int_equal(stream_reader_new(pool, fd, sizeof(data), 30, count_wake, NULL, &r), 0);
	assert_int_equal(work_pending(pool), 1);
	stream_reader_free(r);
	close(fd);
	drain_pool();
}

/* ---- writer ---- */

struct finished {
	bool done;
	int fd; /* the caller's descriptor */
	off_t size_at_done;
};

static void on_finished(void *userdata)
{
	struct finished *f = userdata;
	struct stat st;

	f->done = true;
	if (f->fd >= 0 && fstat(f->fd, &st) == 0)
		f->size_at_done = st.st_size;
}

static void wait_finished(struct finished *f)
{
	for (int i = 0; i < 1000 && !f->done; i++)
		assert_true(loop_run_once(loop, 1000) >= 0);
	assert_true(f->done);
}

/* Many small pieces, through chunks and pauses: the file holds them in
 * order, and the end is told only once all of it is there. */
static void test_writer_order(void **state)
{
	const size_t total = 1000000, chunk = 4096, cap = 65536;
	uint8_t *data = malloc(total), *got = malloc(total);
	struct stream_writer *w = NULL;
	struct finished f = {.fd = temp_file(NULL, 0)};
	size_t off = 0, piece = 1;
	unsigned pauses = 0;

	(void)state;
	assert_non_null(data);
	assert_non_null(got);
	fill_pattern(data, total, 5);
	assert_int_equal(stream_writer_new(pool, f.fd, chunk, cap, count_wake, NULL, &w), 0);
	while (off < total) {
		size_t n = total - off < piece ? total - off : piece;
		if (stream_writer_full(w)) {
			pauses++;
			wait_wake();
			assert_false(stream_writer_full(w));
			continue;
		}
		assert_int_equal(stream_writer_put(w, data + off, n), 0);
		off += n;
		piece = piece * 7 % 16381 + 1;
	}
	assert_true(pauses > 0);
	stream_writer_finish(w, on_finished, &f);
	wait_finished(&f);
	assert_int_equal(f.size_at_done, (off_t)total);
	assert_int_equal(stream_writer_error(w), 0);
	assert_int_equal(stream_writer_written(w), total);
	stream_writer_free(w);
	assert_int_equal(pread(f.fd, got, total, 0), (ssize_t)total);
	assert_memory_equal(got, data, total);
	drain_pool();
	close(f.fd);
	free(data);
	free(got);
}

/* Over the cap, full() says so; the wake comes once a worker drained below
 * it, and only once. */
static void test_writer_pauses_over_cap(void **state)
{
	uint8_t data[100];
	struct stream_writer *w = NULL;
	struct finished f = {.fd = temp_file(NULL, 0)};
	unsigned before;

	(void)state;
	fill_pattern(data, sizeof(data), 6);
	assert_int_equal(stream_writer_new(pool, f.fd, 50, 200, count_wake, NULL, &w), 0);
	assert_int_equal(stream_writer_put(w, data, 100), 0);
	assert_false(stream_writer_full(w));
	assert_int_equal(stream_writer_put(w, data, 100), 0);
	assert_true(stream_writer_full(w));
	/* Until a completion comes back through the loop, it stays full. */
	assert_int_equal(stream_writer_written(w), 0);
	assert_true(stream_writer_full(w));
	before = wakes;
	wait_wake();
	assert_int_equal(wakes, before + 1);
	assert_false(stream_writer_full(w));
	stream_writer_finish(w, on_finished, &f);
	wait_finished(&f);
	assert_int_equal(f.size_at_done, 200);
	stream_writer_free(w);
	drain_pool();
	close(f.fd);
}

/* A write fails part way (a pipe that takes 64 KiB, then EAGAIN): what
 * reached it is counted, the rest is kept in order, with what came later. */
static void test_writer_error_keeps_rest(void **state)
{
	const size_t total = 100000;
	uint8_t *data = malloc(total + 500), *rest = NULL, *drained = malloc(total);
	struct stream_writer *w = NULL;
	struct finished f = {.fd = -1};
	size_t rest_len = 0, in_pipe;
	int p[2];

	(void)state;
	assert_non_null(data);
	assert_non_null(drained);
	fill_pattern(data, total + 500, 7);
	assert_int_equal(pipe2(p, O_NONBLOCK), 0);
	assert_int_equal(stream_writer_new(pool, p[1], total, total * 2, count_wake, NULL, &w), 0);
	assert_int_equal(stream_writer_put(w, data, total), 0); /* one full chunk: written now */
	drain_pool();
	assert_int_equal(stream_writer_error(w), -EAGAIN);
	in_pipe = (size_t)stream_writer_written(w);
	assert_true(in_pipe > 0 && in_pipe < total);
	assert_false(stream_writer_full(w)); /* nothing drains any more: no pause */
	assert_int_equal(stream_writer_put(w, data + total, 500), 0);
	stream_writer_finish(w, on_finished, &f);
	wait_finished(&f);
	assert_int_equal(stream_writer_rest(w, &rest, &rest_len), 0);
	assert_int_equal(rest_len, total + 500 - in_pipe);
	assert_memory_equal(rest, data + in_pipe, rest_len);
	assert_int_equal(read(p[0], drained, total), (ssize_t)in_pipe);
	assert_memory_equal(drained, data, in_pipe);
	free(rest);
	stream_writer_free(w);
	drain_pool();
	close(p[0]);
	close(p[1]);
	free(data);
	free(drained);
}

/* A full disk from the first byte: all of it stays in memory. */
static void test_writer_disk_full(void **state)
{
	uint8_t data[1000], *rest = NULL;
	struct stream_writer *w = NULL;
	struct finished f = {.fd = -1};
	size_t rest_len = 0;
	int fd = open("/dev/full", O_WRONLY | O_CLOEXEC);

	(void)state;
	assert_true(fd >= 0);
	fill_pattern(data, sizeof(data), 8);
	assert_int_equal(stream_writer_new(pool, fd, 64, 4096, count_wake, NULL, &w), 0);
	assert_int_equal(stream_writer_put(w, data, sizeof(data)), 0);
	stream_writer_finish(w, on_finished, &f);
	wait_finished(&f);
	assert_int_equal(stream_writer_error(w), -ENOSPC);
	assert_int_equal(stream_writer_written(w), 0);
	assert_int_equal(stream_writer_rest(w, &rest, &rest_len), 0);
	assert_int_equal(rest_len, sizeof(data));
	assert_memory_equal(rest, data, sizeof(data));
	free(rest);
	stream_writer_free(w);
	drain_pool();
	close(fd);
}

/* Nothing put: the end is told at once; freed mid-write: cleaned up later. */
static void test_writer_empty_and_free(void **state)
{
	uint8_t data[64] = {1};
	struct stream_writer *w = NULL;
	struct finished f = {.fd = -1};
	int fd = temp_file(NULL, 0);

	(void)state;
	assert_int_equal(stream_writer_new(pool, fd, 64, 4096, count_wake, NULL, &w), 0);
	stream_writer_finish(w, on_finished, &f);
	assert_true(f.done);
	stream_writer_free(w);
	drain_pool(); /* its descriptor's close */
	assert_int_equal(stream_writer_new(pool, fd, 64, 4096, count_wake, NULL, &w), 0);
	assert_int_equal(stream_writer_put(w, data, sizeof(data)), 0);
	assert_int_equal(work_pending(pool), 1);
	stream_writer_free(w);
	close(fd);
	drain_pool();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reader_whole_file),
	    cmocka_unit_test(test_reader_double_buffer),
	    cmocka_unit_test(test_reader_rewind),
	    cmocka_unit_test(test_reader_errors),
	    cmocka_unit_test(test_reader_free_in_flight),
	    cmocka_unit_test(test_writer_order),
	    cmocka_unit_test(test_writer_pauses_over_cap),
	    cmocka_unit_test(test_writer_error_keeps_rest),
	    cmocka_unit_test(test_writer_disk_full),
	    cmocka_unit_test(test_writer_empty_and_free),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
