/*
 * Fuzz target for lib/options.  The input is used twice: split on NUL and
 * newline into an argument vector, and written verbatim as a config file
 * (read through --config).  Whatever the input, options_parse() must return
 * one of its documented results, leave a one-line reason on failure, and on
 * success produce a config whose lists and strings are within their bounds.
 *
 * A --config in the fuzzed arguments is always pointed at that same file, so
 * an input can never make the target read some other path (a FIFO or a
 * terminal would hang the fuzzer).
 */
#include "tests/fuzz/fuzz.h"

#include "lib/options.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

enum { MAX_ARGS = 64 };

static char config_path[64];
static FILE *devnull;

static void remove_config(void)
{
	if (config_path[0])
		unlink(config_path);
}

/* The per-process scratch file and output sink, made on first use. */
static void setup_once(void)
{
	if (devnull)
		return;
	devnull = fopen("/dev/null", "w");
	CHECK(devnull != NULL);
	snprintf(config_path, sizeof(config_path), "/tmp/dotproxy-fuzz-XXXXXX");
	int fd = mkstemp(config_path);
	CHECK(fd >= 0);
	close(fd);
	atexit(remove_config);
}

static bool terminated(const char *s, size_t cap)
{
	return memchr(s, '\0', cap) != NULL;
}

static void check_config(const struct config *cfg)
{
	CHECK(cfg->n_listen >= 1 && cfg->n_listen <= OPTIONS_MAX_LISTEN);
	CHECK(cfg->n_upstream >= 1 && cfg->n_upstream <= OPTIONS_MAX_UPSTREAMS);
	for (unsigned i = 0; i < cfg->n_listen; i++) {
		const struct options_addr *a = &cfg->listen[i];
		CHECK(terminated(a->text, sizeof(a->text)));
		CHECK(a->sa.ss_family == AF_INET || a->sa.ss_family == AF_INET6);
		CHECK(a->sa_len == (a->sa.ss_family == AF_INET ? sizeof(struct sockaddr_in)
							       : sizeof(struct sockaddr_in6)));
		/* Each address once: start-up would fail against itself. */
		for (unsigned j = 0; j < i; j++)
			CHECK(cfg->listen[j].sa_len != a->sa_len ||
			      memcmp(&cfg->listen[j].sa, &a->sa, a->sa_len) != 0);
	}
	for (unsigned i = 0; i < cfg->n_upstream; i++) {
		const struct options_upstream *u = &cfg->upstream[i];
		CHECK(u->port != 0);
		CHECK(terminated(u->ip, sizeof(u->ip)) && u->ip[0]);
		CHECK(terminated(u->auth_name, sizeof(u->auth_name)));
		CHECK(terminated(u->label, sizeof(u->label)));
		CHECK(terminated(u->addr.text, sizeof(u->addr.text)));
		/* The auth name goes into SNI and certificate matching: never a
		 * byte outside host name syntax. */
		for (const char *p = u->auth_name; *p; p++)
			CHECK((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.');
	}
	CHECK(terminated(cfg->ca_file, sizeof(cfg->ca_file)));
	CHECK(cfg->n_warnings <= OPTIONS_MAX_WARNINGS);
	for (unsigned i = 0; i < cfg->n_warnings; i++) {
		CHECK(terminated(cfg->warnings[i], sizeof(cfg->warnings[i])));
		CHECK(cfg->warnings[i][0] && !strchr(cfg->warnings[i], '\n'));
	}
	CHECK(cfg->cache_min_ttl <= cfg->cache_max_ttl);
	CHECK(cfg->timeout_ms >= 10);
	CHECK(cfg->max_inflight >= 1 && cfg->max_tcp_clients >= 1 && cfg->max_tcp_pipeline >= 1);
}

static void run(int argc, char **argv)
{
	struct config cfg;
	char err[256];

	memset(err, 0x5a, sizeof(err));
	int rc = options_parse(argc, argv, &cfg, devnull, err, sizeof(err));
	CHECK(rc == OPTIONS_RUN || rc == OPTIONS_EXIT || rc == -EINVAL);
	if (rc == -EINVAL) {
		CHECK(terminated(err, sizeof(err)));
		CHECK(err[0] != '\0');
		CHECK(strchr(err, '\n') == NULL);
	} else if (rc == OPTIONS_RUN) {
		check_config(&cfg);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup_once();

	/* The file form. */
	FILE *f = fopen(config_path, "wb");
	CHECK(f != NULL);
	CHECK(fwrite(data, 1, size, f) == size);
	CHECK(fclose(f) == 0);

	/* The argument form: a NUL-terminated copy cut at NUL and newline. */
	char *text = malloc(size + 1);
	CHECK(text != NULL);
	memcpy(text, data, size);
	text[size] = '\0';
	char *argv[MAX_ARGS + 1];
	char config_arg[80];
	int argc = 0;
	argv[argc++] = (char *)"dotproxy";
	for (char *p = text; argc < MAX_ARGS && p < text + size;) {
		char *end = p;
		while (end < text + size && *end != '\0' && *end != '\n')
			end++;
		*end = '\0';
		argv[argc++] = p;
		p = end + 1;
	}
	for (int i = 1; i < argc; i++) {
		if (strncmp(argv[i], "--config=", 9) == 0) {
			snprintf(config_arg, sizeof(config_arg), "--config=%s", config_path);
			argv[i] = config_arg;
		} else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
			argv[++i] = config_path;
		}
	}
	argv[argc] = NULL;
	run(argc, argv);

	/* Each argument alone as an address, both parsers. */
	for (int i = 1; i < argc; i++) {
		struct options_upstream up;
		struct options_addr addr;
		char err[128];
		if (options_parse_upstream(argv[i], &up, err, sizeof(err)) == 0) {
			CHECK(up.port != 0);
			CHECK(strlen(up.auth_name) <= OPTIONS_MAX_AUTH_NAME);
		} else {
			CHECK(terminated(err, sizeof(err)));
		}
		if (options_parse_listen(argv[i], &addr, err, sizeof(err)) != 0)
			CHECK(terminated(err, sizeof(err)));
	}
	free(text);

	/* The file through --config, alone and with a command-line override. */
	char *file_argv[] = { (char *)"dotproxy", (char *)"--config", config_path, NULL };
	run(3, file_argv);
	char *override_argv[] = { (char *)"dotproxy", (char *)"--upstream", (char *)"192.0.2.1",
				  (char *)"--config", config_path,	    NULL };
	run(5, override_argv);
	return 0;
}
