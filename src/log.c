#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

static int max_priority = LOG_INFO;
static int use_journal;
static char status_line[512]; /* shown at the bottom of the terminal, or empty */

void log_init(int verbosity)
{
	if (verbosity < 0)
		max_priority = LOG_WARNING;
	else if (verbosity > 0)
		max_priority = LOG_DEBUG;
	else
		max_priority = LOG_INFO;
	/* JOURNAL_STREAM is set by systemd when stderr is connected to the journal. */
	use_journal = getenv("JOURNAL_STREAM") != NULL;
}

int log_enabled(int priority)
{
	return priority <= max_priority;
}

static const char *priority_name(int priority)
{
	switch (priority) {
	case LOG_EMERG:
	case LOG_ALERT:
	case LOG_CRIT:
	case LOG_ERR:
		return "error";
	case LOG_WARNING:
		return "warning";
	case LOG_NOTICE:
	case LOG_INFO:
		return "info";
	default:
		return "debug";
	}
}

static void log_emit(int priority, const char *folder, const char *source, const char *request_id,
		     const char *error_code, const char *fmt, va_list ap)
{
	char text[2048];

	if (!log_enabled(priority))
		return;
	(void)vsnprintf(text, sizeof(text), fmt, ap);
	/* Names from a hot folder may hold newlines; one event stays one line. */
	for (char *p = text; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
	if (use_journal) {
		/* Only the fields that have a value: journalctl FOLDER=... then finds
		 * exactly the lines about that folder. */
		char prio[16], *fields[4] = {NULL};
		const char *names[4] = {"FOLDER=", "SOURCE=", "REQUEST_ID=", "ERROR_CODE="};
		const char *values[4] = {folder, source, request_id, error_code};
		struct iovec iov[7];
		char message[sizeof(text) + 8];
		int n = 0;

		(void)snprintf(message, sizeof(message), "MESSAGE=%s", text);
		(void)snprintf(prio, sizeof(prio), "PRIORITY=%d", priority);
		iov[n++] = (struct iovec){message, strlen(message)};
		iov[n++] = (struct iovec){prio, strlen(prio)};
		iov[n++] = (struct iovec){(char *)"SYSLOG_IDENTIFIER=seedreamd", 27};
		for (int i = 0; i < 4; i++) {
			if (!values[i] || !values[i][0])
				continue;
			if (asprintf(&fields[i], "%s%s", names[i], values[i]) < 0) {
				fields[i] = NULL;
				continue;
			}
			iov[n++] = (struct iovec){fields[i], strlen(fields[i])};
		}
		(void)sd_journal_sendv(iov, n);
		for (int i = 0; i < 4; i++)
			free(fields[i]);
		return;
	}
	if (status_line[0])
		(void)fputs("\r\033[K", stderr);
	(void)fprintf(stderr, "seedreamd: %s: %s\n", priority_name(priority), text);
	if (status_line[0]) {
		(void)fputs(status_line, stderr);
		(void)fflush(stderr);
	}
}

int log_status_line_possible(void)
{
	return !use_journal && isatty(STDERR_FILENO);
}

void log_status_line(const char *text)
{
	(void)snprintf(status_line, sizeof(status_line), "%s", text ? text : "");
	(void)fprintf(stderr, "\r\033[K%s", status_line);
	(void)fflush(stderr);
}

void log_status_line_keep(void)
{
	if (!status_line[0])
		return;
	(void)fputc('\n', stderr);
	(void)fflush(stderr);
	status_line[0] = '\0';
}

void log_msg(int priority, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(priority, NULL, NULL, NULL, NULL, fmt, ap);
	va_end(ap);
}

void log_job(int priority, const char *folder, const char *source, const char *request_id,
	     const char *error_code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(priority, folder, source, request_id, error_code, fmt, ap);
	va_end(ap);
}

void log_oom(void)
{
	static const char msg[] = "seedreamd: error: out of memory\n";

	(void)fwrite(msg, 1, sizeof(msg) - 1, stderr);
	abort();
}
