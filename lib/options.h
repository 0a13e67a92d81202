/*
 * Configuration: one table of options serves both the command line
 * (--name value, --name=value) and the config file (name value, one per
 * line, # comments).  The result is a validated struct config that the
 * daemon treats as immutable.
 */
#pragma once

#include "lib/acl.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

enum {
	OPTIONS_MAX_LISTEN = 16,
	OPTIONS_MAX_UPSTREAMS = 16,
	OPTIONS_MAX_WORKERS = 64,
	OPTIONS_MAX_AUTH_NAME = 253,
	OPTIONS_DEFAULT_PORT_DOT = 853,
	OPTIONS_DEFAULT_PORT_PLAIN = 53,
	OPTIONS_DEFAULT_PORT_DOH = 443,
	OPTIONS_MAX_DOH_PATH = 256,	/**< a DoH URL's path and query, its NUL included */
	OPTIONS_MAX_ZONES = 16,		/**< --forward-zone */
	OPTIONS_MAX_ZONE_UPSTREAMS = 8, /**< upstreams of one forward zone */
	OPTIONS_MAX_PINS = 8,
	OPTIONS_PIN_LEN = 32,	   /**< SHA-256 */
	OPTIONS_MAX_BOOTSTRAP = 4, /**< --bootstrap servers */
};

/** Bounds of the local policy options (the config is copied by value:
 * these make some 170 KiB of it). */
enum {
	OPTIONS_MAX_LOCAL_DATA = 256, /**< --local-data lines */
	OPTIONS_LOCAL_DATA_LEN = 512, /**< bytes of one line, its NUL included */
	OPTIONS_MAX_HOSTS = 8,	      /**< --hosts files */
	OPTIONS_MAX_NO_BUILTIN = 32,  /**< --no-builtin-zone */
	OPTIONS_MAX_PATH = 4096,      /**< a file name, its NUL included */
	OPTIONS_MAX_UNIX_PATH = 108,  /**< a unix socket's path, its NUL included (sun_path) */
};

/** Warnings kept with a config (struct config.warnings). */
enum {
	OPTIONS_MAX_WARNINGS = 8,
	OPTIONS_WARNING_LEN = 384, /**< bytes of one, its NUL included */
};

/** How an upstream is chosen for a query (--policy). */
enum options_policy {
	OPTIONS_POLICY_FASTEST,	    /**< lowest smoothed latency, others sampled now and then */
	OPTIONS_POLICY_FAILOVER,    /**< the first healthy one, in the order given */
	OPTIONS_POLICY_ROUND_ROBIN, /**< each healthy one in turn */
};

/** RFC 8310 usage profile (--profile). */
enum options_profile {
	OPTIONS_PROFILE_STRICT,	       /**< authenticate or do not use (default) */
	OPTIONS_PROFILE_OPPORTUNISTIC, /**< encrypt even when authentication fails */
};

/** What options_parse() decided (errors are negative). */
enum {
	OPTIONS_RUN = 0, /**< start the daemon with the config */
	OPTIONS_EXIT =
	    1, /**< --help or --version printed: exit 0 (--check-config sets check_only) */
};

/** A socket address with the text it was written as. */
struct options_addr {
	struct sockaddr_storage sa;
	socklen_t sa_len;
	char text[64]; /**< as given, normalised: "127.0.0.1:53", "[::1]:53" */
};

/** How an upstream is reached. */
enum options_transport {
	OPTIONS_TRANSPORT_DOT = 0, /**< DNS over TLS (RFC 7858): IP[@PORT][#AUTH-NAME] or
				    *   tls://HOST[:PORT][#AUTH-NAME] */
	OPTIONS_TRANSPORT_PLAIN,   /**< plain DNS, udp://IP[:PORT]: only in a --forward-zone */
	OPTIONS_TRANSPORT_DOH,	   /**< DNS over HTTPS (RFC 8484, HTTP/2):
				    *   https://HOST[:PORT][/PATH][#AUTH-NAME] */
};

/** How DoH queries are sent (--doh-method). */
enum options_doh_method {
	OPTIONS_DOH_POST = 0, /**< the message as the request body (default) */
	OPTIONS_DOH_GET,      /**< the message base64url-encoded in ?dns= (RFC 8484 §4.1) */
};

/** One upstream resolver, from IP[@PORT][#AUTH-NAME], udp://IP[:PORT],
 * tls://HOST[:PORT][#AUTH-NAME] or https://HOST[:PORT][/PATH][#AUTH-NAME]. */
