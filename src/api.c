#include "api.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "civil.h"
#include "clean.h"

#define RETRY_AFTER_MAX_S 3600 /* a server may not park us for longer than an hour */

/* The format goes into the data URL unescaped, so only a short lowercase word
 * such as "jpeg" is allowed. */
static bool valid_format_name(const char *s)
{
	size_t n;

	if (!s)
		return false;
	for (n = 0; s[n]; n++)
		if (n >= 16 || !((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= '0' && s[n] <= '9')))
			return false;
	return n > 0;
}

/* The body must be valid JSON, and cJSON copies bytes >= 0x80 through
 * unchecked: refuse text that is not UTF-8 rather than send what the server
 * will reject after the whole image has been uploaded. */
static bool valid_optional_text(const char *s)
{
	return !s || clean_utf8_valid(s);
}

/* Moves the members of the JSON object text extra to the end of tail; a
 * field head or tail has already is refused, never sent twice. */
static int api_add_extra(const cJSON *head, cJSON *tail, const char *extra)
{
	cJSON *obj = cJSON_Parse(extra);
	int r = -EINVAL;

	if (!obj)
		return -EINVAL; /* config.c wrote it: only memory can fail here */
	if (!cJSON_IsObject(obj) || !clean_utf8_valid(extra))
		goto out;
	while (obj->child) {
		cJSON *item = obj->child;

		if (!item->string || cJSON_GetObjectItemCaseSensitive(head, item->string) ||
		    cJSON_GetObjectItemCaseSensitive(tail, item->string))
			goto out;
		item = cJSON_DetachItemViaPointer(obj, item);
		if (!cJSON_AddItemToObject(tail, item->string, item)) {
			cJSON_Delete(item);
			r = -ENOMEM;
			goto out;
		}
	}
	r = 0;
out:
	cJSON_Delete(obj);
	return r;
}

/* The body is printed as two objects: {model, prompt, image: ""} and {size,
 * watermark, response_format}. cJSON escapes every string, and the split
 * points are fixed characters of its output, so no user text can move them. */
int api_request_frame(const struct api_request *req, char **ret_prefix, char **ret_suffix)
{
	cJSON *head = NULL, *tail = NULL;
	char *head_text = NULL, *tail_text = NULL, *prefix = NULL, *suffix = NULL, *p;
	size_t head_len;
	int r = -EINVAL;

	if (!req || !req->model || !req->prompt || !clean_utf8_valid(req->model) ||
	    !clean_utf8_valid(req->prompt) || !valid_optional_text(req->size) ||
	    !valid_optional_text(req->response_format) || !valid_format_name(req->image_format))
		goto out;

	r = -ENOMEM;
	head = cJSON_CreateObject();
	tail = cJSON_CreateObject();
	if (!head || !tail || !cJSON_AddStringToObject(head, "model", req->model) ||
	    !cJSON_AddStringToObject(head, "prompt", req->prompt) ||
	    !cJSON_AddStringToObject(head, "image", ""))
		goto out;
	if (req->size && !cJSON_AddStringToObject(tail, "size", req->size))
		goto out;
	if (!cJSON_AddBoolToObject(tail, "watermark", req->watermark))
		goto out;
	if (req->response_format &&
	    !cJSON_AddStringToObject(tail, "response_format", req->response_format))
		goto out;
	if (req->extra_json) {
		r = api_add_extra(head, tail, req->extra_json);
		if (r < 0)
			goto out;
		r = -ENOMEM;
	}
	/* One output is the API's default: the fields are sent only when asked
	 * for more, so relays that refuse unknown fields keep working. */
	if (req->max_images > 1) {
		cJSON *opts = cJSON_AddObjectToObject(tail, "sequential_image_generation_options");

		if (!cJSON_AddStringToObject(tail, "sequential_image_generation", "auto") ||
		    !opts || !cJSON_AddNumberToObject(opts, "max_images", req->max_images))
			goto out;
	}
	head_text = cJSON_PrintUnformatted(head);
	tail_text = cJSON_PrintUnformatted(tail);
	if (!head_text || !tail_text)
		goto out;

	/* head_text ends in `"image":""}`: keep its opening quote only. The
	 * tail always has watermark, so it is never "{}". */
	head_len = strlen(head_text);
	if (head_len < 2 || strcmp(head_text + head_len - 2, "\"}") != 0 || tail_text[0] != '{') {
		r = -EINVAL;
		goto out;
	}
	prefix = malloc(head_len - 2 + strlen(req->image_format) + sizeof("data:image/;base64,"));
	suffix = malloc(strlen(tail_text) + 2);
	if (!prefix || !suffix)
		goto out;
	p = mempcpy(prefix, head_text, head_len - 2);
	p = stpcpy(p, "data:image/");
	p = stpcpy(p, req->image_format);
	strcpy(p, ";base64,");
	strcpy(stpcpy(suffix, "\","), tail_text + 1);

	*ret_prefix = prefix;
	*ret_suffix = suffix;
	prefix = suffix = NULL;
	r = 0;
out:
	cJSON_Delete(head);
	cJSON_Delete(tail);
	cJSON_free(head_text);
	cJSON_free(tail_text);
	free(prefix);
	free(suffix);
	return r;
}

