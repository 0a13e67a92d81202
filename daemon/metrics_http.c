/*
 * The metrics endpoint over daemon/oneshot: lib/http1 decides what to
 * answer, lib/metrics renders the body, built whole before it is sent (some
 * tens of KiB; a scrape copies each worker's counters once, with relaxed
 * loads, and takes no lock the workers wait on).
 */
#include "daemon/metrics_http.h"

#include "daemon/frontend.h"
#include "daemon/oneshot.h"
#include "lib/http1.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/prom.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
	REQUEST_MS = 2000, /* to send the request head */
	REPLY_MS = 5000,   /* to read the answer and close */
	MAX_CONNS = 8,
};

static const char content_type[] = "text/plain; version=0.0.4";

struct metrics_http {
	struct oneshot_server *server;
	const struct acl *allow;
};

/* A response with a short text body saying why. */
static void reply_status(struct oneshot *c, int status, const char *why)
{
	char head[512];
	char *body = NULL;
	int n = asprintf(&body, "%d %s: %s\n", status, http1_reason(status), why);

	if (n < 0) {
		oneshot_close(c);
		return;
	}
	size_t head_len =
	    http1_response_head(status, "text/plain; charset=utf-8", (size_t)n, head, sizeof(head));
	oneshot_reply(c, head, head_len, body, (size_t)n);
}

static void reply_metrics(struct oneshot *c)
{
	struct prom_buf body = { 0 };
	struct prom_writer w;
	char head[512];

	prom_writer_init(&w, &body, PROM_EXPOSITION);
	metrics_export(&w);
	prom_writer_end(&w);
	if (body.failed || !body.data) {
		prom_buf_free(&body);
		reply_status(c, 500, "the metrics could not be rendered");
		return;
	}
	size_t head_len = http1_response_head(200, content_type, body.len, head, sizeof(head));
	oneshot_reply(c, head, head_len, body.data, body.len);
}

static void accepted(struct oneshot *c)
{
	struct metrics_http *m = oneshot_server_arg(c->server);
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	if (uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len) != 0 ||
	    !acl_allows(m->allow, (struct sockaddr *)&ss)) {
		char peer[80] = "?";
		if (len > 0)
			frontend_addr_text((struct sockaddr *)&ss, peer, sizeof(peer));
		log_debug("metrics: refused %s: not in --allow", peer);
		reply_status(c, 403, "not in --allow");
	}
}

static void data(struct oneshot *c)
{
	int status = http1_check_request(c->buf, c->len, "/metrics");

	switch (status) {
	case HTTP1_INCOMPLETE:
		if (c->eof)
			reply_status(c, 400, "incomplete request");
		return;
	case 200:
		reply_metrics(c);
		return;
	case 404:
		reply_status(c, status, "only /metrics is served here");
		return;
	case 405:
		reply_status(c, status, "only GET is allowed");
		return;
	case 413:
		reply_status(c, status, "request head too large");
		return;
	default:
		reply_status(c, status, "malformed request");
		return;
	}
}

static void timeout(struct oneshot *c)
{
	reply_status(c, 408, "no complete request in time");
}

static const struct oneshot_ops ops = {
	.accepted = accepted,
	.data = data,
	.timeout = timeout,
};

struct metrics_http *metrics_http_start(uv_loop_t *loop, const struct options_addr *addr,
					const struct acl *allow, char *err, size_t errlen)
{
	struct metrics_http *m = calloc(1, sizeof(*m));
	require(m);
	struct oneshot_config cfg = {
		.name = "metrics",
		.max_request = HTTP1_MAX_REQUEST,
		.max_conns = MAX_CONNS,
		.request_ms = REQUEST_MS,
		.reply_ms = REPLY_MS,
		.arg = m,
	};

	m->allow = allow;
	m->server = oneshot_server_new(loop, UV_TCP, &cfg, &ops);
	uv_tcp_t *tcp = (uv_tcp_t *)oneshot_server_listener(m->server);
	int rc = uv_tcp_bind(tcp, (const struct sockaddr *)&addr->sa,
			     addr->sa.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
	if (rc == 0)
		rc = oneshot_server_listen(m->server);
	if (rc < 0) {
		snprintf(
		    err, errlen, "cannot serve metrics on %s: %s%s", addr->text, uv_strerror(rc),
		    rc == UV_EACCES ? " (ports below 1024 need root or CAP_NET_BIND_SERVICE)" : "");
		oneshot_server_close(m->server);
		free(m);
		return NULL;
	}
	log_info("serving metrics at http://%s/metrics", addr->text);
	return m;
}

void metrics_http_set_allow(struct metrics_http *m, const struct acl *allow)
{
	m->allow = allow;
}

void metrics_http_close(struct metrics_http *m)
{
	oneshot_server_close(m->server);
	free(m);
}