struct options_upstream {
	enum options_transport transport;
	/** Where to connect; with a hostname, all zero (AF_UNSPEC) here: the
	 * daemon fills a copy of the spec once the name resolves. */
	struct options_addr addr;
	char ip[INET6_ADDRSTRLEN]; /**< the IP as text, for IP verification ("" with a name) */
	uint16_t port;
	/** HOST when it was given as a name rather than an IP literal (tls://,
	 * https://); empty otherwise.  The name is resolved through --bootstrap;
	 * auth_name defaults to it. */
	char hostname[OPTIONS_MAX_AUTH_NAME + 1];
	char auth_name[OPTIONS_MAX_AUTH_NAME + 1];	 /**< empty: verify the IP instead */
	char path[OPTIONS_MAX_DOH_PATH];		 /**< DoH: "/dns-query" by default */
	uint8_t pins[OPTIONS_MAX_PINS][OPTIONS_PIN_LEN]; /**< SPKI SHA-256 pins (RFC 7858 §4.2) */
	unsigned n_pins;				 /**< 0: no pinning */
	char label[INET6_ADDRSTRLEN + 32 + OPTIONS_MAX_DOH_PATH +
		   2 * OPTIONS_MAX_AUTH_NAME]; /**< the spec without pins, for logs */
};

/** A zone whose names go to upstreams of their own (--forward-zone). */
struct options_zone {
	char name[OPTIONS_MAX_AUTH_NAME + 2]; /**< lower case, absolute: "home.arpa.", "." */
	struct options_upstream upstream[OPTIONS_MAX_ZONE_UPSTREAMS];
	unsigned n_upstream;
};

/** The whole configuration.  Plain data: copy it freely. */
struct config {
	struct options_addr listen[OPTIONS_MAX_LISTEN];
	unsigned n_listen;
	struct options_addr listen_tls[OPTIONS_MAX_LISTEN]; /**< --listen-tls: DoT for clients */
	unsigned n_listen_tls;
	/** --listen-https: DoH for clients, at --https-path ("/dns-query"). */
	struct options_addr listen_https[OPTIONS_MAX_LISTEN];
	unsigned n_listen_https;
	char https_path[256];
	char cert_file[OPTIONS_MAX_PATH]; /**< --cert-file: the listeners' certificate chain */
	char key_file[OPTIONS_MAX_PATH];  /**< --key-file: its private key */
	struct options_upstream upstream[OPTIONS_MAX_UPSTREAMS];
	unsigned n_upstream;
	struct options_zone zones[OPTIONS_MAX_ZONES]; /**< --forward-zone, other than "." */
	unsigned n_zones;
	/** --bootstrap: plain DNS servers asked for the upstreams' names (and
	 * nothing else); required when an upstream is given by name. */
	struct options_addr bootstrap[OPTIONS_MAX_BOOTSTRAP];
	unsigned n_bootstrap;
	unsigned max_udp_size;	      /**< cap on answers to UDP clients (--max-udp-size) */
	char ca_file[4096];	      /**< empty: the system trust store */
	int verbosity;		      /**< number of -v given */
	int cli_verbosity;	      /**< of those, on the command line (--check-config -v) */
	unsigned timeout_ms;	      /**< deadline of a client query */
	unsigned tcp_idle_timeout_ms; /**< idle TCP clients are closed after this */
	unsigned max_inflight;	      /**< queries in flight at once */
	unsigned max_tcp_clients;     /**< TCP client connections at once */
	unsigned max_tcp_pipeline;    /**< queries in flight per TCP client */
	unsigned idle_timeout_ms;     /**< idle upstream connections are closed after this */
	unsigned busy_poll_us;	      /**< poll this long for a near upstream's answer */
	unsigned workers;	      /**< event loops (threads) sharing the listen addresses */
	unsigned max_connections;     /**< TLS connections per upstream */
	/** TLS client connections (DoT and DoH) at once from one IP address. */
	unsigned max_clients_per_address;
	enum options_policy policy;
	enum options_profile profile;
	enum options_doh_method doh_method; /**< --doh-method */
	bool padding;			    /**< EDNS padding of queries (RFC 8467) */
	bool session_resumption;	    /**< offer TLS session tickets on reconnect */
	bool listen_is_default; /**< no --listen given: a missing IPv6 stack is not fatal */
	bool log_queries;
	size_t cache_bytes;	/**< answer cache budget; 0: no cache */
	size_t udp_recv_buffer; /**< SO_RCVBUF of UDP listening sockets; 0: system default */
	unsigned cache_min_ttl; /**< answers are cached at least this long (s) */
	unsigned cache_max_ttl; /**< and at most this long (s) */
	unsigned serve_stale;	/**< expired answers may serve this long when every
				      *   upstream fails (RFC 8767), 0: never */
	/** --doh-keepalive: idle DoH connections get a PING this often instead
	 * of closing after idle_timeout_ms; 0: off. */
	unsigned doh_keepalive_ms;
	bool prefetch;	       /**< refresh popular entries before they expire */
	char block_file[4096]; /**< blocklist file, empty: none */
	int block_action;      /**< enum localzone_block_action */
	struct acl allow;      /**< clients that may ask (--allow); default loopback */
	char user[64];	       /**< --user: drop root for this user after binding */
	bool check_only;       /**< --check-config */
	/** --local-data lines as given, each accepted by localdata_check_line(). */
	char local_data[OPTIONS_MAX_LOCAL_DATA][OPTIONS_LOCAL_DATA_LEN];
	unsigned n_local_data;
	/** --hosts files, in the order given; read when local policy is built
	 * (localzone_from_config()), not here. */
	char hosts[OPTIONS_MAX_HOSTS][OPTIONS_MAX_PATH];
	unsigned n_hosts;
	/** --no-builtin-zone, lower case and absolute ("home.arpa."); whether
	 * each is a built-in zone is checked by localzone_from_config(). */
	char no_builtin[OPTIONS_MAX_NO_BUILTIN][OPTIONS_MAX_AUTH_NAME + 2];
	unsigned n_no_builtin;
	/** What was accepted but does nothing, one line each naming the options
	 * and where each was set (no "warning:" prefix, no newline): the caller
	 * shows them (--check-config) or logs them (start-up, SIGHUP). */
	char warnings[OPTIONS_MAX_WARNINGS][OPTIONS_WARNING_LEN];
	unsigned n_warnings;
	/** --metrics: where GET /metrics is served; sa_len 0: nowhere. */
	struct options_addr metrics;
	/** --control: the unix socket for dotproxyctl; empty: none. */
	char control[OPTIONS_MAX_UNIX_PATH];