/* Built on api_request_frame, so that every field it sends is sent here too:
 * the string's opening quote gets a '[' before it and the suffix's closing
 * quote a ']' after it. */
int api_request_frame_images(const struct api_request *req, const char *const *more_formats,
			     size_t n_more, char **ret_prefix, char ***ret_seps, char **ret_suffix)
{
	char *prefix = NULL, *suffix = NULL, *arr_prefix = NULL, *arr_suffix = NULL, **seps = NULL;
	size_t url_len, quote_at, len;
	int r;

	*ret_seps = NULL;
	for (size_t i = 0; i < n_more; i++)
		if (!valid_format_name(more_formats[i]))
			return -EINVAL;
	r = api_request_frame(req, &prefix, &suffix);
	if (r < 0)
		return r;
	if (n_more == 0) {
		*ret_prefix = prefix;
		*ret_suffix = suffix;
		return 0;
	}
	r = -ENOMEM;
	/* prefix ends in "data:image/<fmt>;base64," after the opening quote. */
	url_len = strlen("data:image/;base64,") + strlen(req->image_format);
	len = strlen(prefix);
	if (len < url_len + 1 || prefix[len - url_len - 1] != '"' || suffix[0] != '"') {
		r = -EINVAL;
		goto out;
	}
	quote_at = len - url_len - 1;
	arr_prefix = malloc(len + 2);
	arr_suffix = malloc(strlen(suffix) + 2);
	seps = calloc(n_more, sizeof(*seps));
	if (!arr_prefix || !arr_suffix || !seps)
		goto out;
	memcpy(arr_prefix, prefix, quote_at);
	arr_prefix[quote_at] = '[';
	strcpy(arr_prefix + quote_at + 1, prefix + quote_at);
	arr_suffix[0] = '"';
	arr_suffix[1] = ']';
	strcpy(arr_suffix + 2, suffix + 1);
	for (size_t i = 0; i < n_more; i++) {
		seps[i] = malloc(strlen(more_formats[i]) + sizeof("\",\"data:image/;base64,"));
		if (!seps[i])
			goto out;
		strcpy(stpcpy(stpcpy(seps[i], "\",\"data:image/"), more_formats[i]), ";base64,");
	}
	*ret_prefix = arr_prefix;
	*ret_suffix = arr_suffix;
	*ret_seps = seps;
	arr_prefix = arr_suffix = NULL;
	seps = NULL;
	r = 0;
out:
	if (seps)
		for (size_t i = 0; i < n_more; i++)
			free(seps[i]);
	free(seps);
	free(arr_prefix);
	free(arr_suffix);
	free(prefix);
	free(suffix);
	return r;
}

