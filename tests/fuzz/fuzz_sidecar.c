/* libFuzzer: the sidecar readers (index_parse_sidecar, sidecar_parse_reuse,
 * sidecar_get_name) on files anyone who can write to an output folder can
 * plant; and what a reuse makes of such a file: its fields bounded like a
 * server's (sidecar_parse_reuse) and written as a new sidecar, which must be
 * valid UTF-8 JSON that is read back, naming the same source.
 *
 * Input: the file's bytes. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "clean.h"
#include "index.h"
#include "sidecar.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_rewrite(const struct sidecar_doc *old)
{
	struct sidecar_success s = {0};
	struct sidecar_doc again;
	char *text;

	if (old->model && strlen(old->model) > API_MODEL_MAX)
		abort();
	if (old->usage && clean_json_depth(old->usage) > API_USAGE_DEPTH_MAX)
		abort();
	s.src.source = old->source;
	s.src.sha256_hex = "0000000000000000000000000000000000000000000000000000000000000000";
	s.output = old->output;
	s.model = old->model;
	s.prompt = old->prompt;
	s.size = old->size_requested;
	s.result_size = old->result_size;
	s.response_format = old->response_format;
	s.request_id = old->request_id;
	s.created = old->created;
	s.usage = old->usage;
	s.version = "fuzz";
	s.reused_from = old->source;
	text = sidecar_success_json(&s);
	if (!text)
		return;
	if (!clean_utf8_valid(text))
		abort(); /* every document written is UTF-8 */
	if (sidecar_parse(text, strlen(text), &again) != 0 || strcmp(again.source, old->source) != 0)
		abort(); /* and is read back, naming its source exactly */
	sidecar_doc_clear(&again);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct index_entry e;
	struct sidecar_doc doc;

	/* The exact bytes, no NUL after them: reads past the end are caught. */
	if (index_parse_sidecar((const char *)data, size, "sub/x.json", &e) == 0) {
		if (!e.source)
			abort();
		index_entry_clear(&e);
	}
	if (sidecar_parse_reuse((const char *)data, size, &doc) == 0) {
		check_rewrite(&doc);
		sidecar_doc_clear(&doc);
	}
	return 0;
}
