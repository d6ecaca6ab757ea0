/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

static const struct api_request base_request = {
    .model = "doubao-seedream-4-5-251128",
    .prompt = "make it a watercolor",
    .size = "2K",
    .watermark = false,
    .response_format = "url",
    .image_format = "png",
};

/* prefix + image + suffix, as the upload streams it. */
static char *frame_body(const struct api_request *req, const char *b64)
{
	char *prefix = NULL, *suffix = NULL, *body;

	assert_int_equal(api_request_frame(req, &prefix, &suffix), 0);
	body = malloc(strlen(prefix) + strlen(b64) + strlen(suffix) + 1);
	assert_non_null(body);
	strcpy(body, prefix);
	strcat(body, b64);
	strcat(body, suffix);
	free(prefix);
	free(suffix);
	return body;
}

static void test_frame_exact(void **state)
{
	char *prefix = NULL, *suffix = NULL;

	(void)state;
	assert_int_equal(api_request_frame(&base_request, &prefix, &suffix), 0);
	assert_string_equal(prefix, "{\"model\":\"doubao-seedream-4-5-251128\","
				    "\"prompt\":\"make it a watercolor\","
				    "\"image\":\"data:image/png;base64,");
	assert_string_equal(suffix, "\",\"size\":\"2K\",\"watermark\":false,"
				    "\"response_format\":\"url\"}");
	free(prefix);
	free(suffix);
}

static void expect_frame_einval(const struct api_request *req);

static void test_frame_extra(void **state)
{
	struct api_request req = base_request;
	char *prefix = NULL, *suffix = NULL;

	(void)state;
	req.extra_json = "{\"optimize_prompt_options\":{\"mode\":\"fast\"},\"seed\":-1,"
			 "\"tags\":[\"a\",true,null,1.5]}";
	assert_int_equal(api_request_frame(&req, &prefix, &suffix), 0);
	assert_string_equal(suffix, "\",\"size\":\"2K\",\"watermark\":false,"
				    "\"response_format\":\"url\","
				    "\"optimize_prompt_options\":{\"mode\":\"fast\"},\"seed\":-1,"
				    "\"tags\":[\"a\",true,null,1.5]}");
	free(prefix);
	free(suffix);
	/* never a field twice, never anything but an object */
	req.extra_json = "{\"prompt\":\"other\"}";
	expect_frame_einval(&req);
	req.extra_json = "{\"watermark\":true}";
	expect_frame_einval(&req);
	req.extra_json = "[1]";
	expect_frame_einval(&req);
	req.extra_json = "{\"a\":";
	expect_frame_einval(&req);
}

/* References make "image" an array; without them the body is the string
 * form byte for byte. */
static void test_frame_images(void **state)
{
	static const char *const formats[] = {"jpeg", "webp"};
	char *prefix = NULL, *suffix = NULL, **seps = NULL, *p1 = NULL, *s1 = NULL;
	cJSON *doc, *image;
	char body[1024];

	(void)state;
	assert_int_equal(api_request_frame_images(&base_request, formats, 0, &p1, &seps, &s1), 0);
	assert_null(seps);
	assert_int_equal(api_request_frame(&base_request, &prefix, &suffix), 0);
	assert_string_equal(p1, prefix);
	assert_string_equal(s1, suffix);
	free(prefix);
	free(suffix);
	free(p1);
	free(s1);

	assert_int_equal(
	    api_request_frame_images(&base_request, formats, 2, &prefix, &seps, &suffix), 0);
	assert_string_equal(prefix, "{\"model\":\"doubao-seedream-4-5-251128\","
				    "\"prompt\":\"make it a watercolor\","
				    "\"image\":[\"data:image/png;base64,");
	assert_string_equal(seps[0], "\",\"data:image/jpeg;base64,");
	assert_string_equal(seps[1], "\",\"data:image/webp;base64,");
	assert_string_equal(suffix, "\"],\"size\":\"2K\",\"watermark\":false,"
				    "\"response_format\":\"url\"}");
	(void)snprintf(body, sizeof(body), "%sQUFB%sQkJC%sQ0ND%s", prefix, seps[0], seps[1],
		       suffix);
	doc = cJSON_Parse(body);
	assert_non_null(doc);
	image = cJSON_GetObjectItemCaseSensitive(doc, "image");
	assert_true(cJSON_IsArray(image));
	assert_int_equal(cJSON_GetArraySize(image), 3);
	assert_string_equal(cJSON_GetArrayItem(image, 2)->valuestring,
			    "data:image/webp;base64,Q0ND");
	cJSON_Delete(doc);
	free(prefix);
	free(suffix);
	free(seps[0]);
	free(seps[1]);
	free(seps);

	/* A format that would break out of the data URL is refused. */
	{
		static const char *const bad[] = {"png\",\"x"};
		assert_int_equal(
		    api_request_frame_images(&base_request, bad, 1, &prefix, &seps, &suffix),
		    -EINVAL);
	}
}

