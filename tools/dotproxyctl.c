/*
 * dotproxyctl: ask a running dotproxy over its control socket (--control).
 * One request line per connection (lib/ctlproto.h), checked here with the
 * daemon's own parser before anything is sent, so that a typo is a usage
 * error (exit 2) and never reaches the daemon.  Prints the body of an "ok"
 * answer to stdout; an "error" answer, or a daemon that cannot be reached,
 * goes to stderr with exit status 1.  No libuv: plain blocking sockets with
 * a timeout.
 */
#include "lib/ctlproto.h"
#include "lib/version.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

enum {
	EXIT_REFUSED = 1, /* the daemon said no, or could not be reached */
	EXIT_USAGE = 2,
	MAX_ANSWER = 64 << 20,
};

static const char default_socket[] = "/run/dotproxy/control";

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: dotproxyctl [-s PATH] [--json] COMMAND [NAME]\n"
		"Ask a running dotproxy, started with --control PATH.\n"
		"\n"
		"  -s, --socket PATH    the control socket (default %s)\n"
		"  -j, --json           answer in JSON, for scripts\n"
		"  -t, --timeout SEC    wait at most SEC seconds for the answer (default 10)\n"
		"  -h, --help           show this help and exit\n"
		"  -V, --version        show the version and exit\n"
		"\n"
		"Commands:\n"
		"  stats          every counter and gauge, one NAME{LABELS}=VALUE per line\n"
		"                 (the names of GET /metrics)\n"
		"  upstreams      one line per upstream: SPEC up|down SRTT FAILURES CONNECTIONS\n"
		"                 TRANSPORT\n"
		"  flush [NAME]   remove NAME and every name below it from the cache (the\n"
		"                 whole cache without NAME)\n"
		"  reload         read the configuration again, as SIGHUP does\n"
		"\n"
		"Exit status: 0 done, 1 refused by dotproxy or dotproxy not reachable, 2 bad\n"
		"usage.  See dotproxyctl(8).\n",
		default_socket);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "dotproxyctl: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see --help)\n");
	return EXIT_USAGE;
}

/* Connect to @path; -1 after saying why. */
static int connect_to(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		fprintf(stderr, "dotproxyctl: socket: %s\n", strerror(errno));
		return -1;
	}
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
		return fd;
	int e = errno;
	close(fd);
	if (e == ENOENT)
		fprintf(stderr,
			"dotproxyctl: no control socket at %s: is dotproxy running with --control "
			"%s? (-s names another socket)\n",
			path, path);
	else if (e == ECONNREFUSED)
		fprintf(stderr,
			"dotproxyctl: nothing listens on %s: dotproxy is not running (the file is "
			"left from an earlier run)\n",
			path);
	else if (e == EACCES || e == EPERM)
		fprintf(stderr,
			"dotproxyctl: permission denied on %s: run as root or as dotproxy's user\n",
			path);
	else
		fprintf(stderr, "dotproxyctl: cannot connect to %s: %s\n", path, strerror(e));
	return -1;
}

static bool send_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		buf += n;
		len -= (size_t)n;
	}
	return true;
}

/* Everything the daemon sends until it closes; NULL after saying why. */
static char *read_answer(int fd, const char *path, size_t *len)
{
	size_t cap = 65536;
	char *buf = malloc(cap + 1);

	*len = 0;
	if (!buf) {
		fprintf(stderr, "dotproxyctl: out of memory\n");
		return NULL;
	}
	for (;;) {
		if (*len == cap) {
			if (cap >= MAX_ANSWER) {
				fprintf(stderr, "dotproxyctl: answer larger than %d bytes\n",
					MAX_ANSWER);
				free(buf);
				return NULL;
			}
			char *more = realloc(buf, cap * 2 + 1);
			if (!more) {
				fprintf(stderr, "dotproxyctl: out of memory\n");
				free(buf);
				return NULL;
			}
			buf = more;
			cap *= 2;
		}
		ssize_t n = recv(fd, buf + *len, cap - *len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0 || (n < 0 && errno == ECONNRESET && *len > 0))
			break; /* closed: the answer is complete (unix sockets may say reset) */
		if (n < 0) {
			fprintf(stderr, "dotproxyctl: no answer from %s: %s\n", path,
				errno == EAGAIN || errno == EWOULDBLOCK ? "timed out"
									: strerror(errno));
			free(buf);
			return NULL;
		}
		*len += (size_t)n;
	}
	buf[*len] = '\0';
	return buf;
}