	/** --dnstap: the receiver's unix socket (fits a sun_path); empty: off. */
	char dnstap[108];
	/** --dnstap-identity; empty: the host name. */
	char dnstap_identity[256];
};

/**
 * Fill @cfg from defaults, then the file named by --config (if any), then
 * the command line, which overrides the file (a list option given on the
 * command line replaces the file's list).  Prints --help/--version output
 * to @out.  Returns OPTIONS_RUN, OPTIONS_EXIT, or -EINVAL with a one-line
 * reason naming the bad argument (or file and line) in @err.
 *
 * Besides each value, the whole is checked: the same listen address or
 * upstream twice and values that contradict each other (--cache-min-ttl
 * above --cache-max-ttl) are errors; an option that does nothing because
 * another turned its feature off (--serve-stale with --cache-size 0,
 * --block-action without --block) is a warning in @cfg->warnings.
 */
int options_parse(int argc, char **argv, struct config *cfg, FILE *out, char *err, size_t errlen);

/**
 * For a reload: copy into @next what takes effect only at start-up (the
 * listen addresses, --workers, --max-inflight, --cache-size,
 * --udp-recv-buffer, --user, --dnstap and --dnstap-identity) from @running, the configuration in force,
 * so that @next describes what runs and a later reload compares with that.
 * Writes into @changed the options among them whose value @next had
 * differently, as "--listen, --workers and --user" ("" if none: listen
 * addresses in another order or spelling are the same), and returns their
 * number.
 */
unsigned options_keep_running(struct config *next, const struct config *running, char *changed,
			      size_t cap);

/**
 * Write every setting of @cfg to @out, one "name value" line each in the
 * config file's syntax, in --help's order: a list one line per item, a
 * flag by its name when it is in effect, and an unset option as a comment
 * ("# ca-file not set: the system trust store").  Read back with --config,
 * the lines give the same settings, but for the -v of the command line
 * (cli_verbosity), which is left out: it asked for this listing.
 */
void options_print(const struct config *cfg, FILE *out);

/** Parse one upstream spec IP[@PORT][#AUTH-NAME][^PIN]...  (PIN: base64 of the
 * SHA-256 of the certificate's SubjectPublicKeyInfo), DNS over TLS, or the
 * same as tls://HOST[:PORT][#AUTH-NAME][^PIN]...;
 * https://HOST[:PORT][/PATH][#AUTH-NAME][^PIN]..., DNS over HTTPS (port 443
 * and path /dns-query by default); or udp://IP[:PORT] (plain DNS; the caller
 * decides where that is allowed).  HOST is an IP literal (IPv6 in brackets)
 * or a name, which fills hostname and, without '#', auth_name.
 * 0 or -EINVAL with @err. */
int options_parse_upstream(const char *spec, struct options_upstream *up, char *err, size_t errlen);

/** Parse a listen address ADDR:PORT or [IPv6]:PORT.  0 or -EINVAL with @err. */
int options_parse_listen(const char *spec, struct options_addr *addr, char *err, size_t errlen);