static void test_frame_round_trip_hostile_prompt(void **state)
{
	static const char prompt[] = "say \"hi\" \\ back\\slash \\\" \n new line\ttab \x01 ctrl "
				     "\xe6\xb0\xb4\xe5\xbd\xa9 \xf0\x9f\x8e\xa8 "
				     "\"image\":\"\"} \"},\"image\":\"x";
	struct api_request req = base_request;
	cJSON *root, *item;
	char *body;

	(void)state;
	req.prompt = prompt;
	req.model = "ep-2025\"weird\\model";
	req.image_format = "jpeg";
	req.watermark = true;
	req.response_format = "b64_json";
	body = frame_body(&req, "QUJD");
	root = cJSON_Parse(body);
	assert_non_null(root);

	item = cJSON_GetObjectItemCaseSensitive(root, "prompt");
	assert_true(cJSON_IsString(item));
	assert_string_equal(item->valuestring, prompt);
	item = cJSON_GetObjectItemCaseSensitive(root, "model");
	assert_string_equal(item->valuestring, "ep-2025\"weird\\model");
	item = cJSON_GetObjectItemCaseSensitive(root, "image");
	assert_string_equal(item->valuestring, "data:image/jpeg;base64,QUJD");
	item = cJSON_GetObjectItemCaseSensitive(root, "size");
	assert_string_equal(item->valuestring, "2K");
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "watermark")));
	item = cJSON_GetObjectItemCaseSensitive(root, "response_format");
	assert_string_equal(item->valuestring, "b64_json");
	assert_int_equal(cJSON_GetArraySize(root), 6);

	/* The field order the brief asks for. */
	item = root->child;
	assert_string_equal(item->string, "model");
	assert_string_equal(item->next->string, "prompt");
	assert_string_equal(item->next->next->string, "image");
	assert_string_equal(item->next->next->next->string, "size");
	assert_string_equal(item->next->next->next->next->string, "watermark");
	assert_string_equal(item->next->next->next->next->next->string, "response_format");
	cJSON_Delete(root);
	free(body);
}

static void test_frame_optional_fields(void **state)
{
	struct api_request req = base_request;
	char *body;

	(void)state;
	req.size = NULL;
	req.response_format = NULL;
	body = frame_body(&req, "");
	assert_string_equal(body, "{\"model\":\"doubao-seedream-4-5-251128\","
				  "\"prompt\":\"make it a watercolor\","
				  "\"image\":\"data:image/png;base64,\",\"watermark\":false}");
	free(body);
}

static void expect_frame_einval(const struct api_request *req)
{
	char *prefix = (char *)"untouched", *suffix = (char *)"untouched";

	assert_int_equal(api_request_frame(req, &prefix, &suffix), -EINVAL);
	assert_string_equal(prefix, "untouched");
	assert_string_equal(suffix, "untouched");
}

static void test_frame_rejects(void **state)
{
	struct api_request req;

	(void)state;
	expect_frame_einval(NULL);
	req = base_request;
	req.model = NULL;
	expect_frame_einval(&req);
	req = base_request;
	req.prompt = NULL;
	expect_frame_einval(&req);
	req = base_request;
	req.image_format = NULL;
	expect_frame_einval(&req);
	req.image_format = "";
	expect_frame_einval(&req);
	req.image_format = "PNG"; /* the API wants lowercase */
	expect_frame_einval(&req);
	req.image_format = "png\";x";
	expect_frame_einval(&req);
	req = base_request;
	req.prompt = "bad \xff utf-8";
	expect_frame_einval(&req);
	req.prompt = "overlong \xc0\xaf";
	expect_frame_einval(&req);
	req.prompt = "surrogate \xed\xa0\x80";
	expect_frame_einval(&req);
	req.prompt = "cut short \xe6\xb0";
	expect_frame_einval(&req);
	req.prompt = "beyond U+10FFFF \xf4\x90\x80\x80";
	expect_frame_einval(&req);
	req = base_request;
	req.size = "2K\xff";
	expect_frame_einval(&req);
}

static struct api_result parse(long status, const char *body)
{
	struct api_result res;

	assert_int_equal(api_parse_response(status, body, body ? strlen(body) : 0, NULL, &res), 0);
	assert_int_equal(res.http_status, status);
	return res;
}

static void expect_error(long status, const char *body, enum api_outcome outcome, const char *code)
{
	struct api_result res = parse(status, body);

	assert_int_equal(res.outcome, outcome);
	assert_non_null(res.error_code);
	assert_string_equal(res.error_code, code);
	assert_non_null(res.error_message);
	assert_null(res.url);
	assert_null(res.b64_json);
	api_result_clear(&res);
}

static void test_parse_url_success(void **state)
{
	struct api_result res;

	(void)state;
	res =
	    parse(200, "{\"model\":\"doubao-seedream-4-5-251128\",\"created\":1757321139,"
		       "\"data\":[{\"url\":\"https://example.com/a.jpeg\",\"size\":\"3104x1312\"}],"
		       "\"usage\":{\"generated_images\":1,\"output_tokens\":16280,"
		       "\"total_tokens\":16280}}");
	assert_int_equal(res.outcome, API_OUTCOME_OK);
	assert_null(res.error_code);
	assert_null(res.error_message);
	assert_string_equal(res.url, "https://example.com/a.jpeg");
	assert_null(res.b64_json);
	assert_string_equal(res.size, "3104x1312");
	assert_string_equal(res.model, "doubao-seedream-4-5-251128");
	assert_int_equal(res.created, 1757321139);
	assert_non_null(res.usage);
	assert_null(res.usage->next); /* detached */
	assert_null(res.usage->prev);
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(res.usage, "total_tokens")->valueint,
			 16280);
	assert_int_equal(res.generated_images, 1);
	api_result_clear(&res);
	assert_null(res.usage);
	api_result_clear(&res); /* twice is fine */
}