/* The words after the options, as one request line, checked. */
static int build_request(char **words, int n, bool json, char *line, size_t cap, size_t *line_len)
{
	struct ctlproto_request req;
	char err[256];
	size_t len = 0;

	if (n == 0)
		return usage_error("no command");
	for (int i = 0; i < n; i++) {
		for (const char *p = words[i]; *p; p++)
			if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
				return usage_error("bad argument '%s': spaces and control "
						   "characters are not allowed",
						   words[i]);
		int w = snprintf(line + len, cap - len, "%s%s", i ? " " : "", words[i]);
		if (w < 0 || (size_t)w >= cap - len)
			return usage_error("request too long");
		len += (size_t)w;
	}
	if (ctlproto_parse(line, len, &req, err, sizeof(err)) < 0)
		return usage_error("%s", err);
	req.json = json;
	*line_len = ctlproto_format(&req, line, cap);
	return *line_len ? 0 : usage_error("request too long");
}

int main(int argc, char **argv)
{
	const char *path = default_socket;
	bool json = false, options = true;
	long timeout_s = 10;
	char **words = calloc((size_t)argc + 1, sizeof(*words));
	int n_words = 0;
	char line[CTLPROTO_MAX_LINE + 1];
	size_t line_len = 0;

	if (!words)
		return EXIT_REFUSED;
	signal(SIGPIPE, SIG_IGN);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!options || a[0] != '-' || a[1] == '\0') {
			words[n_words++] = argv[i];
			continue;
		}
		if (strcmp(a, "--") == 0) {
			options = false;
		} else if (strcmp(a, "-j") == 0 || strcmp(a, "--json") == 0) {
			json = true;
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			free(words);
			return 0;
		} else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
			printf("dotproxyctl %s\n", DOTPROXY_VERSION);
			free(words);
			return 0;
		} else if (strcmp(a, "-s") == 0 || strcmp(a, "--socket") == 0 ||
			   strcmp(a, "-t") == 0 || strcmp(a, "--timeout") == 0) {
			bool socket_opt = strcmp(a, "-s") == 0 || strcmp(a, "--socket") == 0;
			if (i + 1 >= argc) {
				free(words);
				return usage_error("option %s needs a value", a);
			}
			const char *v = argv[++i];
			if (socket_opt) {
				path = v;
				continue;
			}
			char *end;
			timeout_s = strtol(v, &end, 10);
			if (*end || end == v || timeout_s < 1 || timeout_s > 3600) {
				free(words);
				return usage_error("bad --timeout '%s': expected 1 to 3600 seconds",
						   v);
			}
		} else if (strncmp(a, "--socket=", 9) == 0) {
			path = a + 9;
		} else {
			free(words);
			return usage_error("unknown option '%s'", a);
		}
	}
	int rc = build_request(words, n_words, json, line, sizeof(line), &line_len);
	free(words);
	if (rc)
		return rc;
	if (!path[0] || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return usage_error("bad socket path '%s': empty or too long", path);

	int fd = connect_to(path);
	if (fd < 0)
		return EXIT_REFUSED;
	struct timeval tv = { .tv_sec = timeout_s };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (!send_all(fd, line, line_len)) {
		fprintf(stderr, "dotproxyctl: cannot send to %s: %s\n", path, strerror(errno));
		close(fd);
		return EXIT_REFUSED;
	}
	shutdown(fd, SHUT_WR);
	size_t len;
	char *answer = read_answer(fd, path, &len);
	close(fd);
	if (!answer)
		return EXIT_REFUSED;
	char *eol = memchr(answer, '\n', len);
	if (eol && eol == answer + 2 && memcmp(answer, "ok", 2) == 0) {
		fwrite(eol + 1, 1, len - 3, stdout);
		free(answer);
		return fflush(stdout) == 0 ? 0 : EXIT_REFUSED;
	}
	if (eol && strncmp(answer, "error ", 6) == 0) {
		*eol = '\0';
		fprintf(stderr, "dotproxyctl: dotproxy says: %s\n", answer + 6);
	} else {
		fprintf(stderr, "dotproxyctl: no valid answer from %s (%s)\n", path,
			len ? "garbled" : "closed without a word");
	}
	free(answer);
	return EXIT_REFUSED;
}
