/* output: safe names, atomic writes (temp name, fsync, rename, fsync dir) and
 * the sidecar JSON documents. Never logs; returns negative errno. */
#ifndef SEEDREAMD_OUTPUT_H
#define SEEDREAMD_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "image.h"

/* A stem never exceeds this many bytes, so stem + "-9999" + ".error.json" and
 * the temporary-name decoration stay well inside NAME_MAX (255). */
#define OUTPUT_STEM_MAX 200
#define OUTPUT_NAME_MAX 256

/* The largest sidecar, error sidecar or journal record that is read back;
 * one limit for writers and readers. Whatever a server sends is bounded
 * (api.h's API_*_MAX) so that the largest record written stays well inside
 * it; a record that could not be read back would be paid for again. */
#define OUTPUT_RECORD_MAX (1024 * 1024)

/* Derives a safe stem from a source file name (a basename, no '/'): drops the
 * last extension; replaces control bytes (< 0x20, 0x7f), invalid UTF-8 and '/'
 * with '_'; a leading '.' becomes '_' (so "..", "." and hidden names cannot
 * arise); cuts at a UTF-8 character boundary to OUTPUT_STEM_MAX bytes; an
 * empty result becomes "_". out must hold OUTPUT_STEM_MAX + 1 bytes.
 * Returns 0 or -EINVAL (NULL name). */
int output_safe_stem(const char *filename, char *out, size_t outlen);

/* Extension for an output image, from its magic bytes: ".jpeg", ".png",
 * ".webp", ".bmp", ".tiff", ".gif"; ".bin" for unknown. */
const char *output_ext_for(enum image_format format);

/* Picks the stem under which `source_rel` will be written in the folder
 * dirfd: `stem`, then "stem-2", "stem-3", ... up to "-9999". A candidate is
 * free when neither "<cand>.json" nor "<cand>.error.json" exists there, or
 * the one that exists records "source" == source_rel (the same source's
 * earlier result, which will be replaced), and when `reserved` (may be NULL)
 * says no other in-flight job holds it. Returns 0 with the stem in ret, or
 * -EEXIST when all are taken, or another -errno. */
int output_choose_stem(int dirfd, const char *stem, const char *source_rel,
		       bool (*reserved)(const char *candidate, void *userdata), void *userdata,
		       char *ret, size_t retlen);

/* Opens a new temporary file in dirfd for final_name: a hidden name
 * ".<final_name>.<random>.tmp", O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, mode 0644
 * (read back to check a result before it is committed).
 * Returns the fd (>= 0) and the name in ret_tmp, or -errno. */
int output_tmp_open(int dirfd, const char *final_name, char *ret_tmp, size_t tmplen);

/* fsync(fd), close(fd), renameat into final_name, output_sync_dir(dirfd)
 * (thread-safe: shared with concurrent commits in the same folder). On any error
 * the temporary file is removed. fd is closed in every case. Returns 0 or -errno. */
int output_tmp_commit(int dirfd, int fd, const char *tmp_name, const char *final_name);

/* Closes fd and removes the temporary file; for errors. */
void output_tmp_abort(int dirfd, int fd, const char *tmp_name);

/* Whether name has the shape output_tmp_open gives: ".<final>.<16 hex>.tmp". */
bool output_is_tmp_name(const char *name);

/* Removes the temporary files an interrupted run left in the tree under root
 * (hidden folders and symlinks are not entered; 64 levels at most). Only one
 * seedreamd may write a tree at a time (see the state_dir lock), so any such
 * file is a leftover. A missing root is not an error. Returns 0 or -errno. */
int output_sweep_tmp(const char *root, size_t *ret_removed);

/* Reads a whole regular file of at most max bytes from fd (its offset) into
 * a NUL-terminated buffer the caller frees. 0, -EINVAL (not a regular
 * file), -EFBIG, -ENOMEM or -errno. */
int output_read_fd(int fd, size_t max, char **ret_buf, size_t *ret_len);

/* mkdir -p of an absolute path; new folders get mode and are fsync'd into
 * their parent. Remembers the path (thread-safe): the next call for it costs
 * one stat instead of a mkdir per component. 0 or -errno. */
int output_mkdir_parents(const char *path, mode_t mode);
/* Opens the directory path (O_RDONLY|O_DIRECTORY), creating it as above
 * unless it is known; one open and no other call when known. When it is gone
 * (ENOENT) it is forgotten and made again once. The fd, or -errno. */
