/*
 * sd_listen_fds(3) without libsystemd: $LISTEN_PID must be our PID (the
 * variables are meant for the process systemd started, not for a child it
 * may exec), $LISTEN_FDS counts the descriptors from 3.  $LISTEN_FDNAMES is
 * not used: the kind of each socket says what it is for.
 */
#include "daemon/sdlisten.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { FIRST_FD = 3 }; /* SD_LISTEN_FDS_START */

/* A decimal number from 1 to @max, whole string. */
static bool parse_count(const char *s, unsigned long max, unsigned long *out)
{
	char *end;

	if (!s || *s < '0' || *s > '9')
		return false;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v > max)
		return false;
	*out = v;
	return true;
}

static void addr_text(const struct sockaddr_storage *ss, char *buf, size_t cap)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		snprintf(buf, cap, "%s:%u", ip, ntohs(a->sin_port));
	} else {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		snprintf(buf, cap, "[%s]:%u", ip, ntohs(a->sin6_port));
	}
}

/* Check descriptor @fd and describe it in @s; 0, or -1 with @err. */
static int inspect(int fd, struct sdlisten_socket *s, char *err, size_t errlen)
{
	int type = 0, listening = 0;
	socklen_t len = sizeof(type);

	if (fcntl(fd, F_GETFD) < 0) {
		snprintf(err, errlen, "descriptor %d: %s", fd, strerror(errno));
		return -1;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
		snprintf(err, errlen, "descriptor %d is not a socket (%s)", fd, strerror(errno));
		return -1;
	}
	len = sizeof(s->addr);
	memset(&s->addr, 0, sizeof(s->addr));
	if (getsockname(fd, (struct sockaddr *)&s->addr, &len) < 0 ||
	    (s->addr.ss_family != AF_INET && s->addr.ss_family != AF_INET6)) {
		snprintf(err, errlen,
			 "descriptor %d is not an IPv4 or IPv6 socket (dotproxy takes "
			 "ListenDatagram= and ListenStream= on IP addresses only)",
			 fd);
		return -1;
	}
	addr_text(&s->addr, s->text, sizeof(s->text));
	if (type != SOCK_DGRAM && type != SOCK_STREAM) {
		snprintf(err, errlen,
			 "descriptor %d (%s) is neither a datagram nor a stream socket", fd,
			 s->text);
		return -1;
	}
	len = sizeof(listening);
	if (type == SOCK_STREAM &&
	    (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening)) {
		snprintf(err, errlen,
			 "descriptor %d (%s) is a stream socket that is not listening (a "
			 "connection: Accept=yes is not supported, use Accept=no)",
			 fd, s->text);
		return -1;
	}
	s->fd = fd;
	s->stream = type == SOCK_STREAM;
	return 0;
}

int sdlisten_take(struct sdlisten *out, char *err, size_t errlen)
{
	const char *pid_s = getenv("LISTEN_PID");
	const char *fds_s = getenv("LISTEN_FDS");
	unsigned long pid, n = 0;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	if (!pid_s || !fds_s)
		goto out;
	if (!parse_count(pid_s, LONG_MAX, &pid)) {
		snprintf(err, errlen, "LISTEN_PID='%s' is not a process ID", pid_s);
		rc = -1;
		goto out;
	}
	if (pid != (unsigned long)getpid())
		goto out; /* meant for another process */
	if (!parse_count(fds_s, INT_MAX - FIRST_FD, &n)) {
		snprintf(err, errlen, "LISTEN_FDS='%s' is not a number of descriptors", fds_s);
		rc = -1;
		goto out;
	}
	if (n > SDLISTEN_MAX) {
		snprintf(err, errlen, "%lu sockets handed over, more than the %d dotproxy takes", n,
			 SDLISTEN_MAX);
		rc = -1;
		goto close_all;
	}
	for (unsigned i = 0; i < n; i++) {
		struct sdlisten_socket *s = &out->sock[i];
		if (inspect(FIRST_FD + (int)i, s, err, errlen) < 0) {
			rc = -1;
			goto close_all;
		}
		(void)fcntl(s->fd, F_SETFD, FD_CLOEXEC);
		out->n_stream += s->stream;
	}
	out->n = (unsigned)n;
	if (out->n_stream > SDLISTEN_MAX_PER_TYPE ||
	    out->n - out->n_stream > SDLISTEN_MAX_PER_TYPE) {
		snprintf(err, errlen, "more than %d sockets of one kind (datagram or stream)",
			 SDLISTEN_MAX_PER_TYPE);
		rc = -1;
		goto close_all;
	}
	rc = (int)n;
	goto out;
close_all:
	for (unsigned i = 0; i < n; i++)
		close(FIRST_FD + (int)i);
	memset(out, 0, sizeof(*out));
out:
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return rc;
}

void sdlisten_close(struct sdlisten *l)
{
	for (unsigned i = 0; i < l->n; i++) {
		if (l->sock[i].fd >= 0)
			close(l->sock[i].fd);
		l->sock[i].fd = -1;
	}
}

bool sdlisten_is_wildcard(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
	return false;
}
