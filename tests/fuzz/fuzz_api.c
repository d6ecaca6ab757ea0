/* libFuzzer: the API response parser, plus the request framing, the
 * Retry-After parser and the streaming b64_json scanner on the same bytes.
 *
 * Input layout: the HTTP status as two big-endian bytes, then the body. */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "api.h"
#include "b64.h"
#include "transfer.h"

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

/* The scanner fed in pieces, then the parser on what it kept, agree with the
 * parser on the whole body: same outcome, and a taken image is the base64
 * decoding of the data[0].b64_json the whole body holds. */
static void check_stream(long status, const char *body, size_t len, size_t piece)
{
	static int fd = -1;
	struct transfer_gen g;
	struct api_result whole, kept;
	uint8_t *file = NULL, *decoded = NULL;
	size_t decoded_len = 0;

	if (fd < 0 && (fd = memfd_create("fuzz_api", 0)) < 0)
		abort();
	if (ftruncate(fd, 0) < 0 || lseek(fd, 0, SEEK_SET) < 0)
		abort();
	memset(&g, 0, sizeof(g));
	g.fd = -1;
	g.img.fd = fd;
	for (size_t i = 0; i < len; i += piece) {
		size_t n = len - i < piece ? len - i : piece;
		if (transfer_gen_take(&g, body + i, n) != n)
			abort(); /* far below every cap */
	}
	g.img.fd = -1; /* not transfer_gen_clear's to close */
	/* cJSON reads strings up to a raw NUL; the scanner calls it malformed. */
	if (memchr(body, '\0', len))
		goto out;
	if (api_parse_response(status, body, len, NULL, &whole) < 0)
		goto out;
	if (api_parse_streamed(status, g.body ? g.body : "", g.body_len, g.img.found, NULL, &kept) < 0) {
		api_result_clear(&whole);
		goto out;
	}
	if (kept.b64_streamed) {
		if (!g.img.found || kept.b64_json || kept.outcome != API_OUTCOME_OK)
			abort();
		if (g.img.malformed) {
			/* Stricter than the whole parse by design (only "\\/" may be
			 * escaped), and a bad escape that makes the whole body no
			 * JSON is caught here as malformed too. */
			if (whole.outcome != API_OUTCOME_OK &&
			    strcmp(whole.error_code, "MalformedResponse") != 0)
				abort();
			goto done;
		}
		/* An empty image string: no image for the whole parse (which
		 * then takes the next data[] entry, if any); taken, and judged
		 * no image later, for the streamed one. */
		if (!whole.b64_json || (whole.n_images && whole.images[0].error_code)) {
			if (g.img.written != 0)
				abort();
			goto done;
		}
		decoded = malloc(strlen(whole.b64_json) / 4 * 3 + 3);
		file = malloc(strlen(whole.b64_json) / 4 * 3 + 3);
		if (!decoded || !file ||
		    b64_decode(whole.b64_json, strlen(whole.b64_json), decoded, &decoded_len) < 0 ||
		    g.img.written != decoded_len ||
		    pread(fd, file, decoded_len, 0) != (ssize_t)decoded_len ||
		    memcmp(file, decoded, decoded_len) != 0)
			abort();
	} else if (whole.b64_json &&
		   (!kept.b64_json || strcmp(whole.b64_json, kept.b64_json) != 0)) {
		abort();
	}
	if (kept.outcome != whole.outcome)
		abort();
done:
	api_result_clear(&whole);
	api_result_clear(&kept);
out:
	free(file);
	free(decoded);
	transfer_gen_clear(&g);
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
	check_stream(status, (const char *)data + 2, size - 2, 1 + data[1] % 23);

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
