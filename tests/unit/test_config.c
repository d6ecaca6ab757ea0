#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

#define MiB (1024ULL * 1024)

/* Lines 1-3 of most documents below; a folder list starts on line 4. */
#define API                                                                                    \
	"api:\n"                                                                               \
	"  base_url: https://example.test/api/v3\n"                                            \
	"  model: doubao-seedream-4-5-251128\n"

#define API_40                                                                                 \
	"api:\n"                                                                               \
	"  base_url: https://example.test/api/v3\n"                                            \
	"  model: doubao-seedream-4-0-250828\n"

/* Lines 4-6. */
#define ONE_FOLDER                                                                             \
	"folders:\n"                                                                           \
	"  - path: /srv/in\n"                                                                  \
	"    prompt: p\n"

static struct config *parse_ok(const char *yaml)
{
	struct config *cfg = NULL;
	char err[512] = "";
	int r = config_parse("test.yaml", yaml, strlen(yaml), &cfg, err, sizeof(err));

	if (r != 0)
		fail_msg("refused (%d): %s", r, err);
	assert_non_null(cfg);
	return cfg;
}

/* A refusal, its exact "file:line:column: " prefix and a word of its message. */
static void refused(const char *yaml, const char *prefix, const char *word)
{
	struct config *cfg = NULL;
	char err[512] = "";
	int r = config_parse("test.yaml", yaml, strlen(yaml), &cfg, err, sizeof(err));

	if (r != -EINVAL)
		fail_msg("expected -EINVAL, got %d: %s", r, err);
	assert_null(cfg);
	if (strncmp(err, prefix, strlen(prefix)) != 0)
		fail_msg("expected prefix \"%s\", got \"%s\"", prefix, err);
	if (!strstr(err, word))
		fail_msg("expected \"%s\" in \"%s\"", word, err);
	assert_null(strchr(err, '\n'));
}

static void test_full_config(void **state)
{
	static const char yaml[] =
		"api:\n"
		"  base_url: https://ark.cn-beijing.volces.com/api/v3/\n"
		"  model: doubao-seedream-4-0-250828\n"
		"  api_key_env: MY_KEY\n"
		"  timeout: 90s\n"
		"  max_in_flight: 8\n"
		"  response_format: b64_json\n"
		"  retries: 0\n"
		"  pause_retry: 2m\n"
		"  ca_file: /etc/hosts\n" /* must exist: any readable file will do here */
		"  allow_insecure_http: yes\n"
		"defaults:\n"
		"  size: 4K\n"
		"  watermark: on\n"
		"folders:\n"
		"  - path: /srv/hot/portraits/\n"
		"    prompt: \"Keep the pose; turn the dress into water.\"\n"
		"    size: 1K\n"
		"    watermark: False\n"
		"    output: /srv/results/portraits\n"
		"    settle: 1500ms\n"
		"    incomplete_timeout: 1h\n"
		"    recursive: TRUE\n"
		"    exclude: [\"*.tmp\", 'draft-*']\n"
		"    mode: poll\n"
		"    poll_interval: 30\n"
		"    follow_symlinks: On\n"
		"    max_input_bytes: 20MB\n"
		"    on_success: move\n"
		"    done_dir: /srv/done/portraits\n"
		"    max_images_per_day: 500\n"
		"state_dir: /var/lib/other/\n"
		"stop_timeout: 0\n"
		"rescan_interval: 1h\n"
		"min_free_space: 1GiB\n"
		"max_images_per_day: 1000\n"
		"images_per_minute: 30\n";
	struct config *cfg = parse_ok(yaml);
	const struct folder_config *f = &cfg->folders[0];

	(void)state;
	assert_string_equal(cfg->source_file, "test.yaml");
	assert_string_equal(cfg->api.base_url, "https://ark.cn-beijing.volces.com/api/v3");
	assert_string_equal(cfg->api.model, "doubao-seedream-4-0-250828");
	assert_string_equal(cfg->api.api_key_env, "MY_KEY");
	assert_null(cfg->api.api_key_file);
	assert_int_equal(cfg->api.timeout_ms, 90000);
	assert_int_equal(cfg->api.max_in_flight, 8);
	assert_int_equal(cfg->api.response_format, RESPONSE_FORMAT_B64_JSON);
	assert_int_equal(cfg->api.retries, 0);
	assert_int_equal(cfg->api.pause_retry_ms, 120000);
	assert_string_equal(cfg->api.ca_file, "/etc/hosts");
	assert_false(cfg->api.allow_private_result_urls);
	assert_true(cfg->api.allow_insecure_http);

	assert_int_equal(cfg->n_folders, 1);
	assert_string_equal(f->path, "/srv/hot/portraits");
	assert_string_equal(f->prompt, "Keep the pose; turn the dress into water.");
	assert_string_equal(f->size, "1K");
	assert_false(f->watermark);
	assert_string_equal(f->output, "/srv/results/portraits");
	assert_int_equal(f->settle_ms, 1500);
	assert_int_equal(f->incomplete_timeout_ms, 3600000);
	assert_true(f->recursive);
	assert_int_equal(f->n_exclude, 2);
	assert_string_equal(f->exclude[0], "*.tmp");
	assert_string_equal(f->exclude[1], "draft-*");
	assert_int_equal(f->mode, FOLDER_MODE_POLL);
	assert_int_equal(f->poll_interval_ms, 30000);
	assert_true(f->follow_symlinks);
	assert_int_equal(f->max_input_bytes, 20000000);
	assert_int_equal(f->on_success, ON_SUCCESS_MOVE);
	assert_string_equal(f->done_dir, "/srv/done/portraits");
	assert_int_equal(f->max_images_per_day, 500);
	assert_int_equal(f->line, 16);
	assert_int_equal(f->column, 5);

	assert_string_equal(cfg->state_dir, "/var/lib/other");
	assert_int_equal(cfg->stop_timeout_ms, 0);
	assert_int_equal(cfg->rescan_interval_ms, 3600000);
	assert_int_equal(cfg->min_free_space, 1024 * MiB);
	assert_int_equal(cfg->max_images_per_day, 1000);
	assert_int_equal(cfg->images_per_minute, 30);
	config_free(cfg);
}