static void test_parse_b64_success(void **state)
{
	struct api_result res;

	(void)state;
	res = parse(200, "{\"data\":[{\"b64_json\":\"/9j/4AAQ\",\"size\":\"2048x2048\"}],"
			 "\"usage\":{\"generated_images\":1}}");
	assert_int_equal(res.outcome, API_OUTCOME_OK);
	assert_string_equal(res.b64_json, "/9j/4AAQ");
	assert_null(res.url);
	assert_null(res.model);
	assert_int_equal(res.created, 0);
	api_result_clear(&res);
}

static void test_parse_missing_usage(void **state)
{
	struct api_result res;

	(void)state;
	res = parse(200, "{\"data\":[{\"url\":\"https://x/y\"}]}");
	assert_int_equal(res.outcome, API_OUTCOME_OK);
	assert_null(res.usage);
	assert_null(res.size);
	assert_int_equal(res.generated_images, -1);
	api_result_clear(&res);
	/* A usage without generated_images. */
	res = parse(200, "{\"data\":[{\"url\":\"https://x/y\"}],\"usage\":{\"total_tokens\":5}}");
	assert_non_null(res.usage);
	assert_int_equal(res.generated_images, -1);
	api_result_clear(&res);
}

static void test_parse_top_level_errors(void **state)
{
	(void)state;
	expect_error(400, "{\"error\":{\"code\":\"InvalidParameter\",\"message\":\"bad size\"}}",
		     API_OUTCOME_FILE_FAIL, "InvalidParameter");
	expect_error(400,
		     "{\"error\":{\"code\":\"InputImageSensitiveContentDetected.PolicyViolation\","
		     "\"message\":\"no\",\"param\":\"\",\"type\":\"BadRequest\"}}",
		     API_OUTCOME_FILE_FAIL, "InputImageSensitiveContentDetected.PolicyViolation");
	expect_error(400,
		     "{\"error\":{\"code\":\"InvalidEndpoint.ClosedEndpoint\",\"message\":\"m\"}}",
		     API_OUTCOME_FILE_FAIL, "InvalidEndpoint.ClosedEndpoint");
	expect_error(401, "{\"error\":{\"code\":\"AuthenticationError\",\"message\":\"bad key\"}}",
		     API_OUTCOME_PAUSE, "AuthenticationError");
	expect_error(403,
		     "{\"error\":{\"code\":\"OperationDenied.ServiceNotOpen\",\"message\":\"m\"}}",
		     API_OUTCOME_PAUSE, "OperationDenied.ServiceNotOpen");
	expect_error(404,
		     "{\"error\":{\"code\":\"InvalidEndpointOrModel.NotFound\",\"message\":\"m\"}}",
		     API_OUTCOME_PAUSE, "InvalidEndpointOrModel.NotFound");
	expect_error(
	    429, "{\"error\":{\"code\":\"ModelAccountIpmRateLimitExceeded\",\"message\":\"m\"}}",
	    API_OUTCOME_RETRY, "ModelAccountIpmRateLimitExceeded");
	expect_error(429, "{\"error\":{\"code\":\"QuotaExceeded\",\"message\":\"m\"}}",
		     API_OUTCOME_PAUSE, "QuotaExceeded");
	expect_error(429, "{\"error\":{\"code\":\"SetLimitExceeded\",\"message\":\"m\"}}",
		     API_OUTCOME_PAUSE, "SetLimitExceeded");
	expect_error(429, "{\"error\":{\"code\":\"SomethingNew\",\"message\":\"m\"}}",
		     API_OUTCOME_RETRY, "SomethingNew");
	expect_error(500, "{\"error\":{\"code\":\"InternalServiceError\",\"message\":\"m\"}}",
		     API_OUTCOME_RETRY, "InternalServiceError");
	expect_error(503, "{\"error\":{\"message\":\"no code\"}}", API_OUTCOME_RETRY, "HTTP503");
	/* Some relays send the message as a bare string. */
	expect_error(401, "{\"error\":\"invalid api key\"}", API_OUTCOME_PAUSE, "HTTP401");
}

static void test_parse_error_message_kept(void **state)
{
	struct api_result res;

	(void)state;
	res = parse(400, "{\"error\":{\"code\":\"MissingParameter\",\"message\":\"prompt is "
			 "required. Request id: 0217\"}}");
	assert_string_equal(res.error_message, "prompt is required. Request id: 0217");
	api_result_clear(&res);
}

static void test_parse_error_on_200(void **state)
{
	(void)state;
	expect_error(200, "{\"error\":{\"code\":\"AuthenticationError\",\"message\":\"m\"}}",
		     API_OUTCOME_PAUSE, "AuthenticationError");
	expect_error(200, "{\"error\":{\"code\":\"AccountOverdueError\",\"message\":\"m\"}}",
		     API_OUTCOME_PAUSE, "AccountOverdueError");
	expect_error(200, "{\"error\":{\"code\":\"ServerOverloaded\",\"message\":\"m\"}}",
		     API_OUTCOME_RETRY, "ServerOverloaded");
	expect_error(200, "{\"error\":{\"code\":\"RateLimitExceeded.EndpointRPMExceeded\"}}",
		     API_OUTCOME_RETRY, "RateLimitExceeded.EndpointRPMExceeded");
	expect_error(200, "{\"error\":{\"code\":\"OutputImageSensitiveContentDetected\"}}",
		     API_OUTCOME_FILE_FAIL, "OutputImageSensitiveContentDetected");
	/* Unknown code on a success status: fail the file, never bill twice. */
	expect_error(200, "{\"error\":{\"code\":\"Whatever\",\"message\":\"m\"}}",
		     API_OUTCOME_FILE_FAIL, "Whatever");
	expect_error(200, "{\"error\":{}}", API_OUTCOME_FILE_FAIL, "HTTP200");
	/* The error wins over data that is also there. */
	expect_error(
	    200, "{\"data\":[{\"url\":\"https://x/y\"}],\"error\":{\"code\":\"QuotaExceeded\"}}",
	    API_OUTCOME_PAUSE, "QuotaExceeded");
	/* A numeric code is kept as text. */
	expect_error(200, "{\"error\":{\"code\":1234,\"message\":\"m\"}}", API_OUTCOME_FILE_FAIL,
		     "1234");
}

