/* config: the YAML file (libyaml) to a struct, with defaults and bounds.
 * Pure: never logs. Every refusal names "file:line:column: what is wrong". */
#ifndef SEEDREAMD_CONFIG_H
#define SEEDREAMD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define CONFIG_DEFAULT_PATH "/etc/seedreamd/seedreamd.yaml"
/* sizeof(sockaddr_un.sun_path): a control_socket path is shorter. */
#define CONFIG_SOCKET_PATH_MAX 108

enum folder_mode { FOLDER_MODE_AUTO = 0, FOLDER_MODE_INOTIFY, FOLDER_MODE_POLL };
enum on_success { ON_SUCCESS_KEEP = 0, ON_SUCCESS_MOVE, ON_SUCCESS_DELETE };
enum response_format { RESPONSE_FORMAT_URL = 0, RESPONSE_FORMAT_B64_JSON };
enum fit_mode {
	FIT_AUTO = 0, /* convert only what the API would refuse or read sideways */
	FIT_NEVER,    /* refuse those (LocalValidation.*), as before fitting existed */
	FIT_ALWAYS,   /* re-encode every image: upright, sRGB, metadata stripped */
};

/* <stem>.txt beside an image: its prompt for that image. */
enum prompt_file_mode {
	PROMPT_FILE_OFF = 0,  /* ignored: the folder's prompt (default) */
	PROMPT_FILE_REPLACE,  /* the file's text instead of the folder's prompt */
	PROMPT_FILE_APPEND,   /* the folder's prompt, a newline, the file's text */
	PROMPT_FILE_REQUIRED, /* as replace; the image waits for it (incomplete_timeout) */
};
/* The largest prompt file read (the same bound as a folder's prompt). */
#define CONFIG_PROMPT_FILE_MAX 8192
/* group: subfolder with prompt_file: the prompt file inside each subfolder. */
#define CONFIG_GROUP_PROMPT_FILE "prompt.txt"

/* extra: as JSON, at most (the request body's head stays small). */
#define CONFIG_EXTRA_MAX 16384
/* The API takes at most this many images in one request (the dropped one
 * and its references). */
#define CONFIG_IMAGES_MAX 14

/* A reference image (references:), as it was when the configuration was
 * read: a request sends it only while it is still this file (refs.h). */
struct config_reference {
	char *path;        /* absolute */
	uint64_t size;
	uint64_t dev, ino;
	int64_t mtime_sec;
	long mtime_nsec;
	char format[8];    /* the data URL's name, "png" */
	int line, column;  /* where it is listed, 1-based */
};

enum group_mode {
	GROUP_NONE = 0,    /* one request per file (default) */
	GROUP_SUBFOLDER,   /* each immediate subfolder is one request with all its images */
};
enum group_ready {
	GROUP_READY_SETTLE = 0, /* once the subfolder was quiet for settle (default) */
	GROUP_READY_MARKER,     /* once the marker file (group_marker) is in it */
};

/* One watched folder, after inheriting from "defaults:". */
/* The API advises ~600 words; the bound keeps every sidecar readable. */
#define CONFIG_PROMPT_MAX 8192
/* The API takes inputs + outputs <= 15 per request; one dropped image leaves 14. */
#define CONFIG_PRICE_MAX_MICROS    1000000000000ULL /* price_per_image <= 1e6 */
#define CONFIG_IO_IMAGES_MAX	    15
#define CONFIG_MAX_IMAGES_ONE_INPUT (CONFIG_IO_IMAGES_MAX - 1)

struct folder_config {
	char *path;                   /* absolute, no trailing slash */
	char *output;                 /* absolute; default "<path>-out" */
	char *prompt;                 /* required (here or in defaults) */
	char *size;                   /* "1K" | "2K" | "4K" | "WxH"; default "2K" */
	bool watermark;               /* default false (the API's own default is true) */
	uint64_t settle_ms;           /* default 2000 */
	uint64_t incomplete_timeout_ms; /* default 600000 */
	bool recursive;               /* default false */
	char **exclude;               /* globs (fnmatch), may be empty */
	size_t n_exclude;
	enum folder_mode mode;        /* default auto */
	uint64_t poll_interval_ms;    /* default 10000 */
	bool follow_symlinks;         /* default false */
	uint64_t max_input_bytes;     /* default 10 MiB */
	enum on_success on_success;   /* default keep */
	char *done_dir;               /* default "<output>/originals" */
	uint64_t max_images_per_day;  /* 0 = no limit (default) */
	enum fit_mode fit;            /* default auto */
	unsigned fit_quality;         /* JPEG quality of fitted images, 50..100, default 92 */
	bool embed_provenance;        /* XMP provenance in output JPEGs; default true */
	bool embed_prompt;            /* the prompt itself in that XMP; default false */
	enum prompt_file_mode prompt_file; /* default off */
	char *extra_json;             /* extra: request fields, a JSON object text; NULL if none */
	unsigned max_images;          /* outputs per request, 1..CONFIG_MAX_IMAGES_ONE_INPUT, default 1 */
	int line, column;             /* where the folder entry starts, 1-based */
	struct config_reference *references; /* sent after the dropped image, in order */
	size_t n_references;          /* 0..CONFIG_IMAGES_MAX - 1 */
	enum group_mode group;        /* default none; subfolder needs recursive false */
	enum group_ready group_ready; /* default settle */
	char *group_marker;           /* a file name, default ".ready" */
};

