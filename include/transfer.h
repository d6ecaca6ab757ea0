/* transfer: the two HTTP exchanges of a job as curl easy handles.
 * - generation: POST <base_url>/images/generations with the JSON body streamed
 *   as prefix + base64(file) + suffix from a read callback (never a whole
 *   base64 copy in memory); a worker reads the file ahead and hashes it with
 *   SHA-256 (stream.h), and the upload pauses while nothing is read yet;
 *   the response body is kept (capped) for api_parse_response(), except the
 *   image of a b64_json answer, which is decoded and handed to a worker that
 *   writes it into a file.
 * - download: GET of the result URL, handed to a worker that writes it into a
 *   temporary file.
 * The loop thread never reads or writes the files: curl pauses while the
 * workers are behind, and the done callback comes once every byte is on the
 * file (or a write failed). */
#ifndef SEEDREAMD_TRANSFER_H
#define SEEDREAMD_TRANSFER_H

#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "b64.h"
#include "http.h"

struct work_pool;
struct stream_reader;
struct stream_writer;

/* The answer as kept in memory: the JSON around the image, never the image. */
#define TRANSFER_JSON_MAX  (4u * 1024 * 1024)
#define TRANSFER_IMAGE_MAX (64u * 1024 * 1024)

/* The image of a b64_json answer, taken out of the body while it streams in:
 * the string value of data[0].b64_json (in the first "data" member) is
 * decoded into fd and left in the body as "", so that api_parse_response()
 * still sees the whole structure (model, usage, errors) in a small body. An
 * image anywhere else (a second data item, an error object) is left alone.
 * The text must be strict base64 (the only escape allowed is "\/"). */
struct transfer_image {
	int fd;                    /* a temporary file; -1: nothing is taken out */
	char tmp_name[300];        /* its name, for the caller */
	bool found;                /* the string was found and taken out */
	bool malformed;            /* its text was not strict base64 */
	bool too_large;            /* over TRANSFER_IMAGE_MAX decoded */
	struct stream_writer *writer; /* on a dup of fd, while the transfer runs */
	uint64_t taken;            /* decoded bytes handed to the writer */
	/* Once the done callback came: */
	int write_errno;
	uint64_t written;          /* decoded bytes in fd; after a write error the
				    * rest is in the writer's memory */
	uint8_t magic[16];
	size_t magic_len;
	/* The scanner: just enough JSON to know where it is. */
	unsigned depth;
	char kind[4];              /* '{' or '[' of the containers at depths 1..3 */
	bool expect_key[4];
	int string;                /* which string is open, if any */
	bool escape;
	char key[12];
	size_t key_len;
	bool key_odd;              /* escaped or too long: matches nothing */
	bool data_seen, data_next, in_data, in_first, b64_seen, b64_next;
	unsigned elem;             /* index in the data array */
	struct b64_stream dec;
};

struct transfer_net {
	const char *ca_file;       /* may be NULL */
	bool allow_insecure_http;  /* plain http beyond loopback */
	bool allow_private;        /* result URLs on loopback or private addresses */
	uint64_t timeout_ms;       /* the whole exchange */
	const char *user_agent;
};

/* What one transfer may reach, checked on every hop (redirects too) before
 * its socket is opened and again on the address actually in use (a reused
 * connection, a name that resolves somewhere else than it did). */
struct transfer_guard {
	CURL *easy;
	bool insecure_ok;          /* plain http beyond loopback */
	bool private_ok;           /* loopback and private addresses */
	bool https;                /* the hop being checked */
	bool refused;              /* the transfer failed because a check said no */
	char why[128];
};

/* An image after the first in the body's "image" array (a reference): sep
 * (the text between two images, ending in "data:image/<fmt>;base64,") then
 * base64(size bytes of fd), read ahead and hashed by a worker like the first
 * file once the body reaches it. */
struct transfer_part {
	char *sep;
	size_t sep_len, sent_sep;
	int fd;
	uint64_t size, off;
	struct stream_reader *reader; /* on a dup of fd, from when the body reaches it */
	char sha256_hex[65];	      /* filled once it has been sent whole */
};

struct transfer_gen {
	CURL *easy;
	struct transfer_guard guard;
	struct curl_slist *headers;
	struct work_pool *pool;
	bool running;              /* started and its done not yet come */
	int paused;                /* CURLPAUSE_SEND/RECV this transfer asked for */
	CURLcode result;
	http_done_fn done;
	void *done_data;
	char *prefix, *suffix;
	size_t prefix_len, suffix_len, sent_prefix, sent_suffix;
	int fd;
	uint64_t file_size, file_off;
	struct stream_reader *reader; /* on a dup of fd */
	bool file_changed;         /* a short or failed read: what was sent is not the file */
	int read_errno;            /* with file_changed: the read's errno, 0 for short */
	char stash[4];             /* one base64 group, when curl offers under 4 bytes */
	size_t stash_len, stash_off;
	char sha256_hex[65];       /* filled once the whole file has been sent */
	char *body;
	size_t body_len, body_cap;
	bool body_too_large;
	struct transfer_image img;
	char request_id[128];
	char retry_after[64];
	struct transfer_part *parts; /* sent after the file, before suffix */
	size_t n_parts, part;	     /* part: the one being sent */
	size_t changed_part;	     /* with file_changed: 0 the file, i + 1 parts[i] */
};