/* "Name" matches the code "Name" and its sub-codes "Name.Detail". */
static bool code_is(const char *code, const char *name)
{
	size_t n = strlen(name);

	return strncmp(code, name, n) == 0 && (code[n] == '\0' || code[n] == '.');
}

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The documented codes and what they mean for us; false if unknown. */
static bool classify_code(const char *code, enum api_outcome *ret)
{
	/* clang-format off */
	static const char *const pause[] = {
		"AuthenticationError", "AccountOverdueError", "AccessDenied", "OperationDenied",
		"InvalidEndpointOrModel", "ModelNotOpen", "QuotaExceeded", "SetLimitExceeded",
	};
	static const char *const retry[] = {
		"ModelAccountIpmRateLimitExceeded", "ModelAccountTpmRateLimitExceeded",
		"RateLimitExceeded", "ServerOverloaded", "RequestBurstTooFast",
		"AccountRateLimitExceeded", "InternalServiceError",
	};
	/* clang-format on */
	size_t i;

	for (i = 0; i < sizeof(pause) / sizeof(pause[0]); i++)
		if (code_is(code, pause[i])) {
			*ret = API_OUTCOME_PAUSE;
			return true;
		}
	for (i = 0; i < sizeof(retry) / sizeof(retry[0]); i++)
		if (code_is(code, retry[i])) {
			*ret = API_OUTCOME_RETRY;
			return true;
		}
	if (starts_with(code, "InvalidParameter") || code_is(code, "MissingParameter") ||
	    starts_with(code, "InvalidImageURL") || strstr(code, "SensitiveContentDetected") ||
	    code_is(code, "InvalidEndpoint.ClosedEndpoint")) {
		*ret = API_OUTCOME_FILE_FAIL;
		return true;
	}
	return false;
}

enum api_outcome api_classify(long http_status, const char *code)
{
	enum api_outcome outcome;

	/* A documented code is more precise than the status (relays re-map
	 * statuses), and on the documented statuses both agree. */
	if (code && *code && classify_code(code, &outcome))
		return outcome;
	if (http_status >= 200 && http_status < 300)
		/* An unknown error code on a success status: retrying could bill
		 * us again for a request we cannot understand, and pausing would
		 * stop every folder over one odd answer, so this file fails. */
		return code ? API_OUTCOME_FILE_FAIL : API_OUTCOME_OK;
	if (http_status == 401 || http_status == 403 || http_status == 404)
		return API_OUTCOME_PAUSE;
	if (http_status == 408 || http_status == 429)
		return API_OUTCOME_RETRY;
	if (http_status >= 400 && http_status < 500)
		return API_OUTCOME_FILE_FAIL;
	/* A redirect means base_url points somewhere else: every file would
	 * get the same answer until the configuration is fixed. */
	if (http_status >= 300 && http_status < 400)
		return API_OUTCOME_PAUSE;
	return API_OUTCOME_RETRY; /* 5xx, and statuses that make no sense */
}

static void api_image_clear(struct api_image *img)
{
	free(img->url);
	free(img->b64_json);
	free(img->size);
	free(img->error_code);
	free(img->error_message);
	memset(img, 0, sizeof(*img));
}

uint64_t api_result_image_count(const struct api_result *result)
{
	if (result->generated_images >= 0)
		return (uint64_t)result->generated_images;
	if (result->n_images)
		return result->n_ok;
	/* A result restored from an old journal record: one image. */
	return result->url || result->b64_json || result->b64_streamed ? 1 : 0;
}

uint64_t api_result_images_counted(const struct api_result *result, unsigned asked)
{
	uint64_t images = api_result_image_count(result);
	uint64_t bound = asked ? asked : 1;

	if (bound > API_IMAGES_MAX)
		bound = API_IMAGES_MAX;
	return images < bound ? images : bound;
}

void api_result_clear_images(struct api_result *result)
{
	for (size_t i = 0; i < result->n_images; i++)
		api_image_clear(&result->images[i]);
	free(result->images);
	result->images = NULL;
	result->n_images = result->n_ok = 0;
}

void api_result_clear(struct api_result *result)
{
	if (!result)
		return;
	api_result_clear_images(result);
	free(result->error_code);
	free(result->error_message);
	free(result->url);
	free(result->b64_json);
	free(result->size);
	free(result->model);
	cJSON_Delete(result->usage);
	memset(result, 0, sizeof(*result));
}

/* Copies a string member; absent, or of another type, leaves *ret NULL. */
static int take_string(const cJSON *object, const char *key, char **ret)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);

	if (!cJSON_IsString(item) || !item->valuestring || !item->valuestring[0])
		return 0;
	*ret = strdup(item->valuestring);
	return *ret ? 0 : -ENOMEM;
}

