/* seedreamctl: asks a running seedreamd what it is doing, and steers it,
 * through its control socket (one JSON line each way, control_proto.h).
 * A plain blocking client: a connect timeout and a reply timeout bound it.
 * Exit: 0 ok, 1 the daemon refused or failed the command, 2 usage,
 * 3 cannot connect, or no (valid) reply in time. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "control_proto.h"

#define CTL_DEFAULT_SOCKET "/run/seedreamd/control"
#define CTL_CONNECT_MS	   5000

enum { EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_CONNECT = 3 };

static void usage(FILE *out)
{
	(void)fprintf(
	    out,
	    "Usage: seedreamctl [-s SOCKET] [--json] [-t SECONDS] COMMAND [ARGS]\n"
	    "\n"
	    "Commands:\n"
	    "  status                          counts, pauses and why, per folder; images paid\n"
	    "  queue [FOLDER]                  files waiting or in flight, oldest first\n"
	    "  failed [-n N] [FOLDER]          failed files with their error code and message\n"
	    "  history [-n N] [FOLDER]         the N most recent results (default 20)\n"
	    "  retry FILE...                   remove their error records and submit them again\n"
	    "  retry --all-failed [--folder F] the same for every failed file (of folder F)\n"
	    "  pause [FOLDER]                  start no new generation (in flight ones finish)\n"
	    "  resume [FOLDER]                 end a pause (without FOLDER: every pause)\n"
	    "  rescan [FOLDER]                 look for new files now\n"
	    "\n"
	    "  -s, --socket PATH  the daemon's control socket (default " CTL_DEFAULT_SOCKET ")\n"
	    "      --json         print the daemon's JSON reply as it came\n"
	    "  -t, --timeout S    seconds to wait for the reply (default 30)\n"
	    "  -h, --help         this text\n"
	    "      --version      the version\n"
	    "\n"
	    "Exit status: 0 ok, 1 the daemon refused or failed the command, 2 usage,\n"
	    "3 cannot connect to the daemon or no reply in time.\n");
}

static long now_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Relative paths are made absolute against the working directory (not
 * resolved: the daemon knows its folders by their configured paths). */
static char *absolute(const char *path)
{
	char cwd[PATH_MAX], *abs;
	size_t len;

	if (path[0] == '/') {
		abs = strdup(path);
	} else {
		if (!getcwd(cwd, sizeof(cwd)))
			return NULL;
		if (asprintf(&abs, "%s/%s", cwd, path) < 0)
			abs = NULL;
	}
	if (!abs)
		return NULL;
	len = strlen(abs);
	while (len > 1 && abs[len - 1] == '/')
		abs[--len] = '\0';
	return abs;
}