static void test_defaults(void **state)
{
	struct config *cfg;
	const struct folder_config *f;

	(void)state;
	unsetenv("STATE_DIRECTORY");
	cfg = parse_ok(API ONE_FOLDER);
	f = &cfg->folders[0];
	assert_string_equal(cfg->api.base_url, "https://example.test/api/v3");
	assert_string_equal(cfg->api.model, "doubao-seedream-4-5-251128");
	assert_string_equal(cfg->api.api_key_env, "SEEDREAM_API_KEY");
	assert_null(cfg->api.api_key_file);
	assert_int_equal(cfg->api.timeout_ms, 180000);
	assert_int_equal(cfg->api.max_in_flight, 4);
	assert_int_equal(cfg->api.response_format, RESPONSE_FORMAT_URL);
	assert_int_equal(cfg->api.retries, 5);
	assert_int_equal(cfg->api.pause_retry_ms, 300000);
	assert_null(cfg->api.ca_file);
	assert_false(cfg->api.allow_private_result_urls);
	assert_false(cfg->api.allow_insecure_http);

	assert_int_equal(cfg->n_folders, 1);
	assert_string_equal(f->path, "/srv/in");
	assert_string_equal(f->prompt, "p");
	assert_string_equal(f->size, "2K");
	assert_false(f->watermark);
	assert_string_equal(f->output, "/srv/in-out");
	assert_int_equal(f->settle_ms, 2000);
	assert_int_equal(f->incomplete_timeout_ms, 600000);
	assert_false(f->recursive);
	assert_int_equal(f->n_exclude, 0);
	assert_int_equal(f->mode, FOLDER_MODE_AUTO);
	assert_int_equal(f->poll_interval_ms, 10000);
	assert_false(f->follow_symlinks);
	assert_int_equal(f->max_input_bytes, 10 * MiB);
	assert_int_equal(f->on_success, ON_SUCCESS_KEEP);
	assert_string_equal(f->done_dir, "/srv/in-out/originals");
	assert_int_equal(f->max_images_per_day, 0);
	assert_int_equal(f->line, 5);
	assert_int_equal(f->column, 5);

	assert_string_equal(cfg->state_dir, "/var/lib/seedreamd");
	assert_int_equal(cfg->stop_timeout_ms, 60000);
	assert_int_equal(cfg->rescan_interval_ms, 600000);
	assert_int_equal(cfg->min_free_space, 256 * MiB);
	assert_int_equal(cfg->max_images_per_day, 0);
	assert_int_equal(cfg->images_per_minute, 0);
	config_free(cfg);
}

static void test_fit_keys(void **state)
{
	struct config *cfg;

	(void)state;
	cfg = parse_ok(API ONE_FOLDER);
	assert_int_equal(cfg->folders[0].fit, FIT_AUTO);
	assert_int_equal(cfg->folders[0].fit_quality, 92);
	assert_int_equal(cfg->max_fits, 1);
	config_free(cfg);
	cfg = parse_ok(API "max_fits: 3\n"
			   "defaults:\n"
			   "  fit: always\n"
			   "  fit_quality: 80\n"
			   "folders:\n"
			   "  - path: /srv/a\n"
			   "    prompt: p\n"
			   "  - path: /srv/b\n"
			   "    prompt: p\n"
			   "    fit: never\n");
	assert_int_equal(cfg->max_fits, 3);
	assert_int_equal(cfg->folders[0].fit, FIT_ALWAYS);
	assert_int_equal(cfg->folders[0].fit_quality, 80);
	assert_int_equal(cfg->folders[1].fit, FIT_NEVER);
	assert_int_equal(cfg->folders[1].fit_quality, 80);
	config_free(cfg);
	refused(API ONE_FOLDER "    fit: sometimes\n", "test.yaml:7:10: ", "auto, never, always");
	refused(API ONE_FOLDER "    fit_quality: 49\n", "test.yaml:7:18: ", "50");
	refused(API "max_fits: 0\n" ONE_FOLDER, "test.yaml:4:11: ", "64");
}

static void test_max_images(void **state)
{
	struct config *cfg;

	(void)state;
	cfg = parse_ok(API ONE_FOLDER);
	assert_int_equal(cfg->folders[0].max_images, 1);
	config_free(cfg);
	cfg = parse_ok(API "defaults:\n"
			   "  max_images: 4\n"
			   "folders:\n"
			   "  - path: /srv/a\n"
			   "    prompt: p\n"
			   "  - path: /srv/b\n"
			   "    prompt: p\n"
			   "    max_images: 14\n"
			   "    max_images_per_day: 14\n");
	assert_int_equal(cfg->folders[0].max_images, 4);
	assert_int_equal(cfg->folders[1].max_images, 14);
	config_free(cfg);
	refused(API ONE_FOLDER "    max_images: 0\n", "test.yaml:7:17: ", "1 to 15");
	refused(API ONE_FOLDER "    max_images: 16\n", "test.yaml:7:17: ", "1 to 15");
	refused(API ONE_FOLDER "    max_images: 15\n", "test.yaml:7:17: ", "at most 14");
	refused(API ONE_FOLDER "    max_images: 3\n    max_images_per_day: 2\n",
		"test.yaml:5:5: ", "no request could ever start");
}

static void test_provenance_keys(void **state)
{
	struct config *cfg;

	(void)state;
	cfg = parse_ok(API ONE_FOLDER);
	assert_true(cfg->folders[0].embed_provenance);
	assert_false(cfg->folders[0].embed_prompt);
	config_free(cfg);
	cfg = parse_ok(API "defaults:\n"
			   "  embed_prompt: true\n"
			   "folders:\n"
			   "  - path: /srv/a\n"
			   "    prompt: p\n"
			   "  - path: /srv/b\n"
			   "    prompt: p\n"
			   "    embed_provenance: false\n");
	assert_true(cfg->folders[0].embed_provenance);
	assert_true(cfg->folders[0].embed_prompt);
	assert_false(cfg->folders[1].embed_provenance);
	config_free(cfg);
	refused(API ONE_FOLDER "    embed_provenance: maybe\n", "test.yaml:7:23: ", "expected a boolean");
	refused(API ONE_FOLDER "    embed_prompt: [1]\n", "test.yaml:7:19: ", "embed_prompt");
}