static bool take_int64(const cJSON *object, const char *key, int64_t *ret)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);
	double v;

	if (!cJSON_IsNumber(item))
		return false;
	v = item->valuedouble;
	return clean_int64(v, ret);
}

static int set_error(struct api_result *res, enum api_outcome outcome, const char *code,
		     const char *message)
{
	res->outcome = outcome;
	free(res->error_code);
	free(res->error_message);
	res->error_code = strdup(code);
	res->error_message = strdup(message);
	return res->error_code && res->error_message ? 0 : -ENOMEM;
}

/* No usable error object and no usable data. A 4xx (and any other
 * surprising status) speaks for itself; a success or a 5xx is a server or a
 * proxy that answered garbage, which is worth another try. */
static int set_unusable(struct api_result *res, const char *why)
{
	long status = res->http_status;
	char code[32];

	if ((status >= 200 && status < 300) || (status >= 500 && status < 600))
		return set_error(res, API_OUTCOME_RETRY, "MalformedResponse", why);
	(void)snprintf(code, sizeof(code), "HTTP%ld", status);
	return set_error(res, api_classify(status, NULL), code, why);
}

static bool is_error_value(const cJSON *error)
{
	return cJSON_IsObject(error) || (cJSON_IsString(error) && error->valuestring[0]);
}

/* An "error" member: {code, message}, or as some relays send it, a bare
 * message string. */
static int set_api_error(struct api_result *res, const cJSON *error)
{
	const cJSON *code_item = NULL, *message_item = error;
	const char *message = "the API reported an error without a message";
	char code[48];
	int64_t number;

	if (cJSON_IsObject(error)) {
		code_item = cJSON_GetObjectItemCaseSensitive(error, "code");
		message_item = cJSON_GetObjectItemCaseSensitive(error, "message");
	}
	if (cJSON_IsString(message_item) && message_item->valuestring[0])
		message = message_item->valuestring;

	if (cJSON_IsString(code_item) && code_item->valuestring[0])
		(void)snprintf(code, sizeof(code), "%s", code_item->valuestring);
	else if (cJSON_IsObject(error) && take_int64(error, "code", &number))
		(void)snprintf(code, sizeof(code), "%" PRId64, number);
	else
		(void)snprintf(code, sizeof(code), "HTTP%ld", res->http_status);

	if (set_error(res, api_classify(res->http_status, code), code, message) < 0)
		return -ENOMEM;
	/* Keep the whole code even if it did not fit the classification buffer. */
	if (cJSON_IsString(code_item) && strlen(code_item->valuestring) >= sizeof(code)) {
		free(res->error_code);
		res->error_code = strdup(code_item->valuestring);
		if (!res->error_code)
			return -ENOMEM;
	}
	/* An error object is never a success, whatever the status says. */
	if (res->outcome == API_OUTCOME_OK)
		res->outcome = API_OUTCOME_FILE_FAIL;
	return 0;
}

static int take_metadata(cJSON *root, struct api_result *res)
{
	cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
	int64_t n;

	if (take_string(root, "model", &res->model) < 0)
		return -ENOMEM;
	/* The journal reads back 0..API_CREATED_MAX only: anything else is no time. */
	if (!take_int64(root, "created", &res->created) || res->created < 0 ||
	    res->created > API_CREATED_MAX)
		res->created = 0;
	if (cJSON_IsObject(usage)) {
		res->usage = cJSON_DetachItemViaPointer(root, usage);
		if (take_int64(res->usage, "generated_images", &n) && n >= 0)
			res->generated_images = n;
	}
	return 0;
}

/* An error inside data[i]: its code as set_api_error reads it. */
static int image_error(const cJSON *error, struct api_image *img)
{
	const cJSON *code_item = NULL, *message_item = error;
	const char *message = "the API reported an error for this image without a message";
	char code[48] = "ImageFailed";
	int64_t number;

	if (cJSON_IsObject(error)) {
		code_item = cJSON_GetObjectItemCaseSensitive(error, "code");
		message_item = cJSON_GetObjectItemCaseSensitive(error, "message");
	}
	if (cJSON_IsString(message_item) && message_item->valuestring[0])
		message = message_item->valuestring;
	if (cJSON_IsString(code_item) && code_item->valuestring[0])
		img->error_code = strdup(code_item->valuestring);
	else {
		if (cJSON_IsObject(error) && take_int64(error, "code", &number))
			(void)snprintf(code, sizeof(code), "%" PRId64, number);
		img->error_code = strdup(code);
	}
	img->error_message = strdup(message);
	return img->error_code && img->error_message ? 0 : -ENOMEM;
}

