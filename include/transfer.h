/* transfer: the two HTTP exchanges of a job as curl easy handles.
 * - generation: POST <base_url>/images/generations with the JSON body streamed
 *   as prefix + base64(file) + suffix from a read callback (never a whole
 *   base64 copy in memory), hashing the file with SHA-256 in the same pass;
 *   the response body is kept (capped) for api_parse_response(), except the
 *   image of a b64_json answer, which is decoded into a file as it arrives.
 * - download: GET of the result URL straight into a temporary file. */
#ifndef SEEDREAMD_TRANSFER_H
#define SEEDREAMD_TRANSFER_H

#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "b64.h"

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
	int write_errno;
	uint64_t written;          /* decoded bytes in fd */
	uint8_t *spill;            /* after a write error, the rest, in memory */
	size_t spill_len, spill_cap;
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

struct transfer_gen {
	CURL *easy;
	struct transfer_guard guard;
	struct curl_slist *headers;
	char *prefix, *suffix;
	size_t prefix_len, suffix_len, sent_prefix, sent_suffix;
	int fd;
	uint64_t file_size, file_off;
	bool file_changed;         /* a short read: the file shrank under us */
	char stash[4];             /* one base64 group, when curl offers under 4 bytes */
	size_t stash_len, stash_off;
	EVP_MD_CTX *sha;
	char sha256_hex[65];       /* filled once the whole file has been sent */
	char *body;
	size_t body_len, body_cap;
	bool body_too_large;
	struct transfer_image img;
	char request_id[128];
	char retry_after[64];
};

struct transfer_dl {
	CURL *easy;
	struct transfer_guard guard;
	int fd;                    /* the temporary output file */
	char tmp_name[300];
	uint64_t written;
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

/* Sets up g (zeroed by the caller) to post to url with the given framing
 * around fd's content of file_size bytes. Takes ownership of prefix, suffix
 * and fd. auth_header is "Authorization: Bearer ..." (copied by curl). A
 * redirect is never followed: it would send the paid request again (307,
 * 308) or turn it into a GET elsewhere (301-303); the caller sees the 3xx. */
int transfer_gen_setup(struct transfer_gen *g, const char *url, const char *auth_header,
		       char *prefix, char *suffix, int fd, uint64_t file_size,
		       const struct transfer_net *net);
void transfer_gen_clear(struct transfer_gen *g); /* frees all, closes fd and img.fd */

/* The body's next bytes, at most room (curl's read callback; tests call it
 * directly). 0 at the end, CURL_READFUNC_ABORT when the file shrank. */
size_t transfer_gen_fill(struct transfer_gen *g, char *buf, size_t room);

/* Takes the next n bytes of the answer (curl's write callback; tests call it
 * directly): keeps them in body, or decodes them into img.fd. Returns n, or 0
 * to abort (the kept JSON or the image too large, out of memory). */
size_t transfer_gen_take(struct transfer_gen *g, const char *data, size_t n);

/* The image as base64 text (NUL-terminated, caller frees), from what reached
 * img.fd and the rest kept in memory after a write error: a paid image is
 * never dropped for a disk error. 0, -ENOMEM or -errno of reading it back. */
int transfer_image_text(struct transfer_gen *g, char **ret_text);

/* Sets up d (zeroed) to download url into the already open temporary file fd
 * (owned by the caller). */
int transfer_dl_setup(struct transfer_dl *d, const char *url, const struct transfer_net *net);
void transfer_dl_clear(struct transfer_dl *d); /* the easy handle only */

/* SHA-256 of a whole file descriptor from offset 0, as lowercase hex. */
int transfer_sha256_fd(int fd, char hex[65]);

#endif