struct api_config {
	char *base_url;               /* required; no trailing slash */
	char *model;                  /* required */
	char *api_key_env;            /* default "SEEDREAM_API_KEY" unless api_key_file is set */
	char *api_key_file;           /* may be NULL */
	uint64_t timeout_ms;          /* default 180000 */
	unsigned max_in_flight;       /* default 4, 1..256 */
	enum response_format response_format; /* default url */
	unsigned retries;             /* default 5, 0..100 */
	uint64_t pause_retry_ms;      /* default 300000 */
	char *ca_file;                /* may be NULL */
	bool allow_insecure_http;     /* default false */
	bool allow_private_result_urls; /* default false: results only from public addresses */
};

/* Events a notify: section reports (a bit each; all by default). */
enum config_event {
	CONFIG_EVENT_FILE_FAILED = 1u << 0,
	CONFIG_EVENT_PAUSED = 1u << 1,
	CONFIG_EVENT_RESUMED = 1u << 2,
	CONFIG_EVENT_SPEND_LIMIT = 1u << 3,
	CONFIG_EVENT_DAILY_SUMMARY = 1u << 4,
	CONFIG_EVENT_ALL = (1u << 5) - 1,
};

struct notify_config {
	char *webhook;                /* http(s) URL, NULL: none */
	char *command;                /* absolute path, NULL: none */
	unsigned events;              /* enum config_event bits, default all */
	uint64_t command_timeout_ms;  /* default 30 s */
	unsigned summary_minute;      /* minute of the local day of daily_summary, default 0 */
};

/* Money in millionths of the currency's unit: sums stay exact. */
#define CONFIG_MICROS 1000000u

struct config_price {
	char *model;
	uint64_t micros; /* per generated image */
};

struct config {
	char *source_file;            /* the path it was loaded from */
	struct api_config api;
	struct folder_config *folders;
	size_t n_folders;
	char *state_dir;              /* default $STATE_DIRECTORY or /var/lib/seedreamd */
	uint64_t stop_timeout_ms;     /* default 60000 */
	uint64_t rescan_interval_ms;  /* default 600000 */
	uint64_t min_free_space;      /* bytes, default 256 MiB */
	uint64_t max_images_per_day;  /* global, 0 = no limit */
	uint64_t images_per_minute;   /* 0 = no limit */
	unsigned max_fits;            /* images converted at once, 1..64; default min(2, cores) */
	struct notify_config notify;
	struct config_price *prices;  /* price_per_image, may be empty */
	size_t n_prices;
	char *currency;               /* shown as is; NULL: none given */
	uint64_t max_spend_per_day;   /* micros, 0 = no limit */
	char *metrics_listen;         /* "ADDR:PORT" for GET /metrics, NULL: off */
	char *metrics_textfile;       /* node_exporter textfile, NULL: off */
	char *control_socket;         /* NULL: the default (control.h); absolute otherwise */
	bool control_socket_off;      /* control_socket: off */
};

/* Parse a YAML document already in memory. `name` is used in messages.
 * Returns 0 and *ret_config, or a negative errno (-EINVAL for a refused
 * config, -ENOMEM) with a one-line message in err. */
int config_parse(const char *name, const char *yaml, size_t len, struct config **ret_config,
		 char *err, size_t errlen);

/* Read and parse a file; -errno with "path: strerror" in err if unreadable. */
int config_load(const char *path, struct config **ret_config, char *err, size_t errlen);

/* "127.0.0.1:9464" or "[::1]:9464" (numeric only) to a socket address.
 * 0 or -EINVAL. */
int config_parse_listen(const char *text, struct sockaddr_storage *ret_addr, socklen_t *ret_len);

/* Accepts NULL. */
void config_free(struct config *config);

/* "180s", "250ms", "5m", "1h", "90" (bare = seconds). -EINVAL if malformed or overflowing. */
int config_parse_duration(const char *text, uint64_t *ret_ms);

/* "10MiB", "256MB", "1GiB", "1024" (bytes), "KiB", "K", "MB"... -EINVAL if malformed. */
int config_parse_bytes(const char *text, uint64_t *ret_bytes);

/* "25", "0.03", "1.5": a non-negative amount with at most 6 decimals, in
 * micros (at most 10^12 units). -EINVAL if malformed. */
int config_parse_money(const char *text, uint64_t *ret_micros);

/* The price of one image of model, in micros, or -ENOENT if none is given. */
int config_price_of(const struct config *config, const char *model, uint64_t *ret_micros);

/* Checks a size value for the model: 2K/4K always; 1K unless the model is a
 * 4.5 one; WxH with the total pixel range and aspect ratio of the API.
 * Returns 0, or -EINVAL with the reason in err. */
int config_check_size(const char *size, const char *model, char *err, size_t errlen);

#endif
