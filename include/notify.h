/* notify: systemd's notify protocol (sd_notify). Harmless without systemd. */
#ifndef SEEDREAMD_NOTIFY_H
#define SEEDREAMD_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

void notify_ready(void);
void notify_reloading(void); /* RELOADING=1 with MONOTONIC_USEC= */
void notify_stopping(void);
void notify_extend_timeout(uint64_t usec);

/* STATUS=, rate-limited: a text equal to the last one is not sent again, and
 * at most one update per 250 ms goes out. Returns 0 when sent or unchanged,
 * else the ms after which the caller should try again. */
uint64_t notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Watchdog interval in ms from WATCHDOG_USEC (0 if not enabled). */
uint64_t notify_watchdog_ms(void);
void notify_watchdog(void);

#endif