int output_mkdir_open(const char *path, mode_t mode);
/* Forgets path and every known folder under it: call when an open or write in
 * it failed with ENOENT (someone removed it). */
void output_mkdir_forget(const char *path);
/* mkdir(2) calls made by output_mkdir_parents so far (tests, figures). */
unsigned long output_mkdir_count(void);

/* fsync of the directory dirfd (an O_PATH one too), shared between threads:
 * a caller whose rename happened before a sync of that directory started is
 * covered by it and returns with its result; others wait for or start the
 * next one. Thread-safe. 0 or -errno. */
int output_sync_dir(int dirfd);
/* Directory fsyncs made by output_sync_dir so far (tests, figures). */
unsigned long output_dir_sync_count(void);
/* Tests: sleep this long before each directory fsync, as a NAS would take. */
void output_test_set_sync_delay(unsigned usec);

/* Writes data under final_name atomically (the three calls above). */
int output_write_atomic(int dirfd, const char *final_name, const void *data, size_t len);

/* "2026-11-24T15:16:54Z" for whole seconds; with nsec >= 0,
 * "2026-11-24T15:16:54.123456789Z". Returns 0 or -EINVAL. */
int output_rfc3339(int64_t sec, long nsec, char *buf, size_t len);

/* Parses what output_rfc3339 writes (UTC 'Z' only, optional 1..9 fraction
 * digits). Returns 0 or -EINVAL. */
int output_parse_rfc3339(const char *text, int64_t *ret_sec, long *ret_nsec);

struct sidecar_source {
	const char *source;       /* relative to the watched folder */
	const char *sha256_hex;   /* 64 lowercase hex digits */
	uint64_t size;
	int64_t mtime_sec;
	long mtime_nsec;
};

/* What was sent instead of the source, when it was converted first. */
struct sidecar_fitted {
	const char *from;	     /* "HEIF 4032x3024 orientation 6" */
	const char *to;		     /* "JPEG 3024x4032" */
	const char *const *reasons;  /* "format", "orientation", ... */
	size_t n_reasons;
	uint64_t bytes_sent;
};

struct sidecar_success {
	struct sidecar_source src;
	const char *output;       /* output file name, relative to the output folder */
	const char *model;
	const char *prompt;
	const char *size;         /* the size requested */
	const char *result_size;  /* data[0].size, may be NULL */
	bool watermark;
	const char *response_format;
	int64_t created;          /* from the API */
	const cJSON *usage;       /* verbatim, may be NULL (written as null) */
	const char *request_id;   /* may be NULL (written as null) */
	unsigned attempts;
	uint64_t elapsed_ms;
	int64_t completed_at;     /* epoch seconds */
	const char *version;      /* seedreamd_version */
	const char *reused_from;  /* NULL, or the source whose paid result was reused */
	const struct sidecar_fitted *fitted; /* NULL, or how the source was converted */
};

struct sidecar_error {
	struct sidecar_source src;
	long http_status;         /* 0 when no HTTP exchange happened (written as null) */
	const char *code;
	const char *message;
	const char *request_id;   /* may be NULL */
	unsigned attempts;        /* API calls made (0 for local validation) */
	int64_t failed_at;        /* epoch seconds */
	const char *version;
};

/* The exact source name a sidecar records: "source_hex" decoded when present
 * (names that are not valid UTF-8 are written that way), else "source".
 * Caller frees; NULL when absent, malformed or out of memory. */
char *output_sidecar_source(const cJSON *root);

/* The same for any name member: adds key (and "<key>_hex" when name is not
 * valid UTF-8; NULL is written as null), and reads it back. Adding returns
 * false only when out of memory; reading as output_sidecar_source. */
bool output_json_add_name(cJSON *obj, const char *key, const char *name);
char *output_json_name(const cJSON *root, const char *key);

/* Sidecar documents, pretty-printed, NUL-terminated, newline at the end;
 * caller frees. NULL only when out of memory. Fields: source (and source_hex
 * when the name is not valid UTF-8; likewise output), source_sha256,
 * source_size, source_mtime (RFC 3339 with nanoseconds), and for success:
 * output, model, prompt, size, result_size, watermark, response_format,
 * created, usage, request_id, attempts, elapsed_ms, completed_at (RFC 3339),
 * seedreamd_version, reused_from (only when set), fitted {from, to, reasons,
 * bytes_sent} (only when set); for errors: error {http_status, code, message},
 * request_id, attempts, failed_at, seedreamd_version. */
char *output_sidecar_json(const struct sidecar_success *s);
char *output_error_json(const struct sidecar_error *e);

#endif