static void test_parse_data_error(void **state)
{
	struct api_result res;

	(void)state;
	res = parse(200, "{\"model\":\"m\",\"created\":5,\"data\":[{\"error\":{\"code\":"
			 "\"OutputImageSensitiveContentDetected\",\"message\":\"blocked\"}}],"
			 "\"usage\":{\"generated_images\":0}}");
	assert_int_equal(res.outcome, API_OUTCOME_FILE_FAIL);
	assert_string_equal(res.error_code, "OutputImageSensitiveContentDetected");
	assert_string_equal(res.error_message, "blocked");
	assert_int_equal(res.generated_images, 0);
	assert_string_equal(res.model, "m");
	assert_int_equal(res.created, 5);
	api_result_clear(&res);

	expect_error(200, "{\"data\":[{\"error\":{\"code\":\"InternalServiceError\"}}]}",
		     API_OUTCOME_RETRY, "InternalServiceError");
}

static void test_parse_malformed(void **state)
{
	(void)state;
	expect_error(200, "{\"data\":[{\"url\":\"https://x", API_OUTCOME_RETRY,
		     "MalformedResponse");
	expect_error(200, "", API_OUTCOME_RETRY, "MalformedResponse");
	expect_error(200, NULL, API_OUTCOME_RETRY, "MalformedResponse");
	expect_error(200, "[{\"url\":\"https://x/y\"}]", API_OUTCOME_RETRY, "MalformedResponse");
	expect_error(200, "\"just a string\"", API_OUTCOME_RETRY, "MalformedResponse");
	expect_error(200, "null", API_OUTCOME_RETRY, "MalformedResponse");
	expect_error(200, "{}", API_OUTCOME_RETRY, "MalformedResponse");
	expect_error(200, "{\"data\":[]}", API_OUTCOME_RETRY, "MalformedResponse");
	expect_error(200, "{\"data\":{}}", API_OUTCOME_RETRY, "MalformedResponse");
	expect_error(200, "{\"data\":[1]}", API_OUTCOME_RETRY, "MalformedResponse");
	expect_error(200, "{\"data\":[{\"size\":\"1x1\"}]}", API_OUTCOME_RETRY,
		     "MalformedResponse");
	expect_error(200, "{\"data\":[{\"url\":\"\"}]}", API_OUTCOME_RETRY, "MalformedResponse");
	expect_error(200, "{\"data\":[{\"url\":\"https://x/y\"}]} trailing", API_OUTCOME_RETRY,
		     "MalformedResponse");
	expect_error(502, "<html><body>Bad Gateway</body></html>", API_OUTCOME_RETRY,
		     "MalformedResponse");
	expect_error(500, "{}", API_OUTCOME_RETRY, "MalformedResponse");
	/* A 4xx without a JSON error speaks through its status. */
	expect_error(413, "<html>Request Entity Too Large</html>", API_OUTCOME_FILE_FAIL,
		     "HTTP413");
	expect_error(401, "Unauthorized", API_OUTCOME_PAUSE, "HTTP401");
	expect_error(429, "", API_OUTCOME_RETRY, "HTTP429");
	expect_error(408, "timeout", API_OUTCOME_RETRY, "HTTP408");
	expect_error(404, "{\"detail\":\"not found\"}", API_OUTCOME_PAUSE, "HTTP404");
	expect_error(400, "{\"data\":[{\"url\":\"https://x/y\"}]}", API_OUTCOME_FILE_FAIL,
		     "HTTP400");
	expect_error(302, "", API_OUTCOME_PAUSE, "HTTP302");
	/* A redirect is never a result nor a retry, whatever its body claims. */
	expect_error(307, "{\"data\":[{\"url\":\"https://x/y\"}]}", API_OUTCOME_PAUSE, "HTTP307");
	expect_error(308, "{\"error\":{\"code\":\"ServerOverloaded\",\"message\":\"m\"}}",
		     API_OUTCOME_PAUSE, "HTTP308");
}