static void test_extra_key(void **state)
{
	struct config *cfg;

	(void)state;
	cfg = parse_ok(API ONE_FOLDER);
	assert_null(cfg->folders[0].extra_json);
	config_free(cfg);
	cfg = parse_ok(API "defaults:\n"
			   "  extra: {a: 1, b: keep, optimize_prompt_options: {mode: standard}}\n"
			   "folders:\n"
			   "  - path: /srv/a\n"
			   "    prompt: p\n"
			   "    extra:\n"
			   "      optimize_prompt_options: {mode: fast}\n"
			   "      n: [true, false, null, ~, \"true\", '12', 1.5, -7, x y]\n"
			   "  - path: /srv/b\n"
			   "    prompt: p\n");
	assert_string_equal(cfg->folders[0].extra_json,
			    "{\"a\":1,\"b\":\"keep\",\"optimize_prompt_options\":{\"mode\":\"fast\"},"
			    "\"n\":[true,false,null,null,\"true\",\"12\",1.5,-7,\"x y\"]}");
	assert_string_equal(cfg->folders[1].extra_json,
			    "{\"a\":1,\"b\":\"keep\",\"optimize_prompt_options\":{\"mode\":\"standard\"}}");
	config_free(cfg);
	refused(API ONE_FOLDER "    extra: {prompt: x}\n", "test.yaml:7:13: ", "\"prompt\"");
	refused(API ONE_FOLDER "    extra:\n      watermark: true\n", "test.yaml:8:7: ", "watermark");
	refused(API ONE_FOLDER "    extra: {max_images: 3}\n", "test.yaml:7:13: ", "max_images");
	refused(API ONE_FOLDER "    extra: {sequential_image_generation: auto}\n", "test.yaml:7:13: ",
		"sequential_image_generation");
	refused(API "defaults:\n  extra: {stream: true}\n" ONE_FOLDER, "test.yaml:5:11: ", "stream");
	refused(API ONE_FOLDER "    extra: [1]\n", "test.yaml:7:12: ", "mapping");
	refused(API ONE_FOLDER "    extra: {seed: 123456789012345678901}\n", "test.yaml:7:19: ",
		"exactly");
	refused(API ONE_FOLDER "    extra: {[a]: 1}\n", "test.yaml:7:13: ", "field name");
	{
		/* bounded: the JSON text, and the values walked */
		char *yaml = malloc(40000), *p;

		assert_non_null(yaml);
		p = stpcpy(yaml, API ONE_FOLDER "    extra: {big: ");
		memset(p, 'x', CONFIG_EXTRA_MAX);
		strcpy(p + CONFIG_EXTRA_MAX, "}\n");
		refused(yaml, "test.yaml:7:12: ", "16384");
		p = stpcpy(yaml, API ONE_FOLDER "    extra: {many: [");
		for (int i = 0; i < 1100; i++)
			p = stpcpy(p, "1,");
		strcpy(p, "1]}\n");
		refused(yaml, "test.yaml:7:", "more than 1024 values");
		free(yaml);
	}
}

static void test_prompt_file_key(void **state)
{
	struct config *cfg;

	(void)state;
	cfg = parse_ok(API ONE_FOLDER);
	assert_int_equal(cfg->folders[0].prompt_file, PROMPT_FILE_OFF);
	config_free(cfg);
	cfg = parse_ok(API "defaults:\n"
			   "  prompt_file: append\n"
			   "folders:\n"
			   "  - path: /srv/a\n"
			   "    prompt: p\n"
			   "  - path: /srv/b\n"
			   "    prompt_file: required\n");
	assert_int_equal(cfg->folders[0].prompt_file, PROMPT_FILE_APPEND);
	assert_int_equal(cfg->folders[1].prompt_file, PROMPT_FILE_REQUIRED);
	assert_string_equal(cfg->folders[1].prompt, ""); /* each image brings its own */
	config_free(cfg);
	refused(API ONE_FOLDER "    prompt_file: sometimes\n", "test.yaml:7:18: ",
		"off, replace, append, required");
	refused(API "folders:\n  - path: /srv/a\n    prompt_file: replace\n", "test.yaml:5:5: ",
		"prompt");
}

static void test_state_directory_env(void **state)
{
	struct config *cfg;

	(void)state;
	setenv("STATE_DIRECTORY", "/var/lib/seedreamd-a/:/var/lib/seedreamd-b", 1);
	cfg = parse_ok(API ONE_FOLDER);
	assert_string_equal(cfg->state_dir, "/var/lib/seedreamd-a");
	config_free(cfg);

	/* The config file wins over the environment. */
	cfg = parse_ok(API ONE_FOLDER "state_dir: /srv/state\n");
	assert_string_equal(cfg->state_dir, "/srv/state");
	config_free(cfg);

	setenv("STATE_DIRECTORY", "relative", 1);
	cfg = parse_ok(API ONE_FOLDER);
	assert_string_equal(cfg->state_dir, "/var/lib/seedreamd");
	config_free(cfg);
	unsetenv("STATE_DIRECTORY");
}

static void test_inheritance(void **state)
{
	static const char yaml[] = API "defaults:\n"
				       "  prompt: shared\n"
				       "  size: 4K\n"
				       "  watermark: true\n"
				       "  exclude: [\"*.tmp\"]\n"
				       "  on_success: delete\n"
				       "  settle: 5s\n"
				       "  max_images_per_day: 7\n"
				       "folders:\n"
				       "  - path: /srv/a\n"
				       "  - path: /srv/b\n"
				       "    prompt: own\n"
				       "    size: 2560x1440\n"
				       "    watermark: no\n"
				       "    exclude: []\n"
				       "    on_success: keep\n"
				       "    max_images_per_day: 0\n"
				       "  - path: /srv/c\n"
				       "    exclude: [\"x*\", \"y*\"]\n";
	struct config *cfg = parse_ok(yaml);
	const struct folder_config *a = &cfg->folders[0], *b = &cfg->folders[1],
				   *c = &cfg->folders[2];

	(void)state;
	assert_int_equal(cfg->n_folders, 3);
	assert_string_equal(a->prompt, "shared");
	assert_string_equal(a->size, "4K");
	assert_true(a->watermark);
	assert_int_equal(a->n_exclude, 1);
	assert_string_equal(a->exclude[0], "*.tmp");
	assert_int_equal(a->on_success, ON_SUCCESS_DELETE);
	assert_int_equal(a->settle_ms, 5000);
	assert_int_equal(a->max_images_per_day, 7);
	assert_int_equal(a->poll_interval_ms, 10000);

	assert_string_equal(b->prompt, "own");
	assert_string_equal(b->size, "2560x1440");
	assert_false(b->watermark);
	assert_int_equal(b->n_exclude, 0);
	assert_int_equal(b->on_success, ON_SUCCESS_KEEP);
	assert_int_equal(b->settle_ms, 5000);
	assert_int_equal(b->max_images_per_day, 0);

	assert_string_equal(c->prompt, "shared");
	assert_int_equal(c->n_exclude, 2);
	assert_string_equal(c->exclude[0], "x*");
	assert_string_equal(c->exclude[1], "y*");
	/* Each folder owns its copy. */
	assert_ptr_not_equal(a->prompt, c->prompt);
	config_free(cfg);
}

