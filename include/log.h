/* log: the daemon's one way to speak. Plain lines on stderr, or the journal with
 * structured fields when started by systemd (JOURNAL_STREAM set). Library-like
 * modules (config, api, image, output, index) never log: they fill an error for
 * the caller, and the caller logs once. */
#ifndef SEEDREAMD_LOG_H
#define SEEDREAMD_LOG_H

#include <syslog.h>

/* verbosity: -1 quiet (warnings and errors only), 0 normal (info), 1 debug. */
void log_init(int verbosity);

/* True when the given priority would be emitted. */
int log_enabled(int priority);

void log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Like log_msg, with journal fields for one job: folder path, source path
 * (relative to the folder), request id and API error code, each may be NULL. */
void log_job(int priority, const char *folder, const char *source, const char *request_id,
	     const char *error_code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)

/* A status line at the bottom of a terminal (--once's progress): drawn in
 * place (\r, clear to the end of the line), taken away before every log line
 * and drawn again after it, so the two never garble each other. NULL takes
 * it away. Only when stderr is a terminal and not the journal. */
int log_status_line_possible(void);
void log_status_line(const char *text);
/* Leaves the status line as it is, on a line of its own: the final state. */
void log_status_line_keep(void);

/* Out of memory is the one fatal error. */
_Noreturn void log_oom(void);

#endif