static int set_image_malformed(struct api_image *img, const char *why)
{
	api_image_clear(img);
	img->error_code = strdup("MalformedResponse");
	img->error_message = strdup(why);
	return img->error_code && img->error_message ? 0 : -ENOMEM;
}

/* One data[] entry: an image, or an error of its own (also when it is not
 * understood: the other entries may still be images that were paid for). */
static int parse_image(const cJSON *item, bool b64_taken, struct api_image *img)
{
	const cJSON *error;

	if (!cJSON_IsObject(item))
		return set_image_malformed(img, "this data[] entry is not an object");
	error = cJSON_GetObjectItemCaseSensitive(item, "error");
	if (is_error_value(error))
		return image_error(error, img);
	if (take_string(item, "url", &img->url) < 0 ||
	    take_string(item, "b64_json", &img->b64_json) < 0 ||
	    take_string(item, "size", &img->size) < 0)
		return -ENOMEM;
	if (b64_taken && !img->b64_json) {
		const cJSON *b64 = cJSON_GetObjectItemCaseSensitive(item, "b64_json");
		img->b64_streamed = cJSON_IsString(b64) && b64->valuestring && !b64->valuestring[0];
	}
	if (!img->url && !img->b64_json && !img->b64_streamed)
		return set_image_malformed(img, "this data[] entry has neither url nor b64_json");
	return 0;
}

static int parse_object(cJSON *root, bool b64_taken, struct api_result *res)
{
	const cJSON *error = cJSON_GetObjectItemCaseSensitive(root, "error");
	const cJSON *data, *first, *failed = NULL;
	long status = res->http_status;
	int n, r;

	if (take_metadata(root, res) < 0)
		return -ENOMEM;
	if (is_error_value(error))
		return set_api_error(res, error);
	if (status < 200 || status >= 300)
		return set_unusable(res, "the response has no error object");

	data = cJSON_GetObjectItemCaseSensitive(root, "data");
	first = cJSON_IsArray(data) ? cJSON_GetArrayItem(data, 0) : NULL;
	if (!cJSON_IsObject(first))
		return set_unusable(res, "the response has no data[0] object");
	n = cJSON_GetArraySize(data);
	if (n > API_IMAGES_MAX)
		return set_unusable(res, "the response has more data[] entries than the API makes");
	res->images = calloc((size_t)n, sizeof(*res->images));
	if (!res->images)
		return -ENOMEM;
	res->n_images = (size_t)n;
	for (int i = 0; i < n; i++) {
		r = parse_image(cJSON_GetArrayItem(data, i), i == 0 && b64_taken, &res->images[i]);
		if (r < 0)
			return r;
		if (!res->images[i].error_code)
			res->n_ok++;
		else if (!failed && is_error_value(cJSON_GetObjectItemCaseSensitive(
					cJSON_GetArrayItem(data, i), "error")))
			failed =
			    cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(data, i), "error");
	}
	if (res->n_ok == 0) {
		/* Not one image: as with one image per request, the answer failed. */
		if (failed)
			return set_api_error(res, failed);
		return set_unusable(res, "data[0] has neither url nor b64_json");
	}
	res->outcome = API_OUTCOME_OK;
	return 0;
}

/* cJSON stops at the end of the first value; anything but whitespace after it
 * means a body that was cut or glued together, which we do not trust. */
static cJSON *parse_whole(const char *body, size_t len)
{
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, false);

	if (!root)
		return NULL;
	for (; end && end < body + len; end++) {
		if (*end != ' ' && *end != '\t' && *end != '\r' && *end != '\n') {
			cJSON_Delete(root);
			return NULL;
		}
	}
	return root;
}

/* *text replaced by its cleaned copy (see clean_text); NULL stays NULL. */
static int clean_member(char **text, size_t max, const char *secret)
{
	char *c;

	if (!*text)
		return 0;
	c = clean_text(*text, max, secret);
	if (!c)
		return -ENOMEM;
	free(*text);
	*text = c;
	return 0;
}

