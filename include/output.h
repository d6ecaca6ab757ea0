/* output: safe names, atomic writes (temp name, fsync, rename, fsync dir) and
 * choosing names next to existing sidecars. Never logs; returns negative errno. */
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

/* As output_choose_stem, for a request that may write n_outputs images: a
 * candidate is also taken when a file exists under one of the image names it
 * would write (<cand><ext>, or <cand>-1<ext> .. <cand>-N<ext> when N > 1,
 * any extension output_ext_for gives) and another source's sidecar claims
 * it: "<name>.json", or "<B>.json" listing "<B>-<k><ext>". */
int output_choose_stem_n(int dirfd, const char *stem, const char *source_rel, unsigned n_outputs,
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

/* As output_tmp_commit for an output image "<base><ext>" of source_rel,
 * which never replaces another source's result (a file another source's
 * sidecar claims): when the name is taken, "<base>~2<ext>", "<base>~3<ext>",
 * ... The name used is returned in ret_name. Returns 0 or -errno. */
int output_tmp_commit_image(int dirfd, int fd, const char *tmp_name, const char *base,
			    const char *ext, const char *source_rel, char *ret_name, size_t retlen);

/* Closes fd and removes the temporary file; for errors. */
void output_tmp_abort(int dirfd, int fd, const char *tmp_name);

/* Whether name has the shape output_tmp_open gives: ".<final>.<16 hex>.tmp". */
bool output_is_tmp_name(const char *name);

/* Removes the temporary files an interrupted run left in the tree under root
 * (hidden folders and symlinks are not entered; 64 levels at most). Only one
 * seedreamd may write a tree at a time (see the state_dir lock), so any such
 * file is a leftover. A missing root is not an error. Returns 0 or -errno. */
int output_sweep_tmp(const char *root, size_t *ret_removed);

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

#endif
