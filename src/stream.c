/* stream: see stream.h. Each stream has one request slot (op): the loop fills
 * it, hands it to the pool, and reads it back in the completion; while it is
 * in flight only the worker touches it (and the buffer or chunk it names). */
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "b64.h"
#include "fdio.h"
#include "work.h"

/* ---- closing a stream's own descriptor off the loop ---- */

/* ---- reader ---- */

struct stream_read_op {
	int fd;
	uint64_t off;
	size_t want;
	uint8_t *buf;
	EVP_MD_CTX *sha;
	bool last; /* finishes the file: the worker finalises the hash */
	unsigned gen;
	size_t got;
	int err; /* errno of a failed read */
	char hex[65];
};

struct stream_reader {
	struct work_pool *pool;
	int fd;
	uint64_t size;
	size_t chunk;
	stream_wake_fn wake;
	void *userdata;
	uint8_t *buf[2];
	size_t len[2];
	bool ready[2];
	unsigned cur, fill; /* the buffer being consumed, the next to fill */
	size_t pos;	    /* consumed in buf[cur] */
	uint64_t next_off;  /* of the next read to queue */
	unsigned gen;	    /* bumped by a rewind: older reads are stale */
	bool in_flight, waiting, orphaned;
	int error;
	EVP_MD_CTX *sha;
	char hex[65];
	struct stream_read_op op;
};

static void reader_work(void *arg)
{
	struct stream_read_op *op = &((struct stream_reader *)arg)->op;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	ssize_t n;

	op->got = 0;
	op->err = 0;
	n = fdio_pread_full(op->fd, op->buf, op->want, (off_t)op->off);
	if (n < 0)
		op->err = (int)-n;
	if (n <= 0)
		return;
	op->got = (size_t)n;
	if (op->got < op->want)
		return; /* the file ended early: the caller sees got < want */
	if (op->off == 0)
		(void)EVP_DigestInit_ex(op->sha, EVP_sha256(), NULL);
	(void)EVP_DigestUpdate(op->sha, op->buf, op->got);
	if (op->last) {
		(void)EVP_DigestFinal_ex(op->sha, md, &md_len);
		b64_hex(md, md_len, op->hex);
	}
}

static void reader_done(void *arg, bool cancelled);

/* Queues the next read when a buffer is free and nothing is under way. */
static void reader_kick(struct stream_reader *r)
{
	struct stream_read_op *op = &r->op;
	uint64_t left = r->size - r->next_off;
	int ret;

	if (r->in_flight || r->error || left == 0 || r->ready[r->fill])
		return;
	op->fd = r->fd;
	op->off = r->next_off;
	op->want = left < r->chunk ? (size_t)left : r->chunk;
	op->buf = r->buf[r->fill];
	op->sha = r->sha;
	op->last = op->want == left;
	op->gen = r->gen;
	op->hex[0] = '\0';
	ret = work_submit(r->pool, reader_work, reader_done, r);
	if (ret < 0) {
		r->error = ret;
		return;
	}
	r->in_flight = true;
	r->next_off += op->want;
}

static void reader_destroy(struct stream_reader *r)
{
	work_close(r->pool, r->fd);
	EVP_MD_CTX_free(r->sha);
	free(r->buf[0]);
	free(r->buf[1]);
	free(r);
}

static void reader_done(void *arg, bool cancelled)
{
	struct stream_reader *r = arg;
	struct stream_read_op *op = &r->op;

	r->in_flight = false;
	if (r->orphaned) {
		reader_destroy(r);
		return;
	}
	if (op->gen != r->gen) {
		/* Rewound meanwhile: the next read starts from 0 again. */
		reader_kick(r);
		return;
	}
	if (cancelled)
		r->error = -ECANCELED;
	else if (op->err)
		r->error = -op->err;
	else if (op->got < op->want)
		r->error = -ENODATA;
	else {
		r->len[r->fill] = op->got;
		r->ready[r->fill] = true;
		r->fill ^= 1;
		if (op->last)
			memcpy(r->hex, op->hex, sizeof(r->hex));
		reader_kick(r);
	}
	if (r->waiting) {
		r->waiting = false;
		r->wake(r->userdata);
	}
}