static void test_parse_wrong_types(void **state)
{
	static const char nul_in_string[] = "{\"data\":[{\"url\":\"a\0b\"}]}";
	static const char nul_after[] = "{\"data\":[{\"url\":\"a\"}]}\0junk";
	struct api_result res;

	(void)state;
	expect_error(200, "{\"data\":[{\"url\":42}]}", API_OUTCOME_RETRY, "MalformedResponse");
	expect_error(200, "{\"data\":[{\"url\":null,\"b64_json\":[]}]}", API_OUTCOME_RETRY,
		     "MalformedResponse");
	expect_error(200, "{\"data\":\"https://x/y\"}", API_OUTCOME_RETRY, "MalformedResponse");
	/* An error whose code and message are of the wrong type. */
	expect_error(401, "{\"error\":{\"code\":{\"x\":1},\"message\":[1,2]}}", API_OUTCOME_PAUSE,
		     "HTTP401");
	expect_error(200, "{\"error\":{\"code\":1e999}}", API_OUTCOME_FILE_FAIL, "HTTP200");

	/* Metadata of the wrong type is ignored, the image is not. */
	res =
	    parse(200, "{\"model\":7,\"created\":\"yesterday\",\"data\":[{\"url\":\"https://x/y\","
		       "\"size\":[2048]}],\"usage\":[1],\"error\":null}");
	assert_int_equal(res.outcome, API_OUTCOME_OK);
	assert_null(res.model);
	assert_int_equal(res.created, 0);
	assert_null(res.size);
	assert_null(res.usage);
	assert_int_equal(res.generated_images, -1);
	api_result_clear(&res);

	res = parse(200, "{\"created\":1e300,\"data\":[{\"url\":\"https://x/y\"}],"
			 "\"usage\":{\"generated_images\":\"1\"}}");
	assert_int_equal(res.outcome, API_OUTCOME_OK);
	assert_int_equal(res.created, 0);
	assert_non_null(res.usage);
	assert_int_equal(res.generated_images, -1);
	api_result_clear(&res);

	res = parse(200,
		    "{\"data\":[{\"url\":\"https://x/y\"}],\"usage\":{\"generated_images\":-3}}");
	assert_int_equal(res.generated_images, -1);
	api_result_clear(&res);

	/* Embedded NULs: nothing breaks, nothing reads past the length. */
	assert_int_equal(api_parse_response(200, nul_in_string, sizeof(nul_in_string) - 1, NULL, &res),
			 0);
	api_result_clear(&res);
	assert_int_equal(api_parse_response(200, nul_after, sizeof(nul_after) - 1, NULL, &res), 0);
	assert_int_equal(res.outcome, API_OUTCOME_RETRY);
	api_result_clear(&res);
	/* Whitespace after the value is fine. */
	res = parse(200, "{\"data\":[{\"url\":\"a\"}]}\r\n");
	assert_int_equal(res.outcome, API_OUTCOME_OK);
	api_result_clear(&res);
}

static void test_parse_long_code(void **state)
{
	char body[512], code[200];
	struct api_result res;

	(void)state;
	memset(code, 'Q', sizeof(code) - 1);
	code[sizeof(code) - 1] = '\0';
	memcpy(code, "QuotaExceeded.", 14);
	(void)snprintf(body, sizeof(body), "{\"error\":{\"code\":\"%s\"}}", code);
	res = parse(429, body);
	/* classified on the whole code, kept capped at API_CODE_MAX */
	assert_int_equal(res.outcome, API_OUTCOME_PAUSE);
	assert_int_equal(strlen(res.error_code), API_CODE_MAX);
	assert_memory_equal(res.error_code, code, API_CODE_MAX - 3);
	assert_string_equal(res.error_code + API_CODE_MAX - 3, "\xe2\x80\xa6");
	api_result_clear(&res);
}

#define KEY "sk-sdr-0123456789abcdef0123456789"

static struct api_result parse_secret(long status, const char *body)
{
	struct api_result res;

	assert_int_equal(api_parse_response(status, body, strlen(body), KEY, &res), 0);
	return res;
}

/* Builds {"model":M,"created":C,"data":[{"url":U,"size":S}],"usage":USAGE}. */
static char *success_body(const char *model, const char *created, const char *url,
			  const char *size, const char *usage)
{
	size_t n = strlen(model) + strlen(created) + strlen(url) + strlen(size) + strlen(usage) + 128;
	char *body = malloc(n);

	assert_non_null(body);
	(void)snprintf(body, n,
		       "{\"model\":\"%s\",\"created\":%s,\"data\":[{\"url\":\"%s\",\"size\":\"%s\"}],"
		       "\"usage\":%s}",
		       model, created, url, size, usage);
	return body;
}

static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);

	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

static void test_parse_bounds_every_field(void **state)
{
	char *big = repeat('m', 3 * 1024 * 1024), *usage, *body;
	struct api_result res;
	size_t n;

	(void)state;
	/* a 3 MiB usage object: replaced by its top-level numbers */
	n = strlen(big) + 128;
	usage = malloc(n);
	assert_non_null(usage);
	(void)snprintf(usage, n,
		       "{\"generated_images\":1,\"total_tokens\":16384,\"note\":\"%s\",\"x\":{\"y\":2}}",
		       big);
	body = success_body(big, "1e300", "https://h/r.png", big, usage);
	res = parse_secret(200, body);
	assert_int_equal(res.outcome, API_OUTCOME_OK);
	assert_true(strlen(res.model) <= API_MODEL_MAX);
	assert_true(strlen(res.size) <= API_SIZE_MAX);
	assert_int_equal(res.created, 0); /* 1e300: no time, and no UB */
	assert_int_equal(res.generated_images, 1);
	assert_non_null(res.usage);
	assert_int_equal(cJSON_GetArraySize(res.usage), 3);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(res.usage, "truncated")));
	assert_int_equal(
	    cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(res.usage, "total_tokens")),
	    16384);
	api_result_clear(&res);
	free(body);

	/* too deep: {"a":{"b":{"c":{"d":{}}}}} is depth 5 */
	body = success_body("m", "1700000000", "https://h/r.png", "2K",
			    "{\"n\":3,\"a\":{\"b\":{\"c\":{\"d\":{}}}}}");
	res = parse_secret(200, body);
	assert_int_equal(res.created, 1700000000);
	assert_int_equal(cJSON_GetArraySize(res.usage), 2);
	api_result_clear(&res);
	free(body);
	/* depth 4 and small: verbatim */
	body = success_body("m", "-5", "https://h/r.png", "2K", "{\"a\":{\"b\":{\"c\":1}}}");
	res = parse_secret(200, body);
	assert_int_equal(res.created, 0); /* negative: the journal could not read it back */
	assert_null(cJSON_GetObjectItemCaseSensitive(res.usage, "truncated"));
	assert_non_null(cJSON_GetObjectItemCaseSensitive(res.usage, "a"));
	api_result_clear(&res);
	free(body);

	/* a 3 MiB error message */
	n = strlen(big) + 64;
	body = malloc(n);
	assert_non_null(body);
	(void)snprintf(body, n, "{\"error\":{\"code\":\"BadThing\",\"message\":\"%s\"}}", big);
	res = parse_secret(400, body);
	assert_int_equal(res.outcome, API_OUTCOME_FILE_FAIL);
	assert_int_equal(strlen(res.error_message), API_MESSAGE_MAX);
	api_result_clear(&res);
	free(body);
	free(usage);
	free(big);
}

