#include "control_proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const cmd_names[CONTROL_CMD_COUNT] = {
    [CONTROL_CMD_STATUS] = "status", [CONTROL_CMD_QUEUE] = "queue",
    [CONTROL_CMD_FAILED] = "failed", [CONTROL_CMD_HISTORY] = "history",
    [CONTROL_CMD_RETRY] = "retry",   [CONTROL_CMD_PAUSE] = "pause",
    [CONTROL_CMD_RESUME] = "resume", [CONTROL_CMD_RESCAN] = "rescan",
};

const char *control_cmd_name(enum control_cmd cmd)
{
	return (unsigned)cmd < CONTROL_CMD_COUNT ? cmd_names[cmd] : "?";
}

int control_cmd_from_name(const char *name)
{
	for (int i = 0; i < CONTROL_CMD_COUNT; i++)
		if (strcmp(cmd_names[i], name) == 0)
			return i;
	return -1;
}

void control_request_clear(struct control_request *req)
{
	free(req->folder);
	for (size_t i = 0; i < req->n_files; i++)
		free(req->files[i]);
	free(req->files);
	memset(req, 0, sizeof(*req));
}

static int bad(const char **ret_code, const char *code, char *msg, size_t msglen, const char *what)
{
	*ret_code = code;
	(void)snprintf(msg, msglen, "%s", what);
	return -EINVAL;
}

/* An absolute path without NUL bytes (cJSON stops at one: the length tells). */
static bool path_ok(const cJSON *item)
{
	return cJSON_IsString(item) && item->valuestring[0] == '/' &&
	       strlen(item->valuestring) < 4096;
}

static int parse_fields(const cJSON *root, struct control_request *req, const char **ret_code,
			char *msg, size_t msglen)
{
	const cJSON *folder = cJSON_GetObjectItemCaseSensitive(root, "folder");
	const cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files");
	const cJSON *all = cJSON_GetObjectItemCaseSensitive(root, "all_failed");
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(root, "n");

	if (folder && !cJSON_IsNull(folder)) {
		if (!path_ok(folder))
			return bad(ret_code, CONTROL_E_BAD_REQUEST, msg, msglen,
				   "\"folder\" must be an absolute path");
		if (!(req->folder = strdup(folder->valuestring)))
			return -ENOMEM;
	}
	if (n) {
		if (!cJSON_IsNumber(n) || n->valuedouble < 1 || n->valuedouble > CONTROL_LIST_MAX ||
		    n->valuedouble != (double)(unsigned)n->valuedouble)
			return bad(ret_code, CONTROL_E_BAD_REQUEST, msg, msglen,
				   "\"n\" must be a whole number from 1 to 1000");
		req->n = (unsigned)n->valuedouble;
	}
	if (all) {
		if (!cJSON_IsBool(all))
			return bad(ret_code, CONTROL_E_BAD_REQUEST, msg, msglen,
				   "\"all_failed\" must be true or false");
		req->all_failed = cJSON_IsTrue(all);
	}
	if (files) {
		int count = cJSON_GetArraySize(files);
		const cJSON *f;

		if (!cJSON_IsArray(files) || count > CONTROL_FILES_MAX)
			return bad(ret_code, CONTROL_E_BAD_REQUEST, msg, msglen,
				   "\"files\" must be a list of at most 1000 absolute paths");
		req->files = calloc((size_t)count + 1, sizeof(*req->files));
		if (!req->files)
			return -ENOMEM;
		cJSON_ArrayForEach(f, files)
		{
			if (!path_ok(f))
				return bad(ret_code, CONTROL_E_BAD_REQUEST, msg, msglen,
					   "\"files\" must be a list of absolute paths");
			if (!(req->files[req->n_files] = strdup(f->valuestring)))
				return -ENOMEM;
			req->n_files++;
		}
	}
	if (req->cmd == CONTROL_CMD_RETRY && !req->all_failed && req->n_files == 0)
		return bad(ret_code, CONTROL_E_BAD_REQUEST, msg, msglen,
			   "retry needs \"files\" or \"all_failed\": true");
	if (req->cmd == CONTROL_CMD_RETRY && req->all_failed && req->n_files)
		return bad(ret_code, CONTROL_E_BAD_REQUEST, msg, msglen,
			   "retry takes \"files\" or \"all_failed\", not both");
	if (!req->n)
		req->n = req->cmd == CONTROL_CMD_FAILED ? CONTROL_LIST_MAX : 20;
	return 0;
}

