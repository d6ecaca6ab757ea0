/* libFuzzer: the sidecar readers (index_parse_sidecar, output_sidecar_source,
 * output_json_name) on files anyone who can write to an output folder can
 * plant; and what a reuse makes of such a file: its fields bounded like a
 * server's (api_bound_usage, clean_text) and written as a new sidecar, which
 * must be valid UTF-8 JSON that is read back, naming the same source.
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
#include "output.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *string_of(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void check_rewrite(const cJSON *old)
{
	char *source = output_sidecar_source(old), *output = output_json_name(old, "output");
	char *model = NULL, *text, *again;
	struct sidecar_success s = {0};
	cJSON *usage = NULL, *doc;

	if (!source || !*source)
		goto out;
	if (string_of(old, "model") &&
	    !(model = clean_text(string_of(old, "model"), API_MODEL_MAX, NULL)))
		goto out;
	if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(old, "usage"))) {
		usage = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(old, "usage"), true);
		if (!usage || api_bound_usage(&usage, NULL) < 0)
			goto out;
		if (clean_json_depth(usage) > API_USAGE_DEPTH_MAX)
			abort();
	}
	s.src.source = source;
	s.src.sha256_hex = "0000000000000000000000000000000000000000000000000000000000000000";
	s.output = output ? output : "x.png";
	s.model = model;
	s.prompt = "p";
	s.size = "2K";
	s.usage = usage;
	s.version = "fuzz";
	text = output_sidecar_json(&s);
	if (!text)
		goto out;
	if (!clean_utf8_valid(text))
		abort(); /* every document written is UTF-8 */
	doc = cJSON_Parse(text);
	again = doc ? output_sidecar_source(doc) : NULL;
	if (!again || strcmp(again, source) != 0)
		abort(); /* and names its source exactly */
	free(again);
	cJSON_Delete(doc);
	free(text);
out:
	cJSON_Delete(usage);
	free(model);
	free(output);
	free(source);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct index_entry e;
	cJSON *root;

	/* The exact bytes, no NUL after them: reads past the end are caught. */
	if (index_parse_sidecar((const char *)data, size, "sub/x.json", &e) == 0) {
		if (!e.source)
			abort();
		index_entry_clear(&e);
	}
	root = cJSON_ParseWithLength((const char *)data, size);
	if (root) {
		check_rewrite(root);
		cJSON_Delete(root);
	}
	return 0;
}
