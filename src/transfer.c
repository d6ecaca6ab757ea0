#include "transfer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/socket.h>

#include "b64.h"
#include "fdio.h"
#include "http.h"
#include "stream.h"
#include "url.h"
#include "work.h"

/* Decoded image bytes on their way into the writer: used on the loop thread
 * only (transfer_gen_take), one piece at a time. */
static uint8_t transfer_decoded[24 * 1024];

/* Clears what this transfer paused and tells curl, while it runs. */
static void transfer_resume(CURL *easy, bool running, int *paused, int bit)
{
	*paused &= ~bit;
	if (running)
		(void)curl_easy_pause(easy, *paused);
}

static bool guard_refuse(struct transfer_guard *gd, const char *why)
{
	gd->refused = true;
	(void)snprintf(gd->why, sizeof(gd->why), "refused: %s", why);
	return false;
}

/* One hop's URL, as curl parses it. */
static bool guard_url(struct transfer_guard *gd, const char *url)
{
	struct url_info info;

	if (!url || url_inspect(url, &info) < 0)
		return guard_refuse(gd, "not an http(s) URL");
	gd->https = info.https;
	if (!info.https && !gd->insecure_ok && info.host != URL_LOOPBACK)
		return guard_refuse(gd, "plain http beyond this machine");
	if (!gd->private_ok && info.host != URL_PUBLIC)
		return guard_refuse(gd, "a host on this machine or its local network");
	return true;
}

/* The address the hop connects to: a name may resolve anywhere. */
static bool guard_addr(struct transfer_guard *gd, enum url_class addr)
{
	if (!gd->https && !gd->insecure_ok && addr != URL_LOOPBACK)
		return guard_refuse(gd, "plain http to an address beyond this machine");
	if (!gd->private_ok && addr != URL_PUBLIC)
		return guard_refuse(gd, "an address on this machine or its local network");
	return true;
}

static const char *guard_hop_url(struct transfer_guard *gd)
{
	char *url = NULL;

	/* The URL of the hop under way: after a redirect, the new one. */
	if (curl_easy_getinfo(gd->easy, CURLINFO_EFFECTIVE_URL, &url) != CURLE_OK)
		return NULL;
	return url;
}

/* Before a new connection: nothing is sent to a refused address, not even a SYN. */
static curl_socket_t transfer_open_socket(void *clientp, curlsocktype purpose,
					  struct curl_sockaddr *a)
{
	struct transfer_guard *gd = clientp;
	struct sockaddr_storage ss;
	size_t len = a->addrlen < sizeof(ss) ? a->addrlen : sizeof(ss);

	if (purpose != CURLSOCKTYPE_IPCXN)
		return CURL_SOCKET_BAD;
	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, &a->addr, len);
	if (!guard_url(gd, guard_hop_url(gd)) ||
	    !guard_addr(gd, url_sockaddr_class((const struct sockaddr *)&ss)))
		return CURL_SOCKET_BAD;
	return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* Before every request, on a new or a reused connection. */
static int transfer_prereq(void *clientp, char *primary_ip, char *local_ip, int primary_port,
			   int local_port)
{
	struct transfer_guard *gd = clientp;

	(void)local_ip;
	(void)primary_port;
	(void)local_port;
	if (!guard_url(gd, guard_hop_url(gd)) || !guard_addr(gd, url_ip_class(primary_ip)))
		return CURL_PREREQFUNC_ABORT;
	return CURL_PREREQFUNC_OK;
}

bool transfer_url_allowed(const char *url, const struct transfer_net *net)
{
	struct transfer_guard gd = {
	    .insecure_ok = net->allow_insecure_http,
	    .private_ok = net->allow_private,
	};

	return guard_url(&gd, url);
}

static void transfer_net_setup(CURL *easy, struct transfer_guard *gd, const char *url,
			       const struct transfer_net *net)
{
	const char *protocols = "https";
	struct url_info info;

	gd->easy = easy;
	gd->insecure_ok = net->allow_insecure_http;
	if (net->allow_insecure_http || (url_inspect(url, &info) == 0 && info.host == URL_LOOPBACK))
		protocols = "http,https";
	(void)curl_easy_setopt(easy, CURLOPT_URL, url);
	(void)curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	(void)curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, protocols);
	(void)curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, protocols);
	(void)curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, transfer_open_socket);
	(void)curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, gd);
	(void)curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION, transfer_prereq);
	(void)curl_easy_setopt(easy, CURLOPT_PREREQDATA, gd);
	(void)curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	(void)curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
	if (net->ca_file)
		(void)curl_easy_setopt(easy, CURLOPT_CAINFO, net->ca_file);
	(void)curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)net->timeout_ms);
	(void)curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, 30000L);
	(void)curl_easy_setopt(easy, CURLOPT_USERAGENT, net->user_agent);
	(void)curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");
}

