/* api: the Seedream request and response, as pure functions over strings
 * (cJSON). No I/O: unit tests and fuzzers drive it with plain buffers. */
#ifndef SEEDREAMD_API_H
#define SEEDREAMD_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

struct api_request {
	const char *model;
	const char *prompt;
	const char *size;
	bool watermark;
	const char *response_format; /* "url" | "b64_json" */
	const char *image_format;    /* lowercase, from image_format_name() */
	const char *extra_json;      /* NULL, or a JSON object of more fields (config extra:) */
	unsigned max_images;         /* > 1: sequential generation of up to this many; 0/1: off */
};

/* The request body is streamed as prefix + base64(image) + suffix, so no
 * whole base64 copy of the image is ever held. The prefix ends inside the
 * "image" string right after "data:image/<fmt>;base64," and the suffix starts
 * with the closing quote. Both are NUL-terminated and owned by the caller
 * (free()). The members of extra_json follow the fields above; one that
 * names a field already there, or text that is not a JSON object, is
 * -EINVAL. Returns 0 or -ENOMEM / -EINVAL. */
int api_request_frame(const struct api_request *req, char **ret_prefix, char **ret_suffix);

/* The same for an "image" array: the request's image first, then n_more
 * images of more_formats (references), each streamed after its separator:
 * prefix + base64(image) + seps[0] + base64(more 0) + ... + suffix. The
 * prefix ends right after the first "data:image/<fmt>;base64," inside
 * `"image":["`, each separator is `","data:image/<fmt>;base64,` and the
 * suffix starts with `"],`. With n_more == 0 it is api_request_frame's
 * body exactly (a string, not an array) and *ret_seps is NULL. The caller
 * frees prefix, suffix, each separator and the array. 0, -ENOMEM, -EINVAL. */
int api_request_frame_images(const struct api_request *req, const char *const *more_formats,
			     size_t n_more, char **ret_prefix, char ***ret_seps, char **ret_suffix);

/* What the daemon should do with a response. */
enum api_outcome {
	API_OUTCOME_OK = 0,    /* an image (url or b64_json) is in the result */
	API_OUTCOME_FILE_FAIL, /* this file fails for good: 400s, content rejected */
	API_OUTCOME_RETRY,     /* back off and try again: 5xx, 429 rate/overload, garbled body */
	API_OUTCOME_PAUSE,     /* account or configuration: 401, 403, 404, quota */
};

/* Caps on what a server sends, in bytes of UTF-8 (see api_parse_response).
 * Together they keep every sidecar and journal record well inside
 * SIDECAR_RECORD_MAX, so what was paid for is always read back. */
#define API_CODE_MAX	    128
#define API_MESSAGE_MAX	    4096
#define API_MODEL_MAX	    256
#define API_SIZE_MAX	    64
#define API_REQUEST_ID_MAX  127
#define API_URL_MAX	    16384 /* longer is an error, never cut */
#define API_USAGE_MAX	    4096  /* usage serialised without spaces */
#define API_USAGE_DEPTH_MAX 4     /* {"a":{"b":1}} is 2 */
#define API_USAGE_KEEP_MAX  32    /* top-level numbers kept of an oversized usage */
#define API_USAGE_NAME_MAX  64
#define API_CREATED_MAX	    9000000000000000LL /* what journal_record_parse accepts */

/* The most data[] entries kept from one answer: the API's own limit on
 * outputs. More is a server we do not understand (MalformedResponse). */
#define API_IMAGES_MAX 15

/* One entry of data[]: an image (url or b64_json) or its own error. */
struct api_image {
	char *url;	     /* or NULL */
	char *b64_json;	     /* or NULL; NULL also once taken over (job fetch) */
	bool b64_streamed;   /* data[0] only: taken out as it arrived */
	char *size;	     /* or NULL */
	char *error_code;    /* set when this image failed inside a successful answer */
	char *error_message;
};

