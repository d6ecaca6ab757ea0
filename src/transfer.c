#include "transfer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/socket.h>

#include "b64.h"
#include "url.h"

/* One scratch buffer for raw file bytes: a single thread reads one chunk at
 * a time, so no job needs a buffer of its own. 3 * 16 KiB encodes to 64 KiB,
 * curl's default upload buffer. */
static uint8_t transfer_scratch[3 * 16 * 1024];

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

/* Reads the next want bytes of the file into the scratch buffer and hashes
 * them; false when the file came up short (it shrank under us). */
static void transfer_gen_digest_done(struct transfer_gen *g)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;

	(void)EVP_DigestFinal_ex(g->sha, md, &md_len);
	b64_hex(md, md_len, g->sha256_hex);
}

static bool transfer_gen_chunk(struct transfer_gen *g, size_t want)
{
	ssize_t got = pread(g->fd, transfer_scratch, want, (off_t)g->file_off);

	if (got <= 0 || (size_t)got != want) {
		g->file_changed = true;
		return false;
	}
	(void)EVP_DigestUpdate(g->sha, transfer_scratch, want);
	g->file_off += want;
	if (g->file_off == g->file_size)
		transfer_gen_digest_done(g);
	return true;
}

size_t transfer_gen_fill(struct transfer_gen *g, char *buf, size_t room)
{
	size_t out = 0;

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
		size_t want = room / 4 * 3, left = (size_t)(g->file_size - g->file_off);
		char *dest = buf;

		if (want > sizeof(transfer_scratch))
			want = sizeof(transfer_scratch);
		if (room < 4) {
			/* curl may offer fewer bytes than one group: encode one group
			 * aside and hand it out across calls. */
			want = 3;
			dest = g->stash;
		}
		if (want > left)
			want = left;
		if (!transfer_gen_chunk(g, want))
			return CURL_READFUNC_ABORT;
		out = b64_encode(transfer_scratch, want, dest);
		if (dest == g->stash) {
			g->stash_len = out;
			g->stash_off = 0;
			return transfer_gen_fill(g, buf, room);
		}
		return out;
	}
	if (!g->sha256_hex[0])
		transfer_gen_digest_done(g); /* an empty file: no chunk finished it */
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