int control_request_parse(const char *line, size_t len, struct control_request *ret_req,
			  const char **ret_code, char *msg, size_t msglen)
{
	cJSON *root = NULL;
	const cJSON *v, *cmd;
	int r, which;

	memset(ret_req, 0, sizeof(*ret_req));
	if (len >= CONTROL_LINE_MAX)
		return bad(ret_code, CONTROL_E_TOO_LONG, msg, msglen, "request line too long");
	if (memchr(line, '\0', len))
		return bad(ret_code, CONTROL_E_BAD_REQUEST, msg, msglen, "NUL byte in the request");
	root = cJSON_ParseWithLength(line, len);
	if (!root || !cJSON_IsObject(root)) {
		r = bad(ret_code, CONTROL_E_BAD_REQUEST, msg, msglen,
			"a request is one JSON object on one line");
		goto out;
	}
	v = cJSON_GetObjectItemCaseSensitive(root, "v");
	if (!cJSON_IsNumber(v) || v->valuedouble != CONTROL_PROTO_VERSION) {
		r = bad(ret_code, CONTROL_E_VERSION, msg, msglen,
			"this daemon speaks protocol version 1 (\"v\":1)");
		goto out;
	}
	cmd = cJSON_GetObjectItemCaseSensitive(root, "cmd");
	which = cJSON_IsString(cmd) ? control_cmd_from_name(cmd->valuestring) : -1;
	if (which < 0) {
		r = bad(ret_code, CONTROL_E_BAD_REQUEST, msg, msglen,
			"\"cmd\" must be one of status, queue, failed, history, retry, pause, "
			"resume, rescan");
		goto out;
	}
	ret_req->cmd = (enum control_cmd)which;
	r = parse_fields(root, ret_req, ret_code, msg, msglen);
out:
	cJSON_Delete(root);
	if (r < 0)
		control_request_clear(ret_req);
	return r;
}

cJSON *control_reply_ok(void)
{
	cJSON *o = cJSON_CreateObject();

	if (!o || !cJSON_AddNumberToObject(o, "v", CONTROL_PROTO_VERSION) ||
	    !cJSON_AddTrueToObject(o, "ok")) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

cJSON *control_reply_error(const char *code, const char *message)
{
	cJSON *o = cJSON_CreateObject(), *e;

	if (!o || !cJSON_AddNumberToObject(o, "v", CONTROL_PROTO_VERSION) ||
	    !cJSON_AddFalseToObject(o, "ok") || !(e = cJSON_AddObjectToObject(o, "error")) ||
	    !cJSON_AddStringToObject(e, "code", code) ||
	    !cJSON_AddStringToObject(e, "message", message)) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

static char *line_of(const cJSON *reply, size_t *ret_len)
{
	char *text = cJSON_PrintUnformatted(reply), *line;
	size_t len;

	if (!text)
		return NULL;
	len = strlen(text);
	line = realloc(text, len + 2);
	if (!line) {
		free(text);
		return NULL;
	}
	line[len] = '\n';
	line[len + 1] = '\0';
	*ret_len = len + 1;
	return line;
}

char *control_reply_line(const cJSON *reply, size_t *ret_len)
{
	char *line = line_of(reply, ret_len);
	cJSON *err;

	if (!line || *ret_len <= CONTROL_REPLY_MAX)
		return line;
	free(line);
	err = control_reply_error(CONTROL_E_REPLY_TOO_BIG,
				  "the reply would exceed 1 MiB; ask for less");
	if (!err)
		return NULL;
	line = line_of(err, ret_len);
	cJSON_Delete(err);
	return line;
}
