/* libFuzzer: the control socket's request parser (control_request_parse), fed
 * what any client allowed on the socket may send; and the reply framing: an
 * error reply built from the parser's message is one line of valid JSON.
 *
 * Input: one request line (without its newline). */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct control_request req;
	const char *code = NULL;
	char msg[256];
	cJSON *reply, *back;
	char *line;
	size_t len;
	int r = control_request_parse((const char *)data, size, &req, &code, msg, sizeof(msg));

	if (r == 0) {
		if ((unsigned)req.cmd >= CONTROL_CMD_COUNT || req.n < 1 ||
		    req.n > CONTROL_LIST_MAX || req.n_files > CONTROL_FILES_MAX ||
		    (req.folder && req.folder[0] != '/'))
			abort();
		for (size_t i = 0; i < req.n_files; i++)
			if (req.files[i][0] != '/')
				abort();
		control_request_clear(&req);
		return 0;
	}
	if (r != -EINVAL || !code)
		return 0; /* -ENOMEM */
	reply = control_reply_error(code, msg);
	if (!reply)
		return 0;
	line = control_reply_line(reply, &len);
	if (line) {
		if (len == 0 || line[len - 1] != '\n' || memchr(line, '\n', len - 1))
			abort();
		back = cJSON_ParseWithLength(line, len);
		if (!back)
			abort();
		cJSON_Delete(back);
	}
	free(line);
	cJSON_Delete(reply);
	return 0;
}