static void test_paths_normalised(void **state)
{
	static const char yaml[] = API "folders:\n"
				       "  - path: /srv//hot/./in/\n"
				       "    prompt: p\n"
				       "    output: /srv/out//\n"
				       "  - path: /srv/x\n"
				       "    prompt: p\n"
				       "    size: 3000X2000\n"
				       "    on_success: move\n";
	struct config *cfg = parse_ok(yaml);

	(void)state;
	assert_string_equal(cfg->folders[0].path, "/srv/hot/in");
	assert_string_equal(cfg->folders[0].output, "/srv/out");
	assert_string_equal(cfg->folders[0].done_dir, "/srv/out/originals");
	assert_string_equal(cfg->folders[1].output, "/srv/x-out");
	assert_string_equal(cfg->folders[1].done_dir, "/srv/x-out/originals");
	assert_string_equal(cfg->folders[1].size, "3000x2000");
	config_free(cfg);
}

static void test_api_key_file(void **state)
{
	struct config *cfg;

	(void)state;
	cfg = parse_ok(API "  api_key_file: /run/credentials/seedreamd/api_key\n" ONE_FOLDER);
	assert_null(cfg->api.api_key_env);
	assert_string_equal(cfg->api.api_key_file, "/run/credentials/seedreamd/api_key");
	config_free(cfg);
}

static void test_plain_http(void **state)
{
	static const char *const loopback[] = {
		"http://127.0.0.1:8080/api/v3",
		"http://localhost/api/v3",
		"http://[::1]:9/v1",
		"HTTP://127.0.0.1/v1",
		"http://2130706433/v1", /* 127.0.0.1 to curl */
		"http://LOCALHOST./v1",
		"http://[::ffff:127.0.0.1]/v1",
	};
	struct config *cfg;
	char yaml[256];

	(void)state;
	refused("api:\n"
		"  base_url: http://example.test/api/v3\n"
		"  model: m\n" ONE_FOLDER,
		"test.yaml:2:13: ", "allow_insecure_http");
	refused("api:\n"
		"  base_url: http://localhost.example.test/api/v3\n"
		"  model: m\n" ONE_FOLDER,
		"test.yaml:2:13: ", "allow_insecure_http");
	/* The host curl connects to, not the text's prefix. */
	refused("api:\n"
		"  base_url: http://127.attacker.example:8080/v1\n"
		"  model: m\n" ONE_FOLDER,
		"test.yaml:2:13: ", "allow_insecure_http");
	refused("api:\n"
		"  base_url: http://127.0.0.1@203.0.113.5:8080/v1\n"
		"  model: m\n" ONE_FOLDER,
		"test.yaml:2:13: ", "allow_insecure_http");
	refused("api:\n"
		"  base_url: \"http://[::1]@203.0.113.5/v1\"\n"
		"  model: m\n" ONE_FOLDER,
		"test.yaml:2:13: ", "allow_insecure_http");
	refused("api:\n"
		"  base_url: http://10.0.0.1/v1\n"
		"  model: m\n" ONE_FOLDER,
		"test.yaml:2:13: ", "allow_insecure_http");
	refused("api:\n"
		"  base_url: \"https://[::1/v1\"\n"
		"  model: m\n" ONE_FOLDER,
		"test.yaml:2:13: ", "not a valid URL");
	cfg = parse_ok("api:\n"
		       "  allow_insecure_http: true\n"
		       "  base_url: http://example.test/api/v3\n"
		       "  model: m\n" ONE_FOLDER);
	assert_string_equal(cfg->api.base_url, "http://example.test/api/v3");
	config_free(cfg);
	for (size_t i = 0; i < sizeof(loopback) / sizeof(loopback[0]); i++) {
		snprintf(yaml, sizeof(yaml), "api:\n  base_url: %s\n  model: m\n" ONE_FOLDER,
			 loopback[i]);
		cfg = parse_ok(yaml);
		assert_false(cfg->api.allow_insecure_http);
		assert_int_equal(strncmp(cfg->api.base_url, "http://", 7), 0);
		config_free(cfg);
	}
	cfg = parse_ok("api:\n  base_url: HTTPS://Example.test/\n  model: m\n" ONE_FOLDER);
	assert_string_equal(cfg->api.base_url, "https://Example.test");
	config_free(cfg);
}

static void test_refuse_syntax(void **state)
{
	(void)state;
	refused(API "folders:\n"
		    "  - path: /srv/in\n"
		    "   prompt: p\n",
		"test.yaml:6:4: ", "syntax error");
	refused(API "folders: [\n", "test.yaml:5:1: ", "syntax error");
	refused("api: \"unterminated\n", "test.yaml:2:1: ", "syntax error");
	refused("api: {\xff}\n", "test.yaml:1:7: ", "UTF-8");
}

static void test_refuse_unknown_keys(void **state)
{
	(void)state;
	refused(API ONE_FOLDER "    promt: q\n", "test.yaml:7:5: ",
		"unknown key \"promt\" in folder (did you mean \"prompt\"?)");
	refused(API "  modle: x\n" ONE_FOLDER, "test.yaml:4:3: ", "unknown key \"modle\" in api");
	refused(API ONE_FOLDER "verbose: true\n", "test.yaml:7:1: ",
		"unknown key \"verbose\" at top level");
	refused(API "defaults:\n  colour: red\n" ONE_FOLDER, "test.yaml:5:3: ",
		"unknown key \"colour\" in defaults");
	refused(API "defaults:\n  path: /srv/x\n" ONE_FOLDER, "test.yaml:5:3: ",
		"not allowed in defaults");
	refused(API "defaults:\n  output: /srv/x\n" ONE_FOLDER, "test.yaml:5:3: ",
		"not allowed in defaults");
	refused(API ONE_FOLDER "? [a]\n: b\n", "test.yaml:7:3: ", "key name");
}