static int ctl_connect(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	long deadline = now_ms() + CTL_CONNECT_MS;
	int fd;

	if (strlen(path) >= sizeof(addr.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(addr.sun_path, path, strlen(path) + 1);
	for (;;) {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			return -1;
		if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
			return fd;
		/* A unix socket's backlog is full: try again until the timeout. */
		if (errno != EAGAIN || now_ms() >= deadline) {
			int e = errno;
			close(fd);
			errno = e == EAGAIN ? ETIMEDOUT : e;
			return -1;
		}
		close(fd);
		(void)poll(NULL, 0, 50);
	}
}

/* Sends the request line and reads the reply line. NULL with a message. */
static char *ctl_exchange(int fd, const char *req, long timeout_ms, const char **ret_why)
{
	size_t len = strlen(req), off = 0, cap = 65536, got = 0;
	long deadline = now_ms() + timeout_ms;
	char *buf = malloc(cap);

	if (!buf) {
		*ret_why = "out of memory";
		return NULL;
	}
	for (;;) {
		struct pollfd p = {.fd = fd, .events = off < len ? POLLOUT : POLLIN};
		long left = deadline - now_ms();
		ssize_t n;

		if (left <= 0) {
			*ret_why = "no reply in time";
			goto fail;
		}
		if (poll(&p, 1, (int)left) < 0 && errno != EINTR) {
			*ret_why = strerror(errno);
			goto fail;
		}
		if (off < len) {
			n = send(fd, req + off, len - off, MSG_NOSIGNAL);
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (n < 0) {
				/* Refused at once (permission, too many clients): read why. */
				off = len;
				continue;
			}
			off += (size_t)n;
			continue;
		}
		if (got + 1 >= cap) {
			char *bigger;
			if (cap >= CONTROL_REPLY_MAX + 2) {
				*ret_why = "the reply is too long";
				goto fail;
			}
			bigger = realloc(buf, cap * 2);
			if (!bigger) {
				*ret_why = "out of memory";
				goto fail;
			}
			buf = bigger;
			cap *= 2;
		}
		n = recv(fd, buf + got, cap - got - 1, 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0) {
			*ret_why = n < 0 ? strerror(errno) : "the daemon closed the connection";
			goto fail;
		}
		got += (size_t)n;
		if (memchr(buf + got - (size_t)n, '\n', (size_t)n)) {
			buf[got] = '\0';
			return buf;
		}
	}
fail:
	free(buf);
	return NULL;
}

/* ---- printing ------------------------------------------------------------ */

static const char *str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : "";
}

static double num(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* The bytes of a UTF-8 sequence starting at p (1 to 4), or 0 when it is not a
 * valid one (overlong forms and surrogates included). */
static size_t utf8_seq_len(const unsigned char *p)
{
	size_t len;
	unsigned cp;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		len = 2;
		cp = p[0] & 0x1fu;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		len = 3;
		cp = p[0] & 0x0fu;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		len = 4;
		cp = p[0] & 0x07u;
	} else {
		return 0;
	}
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3fu);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

/* s for a terminal: file names and API messages are not ours, and a control
 * character in them (ESC, CSI...) would be obeyed by the terminal. C0, DEL
 * and C1 become \xNN or \u00NN, bytes that are not UTF-8 \xNN, a backslash
 * \\. Caller frees; exits when out of memory. */
static char *visible(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	char *out = malloc(strlen(s) * 6 + 1), *o = out;

	if (!out) {
		perror("seedreamctl");
		exit(EXIT_CONNECT);
	}
	while (*p) {
		size_t len = utf8_seq_len(p);
		if (len == 1 && (*p < 0x20 || *p == 0x7f)) {
			o += sprintf(o, "\\x%02x", *p);
		} else if (len == 1 && *p == '\\') {
			o += sprintf(o, "\\\\");
		} else if (len == 2 && p[0] == 0xc2 && p[1] < 0xa0) {
			o += sprintf(o, "\\u%04x", p[1]); /* C1: U+0080..U+009F */
		} else if (len == 0) {
			o += sprintf(o, "\\x%02x", *p);
			len = 1;
		} else {
			memcpy(o, p, len);
			o += len;
		}
		p += len;
	}
	*o = '\0';
	return out;
}

static void print_visible(const char *fmt, const char *s)
{
	char *v = visible(s);

	(void)printf(fmt, v);
	free(v);
}

/* A table: a header row and rows of cells, columns as wide as their widest cell. */
struct table {
	size_t cols, rows;
	char **cells; /* rows * cols, row 0 the header */
};

static void table_add(struct table *t, const char *const *cells)
{
	char **more = realloc(t->cells, (t->rows + 1) * t->cols * sizeof(*more));

	if (!more) {
		perror("seedreamctl");
		exit(EXIT_CONNECT);
	}
	t->cells = more;
	for (size_t c = 0; c < t->cols; c++) {
		t->cells[t->rows * t->cols + c] = visible(cells[c] ? cells[c] : "");
	}
	t->rows++;
}

static void table_print(struct table *t)
{
	size_t width[16] = {0};

	for (size_t r = 0; r < t->rows; r++)
		for (size_t c = 0; c < t->cols; c++)
			if (strlen(t->cells[r * t->cols + c]) > width[c])
				width[c] = strlen(t->cells[r * t->cols + c]);
	for (size_t r = 0; r < t->rows; r++) {
		for (size_t c = 0; c < t->cols; c++) {
			const char *cell = t->cells[r * t->cols + c];
			if (c + 1 == t->cols)
				(void)printf("%s\n", cell);
			else
				(void)printf("%-*s  ", (int)width[c], cell);
		}
	}
	for (size_t i = 0; i < t->rows * t->cols; i++)
		free(t->cells[i]);
	free(t->cells);
	t->cells = NULL;
	t->rows = 0;
}

static void print_reason(const cJSON *o, const char *key, const char *label)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	if (cJSON_IsString(v)) {
		(void)printf("%-16s ", label);
		print_visible("%s\n", v->valuestring);
	}
}

