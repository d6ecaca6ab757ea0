#include "notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "loop.h"

#define NOTIFY_STATUS_MIN_MS 250

static char last_status[512];
static uint64_t last_status_ms;

void notify_ready(void)
{
	(void)sd_notify(0, "READY=1");
}

void notify_reloading(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	(void)sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
			 (unsigned long long)ts.tv_sec * 1000000ull +
				 (unsigned long long)ts.tv_nsec / 1000ull);
}

void notify_stopping(void)
{
	(void)sd_notify(0, "STOPPING=1");
}

void notify_extend_timeout(uint64_t usec)
{
	(void)sd_notifyf(0, "EXTEND_TIMEOUT_USEC=%llu", (unsigned long long)usec);
}

uint64_t notify_status(const char *fmt, ...)
{
	char text[sizeof(last_status)];
	uint64_t now = loop_now_ms();
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (strcmp(text, last_status) == 0)
		return 0;
	if (last_status_ms && now - last_status_ms < NOTIFY_STATUS_MIN_MS)
		return NOTIFY_STATUS_MIN_MS - (now - last_status_ms);
	memcpy(last_status, text, sizeof(text));
	last_status_ms = now;
	(void)sd_notifyf(0, "STATUS=%s", text);
	return 0;
}

uint64_t notify_watchdog_ms(void)
{
	uint64_t usec = 0;

	if (sd_watchdog_enabled(0, &usec) <= 0)
		return 0;
	return usec / 1000;
}

void notify_watchdog(void)
{
	(void)sd_notify(0, "WATCHDOG=1");
}