static void test_refuse_types(void **state)
{
	(void)state;
	refused(API "folders:\n"
		    "  - path: /srv/in\n"
		    "    prompt: {text: p}\n",
		"test.yaml:6:13: ", "prompt: expected a string, got a mapping");
	refused(API ONE_FOLDER "    watermark: yes please\n", "test.yaml:7:16: ",
		"expected a boolean");
	refused(API ONE_FOLDER "    recursive: [true]\n", "test.yaml:7:16: ",
		"got a sequence");
	refused(API ONE_FOLDER "    exclude: \"*.tmp\"\n", "test.yaml:7:14: ",
		"sequence of glob strings");
	refused(API ONE_FOLDER "    exclude: [\"a\", {b: c}]\n", "test.yaml:7:20: ", "exclude");
	refused(API ONE_FOLDER "    settle: soon\n", "test.yaml:7:13: ",
		"settle: expected a duration");
	refused(API ONE_FOLDER "    settle: -2s\n", "test.yaml:7:13: ", "duration");
	refused(API ONE_FOLDER "    poll_interval: 10ms\n", "test.yaml:7:20: ", "100ms");
	refused(API ONE_FOLDER "    max_input_bytes: 0\n", "test.yaml:7:22: ", "max_input_bytes");
	refused(API ONE_FOLDER "    max_input_bytes: 2GiB\n", "test.yaml:7:22: ", "1GiB");
	refused(API ONE_FOLDER "    max_input_bytes: lots\n", "test.yaml:7:22: ", "size");
	refused(API ONE_FOLDER "    max_images_per_day: -1\n", "test.yaml:7:25: ", "whole number");
	refused(API ONE_FOLDER "    prompt: \"\"\n", "test.yaml:7:5: ", "duplicate");
	refused(API "folders:\n"
		    "  - path: /srv/in\n"
		    "    prompt: \"\"\n",
		"test.yaml:6:13: ", "empty");
	refused(API "folders:\n"
		    "  - path: /srv/in\n"
		    "    prompt:\n",
		"test.yaml:6:12: ", "got nothing");
	refused(API "folders:\n"
		    "  - path: /srv/in\n"
		    "    prompt: \"a\\0b\"\n",
		"test.yaml:6:13: ", "NUL");
	refused(API ONE_FOLDER "stop_timeout: 99999999999999999999999s\n", "test.yaml:7:15: ",
		"stop_timeout");
	refused(API ONE_FOLDER "rescan_interval: 0\n", "test.yaml:7:18: ", "rescan_interval");
	refused(API ONE_FOLDER "min_free_space: 1.5GB\n", "test.yaml:7:17: ", "min_free_space");
	refused(API ONE_FOLDER "images_per_minute: many\n", "test.yaml:7:20: ",
		"images_per_minute");
	refused(API ONE_FOLDER "state_dir: var/lib/x\n", "test.yaml:7:12: ", "absolute path");
	refused("api: https://example.test\n" ONE_FOLDER, "test.yaml:1:6: ",
		"api: expected a mapping");
	refused(API "defaults: 3\n" ONE_FOLDER, "test.yaml:4:11: ", "defaults: expected a mapping");
	refused(API "folders:\n  path: /srv/in\n", "test.yaml:5:3: ", "sequence of folders");
	refused(API "folders:\n  - /srv/in\n", "test.yaml:5:5: ", "each entry must be a mapping");
	refused("- api\n", "test.yaml:1:1: ", "expected a mapping");
}

static void test_refuse_api(void **state)
{
	struct config *cfg;

	(void)state;
	refused("api:\n"
		"  model: m\n" ONE_FOLDER,
		"test.yaml:2:3: ", "missing key \"base_url\" in api");
	refused("api:\n"
		"  base_url: https://example.test\n"
		"  timeout: 10s\n" ONE_FOLDER,
		"test.yaml:2:3: ", "missing key \"model\" in api");
	refused(ONE_FOLDER, "test.yaml:1:1: ", "missing key \"api\"");
	refused(API, "test.yaml:1:1: ", "missing key \"folders\"");
	refused("api:\n"
		"  base_url: ftp://example.test\n"
		"  model: m\n" ONE_FOLDER,
		"test.yaml:2:13: ", "http:// or https://");
	refused("api:\n"
		"  base_url: https://\n"
		"  model: m\n" ONE_FOLDER,
		"test.yaml:2:13: ", "no host");
	refused("api:\n"
		"  base_url: \"https://exa mple.test\"\n"
		"  model: m\n" ONE_FOLDER,
		"test.yaml:2:13: ", "spaces");
	refused(API "  max_in_flight: 0\n" ONE_FOLDER, "test.yaml:4:18: ", "from 1 to 256");
	refused(API "  max_in_flight: 257\n" ONE_FOLDER, "test.yaml:4:18: ", "from 1 to 256");
	refused(API "  max_in_flight: -1\n" ONE_FOLDER, "test.yaml:4:18: ", "max_in_flight");
	refused(API "  retries: 101\n" ONE_FOLDER, "test.yaml:4:12: ", "from 0 to 100");
	refused(API "  retries: 3.5\n" ONE_FOLDER, "test.yaml:4:12: ", "retries");
	refused(API "  timeout: 0s\n" ONE_FOLDER, "test.yaml:4:12: ", "api.timeout");
	refused(API "  response_format: png\n" ONE_FOLDER, "test.yaml:4:20: ",
		"unknown value \"png\" (allowed: url, b64_json)");
	refused(API "  api_key_env: KEY\n"
		    "  api_key_file: /etc/key\n" ONE_FOLDER,
		"test.yaml:5:3: ", "pick one");
	refused(API "  api_key_env: \"MY KEY\"\n" ONE_FOLDER, "test.yaml:4:16: ",
		"environment variable");
	refused(API "  ca_file: ca.pem\n" ONE_FOLDER, "test.yaml:4:12: ", "absolute path");
	refused(API "  ca_file: /nonexistent/ca.pem\n" ONE_FOLDER, "test.yaml:4:12: ",
		"cannot read \"/nonexistent/ca.pem\": No such file or directory");
	refused(API "  ca_file: /\n" ONE_FOLDER, "test.yaml:4:12: ", "not a regular file");
	cfg = parse_ok(API "  allow_private_result_urls: yes\n" ONE_FOLDER);
	assert_true(cfg->api.allow_private_result_urls);
	config_free(cfg);
	refused(API "  allow_private_result_urls: 2\n" ONE_FOLDER, "test.yaml:4:30: ", "boolean");
	refused(API "  allow_insecure_http: maybe\n" ONE_FOLDER, "test.yaml:4:24: ", "boolean");
	refused(API "  model: other\n" ONE_FOLDER, "test.yaml:4:3: ",
		"duplicate key \"model\" in api (first at line 3)");
}

static void test_refuse_folders(void **state)
{
	(void)state;
	refused(API "folders: []\n", "test.yaml:4:10: ", "empty");
	refused(API "folders:\n", "test.yaml:", "empty");
	refused(API "folders:\n"
		    "  - prompt: p\n"
		    "    size: 4K\n",
		"test.yaml:5:5: ", "missing key \"path\" in folder");
	refused(API "folders:\n"
		    "  - path: /srv/in\n"
		    "  - path: /srv/other\n"
		    "    prompt: p\n",
		"test.yaml:5:5: ", "missing key \"prompt\"");
	refused(API "folders:\n"
		    "  - path: srv/in\n"
		    "    prompt: p\n",
		"test.yaml:5:11: ", "absolute path");
	refused(API "folders:\n"
		    "  - path: /srv/../etc\n"
		    "    prompt: p\n",
		"test.yaml:5:11: ", "\"..\"");
	refused(API "folders:\n"
		    "  - path: /srv/in\n"
		    "    prompt: p\n"
		    "    mode: fast\n",
		"test.yaml:7:11: ", "allowed: auto, inotify, poll");
	refused(API "folders:\n"
		    "  - path: /srv/in\n"
		    "    prompt: p\n"
		    "    on_success: archive\n",
		"test.yaml:7:17: ", "allowed: keep, move, delete");
}

