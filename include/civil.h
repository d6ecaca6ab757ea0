/* civil: the proleptic Gregorian calendar in UTC, without timegm() or TZ,
 * for the date formats the daemon reads (RFC 3339, IMF-fixdate). */
#ifndef SEEDREAMD_CIVIL_H
#define SEEDREAMD_CIVIL_H

#include <stdbool.h>
#include <stdint.h>

/* Whether year-month-day (month 1..12) is a date of the calendar. */
bool civil_date_valid(int64_t year, int month, int day);

/* Days since 1970-01-01 of a valid date (H. Hinnant's days_from_civil). */
int64_t civil_days_from_civil(int64_t year, int month, int day);

#endif
