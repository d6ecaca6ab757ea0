/* The document of state_dir/events.pending (events_store.c): what is written
 * reads back the same; what does not read is refused or counted, never
 * half-taken. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "events_store.h"

#define NOW 1796003600 /* 2026-11-30T01:53:20Z, an hour after the events below */

static struct events_store_field field(const char *name, const char *text, bool number)
{
	struct events_store_field f = {strdup(name), strdup(text), number};

	assert_non_null(f.name);
	assert_non_null(f.text);
	return f;
}

static void test_round_trip(void **state)
{
	struct events_store_field f1[] = {
	    field("folder", "/srv/in \"quoted\"\n\xc3\xa9", false),
	    field("file", "a.jpg", false),
	    field("http_status", "400", true),
	};
	struct events_store_field f2[] = {field("cost", "0.125", true)};
	struct events_store_event evs[] = {
	    {"file_failed", 1796000000, true, false, f1, 3},
	    {"daily_summary", 1796000100, false, true, f2, 1},
	};
	struct events_store_state in = {"2026-11-29", evs, 2}, out;
	size_t bad = 99;
	char *text;

	(void)state;
	text = events_store_format(&in);
	assert_non_null(text);
	assert_int_equal(events_store_parse(text, NOW, &out, &bad), 0);
	assert_int_equal(bad, 0);
	assert_string_equal(out.summarised, "2026-11-29");
	assert_int_equal(out.n_events, 2);
	for (size_t i = 0; i < 2; i++) {
		assert_string_equal(out.events[i].kind, evs[i].kind);
		assert_int_equal(out.events[i].time, evs[i].time);
		assert_int_equal(out.events[i].webhook, evs[i].webhook);
		assert_int_equal(out.events[i].command, evs[i].command);
		assert_int_equal(out.events[i].n_fields, evs[i].n_fields);
		for (size_t k = 0; k < evs[i].n_fields; k++) {
			assert_string_equal(out.events[i].fields[k].name, evs[i].fields[k].name);
			assert_string_equal(out.events[i].fields[k].text, evs[i].fields[k].text);
			assert_int_equal(out.events[i].fields[k].number, evs[i].fields[k].number);
		}
	}
	events_store_state_clear(&out);
	assert_int_equal(out.n_events, 0);
	free(text);
	/* The caller's events were only read. */
	for (size_t i = 0; i < 3; i++) {
		free(f1[i].name);
		free(f1[i].text);
	}
	free(f2[0].name);
	free(f2[0].text);
}

static void test_not_a_document(void **state)
{
	static const char *const texts[] = {
	    "",
	    "garbage",
	    "[]",
	    "{\"version\":1,\"summarised\":\"\",\"events\":[{\"kind\":\"file_fa",
	    "{\"version\":2,\"summarised\":\"\",\"events\":[]}",
	    "{\"version\":1,\"events\":[]}",
	    "{\"version\":1,\"summarised\":\"\",\"events\":{}}",
	};
	struct events_store_state out;
	size_t bad;

	(void)state;
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		assert_int_equal(events_store_parse(texts[i], NOW, &out, &bad), -EINVAL);
		assert_int_equal(out.n_events, 0);
		assert_null(out.events);
	}
}

#define GOOD                                                                                       \
	"{\"kind\":\"paused\",\"time\":1796000000,\"webhook\":true,\"command\":true,\"fields\":[]" \
	"}"

