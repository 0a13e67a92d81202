/*
 * Unit tests for daemon/sdlisten: taking the sockets systemd hands over
 * (LISTEN_PID, LISTEN_FDS, descriptors from 3).  Real sockets are put at
 * descriptors 3, 4, ... with dup2(), as systemd would leave them, and the
 * environment is set for this process (or another one).  Checked: what is
 * taken and how it is described, what is refused (and closed), and that the
 * variables are gone afterwards whatever happened.
 */
#include "daemon/sdlisten.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- helpers ------------------------------------------------------------ */

/* dup2(@fd, @at), then close @fd unless it already was @at. */
static void move_fd(int fd, int at)
{
	assert_int_equal(dup2(fd, at), at);
	if (fd != at)
		close(fd);
}

/* A socket of @type bound to @ip port 0 (any free port), listening if a
 * stream and @listening, moved to descriptor @at. */
static void put_socket(int at, int family, int type, const char *ip, bool listening)
{
	struct sockaddr_storage ss;
	socklen_t len;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, ip, &a->sin_addr), 1);
		len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, ip, &a->sin6_addr), 1);
		len = sizeof(*a);
	}
	int fd = socket(family, type, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&ss, len), 0);
	if (type == SOCK_STREAM && listening)
		assert_int_equal(listen(fd, 8), 0);
	move_fd(fd, at);
}

static bool is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

static void set_env(long pid, const char *fds)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%ld", pid);
	assert_int_equal(setenv("LISTEN_PID", buf, 1), 0);
	assert_int_equal(setenv("LISTEN_FDS", fds, 1), 0);
	assert_int_equal(setenv("LISTEN_FDNAMES", "dotproxy.socket", 1), 0);
}

static void assert_env_gone(void)
{
	assert_null(getenv("LISTEN_PID"));
	assert_null(getenv("LISTEN_FDS"));
	assert_null(getenv("LISTEN_FDNAMES"));
}

static unsigned port_of(const struct sdlisten_socket *s)
{
	if (s->addr.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&s->addr)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)&s->addr)->sin6_port);
}

/* ---- tests -------------------------------------------------------------- */

static void nothing_handed(void **state)
{
	struct sdlisten l;
	char err[256] = "";

	(void)state;
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	assert_int_equal(sdlisten_take(&l, err, sizeof(err)), 0);
	assert_int_equal(l.n, 0);
	/* LISTEN_FDS without LISTEN_PID is not for us either. */
	assert_int_equal(setenv("LISTEN_FDS", "2", 1), 0);
	assert_int_equal(sdlisten_take(&l, err, sizeof(err)), 0);
	assert_env_gone();
}

static void meant_for_another_process(void **state)
{
	struct sdlisten l;
	char err[256] = "";

	(void)state;
	put_socket(3, AF_INET, SOCK_DGRAM, "127.0.0.1", false);
	set_env((long)getpid() + 1, "1");
	assert_int_equal(sdlisten_take(&l, err, sizeof(err)), 0);
	assert_int_equal(l.n, 0);
	assert_true(is_open(3)); /* not ours to close */
	assert_env_gone();
	close(3);
}

static void datagram_and_stream_taken(void **state)
{
	struct sdlisten l;
	char err[256] = "", want[64];

	(void)state;
	put_socket(3, AF_INET, SOCK_DGRAM, "127.0.0.1", false);
	put_socket(4, AF_INET, SOCK_STREAM, "127.0.0.1", true);
	set_env((long)getpid(), "2");
	assert_int_equal(sdlisten_take(&l, err, sizeof(err)), 2);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.n_stream, 1);
	assert_int_equal(l.sock[0].fd, 3);
	assert_false(l.sock[0].stream);
	assert_int_equal(l.sock[1].fd, 4);
	assert_true(l.sock[1].stream);
	snprintf(want, sizeof(want), "127.0.0.1:%u", port_of(&l.sock[0]));
	assert_string_equal(l.sock[0].text, want);
	assert_true(fcntl(3, F_GETFD) & FD_CLOEXEC);
	assert_true(fcntl(4, F_GETFD) & FD_CLOEXEC);
	assert_env_gone();
	sdlisten_close(&l);
	assert_false(is_open(3));
	assert_false(is_open(4));
	/* The descriptions stay for logs; closing twice is harmless. */
	assert_int_equal(l.n, 2);
	assert_int_equal(l.sock[0].fd, -1);
	sdlisten_close(&l);
}

