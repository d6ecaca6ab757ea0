/* The control socket's request parsing and reply framing (control_proto.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "control_proto.h"

static int parse(const char *text, struct control_request *req, const char **code)
{
	char msg[256];

	*code = NULL;
	return control_request_parse(text, strlen(text), req, code, msg, sizeof(msg));
}

static void test_commands(void **state)
{
	struct control_request req;
	const char *code;

	(void)state;
	for (int i = 0; i < CONTROL_CMD_COUNT; i++) {
		char text[128];
		if (i == CONTROL_CMD_RETRY)
			continue;
		(void)snprintf(text, sizeof(text), "{\"v\":1,\"cmd\":\"%s\"}",
			       control_cmd_name((enum control_cmd)i));
		assert_int_equal(parse(text, &req, &code), 0);
		assert_int_equal(req.cmd, i);
		assert_null(req.folder);
		/* history's default; failed lists all it may unless -n */
		assert_int_equal(req.n, i == CONTROL_CMD_FAILED ? CONTROL_LIST_MAX : 20);
		control_request_clear(&req);
	}
	assert_int_equal(parse("{\"v\":1,\"cmd\":\"pause\",\"folder\":\"/srv/hot\"}", &req, &code),
			 0);
	assert_string_equal(req.folder, "/srv/hot");
	control_request_clear(&req);
	assert_int_equal(parse("{\"v\":1,\"cmd\":\"history\",\"n\":7}", &req, &code), 0);
	assert_int_equal(req.n, 7);
	control_request_clear(&req);
	assert_int_equal(parse("{\"v\":1,\"cmd\":\"failed\",\"n\":3}", &req, &code), 0);
	assert_int_equal(req.n, 3);
	control_request_clear(&req);
}

static void test_retry(void **state)
{
	struct control_request req;
	const char *code;

	(void)state;
	assert_int_equal(
	    parse("{\"v\":1,\"cmd\":\"retry\",\"files\":[\"/a/b.jpg\",\"/a/c.png\"]}", &req, &code),
	    0);
	assert_int_equal(req.n_files, 2);
	assert_string_equal(req.files[0], "/a/b.jpg");
	assert_string_equal(req.files[1], "/a/c.png");
	assert_false(req.all_failed);
	control_request_clear(&req);
	assert_int_equal(
	    parse("{\"v\":1,\"cmd\":\"retry\",\"all_failed\":true,\"folder\":\"/a\"}", &req, &code),
	    0);
	assert_true(req.all_failed);
	assert_string_equal(req.folder, "/a");
	control_request_clear(&req);
	/* Neither, both, relative paths, wrong types. */
	assert_int_equal(parse("{\"v\":1,\"cmd\":\"retry\"}", &req, &code), -EINVAL);
	assert_string_equal(code, CONTROL_E_BAD_REQUEST);
	assert_int_equal(parse("{\"v\":1,\"cmd\":\"retry\",\"all_failed\":true,\"files\":[\"/a\"]}",
			       &req, &code),
			 -EINVAL);
	assert_int_equal(parse("{\"v\":1,\"cmd\":\"retry\",\"files\":[\"a.jpg\"]}", &req, &code),
			 -EINVAL);
	assert_int_equal(parse("{\"v\":1,\"cmd\":\"retry\",\"files\":[\"/a\",3]}", &req, &code),
			 -EINVAL);
	assert_null(req.files); /* cleared on refusal */
	assert_int_equal(parse("{\"v\":1,\"cmd\":\"retry\",\"files\":\"/a\"}", &req, &code),
			 -EINVAL);
	assert_int_equal(parse("{\"v\":1,\"cmd\":\"retry\",\"all_failed\":1}", &req, &code),
			 -EINVAL);
}