/* A URL is fetched as it is, so it is refused rather than changed. */
static const char *url_problem(const char *url, const char *secret)
{
	size_t n = strlen(url);

	if (n > API_URL_MAX)
		return "the result URL is too long";
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
			return "the result URL has bytes that are not printable ASCII";
	if (secret && *secret && strstr(url, secret))
		return "the result URL contains the API key";
	return NULL;
}

static cJSON *usage_summary(const cJSON *usage)
{
	cJSON *sum = cJSON_CreateObject();
	unsigned kept = 0;

	if (!sum)
		return NULL;
	for (const cJSON *m = usage->child; m && kept < API_USAGE_KEEP_MAX; m = m->next) {
		if (!cJSON_IsNumber(m) || !m->string || strlen(m->string) > API_USAGE_NAME_MAX ||
		    strcmp(m->string, "truncated") == 0 ||
		    cJSON_GetObjectItemCaseSensitive(sum, m->string))
			continue;
		if (!cJSON_AddNumberToObject(sum, m->string, m->valuedouble))
			goto fail;
		kept++;
	}
	if (!cJSON_AddTrueToObject(sum, "truncated"))
		goto fail;
	return sum;
fail:
	cJSON_Delete(sum);
	return NULL;
}

int api_bound_usage(cJSON **usage, const char *secret)
{
	cJSON *sum;
	char *text = NULL;
	bool fits;

	if (!*usage)
		return 0;
	if (clean_json(*usage, secret) < 0)
		return -ENOMEM;
	fits = clean_json_depth(*usage) <= API_USAGE_DEPTH_MAX;
	if (fits) {
		text = cJSON_PrintUnformatted(*usage);
		if (!text)
			return -ENOMEM;
		fits = strlen(text) <= API_USAGE_MAX;
		cJSON_free(text);
	}
	if (fits)
		return 0;
	sum = usage_summary(*usage);
	if (!sum)
		return -ENOMEM;
	cJSON_Delete(*usage);
	*usage = sum;
	return 0;
}

/* The first image that succeeded, copied into the members that code for one
 * image reads (the b64_json text is moved: it may be large). */
static int pick_first_image(struct api_result *res)
{
	for (size_t i = 0; i < res->n_images; i++) {
		struct api_image *img = &res->images[i];

		if (img->error_code)
			continue;
		if ((img->url && !(res->url = strdup(img->url))) ||
		    (img->size && !(res->size = strdup(img->size))))
			return -ENOMEM;
		res->b64_json = img->b64_json;
		img->b64_json = NULL;
		res->b64_streamed = img->b64_streamed;
		return 0;
	}
	return 0;
}

/* Bounds and cleans every server string kept in the result. */
static int clean_result(struct api_result *res, const char *secret)
{
	const char *problem = NULL;

	if (clean_member(&res->error_code, API_CODE_MAX, secret) < 0 ||
	    clean_member(&res->error_message, API_MESSAGE_MAX, secret) < 0 ||
	    clean_member(&res->model, API_MODEL_MAX, secret) < 0 ||
	    api_bound_usage(&res->usage, secret) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < res->n_images; i++) {
		struct api_image *img = &res->images[i];
		const char *why;

		if (clean_member(&img->size, API_SIZE_MAX, secret) < 0 ||
		    clean_member(&img->error_code, API_CODE_MAX, secret) < 0 ||
		    clean_member(&img->error_message, API_MESSAGE_MAX, secret) < 0)
			return -ENOMEM;
		why = img->url ? url_problem(img->url, secret) : NULL;
		if (!why)
			continue;
		/* Refused, never cut or changed; the other images stay usable. */
		problem = why;
		api_image_clear(img);
		img->error_code = strdup("UnusableResultURL");
		img->error_message = strdup(why);
		if (!img->error_code || !img->error_message)
			return -ENOMEM;
		res->n_ok--;
	}
	if (res->outcome == API_OUTCOME_OK && res->n_ok == 0)
		return set_error(res, API_OUTCOME_FILE_FAIL, "UnusableResultURL", problem);
	if (res->outcome != API_OUTCOME_OK) {
		api_result_clear_images(res); /* nothing to fetch */
		return 0;
	}
	return pick_first_image(res);
}

