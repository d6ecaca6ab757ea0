/* url: where a URL leads, as libcurl itself parses it. curl_url() is the
 * parser CURLOPT_URL uses, so the host tested here is the host curl connects
 * to (userinfo, numeric IPv4 forms like 2130706433 or 0x7f.1, %-escapes and
 * IPv6 zones are all resolved the way the transfer resolves them).
 * Pure: no I/O, never logs. */
#ifndef SEEDREAMD_URL_H
#define SEEDREAMD_URL_H

#include <stdbool.h>

#include <sys/socket.h>

enum url_class {
	URL_PUBLIC = 0,    /* a public address, or a name (checked again on connect) */
	URL_LOOPBACK,      /* this machine: 127.0.0.0/8, ::1, "localhost" */
	URL_PRIVATE,       /* this network: 10/8, 172.16/12, 192.168/16, 169.254/16,
			    * 0/8, fe80::/10, fc00::/7, ::, and IPv4-mapped forms */
};

struct url_info {
	bool https;               /* else http */
	enum url_class host;
};

/* Parses an absolute http(s) URL: -EINVAL for anything else (another scheme,
 * no host, not a URL), -ENOMEM. */
int url_inspect(const char *url, struct url_info *info);

/* A URL's host part as curl reports it: a name, dotted IPv4 or [IPv6]. */
enum url_class url_host_class(const char *host);

/* A numeric address (as CURLINFO_PRIMARY_IP reports it); a name is public. */
enum url_class url_ip_class(const char *ip);

/* An address curl is about to connect to; unknown families are private. */
enum url_class url_sockaddr_class(const struct sockaddr *sa);

#endif