static void print_status(const cJSON *o)
{
	static const char *const head[] = {"FOLDER",	"SETTLING", "QUEUED", "WAITING",
					   "IN FLIGHT", "DONE",	    "FAILED", "PAUSED"};
	const cJSON *totals = cJSON_GetObjectItemCaseSensitive(o, "totals");
	const cJSON *paid = cJSON_GetObjectItemCaseSensitive(o, "images_paid");
	const cJSON *oldest = cJSON_GetObjectItemCaseSensitive(o, "oldest_pending");
	const cJSON *spend = cJSON_GetObjectItemCaseSensitive(o, "spend");
	const cJSON *folders = cJSON_GetObjectItemCaseSensitive(o, "folders"), *f;
	struct table t = {.cols = 8};

	(void)printf("%-16s %s%s\n", "seedreamd", str(o, "version"),
		     cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "stopping")) ? " (stopping)"
										   : "");
	(void)printf("%-16s %.0f queued, %.0f settling, %.0f in flight, %.0f waiting to retry; "
		     "this run %.0f done, %.0f failed\n",
		     "files", num(totals, "queued"), num(totals, "settling"),
		     num(totals, "in_flight"), num(totals, "waiting"), num(totals, "done"),
		     num(totals, "failed"));
	if (num(totals, "twin") > 0)
		(void)printf("%-16s %.0f waiting for the result of the same image (paid once)\n",
			     "copies", num(totals, "twin"));
	(void)printf("%-16s %.0f today, %.0f this month\n", "images paid", num(paid, "today"),
		     num(paid, "this_month"));
	if (cJSON_IsObject(spend)) {
		const char *cur = str(spend, "currency");
		(void)printf("%-16s %g %s today, %g %s this month", "estimated cost", num(spend, "today"),
			     cur, num(spend, "this_month"), cur);
		if (num(spend, "max_per_day") > 0)
			(void)printf(" (limit %g %s a day)", num(spend, "max_per_day"), cur);
		(void)printf("\n");
	}
	if (cJSON_IsObject(oldest)) {
		(void)printf("%-16s ", "oldest pending");
		print_visible("%s/", str(oldest, "folder"));
		print_visible("%s", str(oldest, "file"));
		(void)printf(", %.0f s\n", num(oldest, "age_s"));
	}
	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "paused")))
		(void)printf("%-16s every folder (seedreamctl resume)\n", "paused");
	print_reason(o, "api_pause_reason", "API paused");
	print_reason(o, "limit_reason", "limit");
	print_reason(o, "disk_reason", "disk");
	print_reason(o, "storage_reason", "storage");
	(void)printf("\n");
	table_add(&t, head);
	cJSON_ArrayForEach(f, folders)
	{
		char n[7][32], why[1024] = "";
		const cJSON *r, *reasons = cJSON_GetObjectItemCaseSensitive(f, "pause_reasons");
		const char *row[8];
		static const char *const keys[] = {"settling",	"queued", "waiting",
						   "in_flight", "done",	  "failed"};

		for (size_t i = 0; i < 6; i++)
			(void)snprintf(n[i], sizeof(n[i]), "%.0f", num(f, keys[i]));
		cJSON_ArrayForEach(r, reasons)
		{
			if (!cJSON_IsString(r))
				continue;
			if (why[0])
				(void)strncat(why, "; ", sizeof(why) - strlen(why) - 1);
			(void)strncat(why, r->valuestring, sizeof(why) - strlen(why) - 1);
		}
		row[0] = str(f, "path");
		for (size_t i = 0; i < 6; i++)
			row[i + 1] = n[i];
		row[7] = why[0] ? why : "no";
		table_add(&t, row);
	}
	table_print(&t);
}

static void print_items(const cJSON *o, const char *const *head, const char *const *keys,
			size_t cols, const char *what)
{
	const cJSON *items = cJSON_GetObjectItemCaseSensitive(o, "items"), *it;
	struct table t = {.cols = cols};

	if (cJSON_GetArraySize(items) == 0) {
		(void)printf("no %s\n", what);
		return;
	}
	table_add(&t, head);
	cJSON_ArrayForEach(it, items)
	{
		char cells[8][64];
		const char *row[8];

		for (size_t c = 0; c < cols; c++) {
			const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, keys[c]);
			if (cJSON_IsNumber(v)) {
				(void)snprintf(cells[c], sizeof(cells[c]), "%.0f", v->valuedouble);
				row[c] = cells[c];
			} else {
				row[c] = cJSON_IsString(v) ? v->valuestring : "";
			}
		}
		table_add(&t, row);
	}
	table_print(&t);
	if (cJSON_GetObjectItemCaseSensitive(o, "retried"))
		(void)printf("%.0f requeued, %.0f could not be retried\n", num(o, "retried"),
			     num(o, "refused"));
	if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "truncated")))
		return;
	if (cJSON_GetObjectItemCaseSensitive(o, "total"))
		(void)printf("(the first %d of %.0f shown; --json for scripts)\n",
			     cJSON_GetArraySize(items), num(o, "total"));
	else
		(void)printf("(the first %d shown)\n", cJSON_GetArraySize(items));
}