static void test_bad_events(void **state)
{
	static const char *const bad_events[] = {
	    "{\"kind\":\"paused\",\"time\":\"soon\",\"webhook\":true,\"command\":true,\"fields\":[]"
	    "}",
	    "{\"kind\":\"Paused!\",\"time\":1,\"webhook\":true,\"command\":true,\"fields\":[]}",
	    "{\"kind\":\"paused\",\"time\":-5,\"webhook\":true,\"command\":true,\"fields\":[]}",
	    "{\"kind\":\"paused\",\"time\":1,\"webhook\":1,\"command\":true,\"fields\":[]}",
	    "{\"kind\":\"paused\",\"time\":1,\"webhook\":true,\"command\":true}",
	    /* a number field that is not a number: it would go raw into JSON */
	    "{\"kind\":\"paused\",\"time\":1,\"webhook\":true,\"command\":true,\"fields\":"
	    "[{\"name\":\"done\",\"text\":\"1,\\\"x\\\":2\",\"number\":true}]}",
	    "{\"kind\":\"paused\",\"time\":1,\"webhook\":true,\"command\":true,\"fields\":"
	    "[{\"name\":\"BAD NAME\",\"text\":\"x\"}]}",
	    "17",
	};
	struct events_store_state out;
	char text[1024];
	size_t bad;

	(void)state;
	for (size_t i = 0; i < sizeof(bad_events) / sizeof(bad_events[0]); i++) {
		(void)snprintf(text, sizeof(text),
			       "{\"version\":1,\"summarised\":\"\",\"events\":[" GOOD ",%s," GOOD
			       "]}",
			       bad_events[i]);
		assert_int_equal(events_store_parse(text, NOW, &out, &bad), 0);
		assert_int_equal(bad, 1);
		assert_int_equal(out.n_events, 2);
		assert_string_equal(out.events[1].kind, "paused");
		events_store_state_clear(&out);
	}
	/* A summarised date that is not one is not taken. */
	assert_int_equal(
	    events_store_parse("{\"version\":1,\"summarised\":\"tomorrow\",\"events\":[]}", NOW,
			       &out, &bad),
	    0);
	assert_int_equal(bad, 1);
	assert_string_equal(out.summarised, "");
}

static void test_bounded(void **state)
{
	size_t n = EVENTS_STORE_EVENTS_MAX + 3, len = 64 + n * (sizeof(GOOD) + 1), bad;
	char *text = malloc(len), *p;
	struct events_store_state out;

	(void)state;
	assert_non_null(text);
	p = text + sprintf(text, "{\"version\":1,\"summarised\":\"\",\"events\":[");
	for (size_t i = 0; i < n; i++)
		p += sprintf(p, "%s%s", i ? "," : "", GOOD);
	(void)sprintf(p, "]}");
	assert_int_equal(events_store_parse(text, NOW, &out, &bad), 0);
	assert_int_equal(out.n_events, EVENTS_STORE_EVENTS_MAX);
	assert_int_equal(bad, 3);
	events_store_state_clear(&out);
	free(text);
}

/* Parses a document of GOOD, the event made of kind, time and fields, GOOD;
 * returns how many events did not read (the GOODs always do). */
static size_t parse_one(const char *kind, long long time, const char *fields)
{
	struct events_store_state out;
	char text[2048];
	size_t bad;

	(void)snprintf(text, sizeof(text),
		       "{\"version\":1,\"summarised\":\"\",\"events\":[" GOOD
		       ",{\"kind\":\"%s\",\"time\":%lld,\"webhook\":true,\"command\":false,"
		       "\"fields\":[%s]}," GOOD "]}",
		       kind, time, fields);
	assert_int_equal(events_store_parse(text, NOW, &out, &bad), 0);
	assert_int_equal(out.n_events, 3 - bad);
	assert_string_equal(out.events[out.n_events - 1].kind, "paused");
	events_store_state_clear(&out);
	return bad;
}

static size_t parse_number(const char *number)
{
	char field[128];

	(void)snprintf(field, sizeof(field), "{\"name\":\"done\",\"text\":\"%s\",\"number\":true}",
		       number);
	return parse_one("daily_summary", 1796000000, field);
}

/* A number field goes raw into the webhook's body: only what JSON calls a
 * number is taken. */
static void test_strict_numbers(void **state)
{
	static const char *const good[] = {"0", "7", "400", "0.125", "-1", "1e5", "1.5E-3", "2e+2"};
	static const char *const bad[] = {".",	  "1.",	   "007", "00",	 "-",  ".5",
					  "+1",	  "1e",	   "1e+", "0x1", " 1", "1 ",
					  "1..2", "1.2.3", "-01", "NaN", ""};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		print_message("%s\n", bad[i]);
		assert_int_equal(parse_number(bad[i]), 1);
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		print_message("%s\n", good[i]);
		assert_int_equal(parse_number(good[i]), 0);
	}
}

/* Only the fields an event of its kind has: another name would be a
 * duplicate ("event", "time", "version") or foreign member of the body and a
 * foreign SEEDREAMD_* variable of the command. */