static void test_refuse_sizes(void **state)
{
	(void)state;
	refused(API ONE_FOLDER "    size: 3K\n", "test.yaml:7:11: ", "invalid size \"3K\"");
	refused(API ONE_FOLDER "    size: 1K\n", "test.yaml:7:11: ", "4.5");
	refused(API "defaults:\n  size: 1K\n" ONE_FOLDER, "test.yaml:5:9: ", "4.5");
	refused(API ONE_FOLDER "    size: 1280x720\n", "test.yaml:7:11: ", "total pixels");
	refused(API ONE_FOLDER "    size: 8192x256\n", "test.yaml:7:11: ", "aspect ratio");
	refused(API ONE_FOLDER "    size: [2K]\n", "test.yaml:7:11: ", "got a sequence");

	struct config *cfg = parse_ok(API_40 ONE_FOLDER "    size: 1K\n");

	assert_string_equal(cfg->folders[0].size, "1K");
	config_free(cfg);
	cfg = parse_ok(API_40 ONE_FOLDER "    size: 1280x720\n");
	assert_string_equal(cfg->folders[0].size, "1280x720");
	config_free(cfg);
}

static void test_refuse_overlaps(void **state)
{
	struct config *cfg;

	(void)state;
	refused(API "folders:\n"
		    "  - path: /srv/in\n"
		    "    prompt: p\n"
		    "  - path: /srv/in/\n"
		    "    prompt: q\n",
		"test.yaml:7:11: ", "listed twice (first at line 5)");
	refused(API "folders:\n"
		    "  - path: /srv/in\n"
		    "    prompt: p\n"
		    "    output: /srv/in/results\n",
		"test.yaml:7:13: ", "inside (or is) the watched folder \"/srv/in\"");
	refused(API "folders:\n"
		    "  - path: /srv/in\n"
		    "    prompt: p\n"
		    "    output: /srv/in/\n",
		"test.yaml:7:13: ", "watched folder");
	/* Another folder's watched folder. */
	refused(API "folders:\n"
		    "  - path: /srv/a\n"
		    "    prompt: p\n"
		    "    output: /srv/b/out\n"
		    "  - path: /srv/b\n"
		    "    prompt: p\n",
		"test.yaml:7:13: ", "\"/srv/b\"");
	/* A watched folder inside another's (default) output. */
	refused(API "folders:\n"
		    "  - path: /srv/a\n"
		    "    prompt: p\n"
		    "  - path: /srv/a-out/again\n"
		    "    prompt: p\n",
		"test.yaml:7:11: ", "inside (or is) the output \"/srv/a-out\"");
	/* Root watched: every output is inside it. */
	refused(API "folders:\n"
		    "  - path: /\n"
		    "    prompt: p\n",
		"test.yaml:5:11: ", "watched folder \"/\"");
	refused(API "folders:\n"
		    "  - path: /srv/in\n"
		    "    prompt: p\n"
		    "    on_success: move\n"
		    "    done_dir: /srv/in/done\n",
		"test.yaml:8:15: ", "done_dir");
	refused(API "defaults:\n"
		    "  on_success: move\n"
		    "  done_dir: /srv/in/done\n" ONE_FOLDER,
		"test.yaml:6:13: ", "done_dir");

	/* Two folders sharing one output would overwrite each other's results. */
	refused(API "folders:\n"
		    "  - path: /srv/a\n"
		    "    prompt: p\n"
		    "    output: /srv/out\n"
		    "  - path: /srv/b\n"
		    "    prompt: p\n"
		    "    output: /srv/out\n",
		"test.yaml:10:13: ", "also the output of the folder at line 5");
	/* A folder inside a recursive one: its files would be taken twice. */
	refused(API "folders:\n"
		    "  - path: /srv/a\n"
		    "    prompt: p\n"
		    "    recursive: true\n"
		    "  - path: /srv/a/b\n"
		    "    prompt: p\n",
		"test.yaml:8:11: ", "inside the recursive folder \"/srv/a\"");
	/* Inside a folder that is not recursive: fine, its files are not seen twice. */
	cfg = parse_ok(API "folders:\n"
			   "  - path: /srv/a\n"
			   "    prompt: p\n"
			   "  - path: /srv/a/b\n"
			   "    prompt: p\n"
			   "    output: /srv/b-out\n");
	config_free(cfg);

	/* Siblings with a common prefix are not nested. */
	cfg = parse_ok(API "folders:\n"
					  "  - path: /srv/in\n"
					  "    prompt: p\n"
					  "  - path: /srv/inbox\n"
					  "    prompt: p\n"
					  "    output: /srv/in-outbox\n"
					  "    on_success: move\n"
					  "    done_dir: /srv/inbox-done\n");

	assert_int_equal(cfg->n_folders, 2);
	config_free(cfg);
}

static void test_refuse_document(void **state)
{
	(void)state;
	refused("", "test.yaml:1:1: ", "empty");
	refused("# only a comment\n", "test.yaml:1:1: ", "empty");
	refused("base: &b\n"
		"  base_url: https://example.test\n"
		"  model: m\n"
		"api: *b\n" ONE_FOLDER,
		"test.yaml:4:6: ", "aliases are not supported");
	refused(API ONE_FOLDER "---\n" API ONE_FOLDER, "test.yaml:7:1: ", "one YAML document");
	refused(API ONE_FOLDER "x: [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]\n", "test.yaml:7:",
		"nested");
	refused(API ONE_FOLDER "api: {}\n", "test.yaml:7:1: ", "duplicate key \"api\"");

	struct config *cfg = NULL;
	char big_err[256];
	size_t len = 1024 * 1024 + 1;
	char *big = malloc(len);

	assert_non_null(big);
	memset(big, '#', len);
	assert_int_equal(config_parse("big.yaml", big, len, &cfg, big_err, sizeof(big_err)),
			 -EINVAL);
	assert_null(cfg);
	assert_non_null(strstr(big_err, "1 MiB"));
	free(big);
}