static void print_reply(enum control_cmd cmd, const cJSON *o)
{
	static const char *const qh[] = {"FOLDER", "FILE", "STATE", "AGE S", "ATTEMPTS"};
	static const char *const qk[] = {"folder", "file", "state", "age_s", "attempts"};
	static const char *const fh[] = {"FOLDER", "FILE", "FAILED AT", "CODE", "MESSAGE"};
	static const char *const fk[] = {"folder", "file", "failed_at", "code", "message"};
	static const char *const hh[] = {"FINISHED AT", "RESULT", "FOLDER", "FILE", "IMAGES"};
	static const char *const hk[] = {"finished_at", "result", "folder", "file", "images"};
	static const char *const rh[] = {"FOLDER", "FILE", "RESULT", "MESSAGE"};
	static const char *const rk[] = {"folder", "file", "result", "message"};

	switch (cmd) {
	case CONTROL_CMD_STATUS:
	case CONTROL_CMD_PAUSE:
	case CONTROL_CMD_RESUME:
		print_status(o);
		break;
	case CONTROL_CMD_QUEUE:
		print_items(o, qh, qk, 5, "files queued or in flight");
		break;
	case CONTROL_CMD_FAILED:
		print_items(o, fh, fk, 5, "failed files");
		break;
	case CONTROL_CMD_HISTORY:
		print_items(o, hh, hk, 5, "results yet");
		break;
	case CONTROL_CMD_RETRY:
		print_items(o, rh, rk, 4, "failed files to retry");
		break;
	case CONTROL_CMD_RESCAN:
		(void)printf("rescanning\n");
		break;
	case CONTROL_CMD_COUNT:
		break;
	}
}

/* ---- the request ---------------------------------------------------------- */

static int bad_usage(const char *msg)
{
	(void)fprintf(stderr, "seedreamctl: %s\n", msg);
	usage(stderr);
	return EXIT_USAGE;
}

static bool add_path(cJSON *o, const char *key, const char *path)
{
	char *abs = absolute(path);
	bool ok = abs && cJSON_AddStringToObject(o, key, abs);

	free(abs);
	return ok;
}

