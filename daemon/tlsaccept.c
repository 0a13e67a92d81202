/*
 * The accepted TLS client, before its handshake is done: admission by
 * address and the start of the handshake.
 */
#include "daemon/tlsaccept.h"

#include "daemon/clients.h"
#include "daemon/tlsio.h"
#include "lib/metrics.h"
#include "lib/tls.h"

enum {
	/* A connection that never finishes its handshake costs a descriptor
	 * for this long, not for the idle timeout. */
	HANDSHAKE_MS = 5000,
};

bool tlsaccept_admit(uv_tcp_t *tcp, struct sockaddr_storage *peer, const struct config *cfg)
{
	int len = sizeof(*peer);

	if (uv_tcp_getpeername(tcp, (struct sockaddr *)peer, &len) != 0)
		peer->ss_family = AF_UNSPEC;
	if (!clients_admit((struct sockaddr *)peer, cfg->max_clients_per_address)) {
		metrics_inc(METRIC_tls_address_refused);
		return false;
	}
	return true;
}

const char *tlsaccept_start(struct tlsio *io, struct tls_ctx *ctx, uv_timer_t *timer,
			    uv_timer_cb cb, const struct config *cfg)
{
	struct tls_conn *tls = ctx ? tls_conn_new_server(ctx) : NULL;

	if (!tls)
		return ctx ? "out of memory" : "no certificate configured";
	unsigned limit =
	    cfg->tcp_idle_timeout_ms < HANDSHAKE_MS ? cfg->tcp_idle_timeout_ms : HANDSHAKE_MS;
	uv_timer_start(timer, cb, limit, 0);
	int rc = tlsio_start(io, tls);
	return rc < 0 ? uv_strerror(rc) : NULL;
}
