/*
 * TLS clients per IP address (--max-clients-per-address), for the whole
 * process: a LAN host that opens connection after connection -- or never
 * finishes its handshakes -- runs out of its own places, not of everyone's
 * (--max-tcp-clients and the descriptor budget).  IPv4 and IPv4-mapped IPv6
 * addresses count as one; an IPv6 address counts whole (/128: a LAN shares
 * one /64).  Used by the DoT and DoH listeners at accept.
 */
#pragma once

#include <stdbool.h>
#include <sys/socket.h>

/** Take a place for a client at @sa if fewer than @cap clients from its
 * address are open.  False otherwise, or when @sa is neither IPv4 nor
 * IPv6 (nothing to count it by: such a client is let in, true). */
bool clients_admit(const struct sockaddr *sa, unsigned cap);

/** Give back the place clients_admit() took for @sa. */
void clients_release(const struct sockaddr *sa);

/** Clients open from @sa's address. */
unsigned clients_from(const struct sockaddr *sa);
