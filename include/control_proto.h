/* control_proto: the control socket's protocol, pure (no I/O, never logs).
 * One JSON object per line each way, at most CONTROL_LINE_MAX bytes a request:
 *   {"v":1,"cmd":"status"}                       -> {"v":1,"ok":true,...}
 *   {"v":1,"cmd":"retry","files":["/abs/a.jpg"]}  -> {"v":1,"ok":false,
 *                                                    "error":{"code":"...","message":"..."}}
 * Shared by the daemon (src/control.c) and the client (tools/seedreamctl.c). */
#ifndef SEEDREAMD_CONTROL_PROTO_H
#define SEEDREAMD_CONTROL_PROTO_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#define CONTROL_PROTO_VERSION 1
#define CONTROL_LINE_MAX      (64 * 1024)   /* a request line, newline included */
#define CONTROL_REPLY_MAX     (1024 * 1024) /* a reply line: the most a client may hold back */
#define CONTROL_LIST_MAX      1000	    /* items in a queue, failed or history reply */
#define CONTROL_FILES_MAX     1000	    /* files in one retry request */

enum control_cmd {
	CONTROL_CMD_STATUS,
	CONTROL_CMD_QUEUE,
	CONTROL_CMD_FAILED,
	CONTROL_CMD_HISTORY,
	CONTROL_CMD_RETRY,
	CONTROL_CMD_PAUSE,
	CONTROL_CMD_RESUME,
	CONTROL_CMD_RESCAN,
	CONTROL_CMD_COUNT
};

struct control_request {
	enum control_cmd cmd;
	char *folder; /* "folder": absolute, or NULL for all */
	char **files; /* retry: absolute paths of sources */
	size_t n_files;
	bool all_failed; /* retry: every failed file (of folder, if given) */
	unsigned n;	 /* history (default 20), failed (default CONTROL_LIST_MAX): how many */
};

/* The protocol's error codes. */
#define CONTROL_E_BAD_REQUEST	"bad_request" /* not JSON, wrong types, unknown cmd */
#define CONTROL_E_VERSION	"unsupported_version"
#define CONTROL_E_TOO_LONG	"request_too_long"
#define CONTROL_E_DENIED	"permission_denied"
#define CONTROL_E_BUSY		"too_many_clients"
#define CONTROL_E_NO_FOLDER	"no_such_folder"
#define CONTROL_E_NOT_FAILED	"not_failed" /* retry: no error record for the file */
#define CONTROL_E_STORAGE	"storage_error"
#define CONTROL_E_STOPPING	"stopping"
#define CONTROL_E_REPLY_TOO_BIG "reply_too_large"
#define CONTROL_E_WORK_BUSY	"busy" /* failed, retry: too many under way; try again */

/* Parses one request line (without its newline). 0, or -EINVAL with an error
 * code (static) and a message in msg, or -ENOMEM. */
int control_request_parse(const char *line, size_t len, struct control_request *ret_req,
			  const char **ret_code, char *msg, size_t msglen);
void control_request_clear(struct control_request *req); /* accepts NULL members */

const char *control_cmd_name(enum control_cmd cmd);
/* -1 when unknown. */
int control_cmd_from_name(const char *name);

/* {"v":1,"ok":true}, or NULL when out of memory. */
cJSON *control_reply_ok(void);
/* {"v":1,"ok":false,"error":{"code":code,"message":message}}, or NULL. */
cJSON *control_reply_error(const char *code, const char *message);

/* The reply as one line (newline included, NUL-terminated; *ret_len without
 * the NUL): replaced by a reply_too_large error beyond CONTROL_REPLY_MAX.
 * Caller frees. NULL when out of memory. */
char *control_reply_line(const cJSON *reply, size_t *ret_len);

#endif