/* Builds the request from the command's arguments (argv[0] is the command). */
static int build_request(int argc, char **argv, enum control_cmd cmd, cJSON *req)
{
	bool all_failed = false;
	const char *folder = NULL;
	cJSON *files;
	int i = 1;

	if ((cmd == CONTROL_CMD_HISTORY || cmd == CONTROL_CMD_FAILED) && i < argc &&
	    strcmp(argv[i], "-n") == 0) {
		char *end;
		long n;
		if (i + 1 >= argc)
			return bad_usage("-n needs a number");
		n = strtol(argv[i + 1], &end, 10);
		if (*end || n < 1 || n > CONTROL_LIST_MAX)
			return bad_usage("-n: a number from 1 to 1000");
		if (!cJSON_AddNumberToObject(req, "n", (double)n))
			return EXIT_CONNECT;
		i += 2;
	}
	if (cmd == CONTROL_CMD_RETRY) {
		files = cJSON_AddArrayToObject(req, "files");
		for (; i < argc; i++) {
			if (strcmp(argv[i], "--all-failed") == 0) {
				all_failed = true;
			} else if (strcmp(argv[i], "--folder") == 0 && i + 1 < argc) {
				folder = argv[++i];
			} else if (argv[i][0] == '-' && argv[i][1] == '-') {
				return bad_usage(
				    "retry takes FILE... or --all-failed [--folder F]");
			} else {
				char *abs = absolute(argv[i]);
				if (!abs || !cJSON_AddItemToArray(files, cJSON_CreateString(abs))) {
					free(abs);
					return EXIT_CONNECT;
				}
				free(abs);
			}
		}
		if (all_failed == (cJSON_GetArraySize(files) > 0))
			return bad_usage("retry takes FILE... or --all-failed [--folder F]");
		if (folder && !all_failed)
			return bad_usage("--folder goes with --all-failed");
		if (all_failed && (!cJSON_AddTrueToObject(req, "all_failed") ||
				   (folder && !add_path(req, "folder", folder))))
			return EXIT_CONNECT;
		return 0;
	}
	if (cmd == CONTROL_CMD_STATUS && i < argc)
		return bad_usage("status takes no arguments");
	if (i < argc) {
		if (i + 1 < argc)
			return bad_usage("one FOLDER at most");
		if (!add_path(req, "folder", argv[i]))
			return EXIT_CONNECT;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
	    {"socket", required_argument, NULL, 's'},  {"json", no_argument, NULL, 'j'},
	    {"timeout", required_argument, NULL, 't'}, {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},       {NULL, 0, NULL, 0},
	};
	const char *socket_path = CTL_DEFAULT_SOCKET, *why = NULL;
	bool json = false;
	long timeout_ms = 30000;
	cJSON *req = NULL, *reply = NULL;
	char *line = NULL, *text = NULL;
	int opt, fd = -1, which, rc;

	/* "+": options after the command are the command's (history -n). */
	while ((opt = getopt_long(argc, argv, "+s:t:h", options, NULL)) != -1) {
		switch (opt) {
		case 's':
			socket_path = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 't': {
			char *end;
			double s = strtod(optarg, &end);
			if (*end || !(s > 0 && s <= 3600))
				return bad_usage("-t: seconds, more than 0 and at most 3600");
			timeout_ms = (long)(s * 1000);
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			(void)printf("seedreamctl %s\n", SEEDREAMD_VERSION);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc)
		return bad_usage("no command");
	which = control_cmd_from_name(argv[optind]);
	if (which < 0)
		return bad_usage("unknown command");
	req = cJSON_CreateObject();
	if (!req || !cJSON_AddNumberToObject(req, "v", CONTROL_PROTO_VERSION) ||
	    !cJSON_AddStringToObject(req, "cmd", argv[optind])) {
		rc = EXIT_CONNECT;
		goto out;
	}
	rc = build_request(argc - optind, argv + optind, (enum control_cmd)which, req);
	if (rc)
		goto out;
	text = cJSON_PrintUnformatted(req);
	if (!text || strlen(text) + 1 >= CONTROL_LINE_MAX) {
		rc = text ? bad_usage("the request is too long (fewer files at once)")
			  : EXIT_CONNECT;
		goto out;
	}
	{
		size_t len = strlen(text);
		line = malloc(len + 2);
		if (!line) {
			rc = EXIT_CONNECT;
			goto out;
		}
		memcpy(line, text, len);
		line[len] = '\n';
		line[len + 1] = '\0';
	}
	fd = ctl_connect(socket_path);
	if (fd < 0) {
		(void)fprintf(stderr, "seedreamctl: cannot connect to %s: %s\n", socket_path,
			      strerror(errno));
		rc = EXIT_CONNECT;
		goto out;
	}
	free(text);
	text = ctl_exchange(fd, line, timeout_ms, &why);
	if (!text) {
		(void)fprintf(stderr, "seedreamctl: %s: %s\n", socket_path, why);
		rc = EXIT_CONNECT;
		goto out;
	}
	reply = cJSON_Parse(text);
	if (!cJSON_IsObject(reply) ||
	    !cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(reply, "ok"))) {
		(void)fprintf(stderr, "seedreamctl: %s: not a reply of seedreamd\n", socket_path);
		rc = EXIT_CONNECT;
		goto out;
	}
	rc = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "ok")) ? 0 : EXIT_REFUSED;
	if (json) {
		(void)fputs(text, stdout);
	} else {
		const cJSON *err = cJSON_GetObjectItemCaseSensitive(reply, "error");
		if (cJSON_GetObjectItemCaseSensitive(reply, "items") || !rc)
			print_reply((enum control_cmd)which, reply);
		if (rc) {
			char *code = visible(str(err, "code")), *msg = visible(str(err, "message"));
			(void)fprintf(stderr, "seedreamctl: %s: %s\n", code, msg);
			free(code);
			free(msg);
		}
	}
out:
	if (fd >= 0)
		close(fd);
	cJSON_Delete(req);
	cJSON_Delete(reply);
	free(text);
	free(line);
	return rc;
}