static void test_error_buffer(void **state)
{
	static const char yaml[] = API ONE_FOLDER "    promt: q\n";
	struct config *cfg = (struct config *)&state; /* any non-NULL: must stay untouched */
	char err[12];

	memset(err, 'x', sizeof(err));
	assert_int_equal(config_parse("test.yaml", yaml, strlen(yaml), &cfg, err, sizeof(err)),
			 -EINVAL);
	assert_ptr_equal(cfg, (struct config *)&state);
	assert_string_equal(err, "test.yaml:7");
	assert_int_equal(config_parse("test.yaml", yaml, strlen(yaml), &cfg, NULL, 0), -EINVAL);
	config_free(NULL);
}

/* Money as exact millionths: no float ever rounds 0.1 + 0.2. */
static void test_money(void **state)
{
	uint64_t m = 42;

	(void)state;
	assert_int_equal(config_parse_money("25", &m), 0);
	assert_int_equal(m, 25000000);
	assert_int_equal(config_parse_money("0.03", &m), 0);
	assert_int_equal(m, 30000);
	assert_int_equal(config_parse_money("1.5", &m), 0);
	assert_int_equal(m, 1500000);
	assert_int_equal(config_parse_money("0.000001", &m), 0);
	assert_int_equal(m, 1);
	assert_int_equal(config_parse_money("1000000000000", &m), 0);
	assert_int_equal(m, 1000000000000ull * 1000000);
	m = 42;
	assert_int_equal(config_parse_money("1000000000001", &m), -EINVAL);
	assert_int_equal(config_parse_money("0.0000001", &m), -EINVAL);
	assert_int_equal(config_parse_money("-1", &m), -EINVAL);
	assert_int_equal(config_parse_money("1.", &m), -EINVAL);
	assert_int_equal(config_parse_money(".5", &m), -EINVAL);
	assert_int_equal(config_parse_money("1,5", &m), -EINVAL);
	assert_int_equal(config_parse_money("1e3", &m), -EINVAL);
	assert_int_equal(config_parse_money(" 1", &m), -EINVAL);
	assert_int_equal(config_parse_money("", &m), -EINVAL);
	assert_int_equal(m, 42);
}

static void test_durations(void **state)
{
	uint64_t ms = 42;

	(void)state;
	assert_int_equal(config_parse_duration("180s", &ms), 0);
	assert_int_equal(ms, 180000);
	assert_int_equal(config_parse_duration("250ms", &ms), 0);
	assert_int_equal(ms, 250);
	assert_int_equal(config_parse_duration("5m", &ms), 0);
	assert_int_equal(ms, 300000);
	assert_int_equal(config_parse_duration("1h", &ms), 0);
	assert_int_equal(ms, 3600000);
	assert_int_equal(config_parse_duration("90", &ms), 0);
	assert_int_equal(ms, 90000);
	assert_int_equal(config_parse_duration("0", &ms), 0);
	assert_int_equal(ms, 0);
	assert_int_equal(config_parse_duration("007s", &ms), 0);
	assert_int_equal(ms, 7000);
	assert_int_equal(config_parse_duration("18446744073709551615ms", &ms), 0);
	assert_int_equal(ms, UINT64_MAX);

	ms = 42;
	assert_int_equal(config_parse_duration("", &ms), -EINVAL);
	assert_int_equal(config_parse_duration(NULL, &ms), -EINVAL);
	assert_int_equal(config_parse_duration("-1s", &ms), -EINVAL);
	assert_int_equal(config_parse_duration("+1s", &ms), -EINVAL);
	assert_int_equal(config_parse_duration(" 1s", &ms), -EINVAL);
	assert_int_equal(config_parse_duration("1s ", &ms), -EINVAL);
	assert_int_equal(config_parse_duration("1 s", &ms), -EINVAL);
	assert_int_equal(config_parse_duration("s", &ms), -EINVAL);
	assert_int_equal(config_parse_duration("1.5s", &ms), -EINVAL);
	assert_int_equal(config_parse_duration("1d", &ms), -EINVAL);
	assert_int_equal(config_parse_duration("1sec", &ms), -EINVAL);
	assert_int_equal(config_parse_duration("1S", &ms), -EINVAL);
	assert_int_equal(config_parse_duration("0x10", &ms), -EINVAL);
	assert_int_equal(config_parse_duration("18446744073709551616ms", &ms), -EINVAL);
	assert_int_equal(config_parse_duration("18446744073709551615s", &ms), -EINVAL);
	assert_int_equal(config_parse_duration("5124095576030432h", &ms), -EINVAL);
	assert_int_equal(ms, 42);
}

static void test_bytes(void **state)
{
	uint64_t b = 42;

	(void)state;
	assert_int_equal(config_parse_bytes("1024", &b), 0);
	assert_int_equal(b, 1024);
	assert_int_equal(config_parse_bytes("0", &b), 0);
	assert_int_equal(b, 0);
	assert_int_equal(config_parse_bytes("12B", &b), 0);
	assert_int_equal(b, 12);
	assert_int_equal(config_parse_bytes("2K", &b), 0);
	assert_int_equal(b, 2000);
	assert_int_equal(config_parse_bytes("2kb", &b), 0);
	assert_int_equal(b, 2000);
	assert_int_equal(config_parse_bytes("2KiB", &b), 0);
	assert_int_equal(b, 2048);
	assert_int_equal(config_parse_bytes("256MB", &b), 0);
	assert_int_equal(b, 256000000);
	assert_int_equal(config_parse_bytes("10MiB", &b), 0);
	assert_int_equal(b, 10 * MiB);
	assert_int_equal(config_parse_bytes("3M", &b), 0);
	assert_int_equal(b, 3000000);
	assert_int_equal(config_parse_bytes("1GiB", &b), 0);
	assert_int_equal(b, 1024 * MiB);
	assert_int_equal(config_parse_bytes("1gib", &b), 0);
	assert_int_equal(b, 1024 * MiB);
	assert_int_equal(config_parse_bytes("2G", &b), 0);
	assert_int_equal(b, 2000000000);
	assert_int_equal(config_parse_bytes("2GB", &b), 0);
	assert_int_equal(b, 2000000000);

	b = 42;
	assert_int_equal(config_parse_bytes("", &b), -EINVAL);
	assert_int_equal(config_parse_bytes(NULL, &b), -EINVAL);
	assert_int_equal(config_parse_bytes("MiB", &b), -EINVAL);
	assert_int_equal(config_parse_bytes("-1", &b), -EINVAL);
	assert_int_equal(config_parse_bytes("-1MiB", &b), -EINVAL);
	assert_int_equal(config_parse_bytes("1.5MiB", &b), -EINVAL);
	assert_int_equal(config_parse_bytes("1 MiB", &b), -EINVAL);
	assert_int_equal(config_parse_bytes("1MiBs", &b), -EINVAL);
	assert_int_equal(config_parse_bytes("1Mi", &b), -EINVAL);
	assert_int_equal(config_parse_bytes("1PB", &b), -EINVAL);
	assert_int_equal(config_parse_bytes("18446744073709551616", &b), -EINVAL);
	assert_int_equal(config_parse_bytes("17179869184GiB", &b), -EINVAL);
	assert_int_equal(b, 42);
	assert_int_equal(config_parse_bytes("18446744073709551615", &b), 0);
	assert_int_equal(b, UINT64_MAX);
}