static void transfer_gen_read_ready(void *userdata)
{
	struct transfer_gen *g = userdata;

	transfer_resume(g->easy, g->running, &g->paused, CURLPAUSE_SEND);
}

/* One file of the body as it is sent: the first, or a part. */
struct transfer_src {
	struct stream_reader *reader;
	uint64_t *off, size;
	char *sha256_hex;
	size_t which; /* for changed_part */
};

/* The next bytes of a file, base64-encoded into dest (room >= 4), or into
 * the stash when room < 4. 0 with nothing ready (paused), or the abort. */
static size_t transfer_gen_file(struct transfer_gen *g, const struct transfer_src *f, char *buf,
				size_t room)
{
	size_t want = room / 4 * 3, out;
	char *dest = buf;
	const uint8_t *src = NULL;
	ssize_t avail = stream_reader_peek(f->reader, &src);

	if (avail == -EAGAIN) {
		/* Nothing read yet: the worker's completion resumes curl. */
		g->paused |= CURLPAUSE_SEND;
		return CURL_READFUNC_PAUSE;
	}
	if (avail <= 0) {
		/* It shrank under us, or could not be read: what would be sent
		 * is not the file. */
		g->file_changed = true;
		g->changed_part = f->which;
		g->read_errno = avail < 0 && avail != -ENODATA ? (int)-avail : 0;
		return CURL_READFUNC_ABORT;
	}
	if (room < 4) {
		/* curl may offer fewer bytes than one group: encode one group
		 * aside and hand it out across calls. */
		want = 3;
		dest = g->stash;
	}
	if (want > (size_t)avail)
		want = (size_t)avail; /* a buffer ends on a group, but at the end of the file */
	out = b64_encode(src, want, dest);
	stream_reader_consume(f->reader, want);
	*f->off += want;
	if (*f->off == f->size)
		memcpy(f->sha256_hex, stream_reader_sha256(f->reader), 65);
	if (dest == g->stash) {
		g->stash_len = out;
		g->stash_off = 0;
		return transfer_gen_fill(g, buf, room);
	}
	return out;
}

size_t transfer_gen_fill(struct transfer_gen *g, char *buf, size_t room)
{
	if (g->sent_prefix < g->prefix_len) {
		size_t n = g->prefix_len - g->sent_prefix;
		if (n > room)
			n = room;
		memcpy(buf, g->prefix + g->sent_prefix, n);
		g->sent_prefix += n;
		return n;
	}
	if (g->stash_off < g->stash_len) {
		/* What is left of a 4-character group that did not fit last time. */
		size_t n = g->stash_len - g->stash_off;
		if (n > room)
			n = room;
		memcpy(buf, g->stash + g->stash_off, n);
		g->stash_off += n;
		return n;
	}
	if (g->file_off < g->file_size) {
		struct transfer_src f = {g->reader, &g->file_off, g->file_size, g->sha256_hex, 0};
		return transfer_gen_file(g, &f, buf, room);
	}
	if (!g->sha256_hex[0]) /* an empty file: no chunk finished it */
		memcpy(g->sha256_hex, stream_reader_sha256(g->reader), sizeof(g->sha256_hex));
	for (; g->part < g->n_parts; g->part++) {
		struct transfer_part *p = &g->parts[g->part];
		struct transfer_src f = {p->reader, &p->off, p->size, p->sha256_hex, g->part + 1};

		if (p->sent_sep < p->sep_len) {
			size_t n = p->sep_len - p->sent_sep;
			if (n > room)
				n = room;
			memcpy(buf, p->sep + p->sent_sep, n);
			p->sent_sep += n;
			return n;
		}
		if (!p->reader) {
			/* Read ahead only once the body reaches it: one file's
			 * buffers at a time, however many images there are. */
			int r = stream_reader_new(g->pool, p->fd, p->size, STREAM_READ_CHUNK,
						  transfer_gen_read_ready, g, &p->reader);
			if (r < 0) {
				g->file_changed = true;
				g->changed_part = g->part + 1;
				g->read_errno = -r;
				return CURL_READFUNC_ABORT;
			}
			f.reader = p->reader;
		}
		if (p->off < p->size)
			return transfer_gen_file(g, &f, buf, room);
		if (!p->sha256_hex[0])
			memcpy(p->sha256_hex, stream_reader_sha256(p->reader),
			       sizeof(p->sha256_hex));
	}
	if (g->sent_suffix < g->suffix_len) {
		size_t n = g->suffix_len - g->sent_suffix;
		if (n > room)
			n = room;
		memcpy(buf, g->suffix + g->sent_suffix, n);
		g->sent_suffix += n;
		return n;
	}
	return 0;
}

