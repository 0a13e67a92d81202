/*
 * Which clients may ask: a list of address prefixes (--allow CIDR).  By
 * default only loopback: a resolver open to the internet is an
 * amplification weapon, so reaching beyond the machine takes a decision.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum { ACL_MAX = 64 };

/** One prefix: family, address bytes and length in bits. */
struct acl_entry {
	sa_family_t family; /**< AF_INET or AF_INET6 */
	uint8_t addr[16];   /**< network order; only the first 4 bytes for AF_INET */
	uint8_t bits;	    /**< prefix length */
};

/** A list of prefixes.  Plain data, part of struct config. */
struct acl {
	struct acl_entry entries[ACL_MAX];
	unsigned n;
};

/** Parse "ADDR/BITS" or a bare address (a host) into @e.  0 or -EINVAL. */
int acl_parse(const char *text, struct acl_entry *e);

/** The default list: 127.0.0.0/8 and ::1/128. */
void acl_default(struct acl *acl);

/** Is every prefix of @acl inside 127.0.0.0/8 or ::1 (the default list is)? */
bool acl_loopback_only(const struct acl *acl);

/** Is @sa a loopback address (127.0.0.0/8, ::1, or IPv4-mapped 127/8)? */
bool acl_is_loopback(const struct sockaddr *sa);

/** Does @acl allow a client at @sa (AF_INET or AF_INET6; an IPv4-mapped
 * IPv6 address counts as IPv4)? */
bool acl_allows(const struct acl *acl, const struct sockaddr *sa);