static void test_parse_url_refused_not_cut(void **state)
{
	char *url = repeat('u', API_URL_MAX + 1), *body;
	struct api_result res;

	(void)state;
	memcpy(url, "https://h/", 10);
	body = success_body("m", "1", url, "2K", "null");
	res = parse_secret(200, body);
	assert_int_equal(res.outcome, API_OUTCOME_FILE_FAIL);
	assert_string_equal(res.error_code, "UnusableResultURL");
	assert_null(res.url);
	api_result_clear(&res);
	free(body);
	url[API_URL_MAX] = '\0'; /* exactly at the cap: kept as it is */
	body = success_body("m", "1", url, "2K", "null");
	res = parse_secret(200, body);
	assert_int_equal(res.outcome, API_OUTCOME_OK);
	assert_string_equal(res.url, url);
	api_result_clear(&res);
	free(body);
	free(url);

	res = parse_secret(200, "{\"data\":[{\"url\":\"https://h/?k=" KEY "\"}]}");
	assert_int_equal(res.outcome, API_OUTCOME_FILE_FAIL);
	assert_null(res.url);
	api_result_clear(&res);
	res = parse_secret(200, "{\"data\":[{\"url\":\"https://h/\u00e9\"}]}");
	assert_int_equal(res.outcome, API_OUTCOME_FILE_FAIL);
	api_result_clear(&res);
}

static void test_parse_scrubs_key_and_utf8(void **state)
{
	static const char body[] =
	    "{\"model\":\"m-" KEY "\",\"created\":1,"
	    "\"data\":[{\"url\":\"https://h/r.png\",\"size\":\"\xff" KEY "\"}],"
	    "\"usage\":{\"" KEY "\":{\"v\":[\"" KEY "\",\"\xc0\xaf\"]},\"generated_images\":1}}";
	struct api_result res;
	char *text;

	(void)state;
	res = parse_secret(200, body);
	assert_int_equal(res.outcome, API_OUTCOME_OK);
	assert_string_equal(res.model, "m-[redacted]");
	assert_string_equal(res.size, "\xef\xbf\xbd[redacted]");
	text = cJSON_PrintUnformatted(res.usage);
	assert_non_null(text);
	assert_null(strstr(text, KEY));
	assert_null(strstr(text, "\xc0"));
	assert_non_null(strstr(text, "[redacted]"));
	cJSON_free(text);
	api_result_clear(&res);

	res = parse_secret(401, "{\"error\":{\"code\":\"AuthenticationError." KEY "\","
				"\"message\":\"the key " KEY " is wrong \xe2\x82\"}}");
	assert_int_equal(res.outcome, API_OUTCOME_PAUSE);
	assert_string_equal(res.error_code, "AuthenticationError.[redacted]");
	assert_string_equal(res.error_message, "the key [redacted] is wrong \xef\xbf\xbd\xef\xbf\xbd");
	api_result_clear(&res);
}