static size_t transfer_gen_read(char *buf, size_t size, size_t nitems, void *userdata)
{
	return transfer_gen_fill(userdata, buf, size * nitems);
}

int transfer_gen_seek(void *userdata, curl_off_t offset, int origin)
{
	struct transfer_gen *g = userdata;

	if (offset != 0 || origin != SEEK_SET)
		return CURL_SEEKFUNC_CANTSEEK;
	g->sent_prefix = g->sent_suffix = 0;
	g->file_off = 0;
	g->stash_len = g->stash_off = 0;
	g->sha256_hex[0] = '\0';
	g->file_changed = false;
	g->changed_part = 0;
	g->read_errno = 0;
	/* A read still under way is discarded by its generation. */
	stream_reader_rewind(g->reader);
	g->part = 0;
	for (size_t i = 0; i < g->n_parts; i++) {
		struct transfer_part *p = &g->parts[i];
		p->sent_sep = 0;
		p->off = 0;
		p->sha256_hex[0] = '\0';
		if (p->reader)
			stream_reader_rewind(p->reader);
	}
	return CURL_SEEKFUNC_OK;
}

static int transfer_body_keep(struct transfer_gen *g, const char *data, size_t n)
{
	if (g->body_len + n > TRANSFER_JSON_MAX) {
		g->body_too_large = true;
		return -EFBIG;
	}
	if (g->body_len + n + 1 > g->body_cap) {
		size_t cap = g->body_cap ? g->body_cap : 4096;
		char *p;
		while (cap < g->body_len + n + 1)
			cap *= 2;
		p = realloc(g->body, cap);
		if (!p)
			return -ENOMEM;
		g->body = p;
		g->body_cap = cap;
	}
	memcpy(g->body + g->body_len, data, n);
	g->body_len += n;
	g->body[g->body_len] = '\0';
	return 0;
}

enum { SCAN_NONE, SCAN_KEY, SCAN_VALUE, SCAN_IMAGE };

static int transfer_image_write(struct transfer_gen *g, const uint8_t *data, size_t n)
{
	struct transfer_image *im = &g->img;

	if (im->taken + n > TRANSFER_IMAGE_MAX) {
		im->too_large = g->body_too_large = true;
		return -EFBIG;
	}
	if (im->magic_len < sizeof(im->magic)) {
		size_t m = sizeof(im->magic) - im->magic_len;
		if (m > n)
			m = n;
		memcpy(im->magic + im->magic_len, data, m);
		im->magic_len += m;
	}
	im->taken += n;
	/* A worker writes it; after a write error the rest waits in the
	 * writer's memory (bounded by the cap above) for the caller. */
	return n ? stream_writer_put(im->writer, data, n) : 0;
}

int transfer_image_text(struct transfer_gen *g, char **ret_text)
{
	struct transfer_image *im = &g->img;
	uint8_t *rest = NULL, *raw = NULL;
	size_t rest_len = 0, len, done = 0;
	char *text = NULL;
	ssize_t got;
	int r;

	r = stream_writer_rest(im->writer, &rest, &rest_len);
	if (r < 0)
		goto out;
	len = (size_t)im->written + rest_len;
	raw = malloc(len ? len : 1);
	text = malloc(B64_ENCODED_LEN(len) + 1);
	if (!raw || !text) {
		r = -ENOMEM;
		goto out;
	}
	got = fdio_pread_full(im->fd, raw, (size_t)im->written, 0);
	if (got != (ssize_t)im->written) {
		r = got < 0 ? (int)got : -EIO;
		goto out;
	}
	done = (size_t)got;
	if (rest_len)
		memcpy(raw + done, rest, rest_len);
	text[b64_encode(raw, len, text)] = '\0';
	*ret_text = text;
	text = NULL;
out:
	free(text);
	free(raw);
	free(rest);
	return r;
}

