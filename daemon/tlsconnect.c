/*
 * An upstream TLS connection's set-up and teardown.  The timer holds the
 * connect deadline, then the handshake's; the transport takes it over once
 * the handshake completes.
 */
#include "daemon/tlsconnect.h"

#include "daemon/loop.h"
#include "daemon/tlsio.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/tls.h"

#include <stddef.h>
#include <stdio.h>

enum {
	MIN_HANDSHAKE_MS = 100,
	MAX_CONNECT_MS = 1000,
};

static struct tlsconnect *from_io(struct tlsio *io)
{
	return (struct tlsconnect *)((char *)io - offsetof(struct tlsconnect, io));
}

/* Half the query deadline: a dead upstream leaves time to try the next. */
static unsigned handshake_limit_ms(const struct config *cfg)
{
	unsigned limit = cfg->timeout_ms / 2;

	return limit < MIN_HANDSHAKE_MS ? MIN_HANDSHAKE_MS : limit;
}

/* A TCP connect answers within a round trip, or is refused; one that does
 * not complete in a second is being dropped (a firewall, a captive portal)
 * and waiting longer only makes every query wait. */
static unsigned connect_limit_ms(const struct config *cfg)
{
	unsigned limit = handshake_limit_ms(cfg);

	return limit < MAX_CONNECT_MS ? limit : MAX_CONNECT_MS;
}

static void handle_closed_cb(uv_handle_t *handle)
{
	struct tlsconnect *tc =
	    handle->type == UV_TIMER
		? (struct tlsconnect *)((char *)handle - offsetof(struct tlsconnect, timer))
		: from_io(handle->data);

	if (--tc->handles_open)
		return;
	tlsio_deinit(&tc->io);
	tc->ops->freed(tc);
}

/* The connect's deadline, then the handshake's: the TLS session is there
 * once the connect has completed (tlsio_start()). */
static void deadline_cb(uv_timer_t *timer)
{
	struct tlsconnect *tc =
	    (struct tlsconnect *)((char *)timer - offsetof(struct tlsconnect, timer));
	char text[96];

	metrics_inc(METRIC_upstream_connect_failures);
	if (!tc->io.tls)
		snprintf(text, sizeof(text), "cannot connect: no answer within %u ms",
			 connect_limit_ms(tc->cfg));
	else
		snprintf(text, sizeof(text), "no TLS session within %u ms",
			 handshake_limit_ms(tc->cfg));
	tc->ops->close(tc, TRANSPORT_CLOSED_FAILED, text);
}

static void connect_cb(uv_connect_t *req, int status)
{
	struct tlsconnect *tc =
	    (struct tlsconnect *)((char *)req - offsetof(struct tlsconnect, connect_req));
	const struct options_upstream *spec = tc->spec;

	if (tc->closed)
		return;
	if (status < 0) {
		char text[128];
		metrics_inc(METRIC_upstream_connect_failures);
		snprintf(text, sizeof(text), "cannot connect: %s", uv_strerror(status));
		tc->ops->close(tc, TRANSPORT_CLOSED_FAILED, text);
		return;
	}
	struct tls_conn *tls =
	    tls_conn_new(tc->tls_ctx, spec->auth_name[0] ? spec->auth_name : NULL, spec->ip,
			 tc->cfg->session_resumption ? tc->session : NULL);
	if (!tls || (tc->alpn && tls_conn_require_alpn(tls, tc->alpn) != 0)) {
		tls_conn_free(tls);
		tc->ops->close(tc, TRANSPORT_CLOSED_FAILED, "cannot create a TLS session");
		return;
	}
	tls_conn_set_pins(tls, (const uint8_t(*)[32])spec->pins, spec->n_pins);
	uv_timer_start(&tc->timer, deadline_cb, handshake_limit_ms(tc->cfg), 0);
	uv_tcp_nodelay(&tc->io.tcp, 1); /* a listener's sockets have it from the listener */
	int rc = tlsio_start(&tc->io, tls);
	if (rc < 0 && !tc->closed)
		tc->ops->close(tc, TRANSPORT_CLOSED_FAILED, "cannot start TLS");
}

static void handshaken_cb(struct tlsio *io)
{
	struct tlsconnect *tc = from_io(io);

	tc->ops->handshaken(tc);
}

static void data_cb(struct tlsio *io, uint8_t *data, size_t len)
{
	struct tlsconnect *tc = from_io(io);

	tc->ops->data(tc, data, len);
}