struct transfer_dl {
	CURL *easy;
	struct transfer_guard guard;
	struct stream_writer *writer; /* on a dup of fd */
	bool running;
	int paused;
	CURLcode result;
	http_done_fn done;
	void *done_data;
	int fd;                    /* the temporary output file */
	char tmp_name[300];
	uint64_t written;          /* bytes received (on fd once done came) */
	uint8_t magic[16];
	size_t magic_len;
	bool too_large;
	int write_errno;
};

/* Whether a result URL may be downloaded: http(s); plain http only to
 * loopback unless allow_insecure_http; loopback and private addresses only
 * with allow_private. The transfer checks the same again on every redirect
 * and on the address it connects to. */
bool transfer_url_allowed(const char *url, const struct transfer_net *net);

/* Sets up g (zeroed by the caller, img.fd set when a b64_json image is to be
 * decoded into that file) to post to url with the given framing around fd's
 * content of file_size bytes; pool's workers read fd (starting now) and
 * write img.fd. Takes ownership of prefix, suffix and fd. auth_header is
 * "Authorization: Bearer ..." (copied by curl). A redirect is never
 * followed: it would send the paid request again (307, 308) or turn it into
 * a GET elsewhere (301-303); the caller sees the 3xx. */
int transfer_gen_setup(struct transfer_gen *g, const char *url, const char *auth_header,
		       char *prefix, char *suffix, int fd, uint64_t file_size,
		       const struct transfer_net *net, struct work_pool *pool);
/* Before transfer_gen_setup: one more image after the file (and the parts
 * added before it). Takes ownership of sep and fd (also on failure: -ENOMEM). */
int transfer_gen_add_part(struct transfer_gen *g, char *sep, int fd, uint64_t size);

/* Frees all, closes fd and img.fd; worker requests under way finish unseen. */
void transfer_gen_clear(struct transfer_gen *g);

/* Runs g on http; done(easy, result, userdata) comes once the answer is in
 * and the image (if any) is on img.fd or failed to be written (img.write_errno,
 * img.written). request_id and retry_after are filled by then. */
int transfer_gen_start(struct transfer_gen *g, struct http *http, http_done_fn done,
		       void *userdata);

/* The body's next bytes, at most room (curl's read callback; tests call it
 * directly). 0 at the end, CURL_READFUNC_PAUSE while the worker has not read
 * them yet (its completion resumes the transfer), CURL_READFUNC_ABORT when
 * the file shrank or could not be read (file_changed). */
size_t transfer_gen_fill(struct transfer_gen *g, char *buf, size_t room);

/* curl's seek callback (tests call it directly): only a rewind to 0. */
int transfer_gen_seek(void *userdata, curl_off_t offset, int origin);

/* Takes the next n bytes of the answer (curl's write callback; tests call it
 * directly): keeps them in body, or decodes them for img.fd. Returns n,
 * CURL_WRITEFUNC_PAUSE while too much waits for the disk, or 0 to abort (the
 * kept JSON or the image too large, out of memory). */
size_t transfer_gen_take(struct transfer_gen *g, const char *data, size_t n);

/* The end of the exchange (what transfer_gen_start runs when curl is done;
 * tests call it directly): done(g->easy, result, userdata) once the image's
 * bytes are written, or could not be. */
void transfer_gen_finish(struct transfer_gen *g, CURLcode result, http_done_fn done,
			 void *userdata);

/* The image as base64 text (NUL-terminated, caller frees), from what reached
 * img.fd and the rest kept in memory after a write error: a paid image is
 * never dropped for a disk error. 0, -ENOMEM or -errno of reading it back.
 * After the done callback. */
int transfer_image_text(struct transfer_gen *g, char **ret_text);

/* Sets up d (zeroed, fd set: the already open temporary file, owned by the
 * caller) to download url into it through pool's workers. */
int transfer_dl_setup(struct transfer_dl *d, const char *url, const struct transfer_net *net,
		      struct work_pool *pool);
/* The easy handle and the writer; a write under way finishes unseen. */
void transfer_dl_clear(struct transfer_dl *d);

/* Runs d on http; done comes once every byte is on fd, or with
 * CURLE_WRITE_ERROR and write_errno when a write failed. */
int transfer_dl_start(struct transfer_dl *d, struct http *http, http_done_fn done, void *userdata);

/* curl's write callback and end of a download (tests call them directly). */
size_t transfer_dl_take(struct transfer_dl *d, const char *data, size_t n);
void transfer_dl_finish(struct transfer_dl *d, CURLcode result, http_done_fn done, void *userdata);

#endif
