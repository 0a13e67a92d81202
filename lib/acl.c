/* Prefix matching: at most a few dozen entries, scanned in order. */
#include "lib/acl.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

int acl_parse(const char *text, struct acl_entry *e)
{
	char addr[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(text, '/');
	size_t len = slash ? (size_t)(slash - text) : strlen(text);

	memset(e, 0, sizeof(*e));
	if (len == 0 || len >= sizeof(addr))
		return -EINVAL;
	memcpy(addr, text, len);
	addr[len] = '\0';
	unsigned max;
	if (inet_pton(AF_INET, addr, e->addr) == 1) {
		e->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, addr, e->addr) == 1) {
		e->family = AF_INET6;
		max = 128;
	} else {
		return -EINVAL;
	}
	unsigned long bits = max;
	if (slash) {
		char *end;
		if (!isdigit((unsigned char)slash[1]))
			return -EINVAL;
		bits = strtoul(slash + 1, &end, 10);
		if (*end || bits > max)
			return -EINVAL;
	}
	e->bits = (uint8_t)bits;
	/* A prefix written in IPv4-mapped form (::ffff:10.0.0.0/104) would never
	 * match: mapped clients are compared as IPv4.  Store it as IPv4. */
	static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	if (e->family == AF_INET6 && e->bits >= 96 && memcmp(e->addr, v4mapped, 12) == 0) {
		memmove(e->addr, e->addr + 12, 4);
		memset(e->addr + 4, 0, 12);
		e->family = AF_INET;
		e->bits = (uint8_t)(e->bits - 96);
	}
	return 0;
}

void acl_default(struct acl *acl)
{
	acl->n = 0;
	acl_parse("127.0.0.0/8", &acl->entries[acl->n++]);
	acl_parse("::1/128", &acl->entries[acl->n++]);
}

static bool prefix_match(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned bytes = bits / 8, rest = bits % 8;

	if (memcmp(a, b, bytes) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (a[bytes] & mask) == (b[bytes] & mask);
}

bool acl_allows(const struct acl *acl, const struct sockaddr *sa)
{
	static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	const uint8_t *addr;
	sa_family_t family = sa->sa_family;

	if (family == AF_INET) {
		addr = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
	} else if (family == AF_INET6) {
		addr = (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (memcmp(addr, v4mapped, sizeof(v4mapped)) == 0) {
			addr += 12;
			family = AF_INET;
		}
	} else {
		return false;
	}
	for (unsigned i = 0; i < acl->n; i++) {
		const struct acl_entry *e = &acl->entries[i];
		if (e->family == family && prefix_match(addr, e->addr, e->bits))
			return true;
	}
	return false;
}

bool acl_loopback_only(const struct acl *acl)
{
	static const uint8_t v6_loopback[16] = { [15] = 1 };

	for (unsigned i = 0; i < acl->n; i++) {
		const struct acl_entry *e = &acl->entries[i];
		bool loopback = e->family == AF_INET
				    ? e->bits >= 8 && e->addr[0] == 127
				    : e->bits == 128 && !memcmp(e->addr, v6_loopback, 16);
		if (!loopback)
			return false;
	}
	return true;
}

bool acl_is_loopback(const struct sockaddr *sa)
{
	struct acl lo;

	acl_default(&lo);
	return acl_allows(&lo, sa);
}