/* What the end of the TLS stream means for the connection. */
static void ended_cb(struct tlsio *io, enum tlsio_end how, const char *why)
{
	struct tlsconnect *tc = from_io(io);

	if (how == TLSIO_END_HANDSHAKE) {
		char text[256];
		metrics_inc(METRIC_upstream_tls_failures);
		snprintf(text, sizeof(text), "TLS failed: %s; nothing was sent to it", why);
		tc->ops->close(tc, TRANSPORT_CLOSED_FAILED, text);
		return;
	}
	if (!tc->was_ready) {
		char text[160];
		snprintf(text, sizeof(text), "connection failed: %s", why);
		tc->ops->close(tc, TRANSPORT_CLOSED_FAILED, text);
		return;
	}
	tc->ops->close(
	    tc, how == TLSIO_END_EOF ? TRANSPORT_CLOSED_BY_SERVER : TRANSPORT_CLOSED_BROKEN, why);
}

static const struct tlsio_callbacks tlsio_cbs = {
	.handshaken = handshaken_cb,
	.data = data_cb,
	.ended = ended_cb,
};

void *tlsconnect_peer_new(const struct options_upstream *spec)
{
	(void)spec;
	return tls_session_new();
}

void tlsconnect_peer_free(void *peer)
{
	tls_session_free(peer);
}

int tlsconnect_open(struct tlsconnect *tc, const struct transport_env *env,
		    const struct options_upstream *spec, struct tls_session *session,
		    const char *alpn, const struct tlsconnect_ops *ops, void *owner)
{
	tc->ops = ops;
	tc->cfg = env->cfg;
	tc->tls_ctx = env->tls;
	tc->spec = spec;
	tc->session = session;
	tc->alpn = alpn;
	tlsio_init(&tc->io, env->loop, &tlsio_cbs);
	uv_timer_init(&env->loop->uv, &tc->timer);
	tc->timer.data = owner;
	tc->handles_open = 2;
	metrics_inc(METRIC_upstream_connects);
	int rc = uv_tcp_connect(&tc->connect_req, &tc->io.tcp,
				(const struct sockaddr *)&spec->addr.sa, connect_cb);
	if (rc < 0) {
		metrics_inc(METRIC_upstream_connect_failures);
		log_info("upstream %s: cannot connect: %s", spec->label, uv_strerror(rc));
		tc->closed = true;
		tlsio_close(&tc->io, handle_closed_cb);
		uv_close((uv_handle_t *)&tc->timer, handle_closed_cb);
		return rc;
	}
	uv_timer_start(&tc->timer, deadline_cb, connect_limit_ms(env->cfg), 0);
	log_debug("upstream %s: connecting", spec->label);
	return 0;
}

void tlsconnect_handshaken(struct tlsconnect *tc, struct transport_conn *base, const char *proto)
{
	struct tls_conn *tls = tc->io.tls;
	char desc[128];

	tc->was_ready = true;
	uv_timer_stop(&tc->timer);
	metrics_inc(METRIC_upstream_handshakes);
	base->tls = TRANSPORT_TLS_FULL; /* for the per-upstream handshake metrics */
	if (tls_conn_resumed(tls)) {
		metrics_inc(METRIC_upstream_resumed);
		base->tls = TRANSPORT_TLS_RESUMED;
	}
	tls_conn_describe(tls, desc, sizeof(desc));
	const char *unauthenticated = tls_conn_auth_failure(tls);
	if (unauthenticated) {
		metrics_inc(METRIC_upstream_unauthenticated);
		log_warn("upstream %s: NOT authenticated (%s); opportunistic profile: encrypted "
			 "anyway",
			 tc->spec->label, unauthenticated);
	}
	log_info("upstream %s: connected, %s, %s%s%s", tc->spec->label, desc, proto ? proto : "",
		 proto ? ", " : "",
		 unauthenticated	 ? "unauthenticated"
		 : tls_conn_resumed(tls) ? "verified session"
					 : "certificate verified");
}

void tlsconnect_close(struct tlsconnect *tc, const char *why, unsigned in_flight)
{
	if (tc->closed)
		return;
	tc->closed = true;
	/* At info level: the upstream layer says once, at warning level, that
	 * the upstream is down and why (the first failure of an outage). */
	if (why) {
		if (!tc->was_ready)
			log_info("upstream %s: %s", tc->spec->label, why);
		else
			log_info("upstream %s: connection closed: %s (%u queries in flight)",
				 tc->spec->label, why, in_flight);
	}
	if (tc->was_ready)
		metrics_inc(METRIC_upstream_closed);
	tlsio_stop(&tc->io); /* close_notify: keeps the session resumable */
	uv_timer_stop(&tc->timer);
	tlsio_close(&tc->io, handle_closed_cb);
	uv_close((uv_handle_t *)&tc->timer, handle_closed_cb);
}
