#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"
#include "progress.h"

static char *render(const struct metrics *m, const struct metrics_state *st)
{
	char *text = NULL;
	size_t len = 0;

	assert_int_equal(metrics_render(m, st, &text, &len), 0);
	assert_non_null(text);
	assert_int_equal(strlen(text), len);
	return text;
}

static void assert_has(const char *text, const char *line)
{
	if (!strstr(text, line))
		fail_msg("missing %s in:\n%s", line, text);
}

static int count(const char *text, const char *needle)
{
	int n = 0;

	for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

static void test_counters_and_escaping(void **state)
{
	struct metrics *m;
	char *text;

	(void)state;
	assert_int_equal(metrics_new(&m), 0);
	assert_int_equal(metrics_count(m, METRICS_FILES, 1, "/srv/a\"b\\c\nd", "done"), 0);
	assert_int_equal(metrics_count(m, METRICS_FILES, 2, "/srv/a\"b\\c\nd", "done"), 0);
	assert_int_equal(metrics_count(m, METRICS_FILES, 1, "/srv/\xff\xfe", "failed"), 0);
	assert_true(metrics_value(m, METRICS_FILES, "/srv/a\"b\\c\nd", "done") == 3);
	text = render(m, NULL);
	assert_has(text, "# HELP seedreamd_files_total ");
	assert_has(text, "# TYPE seedreamd_files_total counter\n");
	assert_has(text,
		   "seedreamd_files_total{folder=\"/srv/a\\\"b\\\\c\\nd\",result=\"done\"} 3\n");
	/* invalid UTF-8 in a folder name: U+FFFD, the text stays valid */
	assert_has(text, "seedreamd_files_total{folder=\"/srv/"
			 "\xef\xbf\xbd\xef\xbf\xbd\",result=\"failed\"} 1\n");
	/* counters without labels exist from the start */
	assert_has(text, "seedreamd_upload_bytes_total 0\n");
	assert_has(text, "# TYPE seedreamd_upload_bytes_total counter\n");
	free(text);
	metrics_free(m);
}

static void test_code_cap(void **state)
{
	struct metrics *m;
	char code[32];
	char *text;

	(void)state;
	assert_int_equal(metrics_new(&m), 0);
	for (int i = 0; i < METRICS_CODES_MAX + 10; i++) {
		(void)snprintf(code, sizeof(code), "Code%d", i);
		assert_int_equal(metrics_count(m, METRICS_FILES_FAILED, 1, code, NULL), 0);
	}
	/* a code seen before the cap still counts as itself */
	assert_int_equal(metrics_count(m, METRICS_FILES_FAILED, 1, "Code0", NULL), 0);
	assert_true(metrics_value(m, METRICS_FILES_FAILED, "Code0", NULL) == 2);
	assert_true(metrics_value(m, METRICS_FILES_FAILED, "Code31", NULL) == 1);
	assert_true(metrics_value(m, METRICS_FILES_FAILED, "Code32", NULL) == 0);
	assert_true(metrics_value(m, METRICS_FILES_FAILED, "other", NULL) == 10);
	text = render(m, NULL);
	assert_has(text, "seedreamd_file_failures_total{code=\"other\"} 10\n");
	assert_null(strstr(text, "Code33"));
	free(text);
	metrics_free(m);
}

static void test_histogram(void **state)
{
	struct metrics *m;
	char *text;

	(void)state;
	assert_int_equal(metrics_new(&m), 0);
	metrics_observe(m, METRICS_GENERATION_SECONDS, 0.5);  /* <= 1 */
	metrics_observe(m, METRICS_GENERATION_SECONDS, 1);    /* <= 1: bounds are inclusive */
	metrics_observe(m, METRICS_GENERATION_SECONDS, 7);    /* <= 10 */
	metrics_observe(m, METRICS_GENERATION_SECONDS, 1000); /* only +Inf */
	text = render(m, NULL);
	assert_has(text, "# TYPE seedreamd_generation_duration_seconds histogram\n");
	assert_has(text, "seedreamd_generation_duration_seconds_bucket{le=\"1\"} 2\n");
	assert_has(text, "seedreamd_generation_duration_seconds_bucket{le=\"5\"} 2\n");
	/* cumulative: the 10 s bucket holds the two below it too */
	assert_has(text, "seedreamd_generation_duration_seconds_bucket{le=\"10\"} 3\n");
	assert_has(text, "seedreamd_generation_duration_seconds_bucket{le=\"300\"} 3\n");
	assert_has(text, "seedreamd_generation_duration_seconds_bucket{le=\"+Inf\"} 4\n");
	assert_has(text, "seedreamd_generation_duration_seconds_sum 1008.5\n");
	assert_has(text, "seedreamd_generation_duration_seconds_count 4\n");
	/* an empty histogram: every bucket 0, +Inf, _sum and _count */
	assert_has(text, "seedreamd_download_duration_seconds_bucket{le=\"0.05\"} 0\n");
	assert_has(text, "seedreamd_download_duration_seconds_bucket{le=\"+Inf\"} 0\n");
	assert_has(text, "seedreamd_download_duration_seconds_sum 0\n");
	assert_has(text, "seedreamd_download_duration_seconds_count 0\n");
	free(text);
	metrics_free(m);
}

static void test_state(void **state)
{
	struct metrics_folder_state folders[] = {
	    {.path = "/in/a", .pending = 3, .queued = 2, .oldest_age_s = 12.5, .paused = true},
	    {.path = "/in/b"},
	};
	struct metrics_state st = {.queued = 2,
				   .in_flight = 4,
				   .twins = 3,
				   .oldest_pending_age_s = 12.5,
				   .folders = folders,
				   .n_folders = 2,
				   .start_time_s = 1700000000,
				   .version = "1.2.3"};
	struct metrics *m;
	char *text;

	(void)state;
	st.paused[METRICS_PAUSE_API] = true;
	assert_int_equal(metrics_new(&m), 0);
	text = render(m, &st);
	assert_has(text, "# TYPE seedreamd_queued gauge\nseedreamd_queued 2\n");
	assert_has(text, "seedreamd_in_flight 4\n");
	assert_has(text, "# TYPE seedreamd_twins gauge\nseedreamd_twins 3\n");
	assert_has(text, "seedreamd_oldest_pending_age_seconds 12.5\n");
	assert_has(text, "seedreamd_paused{reason=\"api_refused\"} 1\n");
	assert_has(text, "seedreamd_paused{reason=\"image_limit\"} 0\n");
	assert_has(text, "seedreamd_paused{reason=\"user\"} 0\n");
	assert_has(text, "seedreamd_folder_pending{folder=\"/in/a\"} 3\n");
	assert_has(text, "seedreamd_folder_queued{folder=\"/in/b\"} 0\n");
	assert_has(text, "seedreamd_folder_paused{folder=\"/in/a\"} 1\n");
	assert_has(text, "seedreamd_start_time_seconds 1700000000\n");
	assert_has(text, "seedreamd_build_info{version=\"1.2.3\"} 1\n");
	/* every family announced once */
	assert_int_equal(count(text, "# TYPE seedreamd_paused "), 1);
	assert_int_equal(count(text, "# TYPE seedreamd_folder_pending "), 1);
	free(text);
	metrics_free(m);
}

static void test_registered_notes(void **state)
{
	struct metrics *m;

	(void)state;
	metrics_note_file("/in", "done", NULL); /* nothing registered: dropped */
	assert_int_equal(metrics_new(&m), 0);
	metrics_register(m);
	metrics_note_file("/in", "failed", "InvalidParameter");
	metrics_note_answer(400, "InvalidParameter", 1000, 200, 3.0);
	metrics_note_usage(2, 32768);
	metrics_note_download(5000, -1);
	assert_true(metrics_value(m, METRICS_FILES, "/in", "failed") == 1);
	assert_true(metrics_value(m, METRICS_FILES, "/in", "done") == 0);
	assert_true(metrics_value(m, METRICS_FILES_FAILED, "InvalidParameter", NULL) == 1);
	assert_true(metrics_value(m, METRICS_API_REQUESTS, "400", "InvalidParameter") == 1);
	assert_true(metrics_value(m, METRICS_UPLOAD_BYTES, NULL, NULL) == 1000);
	assert_true(metrics_value(m, METRICS_DOWNLOAD_BYTES, NULL, NULL) == 5200);
	assert_true(metrics_value(m, METRICS_GENERATED_IMAGES, NULL, NULL) == 2);
	assert_true(metrics_value(m, METRICS_OUTPUT_TOKENS, NULL, NULL) == 32768);
	metrics_free(m); /* unregisters */
	assert_null(metrics_registered());
}

static void test_progress_format(void **state)
{
	struct progress_counts c = {
	    .done = 10, .skipped = 2, .failed = 2, .paid = 11, .in_flight = 4, .pending = 28};
	char buf[256];

	(void)state;
	/* 12 sent to the API in 2 minutes: 6/min; 28 left: 4m40s */
	progress_format(&c, 120, buf, sizeof(buf));
	assert_string_equal(buf, "12/42 done, 2 failed, 4 in flight, 6.0 images/min, ETA 4m40s, "
				 "11 images paid");
	c = (struct progress_counts){.pending = 5};
	progress_format(&c, 0, buf, sizeof(buf));
	assert_string_equal(buf, "0/5 done, 0 failed, 0 in flight, 0.0 images/min, ETA unknown, "
				 "0 images paid");
	c = (struct progress_counts){.done = 3};
	progress_format(&c, 30, buf, sizeof(buf));
	assert_string_equal(buf, "3/3 done, 0 failed, 0 in flight, 6.0 images/min, ETA 0s, "
				 "0 images paid");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_counters_and_escaping),
	    cmocka_unit_test(test_code_cap),
	    cmocka_unit_test(test_histogram),
	    cmocka_unit_test(test_state),
	    cmocka_unit_test(test_registered_notes),
	    cmocka_unit_test(test_progress_format),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
