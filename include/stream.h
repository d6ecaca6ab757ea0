/* stream: a file's bytes moved between the loop thread and a worker, so that
 * the loop never reads or writes storage while curl streams a transfer.
 * - A reader reads a file of known size ahead into two buffers on a worker
 *   (hashing it with SHA-256 as it goes); the loop takes what is ready.
 * - A writer keeps bytes in memory on the loop and has a worker write them to
 *   the file in order, one chunk at a time.
 * Each keeps at most one request in the pool at a time; its own descriptor is
 * a dup() of the caller's, closed on a worker, so that the caller may close
 * its own (and the stream may be freed) while a request is still running. A
 * stream is used on the loop thread only; wake(userdata) is called on the loop
 * from a work completion, never from inside a stream call. */
#ifndef SEEDREAMD_STREAM_H
#define SEEDREAMD_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct work_pool;
struct stream_reader;
struct stream_writer;

typedef void (*stream_wake_fn)(void *userdata);
typedef void (*stream_done_fn)(void *userdata);

/* A multiple of 3: base64 groups never straddle two buffers. */
#define STREAM_READ_CHUNK  (3u * 85 * 1024)
#define STREAM_WRITE_CHUNK (256u * 1024)
#define STREAM_WRITE_CAP   (4u * 1024 * 1024)

/* Reads size bytes of fd from offset 0 in chunks of chunk bytes (a multiple
 * of 3), starting at once. -EINVAL, -ENOMEM, -errno of dup(). */
int stream_reader_new(struct work_pool *pool, int fd, uint64_t size, size_t chunk,
		      stream_wake_fn wake, void *userdata, struct stream_reader **ret_reader);

/* The next ready bytes: their count (> 0) with *ret_data, 0 at the end of the
 * file, -EAGAIN when none is ready yet (a read is under way and wake will be
 * called when it is done), -ENODATA when the file came up short of size,
 * -errno of a failed read (sticky until a rewind). */
ssize_t stream_reader_peek(struct stream_reader *r, const uint8_t **ret_data);
void stream_reader_consume(struct stream_reader *r, size_t n); /* n <= what peek gave */

/* Starts again from offset 0; a read under way is discarded when it ends. */
void stream_reader_rewind(struct stream_reader *r);

/* The SHA-256 of the whole file as read, lowercase hex; "" until then. */
const char *stream_reader_sha256(const struct stream_reader *r);

void stream_reader_free(struct stream_reader *r); /* accepts NULL */

/* Writes to fd from its current offset, chunk bytes per request; full()
 * says so once cap bytes wait in memory. -ENOMEM, -errno of dup(). */
int stream_writer_new(struct work_pool *pool, int fd, size_t chunk, size_t cap, stream_wake_fn wake,
		      void *userdata, struct stream_writer **ret_writer);

/* Appends n bytes (kept in memory until a worker wrote them). After a write
 * error they stay in memory (see rest). 0 or -ENOMEM. */
int stream_writer_put(struct stream_writer *w, const void *data, size_t n);

/* Whether cap bytes or more wait: the caller should pause its producer, and
 * wake is called once they are fewer (or a write failed). Never after an
 * error: then nothing drains, and the bytes stay in memory. */
bool stream_writer_full(struct stream_writer *w);

/* 0, or -errno of the first failed write (or of queueing one). */
int stream_writer_error(const struct stream_writer *w);

/* Bytes known to be on the file. */
uint64_t stream_writer_written(const struct stream_writer *w);

/* Writes what is left; done(userdata) once every byte is on the file or a
 * write failed (maybe before finish returns). Nothing may be put afterwards. */
void stream_writer_finish(struct stream_writer *w, stream_done_fn done, void *userdata);

/* The bytes not on the file, in order (a copy for the caller to free; NULL
 * and 0 when none). 0 or -ENOMEM. Meant for after an error, once finished. */
int stream_writer_rest(const struct stream_writer *w, uint8_t **ret_data, size_t *ret_len);

/* Drops what is not written; a request under way finishes unseen. */
void stream_writer_free(struct stream_writer *w); /* accepts NULL */

#endif
