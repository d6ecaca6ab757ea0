/* names: which directory entries are work and which are litter. Pure. */
#ifndef SEEDREAMD_NAMES_H
#define SEEDREAMD_NAMES_H

#include <stdbool.h>
#include <stddef.h>

/* A file name that may be an input: not hidden, not a temporary or partial
 * download name (*.part, *.tmp, *.crdownload, *.filepart, ~$*, ._*), and with
 * an image extension (.jpg .jpeg .png .webp .bmp .tif .tiff .gif; .heic .heif
 * .avif .jxl, fitted; camera raws .cr2 .cr3 .crw .nef .arw .dng .raf .orf .rw2
 * .x3f, .psd and .pdf, refused by name; any case). */
bool names_is_candidate_file(const char *name);

/* A directory never descended into: hidden ones and NAS/OS litter (@eaDir,
 * #recycle, #snapshot, .snapshot, .AppleDouble, .Trashes, lost+found,
 * .stfolder, __MACOSX). */
bool names_is_ignored_dir(const char *name);

/* Whether a path relative to the watched folder matches one of the globs
 * (fnmatch with FNM_PATHNAME; a glob without '/' is matched against every
 * component of the path, so "raw" or "*.tmp.png" work at any depth). */
bool names_is_excluded(const char *rel, char *const *globs, size_t n_globs);

#endif