/* curl rewinds the body for a redirect or an auth retry. */
static int transfer_gen_seek(void *userdata, curl_off_t offset, int origin)
{
	struct transfer_gen *g = userdata;

	if (offset != 0 || origin != SEEK_SET)
		return CURL_SEEKFUNC_CANTSEEK;
	g->sent_prefix = g->sent_suffix = 0;
	g->file_off = 0;
	g->stash_len = g->stash_off = 0;
	g->sha256_hex[0] = '\0';
	(void)EVP_DigestInit_ex(g->sha, EVP_sha256(), NULL);
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
	size_t off = 0;

	if (im->written + n > TRANSFER_IMAGE_MAX) {
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
	while (off < n && !im->write_errno) {
		ssize_t w = write(im->fd, data + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			im->write_errno = errno;
		else
			off += (size_t)w;
	}
	im->written += off;
	if (off < n) {
		/* The disk failed: the rest waits in memory (bounded by the
		 * cap above) for the caller to write it later. */
		if (im->spill_len + n - off > im->spill_cap) {
			size_t cap = im->spill_cap ? im->spill_cap : 64 * 1024;
			uint8_t *p;
			while (cap < im->spill_len + n - off)
				cap *= 2;
			p = realloc(im->spill, cap);
			if (!p)
				return -ENOMEM;
			im->spill = p;
			im->spill_cap = cap;
		}
		memcpy(im->spill + im->spill_len, data + off, n - off);
		im->spill_len += n - off;
	}
	return 0;
}

int transfer_image_text(struct transfer_gen *g, char **ret_text)
{
	struct transfer_image *im = &g->img;
	size_t len = (size_t)im->written + im->spill_len, done = 0;
	uint8_t *raw = malloc(len ? len : 1);
	char *text = malloc(B64_ENCODED_LEN(len) + 1);
	int r = 0;

	if (!raw || !text) {
		r = -ENOMEM;
		goto out;
	}
	while (done < im->written) {
		ssize_t n = pread(im->fd, raw + done, (size_t)im->written - done, (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			goto out;
		}
		done += (size_t)n;
	}
	if (im->spill_len)
		memcpy(raw + done, im->spill, im->spill_len);
	text[b64_encode(raw, len, text)] = '\0';
	*ret_text = text;
	text = NULL;
out:
	free(text);
	free(raw);
	return r;
}

/* Decodes characters of the image string (never a quote or a backslash). */
static int transfer_image_put(struct transfer_gen *g, const char *text, size_t n)
{
	struct transfer_image *im = &g->img;
	/* 32 Ki characters decode to at most 24 KiB: they fit the scratch buffer. */
	const size_t step = 32 * 1024;

	while (n > 0 && !im->malformed) {
		size_t take = n < step ? n : step, out = 0;
		if (b64_stream_decode(&im->dec, text, take, transfer_scratch, &out) < 0)
			im->malformed = true;
		else if (transfer_image_write(g, transfer_scratch, out) < 0)
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
	if (b64_stream_finish(&im->dec, transfer_scratch, &out) < 0) {
		im->malformed = true;
		return 0;
	}
	return transfer_image_write(g, transfer_scratch, out);
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
		if (im->b64_next && im->fd >= 0 && !im->found) {
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

size_t transfer_gen_take(struct transfer_gen *g, const char *data, size_t n)
{
	struct transfer_image *im = &g->img;
	size_t i = 0, kept = 0; /* data[kept..i) is still to go into the body */

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

static void copy_header_value(const char *line, size_t len, char *out, size_t outlen)
{
	const char *v = memchr(line, ':', len);
	size_t n;

	if (!v)
		return;
	v++;
	while (v < line + len && (*v == ' ' || *v == '\t'))
		v++;
	n = (size_t)(line + len - v);
	while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
		n--;
	if (n >= outlen)
		n = outlen - 1;
	/* Header values end up in logs and sidecars: keep them printable. */
	for (size_t i = 0; i < n; i++)
		out[i] = (v[i] >= 0x20 && v[i] < 0x7f) ? v[i] : '_';
	out[n] = '\0';
}

static size_t transfer_gen_header(char *line, size_t size, size_t nitems, void *userdata)
{
	struct transfer_gen *g = userdata;
	size_t len = size * nitems;

	if (len > 13 && strncasecmp(line, "x-request-id:", 13) == 0)
		copy_header_value(line, len, g->request_id, sizeof(g->request_id));
	else if (len > 12 && strncasecmp(line, "retry-after:", 12) == 0)
		copy_header_value(line, len, g->retry_after, sizeof(g->retry_after));
	return len;
}

int transfer_gen_setup(struct transfer_gen *g, const char *url, const char *auth_header,
		       char *prefix, char *suffix, int fd, uint64_t file_size,
		       const struct transfer_net *net)
{
	struct curl_slist *h;

	g->prefix = prefix;
	g->suffix = suffix;
	g->fd = fd;
	g->prefix_len = strlen(prefix);
	g->suffix_len = strlen(suffix);
	g->file_size = file_size;
	g->sha = EVP_MD_CTX_new();
	g->easy = curl_easy_init();
	if (!g->sha || !g->easy)
		return -ENOMEM;
	if (EVP_DigestInit_ex(g->sha, EVP_sha256(), NULL) != 1)
		return -EIO;
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
	(void)curl_easy_setopt(g->easy, CURLOPT_POSTFIELDSIZE_LARGE,
			       (curl_off_t)(g->prefix_len + B64_ENCODED_LEN(file_size) + g->suffix_len));
	(void)curl_easy_setopt(g->easy, CURLOPT_READFUNCTION, transfer_gen_read);
	(void)curl_easy_setopt(g->easy, CURLOPT_READDATA, g);
	(void)curl_easy_setopt(g->easy, CURLOPT_SEEKFUNCTION, transfer_gen_seek);
	(void)curl_easy_setopt(g->easy, CURLOPT_SEEKDATA, g);
	(void)curl_easy_setopt(g->easy, CURLOPT_WRITEFUNCTION, transfer_gen_write);
	(void)curl_easy_setopt(g->easy, CURLOPT_WRITEDATA, g);
	(void)curl_easy_setopt(g->easy, CURLOPT_HEADERFUNCTION, transfer_gen_header);
	(void)curl_easy_setopt(g->easy, CURLOPT_HEADERDATA, g);
	return 0;
}

void transfer_gen_clear(struct transfer_gen *g)
{
	if (g->easy)
		curl_easy_cleanup(g->easy);
	curl_slist_free_all(g->headers);
	if (g->sha)
		EVP_MD_CTX_free(g->sha);
	free(g->prefix);
	free(g->suffix);
	free(g->body);
	if (g->fd >= 0)
		close(g->fd);
	if (g->img.fd >= 0)
		close(g->img.fd);
	free(g->img.spill);
	memset(g, 0, sizeof(*g));
	g->fd = -1;
	g->img.fd = -1;
}

static size_t transfer_dl_write(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct transfer_dl *d = userdata;
	size_t n = size * nmemb, off = 0;

	if (d->written + n > TRANSFER_IMAGE_MAX) {
		d->too_large = true;
		return 0;
	}
	if (d->magic_len < sizeof(d->magic)) {
		size_t m = sizeof(d->magic) - d->magic_len;
		if (m > n)
			m = n;
		memcpy(d->magic + d->magic_len, data, m);
		d->magic_len += m;
	}
	while (off < n) {
		ssize_t w = write(d->fd, data + off, n - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			d->write_errno = errno;
			return 0;
		}
		off += (size_t)w;
	}
	d->written += n;
	return n;
}

int transfer_dl_setup(struct transfer_dl *d, const char *url, const struct transfer_net *net)
{
	d->easy = curl_easy_init();
	if (!d->easy)
		return -ENOMEM;
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

void transfer_dl_clear(struct transfer_dl *d)
{
	if (d->easy)
		curl_easy_cleanup(d->easy);
	d->easy = NULL;
}

int transfer_sha256_fd(int fd, char hex[65])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	off_t off = 0;
	int r = 0;

	if (!ctx)
		return -ENOMEM;
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		r = -EIO;
		goto out;
	}
	for (;;) {
		ssize_t n = pread(fd, transfer_scratch, sizeof(transfer_scratch), off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out;
		}
		if (n == 0)
			break;
		(void)EVP_DigestUpdate(ctx, transfer_scratch, (size_t)n);
		off += n;
	}
	(void)EVP_DigestFinal_ex(ctx, md, &md_len);
	b64_hex(md, md_len, hex);
out:
	EVP_MD_CTX_free(ctx);
	return r;
}