int api_parse_response(long http_status, const char *body, size_t len, const char *secret,
		       struct api_result *ret_result)
{
	return api_parse_streamed(http_status, body, len, false, secret, ret_result);
}

int api_parse_streamed(long http_status, const char *body, size_t len, bool b64_taken,
		       const char *secret, struct api_result *ret_result)
{
	cJSON *root = NULL;
	int r;

	memset(ret_result, 0, sizeof(*ret_result));
	ret_result->http_status = http_status;
	ret_result->generated_images = -1;

	if (http_status >= 300 && http_status < 400) {
		/* The transfer never follows a redirect (that would pay again, or
		 * turn the request into a GET elsewhere). Whatever the body says,
		 * nothing was generated here, and every file would get the same
		 * answer until base_url is fixed. */
		char code[32];

		(void)snprintf(code, sizeof(code), "HTTP%ld", http_status);
		r = set_error(ret_result, API_OUTCOME_PAUSE, code,
			      "the API answered with a redirect, which a generation request never "
			      "follows; check api.base_url");
		goto out;
	}
	if (body && len > 0)
		root = parse_whole(body, len);
	if (!root)
		r = set_unusable(ret_result,
				 len ? "the response is not JSON" : "the response is empty");
	else if (!cJSON_IsObject(root))
		r = set_unusable(ret_result, "the response is not a JSON object");
	else
		r = parse_object(root, b64_taken, ret_result);
	cJSON_Delete(root);
	if (r == 0)
		r = clean_result(ret_result, secret);
out:
	if (r < 0)
		api_result_clear(ret_result); /* nothing half-filled to leak */
	return r;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* n decimal digits at s; false if any is not a digit. */
static bool digits(const char *s, int n, int *ret)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (!is_digit(s[i]))
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*ret = v;
	return true;
}

static int find_name(const char *s, const char (*names)[4], int n)
{
	for (int i = 0; i < n; i++)
		if (memcmp(s, names[i], 3) == 0)
			return i;
	return -1;
}

/* IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT", the only date form servers
 * may send (RFC 9110 5.6.7); the obsolete forms are not worth the code. */
static bool parse_imf_fixdate(const char *s, size_t len, int64_t *ret)
{
	static const char wdays[7][4] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
	static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	int day, mon, year, hour, min, sec;

	if (len != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' ||
	    s[16] != ' ' || s[19] != ':' || s[22] != ':' || s[25] != ' ' ||
	    memcmp(s + 26, "GMT", 3) != 0)
		return false;
	mon = find_name(s + 8, months, 12);
	if (find_name(s, wdays, 7) < 0 || mon < 0 || !digits(s + 5, 2, &day) ||
	    !digits(s + 12, 4, &year) || !digits(s + 17, 2, &hour) || !digits(s + 20, 2, &min) ||
	    !digits(s + 23, 2, &sec))
		return false;
	if (!civil_date_valid(year, mon + 1, day) || hour > 23 || min > 59 || sec > 60)
		return false;
	*ret = civil_days_from_civil(year, mon + 1, day) * 86400 + hour * 3600 + min * 60 + sec;
	return true;
}

int64_t api_parse_retry_after(const char *value, int64_t now)
{
	const char *s = value;
	size_t len;
	int64_t seconds = 0, when;

	if (!s)
		return -1;
	while (*s == ' ' || *s == '\t')
		s++;
	len = strlen(s);
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	if (len == 0)
		return -1;

	if (is_digit(s[0])) {
		for (size_t i = 0; i < len; i++) {
			if (!is_digit(s[i]))
				return -1;
			if (seconds <= RETRY_AFTER_MAX_S)
				seconds = seconds * 10 + (s[i] - '0');
		}
	} else {
		if (!parse_imf_fixdate(s, len, &when))
			return -1;
		/* `when` is within years 0..9999, so these cannot overflow. */
		if (when <= now)
			seconds = 0;
		else if (now < when - RETRY_AFTER_MAX_S)
			seconds = RETRY_AFTER_MAX_S;
		else
			seconds = when - now;
	}
	if (seconds > RETRY_AFTER_MAX_S)
		seconds = RETRY_AFTER_MAX_S;
	return seconds * 1000;
}
