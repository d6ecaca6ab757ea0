/* libFuzzer: the journal record parser, on files anyone who can write to
 * state_dir/journal can plant. A record that parses is written again by
 * journal_record_json: valid UTF-8, parsed back to the same folder, source,
 * stem and URL.
 *
 * Input: the record's bytes. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clean.h"
#include "journal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct journal_record rec, again;
	char *text;

	/* The exact bytes, no NUL after them: reads past the end are caught. */
	if (journal_record_parse((const char *)data, size, &rec) < 0)
		return 0;
	if (!rec.folder || !rec.source || !rec.stem || !rec.url || !rec.stem[0] ||
	    strchr(rec.stem, '/') || rec.stem[0] == '.')
		abort();
	text = journal_record_json(&rec);
	if (text) {
		if (!clean_utf8_valid(text))
			abort();
		if (journal_record_parse(text, strlen(text), &again) < 0)
			abort();
		/* Names are exact (hex when not UTF-8); other text may turn lossy. */
		if (strcmp(again.folder, rec.folder) != 0 ||
		    strcmp(again.source, rec.source) != 0 ||
		    (clean_utf8_valid(rec.stem) && strcmp(again.stem, rec.stem) != 0) ||
		    (clean_utf8_valid(rec.url) && strcmp(again.url, rec.url) != 0))
			abort();
		journal_record_clear(&again);
		free(text);
	}
	journal_record_clear(&rec);
	return 0;
}
