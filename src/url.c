#include "url.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

static enum url_class v4_class(const uint8_t a[4])
{
	if (a[0] == 127)
		return URL_LOOPBACK;
	if (a[0] == 0 || a[0] == 10 || (a[0] == 172 && (a[1] & 0xf0) == 16) ||
	    (a[0] == 192 && a[1] == 168) || (a[0] == 169 && a[1] == 254))
		return URL_PRIVATE;
	return URL_PUBLIC;
}

static enum url_class v6_class(const uint8_t a[16])
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	static const uint8_t zero[15] = {0};

	if (!memcmp(a, mapped, sizeof(mapped)))
		return v4_class(a + 12);
	if (!memcmp(a, zero, sizeof(zero)))
		/* ::1 is this machine; :: reaches it too, like 0.0.0.0. */
		return a[15] == 1 ? URL_LOOPBACK : a[15] == 0 ? URL_PRIVATE : URL_PUBLIC;
	if ((a[0] & 0xfe) == 0xfc || (a[0] == 0xfe && (a[1] & 0xc0) == 0x80))
		return URL_PRIVATE;
	return URL_PUBLIC;
}

enum url_class url_ip_class(const char *ip)
{
	uint8_t a[16];
	char buf[INET6_ADDRSTRLEN + 1];
	size_t n = strcspn(ip, "%"); /* a zone names an interface, not an address */

	if (inet_pton(AF_INET, ip, a) == 1)
		return v4_class(a);
	if (n >= sizeof(buf))
		return URL_PUBLIC;
	memcpy(buf, ip, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET6, buf, a) == 1)
		return v6_class(a);
	return URL_PUBLIC;
}

enum url_class url_host_class(const char *host)
{
	size_t n = strlen(host);
	char buf[INET6_ADDRSTRLEN + 1];

	if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
		if (n - 2 >= sizeof(buf))
			return URL_PUBLIC;
		memcpy(buf, host + 1, n - 2);
		buf[n - 2] = '\0';
		return url_ip_class(buf);
	}
	/* curl answers "localhost" itself, whatever the case, with or without
	 * the root's dot. Other names are whatever they resolve to: the
	 * address is checked again when curl connects. */
	if (!strcasecmp(host, "localhost") || !strcasecmp(host, "localhost."))
		return URL_LOOPBACK;
	return url_ip_class(host);
}

enum url_class url_sockaddr_class(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return v4_class((const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)
				    ->sin_addr);
	if (sa->sa_family == AF_INET6)
		return v6_class(((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr);
	return URL_PRIVATE; /* AF_UNIX and the like: never a remote host */
}

int url_inspect(const char *url, struct url_info *info)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL;
	CURLUcode rc;
	int r = -EINVAL;

	if (!u)
		return -ENOMEM;
	/* Without CURLU_GUESS_SCHEME or CURLU_DEFAULT_SCHEME: an absolute URL or
	 * nothing. */
	rc = curl_url_set(u, CURLUPART_URL, url, 0);
	if (rc == CURLUE_OK)
		rc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
	if (rc == CURLUE_OK)
		rc = curl_url_get(u, CURLUPART_HOST, &host, 0);
	if (rc == CURLUE_OUT_OF_MEMORY)
		r = -ENOMEM;
	if (rc != CURLUE_OK || !host[0])
		goto out;
	if (!strcasecmp(scheme, "https"))
		info->https = true;
	else if (!strcasecmp(scheme, "http"))
		info->https = false;
	else
		goto out;
	info->host = url_host_class(host);
	r = 0;
out:
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return r;
}