/* Decodes characters of the image string (never a quote or a backslash). */
static int transfer_image_put(struct transfer_gen *g, const char *text, size_t n)
{
	struct transfer_image *im = &g->img;
	/* 32 Ki characters decode to at most 24 KiB. */
	const size_t step = 32 * 1024;

	while (n > 0 && !im->malformed) {
		size_t take = n < step ? n : step, out = 0;
		if (b64_stream_decode(&im->dec, text, take, transfer_decoded, &out) < 0)
			im->malformed = true;
		else if (transfer_image_write(g, transfer_decoded, out) < 0)
			return -EFBIG;
		text += take;
		n -= take;
	}
	return 0;
}

static int transfer_image_end(struct transfer_gen *g)
{
	struct transfer_image *im = &g->img;
	size_t out = 0;

	if (im->malformed)
		return 0;
	if (b64_stream_finish(&im->dec, transfer_decoded, &out) < 0) {
		im->malformed = true;
		return 0;
	}
	return transfer_image_write(g, transfer_decoded, out);
}

/* A key has ended: is it one of the two on the way to the image? */
static void transfer_scan_key(struct transfer_image *im)
{
	im->key[im->key_len] = '\0';
	if (im->key_odd)
		return;
	if (im->depth == 1 && !im->data_seen && strcmp(im->key, "data") == 0)
		im->data_seen = im->data_next = true; /* the first "data" only, as cJSON */
	else if (im->depth == 3 && im->in_first && !im->b64_seen &&
		 strcmp(im->key, "b64_json") == 0)
		im->b64_seen = im->b64_next = true;
}

/* One character outside the image string. Returns true when it opens the
 * image string. */
static bool transfer_scan_char(struct transfer_image *im, char c)
{
	unsigned d = im->depth;

	if (im->string != SCAN_NONE) {
		if (im->escape) {
			im->escape = false;
			im->key_odd = true;
		} else if (c == '\\') {
			im->escape = true;
			im->key_odd = true;
		} else if (c == '"') {
			if (im->string == SCAN_KEY)
				transfer_scan_key(im);
			im->string = SCAN_NONE;
		} else if (im->string == SCAN_KEY) {
			if (im->key_len + 1 < sizeof(im->key))
				im->key[im->key_len++] = c;
			else
				im->key_odd = true;
		}
		return false;
	}
	switch (c) {
	case '"':
		if (d >= 1 && d <= 3 && im->kind[d] == '{' && im->expect_key[d]) {
			im->string = SCAN_KEY;
			im->key_len = 0;
			im->key_odd = false;
			return false;
		}
		if (im->b64_next && im->writer && !im->found) {
			im->b64_next = false;
			im->found = true;
			im->string = SCAN_IMAGE;
			return true;
		}
		im->string = SCAN_VALUE;
		break;
	case '{':
	case '[':
		im->depth = ++d;
		if (d <= 3) {
			im->kind[d] = c;
			im->expect_key[d] = c == '{';
		}
		if (d == 2) {
			im->in_data = im->data_next && c == '[';
			im->elem = 0;
		}
		if (d == 3)
			im->in_first = im->in_data && im->elem == 0 && c == '{';
		break;
	case '}':
	case ']':
		if (d == 2)
			im->in_data = false;
		if (d == 3)
			im->in_first = false;
		if (d > 0)
			im->depth = d - 1;
		break;
	case ',':
		if (d >= 1 && d <= 3 && im->kind[d] == '{')
			im->expect_key[d] = true;
		if (d == 2 && im->in_data)
			im->elem++;
		break;
	case ':':
		if (d >= 1 && d <= 3)
			im->expect_key[d] = false;
		return false; /* the value comes next */
	case ' ':
	case '\t':
	case '\r':
	case '\n':
		return false;
	default:
		break; /* numbers, true, false, null */
	}
	/* Any other value ends the expectation of the array or the image. */
	im->data_next = false;
	im->b64_next = false;
	return false;
}

