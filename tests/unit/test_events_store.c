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

#include <cmocka.h>

#include "events_store.h"

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
	assert_int_equal(events_store_parse(text, &out, &bad), 0);
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
		assert_int_equal(events_store_parse(texts[i], &out, &bad), -EINVAL);
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
		assert_int_equal(events_store_parse(text, &out, &bad), 0);
		assert_int_equal(bad, 1);
		assert_int_equal(out.n_events, 2);
		assert_string_equal(out.events[1].kind, "paused");
		events_store_state_clear(&out);
	}
	/* A summarised date that is not one is not taken. */
	assert_int_equal(
	    events_store_parse("{\"version\":1,\"summarised\":\"tomorrow\",\"events\":[]}", &out,
			       &bad),
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
	assert_int_equal(events_store_parse(text, &out, &bad), 0);
	assert_int_equal(out.n_events, EVENTS_STORE_EVENTS_MAX);
	assert_int_equal(bad, 3);
	events_store_state_clear(&out);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_not_a_document),
	    cmocka_unit_test(test_bad_events),
	    cmocka_unit_test(test_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
