/* spend: what a done record counts (images, cost, the day it counts on):
 * paid failures count what was paid, reused copies nothing, a server's claim
 * at most API_IMAGES_MAX; priced by the record's model, else api.model; and
 * counted on the day it was paid when the record says so. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "api.h"
#include "spend.h"

static struct config_price prices[] = {
    {.model = "model-a", .micros = 30000},
    {.model = "model-b", .micros = 50000},
};

static struct config priced(const char *api_model)
{
	struct config c = {.prices = prices, .n_prices = 2};

	c.api.model = (char *)api_model;
	return c;
}

static void test_images(void **state)
{
	struct index_entry e = {.generated_images = 0};

	(void)state;
	assert_int_equal(spend_entry_images(&e), 1); /* a success without usage: one */
	e.generated_images = 3;
	assert_int_equal(spend_entry_images(&e), 3);
	e.generated_images = (int64_t)API_IMAGES_MAX + 100;
	assert_int_equal(spend_entry_images(&e), API_IMAGES_MAX);
	e.reused = true;
	assert_int_equal(spend_entry_images(&e), 0);
	e = (struct index_entry){.failed = true};
	assert_int_equal(spend_entry_images(&e), 0); /* a failure that cost nothing */
	e.generated_images = 2;
	assert_int_equal(spend_entry_images(&e), 2); /* images paid before it failed */
}

static void test_price(void **state)
{
	struct config c = priced("model-b");
	struct index_entry e = {.generated_images = 2, .model = "model-a"};

	(void)state;
	assert_int_equal(spend_price_of(&c, "model-a"), 30000);
	assert_int_equal(spend_price_of(&c, "model-x"), 50000); /* unknown: api.model's */
	assert_int_equal(spend_price_of(&c, NULL), 50000);
	assert_int_equal(spend_entry_cost(&c, &e), 60000);
	e.model = NULL;
	assert_int_equal(spend_entry_cost(&c, &e), 100000);
	c = priced("model-x");
	assert_int_equal(spend_price_of(&c, "model-y"), 0); /* no price known */
	e.reused = true;
	e.model = "model-a";
	assert_int_equal(spend_entry_cost(&c, &e), 0);
}

static void test_paid_at(void **state)
{
	struct index_entry e = {.failed = true, .generated_images = 1, .finished_at = 1700090000};

	(void)state;
	/* A record of an older version: counted when it finished. */
	assert_int_equal(spend_entry_paid_at(&e), 1700090000);
	/* Paid a day before its fetch failed: counted that day. */
	e.paid_at = 1700000000;
	assert_int_equal(spend_entry_paid_at(&e), 1700000000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_images),
	    cmocka_unit_test(test_price),
	    cmocka_unit_test(test_paid_at),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
