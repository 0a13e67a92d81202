/*
 * Settings: one parse of the command line and config file, and what is
 * built from it once for every worker.  Everything that can fail about a
 * configuration fails here, before any worker sees it.
 */
#include "daemon/settings.h"

#include "lib/localzone.h"
#include "lib/log.h"
#include "lib/tls.h"
#include "lib/wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A TLS context for @cfg, or NULL with the reason in @err. */
static struct tls_ctx *make_tls(const struct config *cfg, char *err, size_t errlen)
{
	struct tls_ctx *tls = tls_ctx_new(cfg->ca_file[0] ? cfg->ca_file : NULL, err, errlen);

	if (tls && cfg->profile == OPTIONS_PROFILE_OPPORTUNISTIC)
		tls_ctx_set_opportunistic(tls);
	return tls;
}

struct settings *settings_load(int argc, char **argv, FILE *out, int *status, char *err,
			       size_t errlen)
{
	struct settings *s = calloc(1, sizeof(*s));
	char why[1024];

	require(s);
	*status = options_parse(argc, argv, &s->cfg, out, err, errlen);
	if (*status != OPTIONS_RUN)
		goto fail;
	s->tls = make_tls(&s->cfg, why, sizeof(why));
	if (!s->tls) {
		snprintf(err, errlen, "%s%s", s->cfg.ca_file[0] ? "--ca-file: " : "", why);
		goto fail_einval;
	}
	if (s->cfg.n_listen_tls) {
		s->tls_server = tls_server_ctx_new(s->cfg.cert_file, s->cfg.key_file,
						   TLS_SERVER_DOT, err, errlen);
		if (!s->tls_server)
			goto fail_einval;
	}
	if (s->cfg.n_listen_https) {
		s->tls_server_h2 = tls_server_ctx_new(s->cfg.cert_file, s->cfg.key_file,
						      TLS_SERVER_H2, err, errlen);
		if (!s->tls_server_h2)
			goto fail_einval;
	}
	/* Built-in zones, forward zones, local data, hosts files, blocklist. */
	s->localzone = localzone_from_config(&s->cfg, why, sizeof(why));
	if (!s->localzone) {
		snprintf(err, errlen, "%s", why);
		goto fail_einval;
	}
	for (unsigned i = 0; i < s->cfg.n_zones; i++) {
		s->zone_wire_len[i] = wire_name_from_text(s->cfg.zones[i].name, s->zone_wire[i]);
		require(s->zone_wire_len[i]); /* lib/options checked the name */
	}
	s->refs = 1;
	return s;
fail_einval:
	*status = -EINVAL;
fail:
	tls_ctx_free(s->tls);
	tls_ctx_free(s->tls_server);
	tls_ctx_free(s->tls_server_h2);
	free(s);
	return NULL;
}

struct settings *settings_hold(struct settings *s)
{
	__atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
	return s;
}

void settings_drop(struct settings *s)
{
	if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	localzone_free(s->localzone);
	tls_ctx_free(s->tls);
	tls_ctx_free(s->tls_server);
	tls_ctx_free(s->tls_server_h2);
	free(s);
}
