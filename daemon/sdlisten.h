/*
 * Socket activation (sd_listen_fds(3) protocol, without libsystemd): the
 * listening sockets systemd (a .socket unit, or systemd-socket-activate)
 * hands over as descriptors 3, 4, ... with $LISTEN_PID and $LISTEN_FDS.
 * Each one is checked (an IPv4 or IPv6 socket, a datagram one or a
 * listening stream one) and its address read, so that the workers can use
 * it instead of binding the --listen addresses: dotproxy then needs no
 * privilege at all.
 */
#pragma once

#include "lib/options.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

enum {
	/** Handed sockets of each kind (UDP, TCP) taken at most. */
	SDLISTEN_MAX_PER_TYPE = OPTIONS_MAX_LISTEN,
	SDLISTEN_MAX = 2 * SDLISTEN_MAX_PER_TYPE,
};

/** One handed socket. */
struct sdlisten_socket {
	int fd;			      /**< as handed; owned by the struct sdlisten */
	bool stream;		      /**< SOCK_STREAM (listening) or SOCK_DGRAM */
	struct sockaddr_storage addr; /**< what it is bound to (getsockname) */
	char text[64];		      /**< "127.0.0.1:53", "[::1]:53", for logs */
};

/** The sockets handed to this process; n == 0 when none were. */
struct sdlisten {
	struct sdlisten_socket sock[SDLISTEN_MAX];
	unsigned n;
	unsigned n_stream; /**< of which listening TCP sockets */
};

/**
 * Take the sockets handed to this process, if $LISTEN_PID names it, into
 * @out; set close-on-exec on them; and unset LISTEN_PID, LISTEN_FDS and
 * LISTEN_FDNAMES whatever happens, so that nothing started later inherits
 * them.  Call before any thread exists (it changes the environment).
 * Returns the number of sockets (0: not activated), or -1 with the reason
 * in @err: a malformed variable, a descriptor that is not an IPv4/IPv6
 * datagram or listening stream socket, or too many of a kind.  On error no
 * descriptor is left open.
 */
int sdlisten_take(struct sdlisten *out, char *err, size_t errlen);

/** Close the handed descriptors, once each user holds its own dup(); the
 * descriptions (n, addresses) stay, for logs.  Calling it again is fine. */
void sdlisten_close(struct sdlisten *l);

/** Is @sa a wildcard address (0.0.0.0 or ::)? */
bool sdlisten_is_wildcard(const struct sockaddr *sa);
