/* ledger: payments appended survive a reopen; a reopen keeps what was paid
 * since the month's start and drops older, damaged and torn lines (the file
 * rewritten without them); ledger_has finds a payment by its key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ledger.h"

#define DAY_MS 86400000LL
#define NOW_MS 1764460800000LL /* 2025-11-30 00:00 UTC */

struct tally {
	unsigned images;
	size_t n;
};

static void tally(const struct ledger_entry *e, void *userdata)
{
	struct tally *t = userdata;

	t->images += e->images;
	t->n++;
}

static void add(struct ledger *l, const char *source, const char *model, int64_t paid_ms,
		unsigned images)
{
	struct ledger_entry e = {.folder = "/hot",
				 .source = (char *)source,
				 .model = (char *)model,
				 .paid_ms = paid_ms,
				 .images = images};
	char *line;
	size_t len;

	assert_int_equal(ledger_add(l, &e, &line, &len), 0);
	assert_int_equal(line[len - 1], '\n');
	assert_int_equal(ledger_write(l, line, len), 0);
	free(line);
}

static void append_raw(const char *dir, const char *text)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/paid.log", dir);
	f = fopen(path, "a");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static void test_reopen(void **state)
{
	char dir[] = "/tmp/test_ledger.XXXXXX", path[4096];
	struct ledger *l = NULL;
	struct tally t = {0};
	bool created = false;
	int r;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(ledger_open(dir, 0, &l, &created), 0);
	assert_true(created);
	add(l, "a.png", "model-a", NOW_MS - 40 * DAY_MS, 1); /* last month */
	add(l, "b.png", NULL, NOW_MS, 2);
	add(l, "sub/c\xe9.png", "model-b", NOW_MS + 1, 3);
	assert_true(ledger_has(l, "/hot", "b.png", NOW_MS));
	assert_false(ledger_has(l, "/hot", "b.png", NOW_MS + 1));
	assert_false(ledger_has(l, "/other", "b.png", NOW_MS));
	ledger_close(l);

	/* a damaged line (its checksum) and a torn tail: dropped */
	append_raw(dir, "SL1 P 5 00000000 {\"x\"}\n");
	append_raw(dir, "SL1 P 80 12345678 {\"folder\":\"/hot\",\"sou");
	assert_int_equal(ledger_open(dir, NOW_MS / 1000 - DAY_MS / 1000, &l, &created), 0);
	assert_false(created);
	ledger_foreach(l, tally, &t);
	assert_int_equal(t.n, 2); /* last month's left out */
	assert_int_equal(t.images, 5);
	assert_true(ledger_has(l, "/hot", "sub/c\xe9.png", NOW_MS + 1));
	assert_false(ledger_has(l, "/hot", "a.png", NOW_MS - 40 * DAY_MS));
	assert_true(ledger_first_seed(l, "/hot", &r));
	assert_false(ledger_first_seed(l, "/hot", &r));
	assert_int_equal(r, 0);
	add(l, "d.png", "model-a", NOW_MS + 2, 1);
	ledger_close(l);

	/* rewritten clean: everything after reads, nothing dropped again */
	assert_int_equal(ledger_open(dir, 0, &l, &created), 0);
	t = (struct tally){0};
	ledger_foreach(l, tally, &t);
	assert_int_equal(t.n, 3);
	assert_int_equal(t.images, 6);
	ledger_close(l);

	snprintf(path, sizeof(path), "%s/paid.log", dir);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reopen),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