static void test_classify(void **state)
{
	(void)state;
	assert_int_equal(api_classify(200, NULL), API_OUTCOME_OK);
	assert_int_equal(api_classify(201, NULL), API_OUTCOME_OK);
	assert_int_equal(api_classify(400, NULL), API_OUTCOME_FILE_FAIL);
	assert_int_equal(api_classify(400, "InvalidParameter.Size"), API_OUTCOME_FILE_FAIL);
	assert_int_equal(api_classify(400, "InvalidImageURL.Format"), API_OUTCOME_FILE_FAIL);
	assert_int_equal(api_classify(400, "InputTextSensitiveContentDetected"),
			 API_OUTCOME_FILE_FAIL);
	assert_int_equal(api_classify(401, NULL), API_OUTCOME_PAUSE);
	assert_int_equal(api_classify(403, "AccessDenied"), API_OUTCOME_PAUSE);
	assert_int_equal(api_classify(404, NULL), API_OUTCOME_PAUSE);
	assert_int_equal(api_classify(404, "ModelNotOpen"), API_OUTCOME_PAUSE);
	assert_int_equal(api_classify(408, NULL), API_OUTCOME_RETRY);
	assert_int_equal(api_classify(409, NULL), API_OUTCOME_FILE_FAIL);
	assert_int_equal(api_classify(413, NULL), API_OUTCOME_FILE_FAIL);
	assert_int_equal(api_classify(429, NULL), API_OUTCOME_RETRY);
	assert_int_equal(api_classify(429, "RequestBurstTooFast"), API_OUTCOME_RETRY);
	assert_int_equal(api_classify(429, "AccountRateLimitExceeded"), API_OUTCOME_RETRY);
	assert_int_equal(api_classify(429, "QuotaExceeded"), API_OUTCOME_PAUSE);
	assert_int_equal(api_classify(500, NULL), API_OUTCOME_RETRY);
	assert_int_equal(api_classify(504, NULL), API_OUTCOME_RETRY);
	assert_int_equal(api_classify(200, "InvalidParameter"), API_OUTCOME_FILE_FAIL);
	assert_int_equal(api_classify(200, "MissingParameter"), API_OUTCOME_FILE_FAIL);
	assert_int_equal(api_classify(200, "ModelNotOpen"), API_OUTCOME_PAUSE);
	assert_int_equal(api_classify(200, "InvalidEndpointOrModel.NotFound"), API_OUTCOME_PAUSE);
	assert_int_equal(api_classify(200, "InvalidEndpoint.ClosedEndpoint"),
			 API_OUTCOME_FILE_FAIL);
	assert_int_equal(api_classify(200, "Unheard.Of"), API_OUTCOME_FILE_FAIL);
	/* Names only match whole or at a dot. */
	assert_int_equal(api_classify(200, "QuotaExceededSoon"), API_OUTCOME_FILE_FAIL);
	assert_int_equal(api_classify(500, "AccessDeniedish"), API_OUTCOME_RETRY);
	/* A documented code says more than a re-mapped status. */
	assert_int_equal(api_classify(400, "AuthenticationError"), API_OUTCOME_PAUSE);
	assert_int_equal(api_classify(0, NULL), API_OUTCOME_RETRY);
	assert_int_equal(api_classify(301, NULL), API_OUTCOME_PAUSE);
}

static void test_result_clear(void **state)
{
	struct api_result res;

	(void)state;
	api_result_clear(NULL);
	memset(&res, 0, sizeof(res));
	api_result_clear(&res);
}

static void test_retry_after_seconds(void **state)
{
	(void)state;
	assert_int_equal(api_parse_retry_after("120", 0), 120000);
	assert_int_equal(api_parse_retry_after("0", 0), 0);
	assert_int_equal(api_parse_retry_after(" 5\t", 0), 5000);
	assert_int_equal(api_parse_retry_after("3600", 0), 3600000);
	assert_int_equal(api_parse_retry_after("3601", 0), 3600000);
	assert_int_equal(api_parse_retry_after("99999999999999999999999999", 0), 3600000);
	assert_int_equal(api_parse_retry_after("007", 0), 7000);
	assert_int_equal(api_parse_retry_after(NULL, 0), -1);
	assert_int_equal(api_parse_retry_after("", 0), -1);
	assert_int_equal(api_parse_retry_after("   ", 0), -1);
	assert_int_equal(api_parse_retry_after("-1", 0), -1);
	assert_int_equal(api_parse_retry_after("+5", 0), -1);
	assert_int_equal(api_parse_retry_after("1.5", 0), -1);
	assert_int_equal(api_parse_retry_after("5s", 0), -1);
	assert_int_equal(api_parse_retry_after("5 5", 0), -1);
	assert_int_equal(api_parse_retry_after("soon", 0), -1);
}

