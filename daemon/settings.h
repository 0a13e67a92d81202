/*
 * One parsed configuration with what is built from it once for the whole
 * process: the TLS context (trust anchors, profile) and the local zones
 * with the blocklist.  Immutable once made and shared by every worker,
 * which holds a reference; a reload makes a new one, so every worker
 * works with the same result of one parse, or none does.
 */
#pragma once

#include "lib/options.h"
#include "lib/wire.h"

#include <stdio.h>

struct tls_ctx;
struct localzone;

struct settings {
	struct config cfg;
	struct tls_ctx *tls;	     /**< owned: for upstreams */
	struct tls_ctx *tls_server;  /**< owned: for --listen-tls; NULL without one */
	struct localzone *localzone; /**< owned */
	/** The forward zones' names in wire form (cfg.zones[i].name). */
	uint8_t zone_wire[OPTIONS_MAX_ZONES][WIRE_MAX_NAME];
	size_t zone_wire_len[OPTIONS_MAX_ZONES];
	unsigned refs; /**< atomic; freed at 0 */
	/** owned: for --listen-https (ALPN h2 only), made from the same files
	 * as tls_server; NULL without one */
	struct tls_ctx *tls_server_h2;
};

/**
 * Parse @argv (and the config file it names), then build the TLS context
 * and local zones.  Returns the settings (one reference) or NULL with
 * *@status set: OPTIONS_EXIT when --help or --version printed to @out, or
 * a negative error with the reason in @err (prefixed with the option it
 * concerns).
 */
struct settings *settings_load(int argc, char **argv, FILE *out, int *status, char *err,
			       size_t errlen);

/** Take one more reference (any thread). */
struct settings *settings_hold(struct settings *s);

/** Drop one reference (any thread; NULL is fine). */
void settings_drop(struct settings *s);