int stream_reader_new(struct work_pool *pool, int fd, uint64_t size, size_t chunk,
		      stream_wake_fn wake, void *userdata, struct stream_reader **ret_reader)
{
	struct stream_reader *r;
	size_t bufsize;
	int ret;

	if (chunk == 0 || chunk % 3 != 0)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->pool = pool;
	r->size = size;
	r->chunk = chunk;
	r->wake = wake;
	r->userdata = userdata;
	r->fd = -1;
	bufsize = size < chunk ? (size_t)size : chunk;
	r->buf[0] = malloc(bufsize ? bufsize : 1);
	/* A file that fits one buffer is one read: the second would only
	 * hold on to memory (16 uploads in flight, 255 KiB each). */
	r->buf[1] = size > chunk ? malloc(bufsize) : NULL;
	r->sha = EVP_MD_CTX_new();
	if (!r->buf[0] || (size > chunk && !r->buf[1]) || !r->sha) {
		ret = -ENOMEM;
		goto fail;
	}
	if (size == 0) {
		/* Nothing to read: the hash of nothing, here and now. */
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int md_len = 0;
		(void)EVP_DigestInit_ex(r->sha, EVP_sha256(), NULL);
		(void)EVP_DigestFinal_ex(r->sha, md, &md_len);
		b64_hex(md, md_len, r->hex);
	}
	r->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (r->fd < 0) {
		ret = -errno;
		goto fail;
	}
	reader_kick(r);
	*ret_reader = r;
	return 0;
fail:
	EVP_MD_CTX_free(r->sha);
	free(r->buf[0]);
	free(r->buf[1]);
	free(r);
	return ret;
}

ssize_t stream_reader_peek(struct stream_reader *r, const uint8_t **ret_data)
{
	for (;;) {
		if (r->ready[r->cur]) {
			if (r->pos < r->len[r->cur]) {
				*ret_data = r->buf[r->cur] + r->pos;
				return (ssize_t)(r->len[r->cur] - r->pos);
			}
			r->ready[r->cur] = false;
			r->cur ^= 1;
			r->pos = 0;
			reader_kick(r);
			continue;
		}
		if (r->error)
			return r->error;
		if (!r->in_flight && r->next_off == r->size)
			return 0;
		reader_kick(r);
		if (r->error)
			return r->error;
		r->waiting = true;
		return -EAGAIN;
	}
}

void stream_reader_consume(struct stream_reader *r, size_t n)
{
	r->pos += n;
}

void stream_reader_rewind(struct stream_reader *r)
{
	r->gen++;
	r->ready[0] = r->ready[1] = false;
	r->cur = r->fill = 0;
	r->pos = 0;
	r->next_off = 0;
	r->error = 0;
	r->hex[0] = '\0';
	if (r->size == 0) {
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int md_len = 0;
		(void)EVP_DigestInit_ex(r->sha, EVP_sha256(), NULL);
		(void)EVP_DigestFinal_ex(r->sha, md, &md_len);
		b64_hex(md, md_len, r->hex);
	}
	reader_kick(r); /* after a read under way, from its completion */
}

const char *stream_reader_sha256(const struct stream_reader *r)
{
	return r->hex;
}

void stream_reader_free(struct stream_reader *r)
{
	if (!r)
		return;
	if (r->in_flight) {
		r->orphaned = true; /* its completion frees it */
		return;
	}
	reader_destroy(r);
}

/* ---- writer ---- */

/* A chunk's memory grows as it fills (from STREAM_WRITE_FIRST_ALLOC, twice
 * as much each time): most results are far smaller than a chunk, and 16 of
 * them are written at once. */
#define STREAM_WRITE_FIRST_ALLOC (16u * 1024)

struct stream_chunk {
	struct stream_chunk *next;
	size_t off, len, cap; /* off: already on the file */
	size_t alloc;	      /* bytes of data allocated, <= cap */
	uint8_t *data;
};

struct stream_write_op {
	int fd;
	const uint8_t *data;
	size_t want;
	size_t done;
	int err;
};

struct stream_writer {
	struct work_pool *pool;
	int fd;
	size_t chunk_size, cap;
	stream_wake_fn wake;
	void *userdata;
	struct stream_chunk *head, *tail; /* waiting, oldest first */
	struct stream_chunk *writing;	  /* the chunk of the request under way */
	size_t buffered;		  /* bytes not on the file */
	uint64_t written;
	int error;
	bool in_flight, waiting, finishing, orphaned;
	stream_done_fn done;
	void *done_data;
	struct stream_write_op op;
};

static void writer_work(void *arg)
{
	struct stream_write_op *op = &((struct stream_writer *)arg)->op;

	int r = fdio_write_all(op->fd, op->data, op->want, &op->done);

	op->err = r < 0 ? -r : 0;
}

static void writer_free_chunks(struct stream_chunk *c)
{
	while (c) {
		struct stream_chunk *next = c->next;
		free(c->data);
		free(c);
		c = next;
	}
}

/* Room for len + n bytes in c, which no request is writing. */
static int writer_chunk_grow(struct stream_chunk *c, size_t n)
{
	size_t alloc = c->alloc ? c->alloc : STREAM_WRITE_FIRST_ALLOC;
	uint8_t *data;

	if (c->len + n <= c->alloc)
		return 0;
	while (alloc < c->len + n)
		alloc *= 2;
	if (alloc > c->cap)
		alloc = c->cap;
	data = realloc(c->data, alloc);
	if (!data)
		return -ENOMEM;
	c->data = data;
	c->alloc = alloc;
	return 0;
}

static void writer_destroy(struct stream_writer *w)
{
	work_close(w->pool, w->fd);
	writer_free_chunks(w->writing);
	writer_free_chunks(w->head);
	free(w);
}

static void writer_done(void *arg, bool cancelled);

