#include "names.h"

#include <fnmatch.h>
#include <string.h>
#include <strings.h>

static bool has_suffix_ci(const char *name, const char *suffix)
{
	size_t n = strlen(name), s = strlen(suffix);

	return n > s && strcasecmp(name + n - s, suffix) == 0;
}

bool names_is_candidate_file(const char *name)
{
	static const char *const partial[] = {".part", ".tmp", ".crdownload", ".filepart"};
	/* The API's six formats; those fitted first (fit.h); and camera raws,
	 * Photoshop and PDF files, which are refused by name (not ignored). */
	static const char *const images[] = {
	    ".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif",
	    ".avif", ".jxl", ".cr2", ".cr3", ".crw", ".nef", ".arw", ".dng", ".raf", ".orf",
	    ".rw2", ".x3f", ".psd", ".pdf"};

	if (name[0] == '.' || strncmp(name, "~$", 2) == 0)
		return false; /* hidden, AppleDouble "._x" and Office lock files */
	for (size_t i = 0; i < sizeof(partial) / sizeof(partial[0]); i++)
		if (has_suffix_ci(name, partial[i]))
			return false;
	for (size_t i = 0; i < sizeof(images) / sizeof(images[0]); i++)
		if (has_suffix_ci(name, images[i]))
			return true;
	return false;
}

bool names_is_ignored_dir(const char *name)
{
	static const char *const litter[] = {"@eaDir",   "#recycle",   "#snapshot",
					     "lost+found", "__MACOSX", NULL};

	if (name[0] == '.')
		return true; /* .snapshot, .AppleDouble, .Trashes, .stfolder and the like */
	for (size_t i = 0; litter[i]; i++)
		if (strcmp(name, litter[i]) == 0)
			return true;
	return false;
}

static bool component_matches(const char *rel, const char *glob)
{
	const char *p = rel;

	for (;;) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		char part[256];

		if (len < sizeof(part)) {
			memcpy(part, p, len);
			part[len] = '\0';
			if (fnmatch(glob, part, 0) == 0)
				return true;
		}
		if (!slash)
			return false;
		p = slash + 1;
	}
}

bool names_is_excluded(const char *rel, char *const *globs, size_t n_globs)
{
	for (size_t i = 0; i < n_globs; i++) {
		if (strchr(globs[i], '/')) {
			if (fnmatch(globs[i], rel, FNM_PATHNAME) == 0)
				return true;
		} else if (component_matches(rel, globs[i])) {
			return true;
		}
	}
	return false;
}
