/* sidecar: the one place that knows the sidecar JSON schema (the "done"
 * record next to each output), both writing and reading it; the journal
 * record shares its field names and name/number/time encodings. Never logs;
 * returns negative errno. */
#ifndef SEEDREAMD_SIDECAR_H
#define SEEDREAMD_SIDECAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* The largest sidecar, error sidecar or journal record that is read back;
 * one limit for writers and readers. Whatever a server sends is bounded
 * (api.h's API_*_MAX) so that the largest record written stays well inside
 * it; a record that could not be read back would be paid for again. */
#define SIDECAR_RECORD_MAX (1024 * 1024)

/* Field names shared by sidecars and journal records. */
#define SIDECAR_SOURCE	    "source"
#define SIDECAR_SHA256	    "source_sha256"
#define SIDECAR_SIZE	    "source_size"
#define SIDECAR_MTIME	    "source_mtime"
#define SIDECAR_OUTPUT	    "output"
#define SIDECAR_MODEL	    "model"
#define SIDECAR_RESULT_SIZE "result_size"
#define SIDECAR_REQUEST_ID  "request_id"
#define SIDECAR_CREATED	    "created"
#define SIDECAR_USAGE	    "usage"
#define SIDECAR_ATTEMPTS    "attempts"
#define SIDECAR_ELAPSED_MS  "elapsed_ms"
#define SIDECAR_IMAGES_PAID "images_paid"
#define SIDECAR_PAID_AT	    "paid_at"

/* What was sent instead of the source, when it was converted first. */
struct sidecar_fitted {
	const char *from;	    /* "HEIF 4032x3024 orientation 6" */
	const char *to;		    /* "JPEG 3024x4032" */
	const char *const *reasons; /* "format", "orientation", ... */
	size_t n_reasons;
	uint64_t bytes_sent;
};

struct sidecar_source {
	const char *source;	/* relative to the watched folder */
	const char *sha256_hex; /* 64 lowercase hex digits */
	uint64_t size;
	int64_t mtime_sec;
	long mtime_nsec;
	/* A group's image converted first: written as its "fitted" in
	 * "sources" (NULL: sent as it is; unused for the top-level source). */
	const struct sidecar_fitted *fitted;
};

/* A reference image sent after the source (references:). */
struct sidecar_reference {
	const char *path;	/* absolute */
	const char *sha256_hex; /* of the bytes sent; NULL when unknown (written as null) */
};

struct sidecar_success {
	struct sidecar_source src;
	const char *output; /* output file name, relative to the output folder */
	const char *model;
	const char *prompt;
	const char *size;	 /* the size requested */
	const char *result_size; /* data[0].size, may be NULL */
	bool watermark;
	const char *response_format;
	int64_t created;	/* from the API */
	const cJSON *usage;	/* verbatim, may be NULL (written as null) */
	const char *request_id; /* may be NULL (written as null) */
	unsigned attempts;
	uint64_t elapsed_ms;
	int64_t completed_at;		     /* epoch seconds */
	int64_t paid_at;		     /* its answer's, epoch seconds; 0: not written */
	const char *version;		     /* seedreamd_version */
	const char *reused_from;	     /* NULL, or the source whose paid result was reused */
	const struct sidecar_fitted *fitted; /* NULL, or how the source was converted */
	const char *provenance;		     /* NULL, or "xmp" / why there is none (xmp.h) */
	const char *prompt_source;	     /* NULL, or "folder" | "file" | "folder+file" */
	const char *prompt_file;	     /* NULL, or the prompt file, relative like source */
	const char *extra_json;		     /* NULL, or the extra: fields sent (a JSON object) */
	/* Several outputs (max_images > 1): NULL, or the array written as
	 * "outputs" ([{"index","output","size"} | {"index","error":{code,message}}],
	 * in data[] order); output above is then the first, for old readers. */
	const cJSON *outputs;
	unsigned max_images; /* written when > 1 */
	const struct sidecar_reference *references; /* sent after the source, in order */
	size_t n_references;			    /* 0: no "references" member */
	/* A group's images in the order sent (source is then the subfolder);
	 * written as "sources": [{name, sha256, size, mtime}], name relative to
	 * the subfolder. */
	const struct sidecar_source *sources;
	size_t n_sources; /* 0: no "sources" member */
};

struct sidecar_error {
	struct sidecar_source src;
	long http_status; /* 0 when no HTTP exchange happened (written as null) */
	const char *code;
	const char *message;
	const char *request_id; /* may be NULL */
	unsigned attempts;	/* API calls made (0 for local validation) */
	int64_t failed_at;	/* epoch seconds */
	const char *version;
	const char *model; /* NULL (not written), or the model of the request */
	/* A failure after a paid answer (images made that could not be had):
	 * what was paid, counted like a success's, so that a restart counts it
	 * against today's limits and cost. 0: nothing paid, neither written. */
	unsigned images_paid; /* written as "images_paid", with "usage" */
	const cJSON *usage;   /* verbatim, may be NULL (written as null) */
	unsigned max_images;  /* written when > 1 */
	int64_t paid_at;      /* with images_paid: when, epoch seconds (0: not written) */
};

/* Sidecar documents, pretty-printed, NUL-terminated, newline at the end;
 * caller frees. NULL only when out of memory. Fields: source (and source_hex
 * when the name is not valid UTF-8; likewise output), source_sha256,
 * source_size, source_mtime (RFC 3339 with nanoseconds), and for success:
 * output, model, prompt, size, result_size, watermark, response_format,
 * created, usage, request_id, attempts, elapsed_ms, completed_at (RFC 3339),
 * paid_at (RFC 3339, when its answer was paid; only when set),
 * seedreamd_version, reused_from (only when set), fitted {from, to, reasons,
 * bytes_sent} (only when set), provenance, prompt_source, prompt_file, extra
 * (each only when set), max_images and outputs (several outputs), references
 * [{path, sha256}] and sources [{name, sha256, size, mtime, fitted}] (only when
 * some); for errors: error {http_status, code, message}, request_id,
 * attempts, failed_at, seedreamd_version, model (when set), and after a paid
 * answer images_paid, usage, paid_at (when set) and max_images (when > 1). */
char *sidecar_success_json(const struct sidecar_success *s);
char *sidecar_error_json(const struct sidecar_error *e);
/* The sidecar text doc (as sidecar_success_json made it) with the output
 * old_rel renamed to new_rel, wherever it is listed; NULL when out of memory. */
char *sidecar_rename_output(const char *doc, const char *old_rel, const char *new_rel);

/* A sidecar as read back. */
struct sidecar_doc {
	char *source;	 /* exact (decoded from source_hex when present) */
	char sha256[65]; /* lowercase; "" if unknown */
	uint64_t size;
	int64_t mtime_sec;
	long mtime_nsec;
	bool failed;		  /* an .error.json */
	int64_t finished_at;	  /* completed_at or failed_at, epoch seconds; 0 if null */
	int64_t paid_at;	  /* "paid_at", epoch seconds; 0 if absent */
	int64_t generated_images; /* usage.generated_images, else the outputs written, at most
				   * max_images (a relay without usage), 0 if neither; for
				   * an .error.json its images_paid (0: nothing paid) */
	char *model;		  /* "model", bounded like a server's; NULL if absent */
	bool reused;		  /* a success with reused_from: nothing was paid for it
				   * (generated_images is the earlier answer's) */

	/* Only from sidecar_parse_reuse: what a reuse carries over, bounded like a
	 * server's answer (a planted file may hold anything), so the sidecar
	 * written from it can always be read back. NULL when absent. */
	char *output; /* never holds ".." (the reuse opens it) */
	char *prompt;
	char *size_requested; /* "size" */
	bool watermark;
	char *result_size;
	char *response_format;
	char *request_id;
	int64_t created; /* 0 if absent */
	cJSON *usage;	 /* bounded (api_bound_usage); NULL if absent */
	char *provenance;    /* NULL if absent */
	char *prompt_source; /* NULL if absent */
	char *prompt_file;   /* NULL if absent */
	char *extra_json;    /* "extra" printed unformatted; NULL if absent */
};

/* Parses a success or error sidecar (the fields above the blank line).
 * 0, -EINVAL when the text is not a seedreamd sidecar, or -ENOMEM. */
int sidecar_parse(const char *json, size_t len, struct sidecar_doc *ret_doc);
/* sidecar_parse, and for a success sidecar the fields a reuse needs:
 * -EINVAL also for an error sidecar, a sidecar of several outputs (a reuse
 * links one output: a copy of such a source is generated anew), or when output, prompt, size or
 * watermark is missing, or output is not valid UTF-8 (output_hex) or holds "..". */
int sidecar_parse_reuse(const char *json, size_t len, struct sidecar_doc *ret_doc);
void sidecar_doc_clear(struct sidecar_doc *doc); /* frees members; accepts NULL */
/* Whether a success sidecar lists exactly these references (path and
 * sha256, in order; none when it has no "references"): a result made with
 * other references is not the one this file would get. */
bool sidecar_references_equal(const char *json, size_t len, const struct sidecar_reference *refs,
			      size_t n);
/* Whether a sidecar's "sources" are exactly these, by name, size and mtime
 * (not sha256: a listing has none), in order. False without "sources". */
bool sidecar_sources_equal(const char *json, size_t len, const struct sidecar_source *srcs,
			   size_t n);

/* Names on disk need not be UTF-8, JSON text must be: a name that is not
 * valid UTF-8 is written readable (U+FFFD for bad bytes) under key, and
 * exactly, as hex, under "<key>_hex"; NULL is written as null. Returns false
 * only when out of memory. */
bool sidecar_add_name(cJSON *obj, const char *key, const char *name);
/* Reads such a name back exactly: "<key>_hex" decoded when present, else key.
 * Caller frees; NULL when absent, malformed or out of memory. */
char *sidecar_get_name(const cJSON *obj, const char *key);

/* A string member, made valid UTF-8 (U+FFFD for bad bytes); NULL is written
 * as null. False only when out of memory. */
bool sidecar_add_string(cJSON *obj, const char *key, const char *value);
/* A copy of a string member into *ret (NULL when absent or not a string).
 * 0, -EINVAL when required and absent, or -ENOMEM. */
int sidecar_dup_string(const cJSON *obj, const char *key, bool required, char **ret);
/* A number member in [0, max] (false for NaN, absent or another type). */
bool sidecar_get_number(const cJSON *obj, const char *key, double max, double *ret);

/* "2026-11-24T15:16:54Z" for whole seconds; with nsec >= 0,
 * "2026-11-24T15:16:54.123456789Z". Returns 0 or -EINVAL. */
int sidecar_format_time(int64_t sec, long nsec, char *buf, size_t len);
/* Parses what sidecar_format_time writes (UTC 'Z' only, optional 1..9
 * fraction digits). Returns 0 or -EINVAL. */
int sidecar_parse_time(const char *text, int64_t *ret_sec, long *ret_nsec);

#endif