/* Everything is on the file (or cannot be): close our descriptor, tell. */
static void writer_end(struct stream_writer *w)
{
	stream_done_fn done = w->done;

	work_close(w->pool, w->fd);
	w->fd = -1;
	w->done = NULL;
	w->finishing = false;
	if (done)
		done(w->done_data);
}

/* Hands the oldest chunk to a worker: a full one, or any at the end. */
static void writer_kick(struct stream_writer *w)
{
	struct stream_chunk *c = w->head;
	int r;

	if (w->in_flight || w->orphaned)
		return;
	if (w->error || !c) {
		if (w->finishing)
			writer_end(w);
		return;
	}
	if (c->len < c->cap && !w->finishing)
		return;
	w->head = c->next;
	if (!w->head)
		w->tail = NULL;
	c->next = NULL;
	w->writing = c;
	w->op.fd = w->fd;
	w->op.data = c->data + c->off;
	w->op.want = c->len - c->off;
	r = work_submit(w->pool, writer_work, writer_done, w);
	if (r < 0) {
		/* As a failed write: the bytes stay in memory. */
		c->next = w->head;
		w->head = c;
		if (!w->tail)
			w->tail = c;
		w->writing = NULL;
		w->error = r;
		if (w->finishing)
			writer_end(w);
		return;
	}
	w->in_flight = true;
}

static void writer_done(void *arg, bool cancelled)
{
	struct stream_writer *w = arg;
	struct stream_chunk *c = w->writing;

	w->in_flight = false;
	if (w->orphaned) {
		writer_destroy(w);
		return;
	}
	w->writing = NULL;
	if (cancelled) {
		w->op.done = 0;
		w->op.err = ECANCELED;
	}
	w->written += w->op.done;
	w->buffered -= w->op.done;
	c->off += w->op.done;
	if (w->op.err) {
		/* Back at the head: what did not reach the file stays. */
		w->error = -w->op.err;
		c->next = w->head;
		w->head = c;
		if (!w->tail)
			w->tail = c;
	} else {
		writer_free_chunks(c);
	}
	if (w->waiting && (w->error || w->buffered < w->cap)) {
		w->waiting = false;
		w->wake(w->userdata);
	}
	writer_kick(w);
}

int stream_writer_new(struct work_pool *pool, int fd, size_t chunk, size_t cap, stream_wake_fn wake,
		      void *userdata, struct stream_writer **ret_writer)
{
	struct stream_writer *w;

	if (chunk == 0)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->pool = pool;
	w->chunk_size = chunk;
	w->cap = cap;
	w->wake = wake;
	w->userdata = userdata;
	w->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (w->fd < 0) {
		int r = -errno;
		free(w);
		return r;
	}
	*ret_writer = w;
	return 0;
}

int stream_writer_put(struct stream_writer *w, const void *data, size_t n)
{
	const uint8_t *p = data;

	while (n > 0) {
		struct stream_chunk *c = w->tail;
		size_t take;

		if (!c || c->len == c->cap) {
			c = calloc(1, sizeof(*c));
			if (!c)
				return -ENOMEM;
			c->cap = w->chunk_size;
			if (w->tail)
				w->tail->next = c;
			else
				w->head = c;
			w->tail = c;
		}
		take = c->cap - c->len < n ? c->cap - c->len : n;
		if (writer_chunk_grow(c, take) < 0)
			return -ENOMEM;
		memcpy(c->data + c->len, p, take);
		c->len += take;
		w->buffered += take;
		p += take;
		n -= take;
	}
	writer_kick(w);
	return 0;
}

bool stream_writer_full(struct stream_writer *w)
{
	if (w->error || w->buffered < w->cap)
		return false;
	w->waiting = true;
	return true;
}

int stream_writer_error(const struct stream_writer *w)
{
	return w->error;
}

uint64_t stream_writer_written(const struct stream_writer *w)
{
	return w->written;
}

void stream_writer_finish(struct stream_writer *w, stream_done_fn done, void *userdata)
{
	w->finishing = true;
	w->done = done;
	w->done_data = userdata;
	w->waiting = false;
	writer_kick(w);
}

int stream_writer_rest(const struct stream_writer *w, uint8_t **ret_data, size_t *ret_len)
{
	size_t len = 0;
	uint8_t *p;

	for (const struct stream_chunk *c = w->head; c; c = c->next)
		len += c->len - c->off;
	*ret_data = NULL;
	*ret_len = 0;
	if (len == 0)
		return 0;
	p = malloc(len);
	if (!p)
		return -ENOMEM;
	*ret_data = p;
	*ret_len = len;
	for (const struct stream_chunk *c = w->head; c; c = c->next) {
		memcpy(p, c->data + c->off, c->len - c->off);
		p += c->len - c->off;
	}
	return 0;
}

void stream_writer_free(struct stream_writer *w)
{
	if (!w)
		return;
	if (w->in_flight) {
		w->orphaned = true; /* its completion frees it */
		return;
	}
	writer_destroy(w);
}