static void test_foreign_fields(void **state)
{
	static const struct {
		const char *kind, *fields;
		size_t bad;
	} cases[] = {
	    {"paused", "{\"name\":\"message\",\"text\":\"x\"}", 0},
	    {"file_failed",
	     "{\"name\":\"folder\",\"text\":\"/in\"},{\"name\":\"file\",\"text\":\"a.jpg\"},"
	     "{\"name\":\"code\",\"text\":\"X\"},{\"name\":\"message\",\"text\":\"m\"},"
	     "{\"name\":\"http_status\",\"text\":\"400\",\"number\":true}",
	     0},
	    {"spend_limit",
	     "{\"name\":\"limit\",\"text\":\"daily\"},{\"name\":\"folder\",\"text\":\"/in\"}", 0},
	    {"daily_summary",
	     "{\"name\":\"date\",\"text\":\"2026-11-29\"},{\"name\":\"cost\",\"text\":\"0.09\","
	     "\"number\":true},{\"name\":\"currency\",\"text\":\"USD\"}",
	     0},
	    {"paused", "{\"name\":\"event\",\"text\":\"resumed\"}", 1},
	    {"paused", "{\"name\":\"time\",\"text\":\"x\"}", 1},
	    {"paused", "{\"name\":\"version\",\"text\":\"2\",\"number\":true}", 1},
	    {"paused", "{\"name\":\"path\",\"text\":\"/bin\"}", 1},
	    {"paused", "{\"name\":\"folder\",\"text\":\"/in\"}", 1},
	    {"paused",
	     "{\"name\":\"message\",\"text\":\"a\"},{\"name\":\"message\",\"text\":\"b\"}", 1},
	    /* a string field marked a number, a number field left a string */
	    {"paused", "{\"name\":\"message\",\"text\":\"1\",\"number\":true}", 1},
	    {"daily_summary", "{\"name\":\"done\",\"text\":\"1\"}", 1},
	    {"reboot", "", 1},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		print_message("%s %s\n", cases[i].kind, cases[i].fields);
		assert_int_equal(parse_one(cases[i].kind, 1796000000, cases[i].fields),
				 cases[i].bad);
	}
}

/* An event that happened later than now (the clock was ahead when it was
 * kept) would never be old enough to be dropped. */
static void test_event_ahead(void **state)
{
	(void)state;
	assert_int_equal(parse_one("paused", NOW, ""), 0);
	assert_int_equal(parse_one("paused", NOW + EVENTS_STORE_AHEAD_S, ""), 0);
	assert_int_equal(parse_one("paused", NOW + EVENTS_STORE_AHEAD_S + 1, ""), 1);
	assert_int_equal(parse_one("paused", 99999999999LL, ""), 1);
}

/* A summarised date later than tomorrow was recorded with the clock ahead. */
static void test_date_ahead(void **state)
{
	(void)state;
	assert_int_equal(setenv("TZ", "UTC0", 1), 0);
	tzset();
	/* NOW is 2026-11-30 */
	assert_false(events_store_date_ahead("2026-11-29", NOW));
	assert_false(events_store_date_ahead("2026-11-30", NOW));
	assert_false(events_store_date_ahead("2026-12-01", NOW));
	assert_true(events_store_date_ahead("2026-12-02", NOW));
	assert_true(events_store_date_ahead("2027-01-01", NOW));
	assert_true(events_store_date_ahead("9999-12-31", NOW));
	/* 2026-12-31T23:00Z: tomorrow is in the next year */
	assert_false(events_store_date_ahead("2027-01-01", 1798758000));
	assert_true(events_store_date_ahead("2027-01-02", 1798758000));
	/* The local date counts: 2026-11-30T01:53Z is still the 29th at UTC-5 (a POSIX TZ: no
	 * tzdata needed). */
	assert_int_equal(setenv("TZ", "EST5", 1), 0);
	tzset();
	assert_false(events_store_date_ahead("2026-11-30", NOW));
	assert_true(events_store_date_ahead("2026-12-01", NOW));
	assert_int_equal(unsetenv("TZ"), 0);
	tzset();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_not_a_document),
	    cmocka_unit_test(test_bad_events),
	    cmocka_unit_test(test_bounded),
	    cmocka_unit_test(test_strict_numbers),
	    cmocka_unit_test(test_foreign_fields),
	    cmocka_unit_test(test_event_ahead),
	    cmocka_unit_test(test_date_ahead),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
