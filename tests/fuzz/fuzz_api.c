/* libFuzzer: the API response parser, plus the request framing and the
 * Retry-After parser on the same bytes.
 *
 * Input layout: the HTTP status as two big-endian bytes, then the body. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_response(long status, const char *body, size_t len)
{
	struct api_result res;

	if (api_parse_response(status, body, len, "sk-secret-key", &res) < 0)
		return;
	switch (res.outcome) {
	case API_OUTCOME_OK:
		if ((!res.url && !res.b64_json) || res.error_code)
			abort();
		break;
	case API_OUTCOME_FILE_FAIL:
	case API_OUTCOME_RETRY:
	case API_OUTCOME_PAUSE:
		if (!res.error_code || !res.error_message)
			abort();
		break;
	default:
		abort();
	}
	api_result_clear(&res);
}

/* Whatever the prompt, prefix + base64 + suffix is JSON with that prompt. */
static void check_frame(const char *prompt)
{
	struct api_request req = {
	    .model = "m",
	    .prompt = prompt,
	    .size = "2K",
	    .response_format = "url",
	    .image_format = "png",
	};
	char *prefix = NULL, *suffix = NULL, *body;
	const cJSON *item;
	cJSON *root;
	size_t n;

	if (api_request_frame(&req, &prefix, &suffix) < 0)
		return;
	n = strlen(prefix);
	body = malloc(n + 4 + strlen(suffix) + 1);
	if (!body)
		abort();
	memcpy(body, prefix, n);
	memcpy(body + n, "QUJD", 4);
	strcpy(body + n + 4, suffix);
	root = cJSON_Parse(body);
	item = cJSON_GetObjectItemCaseSensitive(root, "prompt");
	if (!cJSON_IsString(item) || strcmp(item->valuestring, prompt) != 0)
		abort();
	item = cJSON_GetObjectItemCaseSensitive(root, "image");
	if (!cJSON_IsString(item) || strcmp(item->valuestring, "data:image/png;base64,QUJD") != 0)
		abort();
	cJSON_Delete(root);
	free(body);
	free(prefix);
	free(suffix);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text;
	long status;

	if (size < 2)
		return 0;
	status = (long)data[0] << 8 | data[1];
	/* The exact bytes, no NUL after them: reads past the end are caught. */
	check_response(status, (const char *)data + 2, size - 2);

	text = malloc(size - 1);
	if (!text)
		return 0;
	memcpy(text, data + 2, size - 2);
	text[size - 2] = '\0';
	(void)api_parse_retry_after(text, (int64_t)status * 1000003);
	check_frame(text);
	free(text);
	return 0;
}