static void transfer_gen_written(void *userdata)
{
	struct transfer_gen *g = userdata;

	transfer_resume(g->easy, g->running, &g->paused, CURLPAUSE_RECV);
}

size_t transfer_gen_take(struct transfer_gen *g, const char *data, size_t n)
{
	struct transfer_image *im = &g->img;
	size_t i = 0, kept = 0; /* data[kept..i) is still to go into the body */

	if (im->writer && stream_writer_full(im->writer)) {
		/* The disk is behind: curl keeps these bytes until it drains. */
		g->paused |= CURLPAUSE_RECV;
		return CURL_WRITEFUNC_PAUSE;
	}

	while (i < n) {
		if (im->string == SCAN_IMAGE) {
			size_t j = i;
			if (im->escape) {
				/* Base64 has one character JSON may escape: '/'. */
				im->escape = false;
				if (data[i] != '/')
					im->malformed = true;
				else if (transfer_image_put(g, "/", 1) < 0)
					return 0;
				kept = ++i;
				continue;
			}
			while (j < n && data[j] != '"' && data[j] != '\\')
				j++;
			if (transfer_image_put(g, data + i, j - i) < 0)
				return 0;
			i = kept = j;
			if (j == n)
				break;
			if (data[j] == '\\') {
				im->escape = true;
				kept = ++i;
				continue;
			}
			/* The closing quote goes into the body. */
			im->string = SCAN_NONE;
			if (transfer_image_end(g) < 0)
				return 0;
			i++;
			continue;
		}
		if (transfer_scan_char(im, data[i++])) {
			if (transfer_body_keep(g, data + kept, i - kept) < 0)
				return 0;
			kept = i;
		}
	}
	if (im->string != SCAN_IMAGE && kept < n &&
	    transfer_body_keep(g, data + kept, n - kept) < 0)
		return 0;
	return n;
}

static size_t transfer_gen_write(char *data, size_t size, size_t nmemb, void *userdata)
{
	return transfer_gen_take(userdata, data, size * nmemb);
}

/* The value of the last response's header name (its last occurrence),
 * printable: header values end up in logs and sidecars. "" when absent. */