struct api_result {
	enum api_outcome outcome;
	long http_status;
	char *error_code;    /* API code, or a local one such as "MalformedResponse" */
	char *error_message;
	char *url;           /* data[0].url, or NULL */
	char *b64_json;      /* data[0].b64_json, or NULL */
	bool b64_streamed;   /* instead, it was taken out as it arrived (api_parse_streamed) */
	char *size;          /* data[0].size, or NULL */
	char *model;         /* top-level model, or NULL */
	int64_t created;     /* top-level created, 0 if absent */
	cJSON *usage;        /* the usage object, detached and owned; NULL if absent */
	int64_t generated_images; /* usage.generated_images, -1 if absent */
	/* Every data[] entry in order (also the one copied into url/b64_json/size
	 * above, which is the first that succeeded). n_images is 0 for a result
	 * that is not OK. */
	struct api_image *images;
	size_t n_images;
	size_t n_ok; /* entries with an image */
};

/* The images a successful answer holds: usage.generated_images when the
 * server said so, else the data[] entries with an image. */
uint64_t api_result_image_count(const struct api_result *result);

/* The images counted (and priced) for a successful answer to a request that
 * asked for up to `asked` (0 counts as 1): api_result_image_count, but never
 * more than asked nor API_IMAGES_MAX. A server claiming more (a hostile
 * generated_images such as 2^49) must not inflate or wrap the counts; the
 * claim itself stays verbatim in usage. */
uint64_t api_result_images_counted(const struct api_result *result, unsigned asked);

/* Parses a complete response body for a given HTTP status and classifies it.
 * An "error" object is honoured even with HTTP 200, and so is data[i].error
 * when no data[] entry holds an image; when some do (sequential generation),
 * the failed ones are kept in images[] with their error and the answer is OK.
 * A 200 without data[0].url or data[0].b64_json is RETRY with code
 * "MalformedResponse".
 *
 * Every string kept is cleaned (clean_text: secret, which may be NULL,
 * replaced by "[redacted]", invalid UTF-8 made U+FFFD) and capped at the
 * API_*_MAX above; usage is cleaned recursively and bounded by
 * api_bound_usage. A result URL that is longer than API_URL_MAX, is not
 * printable ASCII or contains the secret is not cut or changed: the answer
 * is FILE_FAIL with code "UnusableResultURL". A "created" outside 0..API_CREATED_MAX is
 * taken as absent. Returns 0 (the result is always filled), or -ENOMEM. */
int api_parse_response(long http_status, const char *body, size_t len, const char *secret,
		       struct api_result *ret_result);

/* The same for a body from which the caller took the string of
 * data[0].b64_json out while it arrived (transfer_gen_take), when b64_taken:
 * the "" left in its place stands for the image, and sets b64_streamed. */
int api_parse_streamed(long http_status, const char *body, size_t len, bool b64_taken,
		       const char *secret, struct api_result *ret_result);

/* Cleans *usage in place (clean_json) and, when it is nested deeper than
 * API_USAGE_DEPTH_MAX or longer than API_USAGE_MAX serialised, replaces it
 * by a summary: its first API_USAGE_KEEP_MAX top-level numeric members whose
 * names fit API_USAGE_NAME_MAX, plus "truncated": true. A NULL *usage stays
 * NULL. 0 or -ENOMEM (then *usage is unchanged or already freed and NULL). */
int api_bound_usage(cJSON **usage, const char *secret);

/* Classifies an HTTP status and an API error code (either may be 0/NULL). */
enum api_outcome api_classify(long http_status, const char *code);

/* Frees images[] only (n_images and n_ok become 0). */
void api_result_clear_images(struct api_result *result);

/* Frees the members, accepts a zeroed or NULL result. */
void api_result_clear(struct api_result *result);

/* Parses a Retry-After header value (delta-seconds or an HTTP date relative
 * to `now`); returns milliseconds, or -1 if absent or unparseable. */
int64_t api_parse_retry_after(const char *value, int64_t now);

#endif