static void check_size(const char *size, const char *model, int expect, const char *word)
{
	char err[256] = "";
	int r = config_check_size(size, model, err, sizeof(err));

	if (r != expect)
		fail_msg("size %s model %s: expected %d, got %d (%s)", size, model, expect, r, err);
	if (word && !strstr(err, word))
		fail_msg("expected \"%s\" in \"%s\"", word, err);
}

static void test_sizes(void **state)
{
	static const char v45[] = "doubao-seedream-4-5-251128";
	static const char v40[] = "doubao-seedream-4-0-250828";

	(void)state;
	check_size("2K", v45, 0, NULL);
	check_size("4K", v45, 0, NULL);
	check_size("2K", v40, 0, NULL);
	check_size("4K", NULL, 0, NULL);
	check_size("1K", v40, 0, NULL);
	check_size("1K", NULL, 0, NULL);
	check_size("1K", v45, -EINVAL, "1K");
	check_size("2048x2048", v45, 0, NULL);
	check_size("2560x1440", v45, 0, NULL);  /* the 4.5 minimum */
	check_size("2560X1440", v45, 0, NULL);
	check_size("4096x4096", v45, 0, NULL);  /* the maximum */
	check_size("2559x1440", v45, -EINVAL, "total pixels");
	check_size("4096x4097", v45, -EINVAL, "total pixels");
	check_size("1280x720", v40, 0, NULL);   /* the 4.0 minimum */
	check_size("1280x720", v45, -EINVAL, "total pixels");
	check_size("1279x720", v40, -EINVAL, "total pixels");
	check_size("16400x1025", v40, -EINVAL, "total pixels"); /* 16:1 but too many */
	check_size("8000x500", v40, 0, NULL);    /* exactly 16:1 */
	check_size("500x8000", v40, 0, NULL);    /* exactly 1:16 */
	check_size("8017x501", v40, -EINVAL, "aspect ratio");
	check_size("501x8017", v40, -EINVAL, "aspect ratio");
	check_size("0x2048", v40, -EINVAL, "1 to 65536");
	check_size("99999999999999999999x1", v40, -EINVAL, "invalid size");
	check_size("100000x100000", v40, -EINVAL, "1 to 65536");
	check_size("2k", v40, -EINVAL, "invalid size");
	check_size("3K", v40, -EINVAL, "invalid size");
	check_size("2048*2048", v40, -EINVAL, "invalid size");
	check_size("2048x", v40, -EINVAL, "invalid size");
	check_size("x2048", v40, -EINVAL, "invalid size");
	check_size("2048x2048 ", v40, -EINVAL, "invalid size");
	check_size("-2048x-2048", v40, -EINVAL, "invalid size");
	check_size("2048x+2048", v40, -EINVAL, "invalid size");
	check_size("", v40, -EINVAL, "empty");
	check_size(NULL, v40, -EINVAL, "empty");
	assert_int_equal(config_check_size("3K", v40, NULL, 0), -EINVAL);
}

static void test_load(void **state)
{
	char path[] = "/tmp/test_config.XXXXXX", err[512];
	struct config *cfg = NULL;
	static const char yaml[] = API ONE_FOLDER;
	FILE *f;
	int fd;

	(void)state;
	assert_int_equal(config_load("/nonexistent/seedreamd.yaml", &cfg, err, sizeof(err)),
			 -ENOENT);
	assert_null(cfg);
	assert_string_equal(err, "/nonexistent/seedreamd.yaml: No such file or directory");

	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(yaml, 1, strlen(yaml), f), strlen(yaml));
	assert_int_equal(fclose(f), 0);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg->source_file, path);
	assert_string_equal(cfg->folders[0].path, "/srv/in");
	config_free(cfg);
	cfg = NULL;

	/* Just over the limit. */
	f = fopen(path, "w");
	assert_non_null(f);
	for (size_t i = 0; i <= 1024 * 1024; i++)
		fputc('#', f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -EINVAL);
	assert_null(cfg);
	assert_non_null(strstr(err, "1 MiB"));

	/* Refusals are named after the file. */
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(API ONE_FOLDER "    promt: q\n", f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -EINVAL);
	assert_true(strncmp(err, path, strlen(path)) == 0);
	assert_true(strncmp(err + strlen(path), ":7:5: ", 6) == 0);
	assert_int_equal(unlink(path), 0);

	assert_int_equal(config_load("/", &cfg, err, sizeof(err)), -EISDIR);
	assert_non_null(strstr(err, "/: "));
}

/* The shipped example must stay valid. */
static void test_example_config(void **state)
{
	char path[4096], err[512];
	const char *slash = strrchr(__FILE__, '/');
	struct config *cfg = NULL;

	(void)state;
	if (__FILE__[0] != '/' || !slash)
		skip();
	snprintf(path, sizeof(path), "%.*s/../../etc/seedreamd.yaml", (int)(slash - __FILE__),
		 __FILE__);
	if (access(path, R_OK) != 0)
		skip();
	if (config_load(path, &cfg, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_string_equal(cfg->api.model, "doubao-seedream-4-5-251128");
	assert_true(cfg->n_folders >= 1);
	config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_config),
		cmocka_unit_test(test_money),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_fit_keys),
		cmocka_unit_test(test_provenance_keys),
		cmocka_unit_test(test_prompt_file_key),
		cmocka_unit_test(test_extra_key),
		cmocka_unit_test(test_max_images),
		cmocka_unit_test(test_state_directory_env),
		cmocka_unit_test(test_inheritance),
		cmocka_unit_test(test_paths_normalised),
		cmocka_unit_test(test_api_key_file),
		cmocka_unit_test(test_plain_http),
		cmocka_unit_test(test_refuse_syntax),
		cmocka_unit_test(test_refuse_unknown_keys),
		cmocka_unit_test(test_refuse_types),
		cmocka_unit_test(test_refuse_api),
		cmocka_unit_test(test_refuse_folders),
		cmocka_unit_test(test_refuse_sizes),
		cmocka_unit_test(test_refuse_overlaps),
		cmocka_unit_test(test_refuse_document),
		cmocka_unit_test(test_error_buffer),
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_bytes),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_load),
		cmocka_unit_test(test_example_config),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