static void test_refused(void **state)
{
	struct control_request req;
	const char *code;
	char *big;
	char msg[256];

	(void)state;
	assert_int_equal(parse("", &req, &code), -EINVAL);
	assert_string_equal(code, CONTROL_E_BAD_REQUEST);
	assert_int_equal(parse("[1,2]", &req, &code), -EINVAL);
	assert_int_equal(parse("{\"cmd\":\"status\"}", &req, &code), -EINVAL);
	assert_string_equal(code, CONTROL_E_VERSION);
	assert_int_equal(parse("{\"v\":2,\"cmd\":\"status\"}", &req, &code), -EINVAL);
	assert_string_equal(code, CONTROL_E_VERSION);
	assert_int_equal(parse("{\"v\":1,\"cmd\":\"reboot\"}", &req, &code), -EINVAL);
	assert_string_equal(code, CONTROL_E_BAD_REQUEST);
	assert_int_equal(parse("{\"v\":1,\"cmd\":7}", &req, &code), -EINVAL);
	assert_int_equal(parse("{\"v\":1,\"cmd\":\"pause\",\"folder\":\"rel\"}", &req, &code),
			 -EINVAL);
	assert_int_equal(parse("{\"v\":1,\"cmd\":\"history\",\"n\":0}", &req, &code), -EINVAL);
	assert_int_equal(parse("{\"v\":1,\"cmd\":\"history\",\"n\":1001}", &req, &code), -EINVAL);
	assert_int_equal(parse("{\"v\":1,\"cmd\":\"history\",\"n\":2.5}", &req, &code), -EINVAL);
	/* A NUL inside the line: cJSON would stop there and read another request. */
	assert_int_equal(control_request_parse("{\"v\":1,\"cmd\":\"status\"}\0x", 24, &req, &code,
					       msg, sizeof(msg)),
			 -EINVAL);
	/* A line at the limit. */
	big = malloc(CONTROL_LINE_MAX + 1);
	assert_non_null(big);
	memset(big, ' ', CONTROL_LINE_MAX);
	memcpy(big, "{\"v\":1,\"cmd\":\"status\"}", 22);
	assert_int_equal(
	    control_request_parse(big, CONTROL_LINE_MAX, &req, &code, msg, sizeof(msg)), -EINVAL);
	assert_string_equal(code, CONTROL_E_TOO_LONG);
	assert_int_equal(
	    control_request_parse(big, CONTROL_LINE_MAX - 1, &req, &code, msg, sizeof(msg)), 0);
	control_request_clear(&req);
	free(big);
}

static void test_replies(void **state)
{
	cJSON *ok = control_reply_ok(), *err = control_reply_error("no_such_folder", "x \"y\"");
	cJSON *big, *parsed;
	char *line, *filler;
	size_t len;

	(void)state;
	line = control_reply_line(ok, &len);
	assert_string_equal(line, "{\"v\":1,\"ok\":true}\n");
	assert_int_equal(len, strlen(line));
	free(line);
	line = control_reply_line(err, &len);
	assert_string_equal(line, "{\"v\":1,\"ok\":false,\"error\":{\"code\":\"no_such_folder\","
				  "\"message\":\"x \\\"y\\\"\"}}\n");
	free(line);
	/* Too big to send: an error in its place, still one line. */
	filler = malloc(CONTROL_REPLY_MAX + 1);
	assert_non_null(filler);
	memset(filler, 'a', CONTROL_REPLY_MAX);
	filler[CONTROL_REPLY_MAX] = '\0';
	big = control_reply_ok();
	assert_non_null(cJSON_AddStringToObject(big, "x", filler));
	line = control_reply_line(big, &len);
	assert_true(len < 1000);
	assert_int_equal(line[len - 1], '\n');
	assert_null(memchr(line, '\n', len - 1));
	parsed = cJSON_Parse(line);
	assert_string_equal(
	    cJSON_GetObjectItem(cJSON_GetObjectItem(parsed, "error"), "code")->valuestring,
	    CONTROL_E_REPLY_TOO_BIG);
	cJSON_Delete(parsed);
	free(line);
	free(filler);
	cJSON_Delete(big);
	cJSON_Delete(ok);
	cJSON_Delete(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_commands),
	    cmocka_unit_test(test_retry),
	    cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_replies),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