static void ipv6_address_text(void **state)
{
	struct sdlisten l;
	char err[256] = "", want[64];
	int probe = socket(AF_INET6, SOCK_DGRAM, 0);
	struct sockaddr_in6 lo = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };

	(void)state;
	if (probe < 0 || bind(probe, (struct sockaddr *)&lo, sizeof(lo)) < 0) {
		if (probe >= 0)
			close(probe);
		skip(); /* no IPv6 on loopback here */
	}
	close(probe);
	put_socket(3, AF_INET6, SOCK_STREAM, "::1", true);
	set_env((long)getpid(), "1");
	assert_int_equal(sdlisten_take(&l, err, sizeof(err)), 1);
	snprintf(want, sizeof(want), "[::1]:%u", port_of(&l.sock[0]));
	assert_string_equal(l.sock[0].text, want);
	sdlisten_close(&l);
}

/* Each refusal: -1, a reason naming the problem, every handed descriptor
 * closed, the variables gone. */
static void assert_refused(unsigned n, const char *needle)
{
	struct sdlisten l;
	char err[256] = "", count[8];

	snprintf(count, sizeof(count), "%u", n);
	set_env((long)getpid(), count);
	assert_int_equal(sdlisten_take(&l, err, sizeof(err)), -1);
	if (!strstr(err, needle))
		fail_msg("'%s' does not say '%s'", err, needle);
	assert_int_equal(l.n, 0);
	for (unsigned i = 0; i < n; i++)
		assert_false(is_open(3 + (int)i));
	assert_env_gone();
}

static void unix_socket_refused(void **state)
{
	int sv[2];

	(void)state;
	put_socket(3, AF_INET, SOCK_DGRAM, "127.0.0.1", false);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	close(sv[1]);
	move_fd(sv[0], 4);
	assert_refused(2, "descriptor 4 is not an IPv4 or IPv6 socket");
}

static void stream_not_listening_refused(void **state)
{
	(void)state;
	put_socket(3, AF_INET, SOCK_STREAM, "127.0.0.1", false);
	assert_refused(1, "not listening");
}

static void not_a_socket_refused(void **state)
{
	int p[2];

	(void)state;
	close(3);
	assert_int_equal(pipe(p), 0);
	close(p[1]);
	move_fd(p[0], 3);
	assert_refused(1, "descriptor 3 is not a socket");
}

static void missing_descriptor_refused(void **state)
{
	(void)state;
	close(3);
	assert_refused(1, "descriptor 3");
}

static void malformed_variables_refused(void **state)
{
	struct sdlisten l;
	char err[256] = "";

	(void)state;
	set_env((long)getpid(), "two");
	assert_int_equal(sdlisten_take(&l, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "LISTEN_FDS='two'"));
	assert_env_gone();
	assert_int_equal(setenv("LISTEN_PID", "-1", 1), 0);
	assert_int_equal(setenv("LISTEN_FDS", "1", 1), 0);
	assert_int_equal(sdlisten_take(&l, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "LISTEN_PID='-1'"));
	assert_env_gone();
	set_env((long)getpid(), "33");
	assert_int_equal(sdlisten_take(&l, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "33 sockets"));
	assert_env_gone();
}

static void too_many_of_a_kind_refused(void **state)
{
	(void)state;
	for (int i = 0; i < SDLISTEN_MAX_PER_TYPE + 1; i++)
		put_socket(3 + i, AF_INET, SOCK_DGRAM, "127.0.0.1", false);
	assert_refused(SDLISTEN_MAX_PER_TYPE + 1, "more than 16 sockets of one kind");
}

static void wildcard_addresses(void **state)
{
	struct sockaddr_in any4 = { .sin_family = AF_INET };
	struct sockaddr_in lo4 = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
	struct sockaddr_in6 any6 = { .sin6_family = AF_INET6 };
	struct sockaddr_in6 lo6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };

	(void)state;
	assert_true(sdlisten_is_wildcard((struct sockaddr *)&any4));
	assert_true(sdlisten_is_wildcard((struct sockaddr *)&any6));
	assert_false(sdlisten_is_wildcard((struct sockaddr *)&lo4));
	assert_false(sdlisten_is_wildcard((struct sockaddr *)&lo6));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(nothing_handed),
		cmocka_unit_test(meant_for_another_process),
		cmocka_unit_test(datagram_and_stream_taken),
		cmocka_unit_test(ipv6_address_text),
		cmocka_unit_test(unix_socket_refused),
		cmocka_unit_test(stream_not_listening_refused),
		cmocka_unit_test(not_a_socket_refused),
		cmocka_unit_test(missing_descriptor_refused),
		cmocka_unit_test(malformed_variables_refused),
		cmocka_unit_test(too_many_of_a_kind_refused),
		cmocka_unit_test(wildcard_addresses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