static void test_retry_after_date(void **state)
{
	static const char date[] = "Wed, 21 Oct 2015 07:28:00 GMT";
	const int64_t when = 1445412480;

	(void)state;
	assert_int_equal(api_parse_retry_after(date, when - 120), 120000);
	assert_int_equal(api_parse_retry_after(date, when), 0);
	assert_int_equal(api_parse_retry_after(date, when + 1000), 0);
	assert_int_equal(api_parse_retry_after(date, when - 7200), 3600000);
	assert_int_equal(api_parse_retry_after(date, INT64_MIN), 3600000);
	assert_int_equal(api_parse_retry_after(date, INT64_MAX), 0);
	assert_int_equal(api_parse_retry_after(" Mon, 29 Feb 2016 12:00:00 GMT ", 1456747200 - 1),
			 1000);
	assert_int_equal(api_parse_retry_after("Sat, 01 Jan 2000 00:00:00 GMT", 946684800 - 60),
			 60000);
	assert_int_equal(api_parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", -5), 5000);

	assert_int_equal(api_parse_retry_after("Sun, 29 Feb 2015 12:00:00 GMT", 0), -1);
	assert_int_equal(api_parse_retry_after("Wed, 32 Oct 2015 07:28:00 GMT", 0), -1);
	assert_int_equal(api_parse_retry_after("Wed, 00 Oct 2015 07:28:00 GMT", 0), -1);
	assert_int_equal(api_parse_retry_after("Wed, 21 Oct 2015 24:28:00 GMT", 0), -1);
	assert_int_equal(api_parse_retry_after("Wed, 21 Oct 2015 07:60:00 GMT", 0), -1);
	assert_int_equal(api_parse_retry_after("Wed, 21 Oct 2015 07:28:61 GMT", 0), -1);
	assert_int_equal(api_parse_retry_after("Wed, 21 Oct 2015 07:28:00 UTC", 0), -1);
	assert_int_equal(api_parse_retry_after("Wed, 21 Okt 2015 07:28:00 GMT", 0), -1);
	assert_int_equal(api_parse_retry_after("Wen, 21 Oct 2015 07:28:00 GMT", 0), -1);
	assert_int_equal(api_parse_retry_after("Wed, 21 Oct 15 07:28:00 GMT", 0), -1);
	assert_int_equal(api_parse_retry_after("Wed, 2x Oct 2015 07:28:00 GMT", 0), -1);
	assert_int_equal(api_parse_retry_after("Wed 21 Oct 2015 07:28:00 GMT ", 0), -1);
	assert_int_equal(api_parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", 0), -1);
	assert_int_equal(api_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMTX", 0), -1);
}

static void test_frame_sequential(void **state)
{
	struct api_request req = base_request;
	char *prefix = NULL, *suffix = NULL;

	(void)state;
	req.max_images = 1; /* one: the API's default, nothing sent */
	assert_int_equal(api_request_frame(&req, &prefix, &suffix), 0);
	assert_null(strstr(suffix, "sequential"));
	free(prefix);
	free(suffix);
	req.max_images = 4;
	assert_int_equal(api_request_frame(&req, &prefix, &suffix), 0);
	assert_string_equal(suffix, "\",\"size\":\"2K\",\"watermark\":false,"
				    "\"response_format\":\"url\","
				    "\"sequential_image_generation_options\":{\"max_images\":4},"
				    "\"sequential_image_generation\":\"auto\"}");
	free(prefix);
	free(suffix);
}

/* Several data[] entries: each kept in order, a failed one with its error,
 * the first image copied where one-image code reads it. */
static void test_parse_several_images(void **state)
{
	struct api_result res;

	(void)state;
	res = parse(200,
		    "{\"data\":[{\"error\":{\"code\":\"OutputImageSensitiveContentDetected\","
		    "\"message\":\"blocked\"}},{\"url\":\"https://x.example/1\",\"size\":\"1x1\"},"
		    "{\"url\":\"https://x.example/2\"},{\"size\":\"3x3\"}]}");
	assert_int_equal(res.outcome, API_OUTCOME_OK);
	assert_int_equal(res.n_images, 4);
	assert_int_equal(res.n_ok, 2);
	assert_string_equal(res.images[0].error_code, "OutputImageSensitiveContentDetected");
	assert_string_equal(res.images[0].error_message, "blocked");
	assert_string_equal(res.images[1].url, "https://x.example/1");
	assert_null(res.images[1].error_code);
	assert_string_equal(res.images[2].url, "https://x.example/2");
	assert_string_equal(res.images[3].error_code, "MalformedResponse");
	assert_string_equal(res.url, "https://x.example/1");
	assert_string_equal(res.size, "1x1");
	/* No usage (a relay): counted from data[]. */
	assert_int_equal(res.generated_images, -1);
	assert_int_equal(api_result_image_count(&res), 2);
	api_result_clear(&res);

	/* usage speaks for itself when present. */
	res = parse(
	    200, "{\"data\":[{\"url\":\"https://x.example/1\"},{\"url\":\"https://x.example/2\"}],"
		 "\"usage\":{\"generated_images\":2}}");
	assert_int_equal(api_result_image_count(&res), 2);
	api_result_clear(&res);

	/* Not one image: the first error is the answer's, as with one image. */
	expect_error(200,
		     "{\"data\":[{\"error\":{\"code\":\"InternalServiceError\"}},"
		     "{\"error\":{\"code\":\"OutputImageSensitiveContentDetected\"}}]}",
		     API_OUTCOME_RETRY, "InternalServiceError");

	/* A URL refused in one entry leaves the others. */
	res = parse(
	    200,
	    "{\"data\":[{\"url\":\"https://x.example/a b\"},{\"url\":\"https://x.example/2\"}]}");
	assert_int_equal(res.outcome, API_OUTCOME_OK);
	assert_int_equal(res.n_ok, 1);
	assert_string_equal(res.images[0].error_code, "UnusableResultURL");
	assert_string_equal(res.url, "https://x.example/2");
	api_result_clear(&res);

	/* More entries than the API ever makes. */
	{
		char body[2048] = "{\"data\":[";

		for (int i = 0; i < API_IMAGES_MAX + 1; i++)
			strcat(body, i ? ",{\"url\":\"https://x.example/\"}"
				       : "{\"url\":\"https://x.example/\"}");
		strcat(body, "]}");
		expect_error(200, body, API_OUTCOME_RETRY, "MalformedResponse");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_frame_extra),
	    cmocka_unit_test(test_frame_images),
	    cmocka_unit_test(test_frame_exact),
	    cmocka_unit_test(test_frame_round_trip_hostile_prompt),
	    cmocka_unit_test(test_frame_optional_fields),
	    cmocka_unit_test(test_frame_rejects),
	    cmocka_unit_test(test_frame_sequential),
	    cmocka_unit_test(test_parse_several_images),
	    cmocka_unit_test(test_parse_url_success),
	    cmocka_unit_test(test_parse_b64_success),
	    cmocka_unit_test(test_parse_missing_usage),
	    cmocka_unit_test(test_parse_top_level_errors),
	    cmocka_unit_test(test_parse_error_message_kept),
	    cmocka_unit_test(test_parse_error_on_200),
	    cmocka_unit_test(test_parse_data_error),
	    cmocka_unit_test(test_parse_malformed),
	    cmocka_unit_test(test_parse_wrong_types),
	    cmocka_unit_test(test_parse_long_code),
	    cmocka_unit_test(test_parse_bounds_every_field),
	    cmocka_unit_test(test_parse_url_refused_not_cut),
	    cmocka_unit_test(test_parse_scrubs_key_and_utf8),
	    cmocka_unit_test(test_classify),
	    cmocka_unit_test(test_result_clear),
	    cmocka_unit_test(test_retry_after_seconds),
	    cmocka_unit_test(test_retry_after_date),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