static void transfer_header_copy(CURL *easy, const char *name, char *out, size_t outlen)
{
	struct curl_header *h = NULL;
	const char *v;
	size_t n;

	out[0] = '\0';
	if (curl_easy_header(easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
		return;
	if (h->amount > 1 &&
	    curl_easy_header(easy, name, h->amount - 1, CURLH_HEADER, -1, &h) != CURLHE_OK)
		return;
	v = h->value;
	n = strlen(v);
	if (n >= outlen)
		n = outlen - 1;
	for (size_t i = 0; i < n; i++)
		out[i] = (v[i] >= 0x20 && v[i] < 0x7f) ? v[i] : '_';
	out[n] = '\0';
}

int transfer_gen_setup(struct transfer_gen *g, const char *url, const char *auth_header,
		       char *prefix, char *suffix, int fd, uint64_t file_size,
		       const struct transfer_net *net, struct work_pool *pool)
{
	struct curl_slist *h;
	uint64_t body_len;
	int r;

	g->prefix = prefix;
	g->suffix = suffix;
	g->fd = fd;
	g->prefix_len = strlen(prefix);
	g->suffix_len = strlen(suffix);
	g->file_size = file_size;
	g->pool = pool;
	g->easy = curl_easy_init();
	if (!g->easy)
		return -ENOMEM;
	/* The first chunk is read while curl connects. */
	r = stream_reader_new(pool, fd, file_size, STREAM_READ_CHUNK, transfer_gen_read_ready, g,
			      &g->reader);
	if (r >= 0 && g->img.fd >= 0)
		r = stream_writer_new(pool, g->img.fd, STREAM_WRITE_CHUNK, STREAM_WRITE_CAP,
				      transfer_gen_written, g, &g->img.writer);
	if (r < 0)
		return r;
	h = curl_slist_append(NULL, "Content-Type: application/json");
	if (h)
		g->headers = h;
	h = h ? curl_slist_append(h, auth_header) : NULL;
	/* A known length and no "Expect: 100-continue" round trip. */
	h = h ? curl_slist_append(h, "Expect:") : NULL;
	if (!h)
		return -ENOMEM;
	g->headers = h;
	/* The API is where the configuration says, wherever that is; only
	 * plain http is held to this machine. */
	g->guard.private_ok = true;
	transfer_net_setup(g->easy, &g->guard, url, net);
	(void)curl_easy_setopt(g->easy, CURLOPT_FOLLOWLOCATION, 0L);
	(void)curl_easy_setopt(g->easy, CURLOPT_POST, 1L);
	(void)curl_easy_setopt(g->easy, CURLOPT_HTTPHEADER, g->headers);
	body_len = g->prefix_len + B64_ENCODED_LEN(file_size) + g->suffix_len;
	for (size_t i = 0; i < g->n_parts; i++)
		body_len += g->parts[i].sep_len + B64_ENCODED_LEN(g->parts[i].size);
	(void)curl_easy_setopt(g->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
	(void)curl_easy_setopt(g->easy, CURLOPT_READFUNCTION, transfer_gen_read);
	(void)curl_easy_setopt(g->easy, CURLOPT_READDATA, g);
	(void)curl_easy_setopt(g->easy, CURLOPT_SEEKFUNCTION, transfer_gen_seek);
	(void)curl_easy_setopt(g->easy, CURLOPT_SEEKDATA, g);
	(void)curl_easy_setopt(g->easy, CURLOPT_WRITEFUNCTION, transfer_gen_write);
	(void)curl_easy_setopt(g->easy, CURLOPT_WRITEDATA, g);
	return 0;
}

static void transfer_gen_flushed(void *userdata)
{
	struct transfer_gen *g = userdata;
	struct transfer_image *im = &g->img;
	http_done_fn done = g->done;

	im->written = stream_writer_written(im->writer);
	im->write_errno = -stream_writer_error(im->writer);
	g->done = NULL;
	done(g->easy, g->result, g->done_data);
}

void transfer_gen_finish(struct transfer_gen *g, CURLcode result, http_done_fn done, void *userdata)
{
	g->running = false;
	g->paused = 0;
	g->result = result;
	g->done = done;
	g->done_data = userdata;
	transfer_header_copy(g->easy, "x-request-id", g->request_id, sizeof(g->request_id));
	transfer_header_copy(g->easy, "retry-after", g->retry_after, sizeof(g->retry_after));
	if (g->img.writer)
		stream_writer_finish(g->img.writer, transfer_gen_flushed, g);
	else
		done(g->easy, result, userdata);
}

static void transfer_gen_http_done(CURL *easy, CURLcode result, void *userdata)
{
	struct transfer_gen *g = userdata;

	(void)easy;
	transfer_gen_finish(g, result, g->done, g->done_data);
}

int transfer_gen_start(struct transfer_gen *g, struct http *http, http_done_fn done, void *userdata)
{
	int r;

	g->done = done;
	g->done_data = userdata;
	r = http_start(http, g->easy, transfer_gen_http_done, g);
	if (r >= 0)
		g->running = true;
	return r;
}

int transfer_gen_add_part(struct transfer_gen *g, char *sep, int fd, uint64_t size)
{
	struct transfer_part *parts = realloc(g->parts, (g->n_parts + 1) * sizeof(*parts));

	if (!parts) {
		free(sep);
		if (fd >= 0)
			(void)close(fd); /* not yet read: a descriptor nobody waits on */
		return -ENOMEM;
	}
	g->parts = parts;
	parts[g->n_parts++] =
	    (struct transfer_part){.sep = sep, .sep_len = strlen(sep), .fd = fd, .size = size};
	return 0;
}

void transfer_gen_clear(struct transfer_gen *g)
{
	/* Requests under way finish unseen, on descriptors of their own. */
	stream_reader_free(g->reader);
	for (size_t i = 0; i < g->n_parts; i++) {
		stream_reader_free(g->parts[i].reader);
		free(g->parts[i].sep);
		work_close(g->pool, g->parts[i].fd);
	}
	free(g->parts);
	stream_writer_free(g->img.writer);
	if (g->easy)
		curl_easy_cleanup(g->easy);
	curl_slist_free_all(g->headers);
	free(g->prefix);
	free(g->suffix);
	free(g->body);
	/* close() may flush to a network file system: a worker does it. */
	work_close(g->pool, g->fd);
	work_close(g->pool, g->img.fd);
	memset(g, 0, sizeof(*g));
	g->fd = -1;
	g->img.fd = -1;
}

static void transfer_dl_written(void *userdata)
{
	struct transfer_dl *d = userdata;

	transfer_resume(d->easy, d->running, &d->paused, CURLPAUSE_RECV);
}

size_t transfer_dl_take(struct transfer_dl *d, const char *data, size_t n)
{
	int r = stream_writer_error(d->writer);

	if (r < 0) {
		d->write_errno = -r;
		return 0;
	}
	if (d->written + n > TRANSFER_IMAGE_MAX) {
		d->too_large = true;
		return 0;
	}
	if (stream_writer_full(d->writer)) {
		/* The disk is behind: curl keeps these bytes until it drains. */
		d->paused |= CURLPAUSE_RECV;
		return CURL_WRITEFUNC_PAUSE;
	}
	if (d->magic_len < sizeof(d->magic)) {
		size_t m = sizeof(d->magic) - d->magic_len;
		if (m > n)
			m = n;
		memcpy(d->magic + d->magic_len, data, m);
		d->magic_len += m;
	}
	r = stream_writer_put(d->writer, data, n);
	if (r < 0) {
		d->write_errno = -r;
		return 0;
	}
	d->written += n;
	return n;
}

static size_t transfer_dl_write(char *data, size_t size, size_t nmemb, void *userdata)
{
	return transfer_dl_take(userdata, data, size * nmemb);
}

int transfer_dl_setup(struct transfer_dl *d, const char *url, const struct transfer_net *net,
		      struct work_pool *pool)
{
	int r;

	d->easy = curl_easy_init();
	if (!d->easy)
		return -ENOMEM;
	r = stream_writer_new(pool, d->fd, STREAM_WRITE_CHUNK, STREAM_WRITE_CAP,
			      transfer_dl_written, d, &d->writer);
	if (r < 0)
		return r;
	d->guard.private_ok = net->allow_private;
	transfer_net_setup(d->easy, &d->guard, url, net);
	(void)curl_easy_setopt(d->easy, CURLOPT_FOLLOWLOCATION, 1L);
	(void)curl_easy_setopt(d->easy, CURLOPT_MAXREDIRS, 3L);
	/* A download that stalls below 1 byte/s for 60 s is dead, whatever the
	 * timeout. Not for generations: the API sends nothing while it works,
	 * for minutes on large sizes, and cutting it short would pay twice. */
	(void)curl_easy_setopt(d->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
	(void)curl_easy_setopt(d->easy, CURLOPT_LOW_SPEED_TIME, 60L);
	(void)curl_easy_setopt(d->easy, CURLOPT_WRITEFUNCTION, transfer_dl_write);
	(void)curl_easy_setopt(d->easy, CURLOPT_WRITEDATA, d);
	(void)curl_easy_setopt(d->easy, CURLOPT_FAILONERROR, 1L);
	(void)curl_easy_setopt(d->easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)TRANSFER_IMAGE_MAX);
	return 0;
}

static void transfer_dl_flushed(void *userdata)
{
	struct transfer_dl *d = userdata;
	http_done_fn done = d->done;
	CURLcode result = d->result;
	int r = stream_writer_error(d->writer);

	if (r < 0) {
		d->write_errno = -r;
		if (result == CURLE_OK)
			result = CURLE_WRITE_ERROR; /* never a success with bytes missing */
	}
	d->done = NULL;
	done(d->easy, result, d->done_data);
}

void transfer_dl_finish(struct transfer_dl *d, CURLcode result, http_done_fn done, void *userdata)
{
	d->running = false;
	d->paused = 0;
	d->result = result;
	d->done = done;
	d->done_data = userdata;
	stream_writer_finish(d->writer, transfer_dl_flushed, d);
}

static void transfer_dl_http_done(CURL *easy, CURLcode result, void *userdata)
{
	struct transfer_dl *d = userdata;

	(void)easy;
	transfer_dl_finish(d, result, d->done, d->done_data);
}

int transfer_dl_start(struct transfer_dl *d, struct http *http, http_done_fn done, void *userdata)
{
	int r;

	d->done = done;
	d->done_data = userdata;
	r = http_start(http, d->easy, transfer_dl_http_done, d);
	if (r >= 0)
		d->running = true;
	return r;
}

void transfer_dl_clear(struct transfer_dl *d)
{
	stream_writer_free(d->writer);
	d->writer = NULL;
	if (d->easy)
		curl_easy_cleanup(d->easy);
	d->easy = NULL;
	d->running = false;
}

