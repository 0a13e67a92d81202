/*
 * Unit tests for lib/tls: a tls_conn client talks to an OpenSSL server that
 * lives in the test, both on memory BIOs, with the bytes carried between
 * them by a bounded pump loop.  The PKI (a CA, a server certificate for
 * dns.test and 127.0.0.1, an expired one, and one from an unknown CA) is
 * generated at start-up with EC keys, so nothing depends on files or clocks
 * outside the test.
 */
#include "lib/tls.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

enum { DAY = 24 * 3600, PUMP_ROUNDS = 50 };

/* ---- PKI made at test time ---------------------------------------------- */

struct pki {
	EVP_PKEY *ca_key;
	X509 *ca;
	EVP_PKEY *server_key;
	X509 *server;  /* CN dns.test, SAN DNS:dns.test, IP:127.0.0.1 */
	X509 *expired; /* same names, validity ended yesterday */
	EVP_PKEY *rogue_ca_key;
	X509 *rogue_ca;	    /* not in the trust file */
	X509 *rogue_server; /* dns.test, issued by rogue_ca */
	char ca_path[64];   /* PEM of ca, for tls_ctx_new() */
};

static struct pki pki;

static void add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
	assert_non_null(ext);
	assert_int_equal(X509_add_ext(x, ext, -1), 1);
	X509_EXTENSION_free(ext);
}

/* A certificate for @key signed by @issuer_key (self-signed without @issuer),
 * valid from now + @from to now + @to seconds. */
static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, bool ca,
		       const char *san, long from, long to)
{
	static long serial = 1;
	X509 *x = X509_new();
	X509V3_CTX v3;

	assert_non_null(x);
	assert_int_equal(X509_set_version(x, 2), 1);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), serial++), 1);
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), from));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), to));
	assert_int_equal(X509_set_pubkey(x, key), 1);
	X509_NAME *name = X509_get_subject_name(x);
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
						    (const unsigned char *)cn, -1, -1, 0),
			 1);
	assert_int_equal(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name), 1);
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
	add_ext(x, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
	add_ext(x, &v3, NID_key_usage,
		ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
	add_ext(x, &v3, NID_subject_key_identifier, "hash");
	if (issuer)
		add_ext(x, &v3, NID_authority_key_identifier, "keyid:always");
	if (!ca)
		add_ext(x, &v3, NID_ext_key_usage, "serverAuth");
	if (san)
		add_ext(x, &v3, NID_subject_alt_name, san);
	assert_true(X509_sign(x, issuer_key, EVP_sha256()) > 0);
	return x;
}

static int pki_setup(void **state)
{
	(void)state;
	static const char *const san = "DNS:dns.test,IP:127.0.0.1";

	pki.ca_key = EVP_EC_gen("P-256");
	pki.server_key = EVP_EC_gen("P-256");
	pki.rogue_ca_key = EVP_EC_gen("P-256");
	if (!pki.ca_key || !pki.server_key || !pki.rogue_ca_key)
		return -1;
	pki.ca =
	    make_cert("dotproxy test CA", pki.ca_key, NULL, pki.ca_key, true, NULL, -DAY, 30 * DAY);
	pki.server =
	    make_cert("dns.test", pki.server_key, pki.ca, pki.ca_key, false, san, -DAY, 30 * DAY);
	pki.expired =
	    make_cert("dns.test", pki.server_key, pki.ca, pki.ca_key, false, san, -2 * DAY, -DAY);
	pki.rogue_ca = make_cert("rogue CA", pki.rogue_ca_key, NULL, pki.rogue_ca_key, true, NULL,
				 -DAY, 30 * DAY);
	pki.rogue_server = make_cert("dns.test", pki.server_key, pki.rogue_ca, pki.rogue_ca_key,
				     false, san, -DAY, 30 * DAY);

	snprintf(pki.ca_path, sizeof(pki.ca_path), "/tmp/dotproxy-ca-XXXXXX");
	int fd = mkstemp(pki.ca_path);
	if (fd < 0)
		return -1;
	FILE *f = fdopen(fd, "w");
	if (!f || PEM_write_X509(f, pki.ca) != 1)
		return -1;
	return fclose(f) == 0 ? 0 : -1;
}

static int pki_teardown(void **state)
{
	(void)state;
	unlink(pki.ca_path);
	X509_free(pki.ca);
	X509_free(pki.server);
	X509_free(pki.expired);
	X509_free(pki.rogue_ca);
	X509_free(pki.rogue_server);
	EVP_PKEY_free(pki.ca_key);
	EVP_PKEY_free(pki.server_key);
	EVP_PKEY_free(pki.rogue_ca_key);
	memset(&pki, 0, sizeof(pki));
	return 0;
}

/* ---- the server side ---------------------------------------------------- */

struct server {
	SSL_CTX *ctx;
	SSL *ssl;
	BIO *in;  /* ciphertext from the client; owned by ssl */
	BIO *out; /* ciphertext for the client; owned by ssl */
	char sni[256];
	unsigned char alpn_offered[64];
	unsigned alpn_len;
	const char *alpn_accept; /* the protocol it selects when offered; NULL: "dot" */
};

static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			  const unsigned char *in, unsigned int inlen, void *arg)
{
	struct server *srv = arg;

	(void)ssl;
	if (inlen <= sizeof(srv->alpn_offered)) {
		memcpy(srv->alpn_offered, in, inlen);
		srv->alpn_len = inlen;
	}
	const char *want = srv->alpn_accept ? srv->alpn_accept : "dot";
	size_t want_len = strlen(want);
	for (unsigned i = 0; i < inlen; i += 1u + in[i]) {
		if (in[i] == want_len && i + 1 + want_len <= inlen &&
		    memcmp(in + i + 1, want, want_len) == 0) {
			*out = in + i + 1;
			*outlen = (unsigned char)want_len;
			return SSL_TLSEXT_ERR_OK;
		}
	}
	return SSL_TLSEXT_ERR_NOACK;
}

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
	struct server *srv = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	(void)alert;
	snprintf(srv->sni, sizeof(srv->sni), "%s", name ? name : "");
	return SSL_TLSEXT_ERR_OK;
}

/* @max_version: 0 for OpenSSL's default. */
static void server_init(struct server *srv, X509 *cert, int max_version)
{
	/* Every leaf uses the server key except a CA presented as a leaf. */
	EVP_PKEY *key = cert == pki.rogue_ca ? pki.rogue_ca_key : pki.server_key;

	memset(srv, 0, sizeof(*srv));
	srv->ctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(srv->ctx);
	assert_int_equal(SSL_CTX_use_certificate(srv->ctx, cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(srv->ctx, key), 1);
	if (max_version) {
		/* TLS 1.1 only exists at security level 0 in OpenSSL 3. */
		SSL_CTX_set_security_level(srv->ctx, 0);
		SSL_CTX_set_min_proto_version(srv->ctx, 0);
		assert_int_equal(SSL_CTX_set_max_proto_version(srv->ctx, max_version), 1);
	}
	SSL_CTX_set_alpn_select_cb(srv->ctx, alpn_select_cb, srv);
	SSL_CTX_set_tlsext_servername_callback(srv->ctx, servername_cb);
	SSL_CTX_set_tlsext_servername_arg(srv->ctx, srv);
	srv->ssl = SSL_new(srv->ctx);
	srv->in = BIO_new(BIO_s_mem());
	srv->out = BIO_new(BIO_s_mem());
	assert_non_null(srv->ssl);
	assert_non_null(srv->in);
	assert_non_null(srv->out);
	BIO_set_mem_eof_return(srv->in, -1);
	SSL_set_bio(srv->ssl, srv->in, srv->out);
	SSL_set_accept_state(srv->ssl);
}

/* A fresh server connection on the same context (same ticket keys), as a
 * server process would accept the client's next connection. */
static void server_next_conn(struct server *srv)
{
	SSL_free(srv->ssl);
	srv->sni[0] = '\0';
	srv->alpn_len = 0;
	srv->ssl = SSL_new(srv->ctx);
	srv->in = BIO_new(BIO_s_mem());
	srv->out = BIO_new(BIO_s_mem());
	assert_non_null(srv->ssl);
	assert_non_null(srv->in);
	assert_non_null(srv->out);
	BIO_set_mem_eof_return(srv->in, -1);
	SSL_set_bio(srv->ssl, srv->in, srv->out);
	SSL_set_accept_state(srv->ssl);
}

static void server_deinit(struct server *srv)
{
	SSL_free(srv->ssl);
	SSL_CTX_free(srv->ctx);
	memset(srv, 0, sizeof(*srv));
}

/* Carry whatever the client has produced to the server; bytes moved. */
static size_t client_to_server(struct tls_conn *c, struct server *srv)
{
	uint8_t buf[4096];
	size_t total = 0, n;

	while ((n = tls_conn_out_take(c, buf, sizeof(buf))) > 0) {
		assert_int_equal(BIO_write(srv->in, buf, (int)n), (int)n);
		total += n;
	}
	assert_int_equal(tls_conn_out_pending(c), 0);
	return total;
}

static size_t server_to_client(struct server *srv, struct tls_conn *c)
{
	uint8_t buf[4096];
	size_t total = 0;
	int n;

	while ((n = BIO_read(srv->out, buf, sizeof(buf))) > 0) {
		assert_int_equal(tls_conn_feed(c, buf, (size_t)n), 0);
		total += (size_t)n;
	}
	return total;
}

/*
 * Drive both handshakes until the client reports success and the server has
 * finished too, or the client fails.  Returns the client's last result.
 */
static int pump_handshake(struct tls_conn *c, struct server *srv)
{
	int rc = TLS_EAGAIN;

	for (int round = 0; round < PUMP_ROUNDS; round++) {
		if (rc != 0)
			rc = tls_conn_handshake(c);
		client_to_server(c, srv);
		if (!SSL_is_init_finished(srv->ssl)) {
			ERR_clear_error();
			int s = SSL_do_handshake(srv->ssl);
			if (s <= 0 && SSL_get_error(srv->ssl, s) != SSL_ERROR_WANT_READ) {
				ERR_clear_error();
				if (rc == 0)
					fail_msg("server failed after the client succeeded");
				server_to_client(srv, c);
				/* The client learns of it from the alert. */
				return tls_conn_handshake(c);
			}
		}
		server_to_client(srv, c);
		if (rc == TLS_EPROTO)
			return rc;
		if (rc == 0 && SSL_is_init_finished(srv->ssl))
			return 0;
		assert_int_equal(rc == 0 || rc == TLS_EAGAIN, 1);
	}
	fail_msg("handshake did not finish in %d rounds", PUMP_ROUNDS);
	return TLS_EPROTO;
}

/* A context trusting the test CA, and a connection with the given identity. */
static struct tls_ctx *test_ctx(void)
{
	char err[256] = "";
	struct tls_ctx *ctx = tls_ctx_new(pki.ca_path, err, sizeof(err));
	if (!ctx)
		fail_msg("tls_ctx_new: %s", err);
	return ctx;
}

static void assert_contains(const char *haystack, const char *needle)
{
	if (!strstr(haystack, needle))
		fail_msg("'%s' does not contain '%s'", haystack, needle);
}

/* ---- tests -------------------------------------------------------------- */

static void handshake_by_name(void **state)
{
	(void)state;
	struct tls_ctx *ctx = test_ctx();
	struct tls_conn *c = tls_conn_new(ctx, "dns.test", "127.0.0.1", NULL);
	struct server srv;
	char desc[128];

	assert_non_null(c);
	server_init(&srv, pki.server, 0);
	assert_int_equal(pump_handshake(c, &srv), 0);
	assert_string_equal(srv.sni, "dns.test");
	assert_int_equal(srv.alpn_len, 4);
	assert_memory_equal(srv.alpn_offered, "\3dot", 4);
	tls_conn_describe(c, desc, sizeof(desc));
	assert_contains(desc, "TLSv1.3");
	/* Handshake again once done: still done. */
	assert_int_equal(tls_conn_handshake(c), 0);
	tls_conn_free(c);
	server_deinit(&srv);
	tls_ctx_free(ctx);
}

static void handshake_by_ip(void **state)
{
	(void)state;
	struct tls_ctx *ctx = test_ctx();
	struct tls_conn *c = tls_conn_new(ctx, NULL, "127.0.0.1", NULL);
	struct server srv;

	assert_non_null(c);
	server_init(&srv, pki.server, 0);
	assert_int_equal(pump_handshake(c, &srv), 0);
	assert_string_equal(srv.sni, ""); /* RFC 6066 §3: no IP literals in SNI */
	tls_conn_free(c);
	server_deinit(&srv);
	tls_ctx_free(ctx);
}

/* DoH: the connection offers "h2" alone and needs the server to pick it. */
static void alpn_h2_required_and_selected(void **state)
{
	(void)state;
	struct tls_ctx *ctx = test_ctx();
	struct tls_conn *c = tls_conn_new(ctx, "dns.test", NULL, NULL);
	struct server srv;

	assert_non_null(c);
	assert_int_equal(tls_conn_require_alpn(c, "h2"), 0);
	server_init(&srv, pki.server, 0);
	srv.alpn_accept = "h2";
	assert_int_equal(pump_handshake(c, &srv), 0);
	assert_int_equal(srv.alpn_len, 3);
	assert_memory_equal(srv.alpn_offered, "\2h2", 3);
	tls_conn_free(c);
	server_deinit(&srv);
	tls_ctx_free(ctx);
}

/* A server that does not select h2 (it knows only "dot", or ignores ALPN)
 * cannot carry DoH: the handshake fails, saying so.  The context's other
 * connections still offer "dot". */
static void alpn_h2_not_selected_fails(void **state)
{
	(void)state;
	struct tls_ctx *ctx = test_ctx();
	struct tls_conn *c = tls_conn_new(ctx, "dns.test", NULL, NULL);
	struct server srv;

	assert_non_null(c);
	assert_int_equal(tls_conn_require_alpn(c, "h2"), 0);
	server_init(&srv, pki.server, 0); /* selects "dot" only */
	assert_int_equal(pump_handshake(c, &srv), TLS_EPROTO);
	assert_contains(tls_conn_error(c), "did not select ALPN \"h2\"");
	tls_conn_free(c);
	server_deinit(&srv);

	c = tls_conn_new(ctx, "dns.test", NULL, NULL);
	assert_non_null(c);
	server_init(&srv, pki.server, 0);
	assert_int_equal(pump_handshake(c, &srv), 0);
	assert_memory_equal(srv.alpn_offered, "\3dot", 4);
	tls_conn_free(c);
	server_deinit(&srv);
	c = tls_conn_new(ctx, "dns.test", NULL, NULL);
	assert_int_equal(tls_conn_require_alpn(c, ""), TLS_EPROTO);
	tls_conn_free(c);
	tls_ctx_free(ctx);
}

static void handshake_tls12(void **state)
{
	(void)state;
	struct tls_ctx *ctx = test_ctx();
	struct tls_conn *c = tls_conn_new(ctx, "dns.test", NULL, NULL);
	struct server srv;
	char desc[128];

	assert_non_null(c);
	server_init(&srv, pki.server, TLS1_2_VERSION);
	assert_int_equal(pump_handshake(c, &srv), 0);
	tls_conn_describe(c, desc, sizeof(desc));
	assert_contains(desc, "TLSv1.2");
	tls_conn_free(c);
	server_deinit(&srv);
	tls_ctx_free(ctx);
}

/* Expect the handshake with @cert to fail with an error mentioning @why. */
static void expect_failure(X509 *cert, const char *auth_name, const char *ip, int max_version,
			   const char *why)
{
	struct tls_ctx *ctx = test_ctx();
	struct tls_conn *c = tls_conn_new(ctx, auth_name, ip, NULL);
	struct server srv;

	assert_non_null(c);
	server_init(&srv, cert, max_version);
	assert_int_equal(pump_handshake(c, &srv), TLS_EPROTO);
	assert_contains(tls_conn_error(c), why);
	/* Failed for good: later calls do not turn it into success. */
	assert_int_equal(tls_conn_handshake(c), TLS_EPROTO);
	uint8_t buf[16];
	assert_true(tls_conn_read(c, buf, sizeof(buf)) < 0);
	tls_conn_free(c);
	server_deinit(&srv);
	tls_ctx_free(ctx);
}

static void hostname_mismatch(void **state)
{
	(void)state;
	expect_failure(pki.server, "other.test", NULL, 0, "hostname mismatch");
	/* No partial wildcard or suffix matching either. */
	expect_failure(pki.server, "test", NULL, 0, "hostname mismatch");
	expect_failure(pki.server, "x.dns.test", NULL, 0, "hostname mismatch");
}

static void ip_mismatch(void **state)
{
	(void)state;
	expect_failure(pki.server, NULL, "127.0.0.2", 0, "IP address mismatch");
	expect_failure(pki.server, NULL, "::1", 0, "IP address mismatch");
}

static void unknown_ca(void **state)
{
	(void)state;
	expect_failure(pki.rogue_server, "dns.test", NULL, 0, "unable to get local issuer");
	expect_failure(pki.rogue_server, NULL, "127.0.0.1", 0, "certificate verification failed");
	/* The CA certificate itself presented as the leaf is no help. */
	expect_failure(pki.rogue_ca, "dns.test", NULL, 0, "certificate verification failed");
}

static void expired(void **state)
{
	(void)state;
	expect_failure(pki.expired, "dns.test", NULL, 0, "certificate has expired");
}

static void old_protocol_refused(void **state)
{
	(void)state;
	/* A server stuck at TLS 1.1: below the client's minimum. */
	struct tls_ctx *ctx = test_ctx();
	struct tls_conn *c = tls_conn_new(ctx, "dns.test", NULL, NULL);
	struct server srv;

	assert_non_null(c);
	server_init(&srv, pki.server, TLS1_1_VERSION);
	assert_int_equal(pump_handshake(c, &srv), TLS_EPROTO);
	assert_true(strlen(tls_conn_error(c)) > 0);
	tls_conn_free(c);
	server_deinit(&srv);
	tls_ctx_free(ctx);
}

static void verification_failure_sends_alert(void **state)
{
	(void)state;
	struct tls_ctx *ctx = test_ctx();
	struct tls_conn *c = tls_conn_new(ctx, "wrong.test", NULL, NULL);
	struct server srv;

	assert_non_null(c);
	server_init(&srv, pki.server, 0);
	assert_int_equal(pump_handshake(c, &srv), TLS_EPROTO);
	/* The pump carried the client's last bytes, an alert, to the server:
	 * the server fails instead of waiting for a Finished that never comes. */
	client_to_server(c, &srv);
	ERR_clear_error();
	int s = SSL_do_handshake(srv.ssl);
	if (s != 1) {
		assert_int_not_equal(SSL_get_error(srv.ssl, s), SSL_ERROR_WANT_READ);
	} else {
		uint8_t buf[16];
		ERR_clear_error();
		s = SSL_read(srv.ssl, buf, sizeof(buf));
		assert_true(s <= 0);
		assert_int_not_equal(SSL_get_error(srv.ssl, s), SSL_ERROR_WANT_READ);
	}
	ERR_clear_error();
	tls_conn_free(c);
	server_deinit(&srv);
	tls_ctx_free(ctx);
}

static void garbage_from_server(void **state)
{
	(void)state;
	struct tls_ctx *ctx = test_ctx();
	struct tls_conn *c = tls_conn_new(ctx, "dns.test", NULL, NULL);
	static const uint8_t junk[] = "HTTP/1.1 400 Bad Request\r\n\r\n";

	assert_non_null(c);
	assert_int_equal(tls_conn_handshake(c), TLS_EAGAIN);
	assert_true(tls_conn_out_pending(c) > 0); /* the ClientHello */
	assert_int_equal(tls_conn_feed(c, junk, sizeof(junk) - 1), 0);
	assert_int_equal(tls_conn_handshake(c), TLS_EPROTO);
	assert_true(strlen(tls_conn_error(c)) > 0);
	tls_conn_free(c);
	tls_ctx_free(ctx);
}

/* Read from the server until @want bytes arrived; bounded. */
static void server_read_all(struct server *srv, uint8_t *buf, size_t want)
{
	size_t got = 0;

	for (int i = 0; got < want && i < 10000; i++) {
		size_t n = 0;
		ERR_clear_error();
		if (SSL_read_ex(srv->ssl, buf + got, want - got, &n) == 1)
			got += n;
		else
			break;
	}
	assert_int_equal(got, want);
}

/* Read from the client until @want bytes arrived; bounded. */
static void client_read_all(struct tls_conn *c, uint8_t *buf, size_t want)
{
	size_t got = 0;

	for (int i = 0; got < want && i < 10000; i++) {
		int n = tls_conn_read(c, buf + got, want - got);
		if (n == TLS_EAGAIN)
			break;
		assert_true(n > 0);
		got += (size_t)n;
	}
	assert_int_equal(got, want);
}

static void established(struct tls_ctx **ctx, struct tls_conn **c, struct server *srv)
{
	*ctx = test_ctx();
	*c = tls_conn_new(*ctx, "dns.test", NULL, NULL);
	assert_non_null(*c);
	server_init(srv, pki.server, 0);
	assert_int_equal(pump_handshake(*c, srv), 0);
}

static void roundtrip(void **state)
{
	(void)state;
	struct tls_ctx *ctx;
	struct tls_conn *c;
	struct server srv;
	uint8_t buf[256];

	established(&ctx, &c, &srv);
	/* Nothing sent yet (session tickets are not application data). */
	assert_int_equal(tls_conn_read(c, buf, sizeof(buf)), TLS_EAGAIN);

	static const uint8_t query[] = "\0\x1d query bytes, length-prefixed";
	assert_int_equal(tls_conn_write(c, query, sizeof(query)), 0);
	assert_true(tls_conn_out_pending(c) > sizeof(query)); /* record overhead */
	client_to_server(c, &srv);
	server_read_all(&srv, buf, sizeof(query));
	assert_memory_equal(buf, query, sizeof(query));

	static const uint8_t answer[] = "answer bytes";
	assert_int_equal(SSL_write(srv.ssl, answer, sizeof(answer)), (int)sizeof(answer));
	server_to_client(&srv, c);
	client_read_all(c, buf, sizeof(answer));
	assert_memory_equal(buf, answer, sizeof(answer));
	assert_int_equal(tls_conn_read(c, buf, sizeof(buf)), TLS_EAGAIN);

	/* Several writes before one flush (pipelining) arrive in order. */
	for (uint8_t i = 0; i < 10; i++)
		assert_int_equal(tls_conn_write(c, &i, 1), 0);
	client_to_server(c, &srv);
	server_read_all(&srv, buf, 10);
	for (uint8_t i = 0; i < 10; i++)
		assert_int_equal(buf[i], i);

	/* Ciphertext trickling in a byte at a time. */
	assert_int_equal(SSL_write(srv.ssl, answer, sizeof(answer)), (int)sizeof(answer));
	uint8_t cipher[512];
	int n = BIO_read(srv.out, cipher, sizeof(cipher));
	assert_true(n > 0);
	for (int i = 0; i < n - 1; i++) {
		assert_int_equal(tls_conn_feed(c, cipher + i, 1), 0);
		assert_int_equal(tls_conn_read(c, buf, sizeof(buf)), TLS_EAGAIN);
	}
	assert_int_equal(tls_conn_feed(c, cipher + n - 1, 1), 0);
	client_read_all(c, buf, sizeof(answer));
	assert_memory_equal(buf, answer, sizeof(answer));

	tls_conn_free(c);
	server_deinit(&srv);
	tls_ctx_free(ctx);
}

static void roundtrip_large(void **state)
{
	(void)state;
	struct tls_ctx *ctx;
	struct tls_conn *c;
	struct server srv;
	enum { BIG = 65537 }; /* the largest framed DNS message */
	uint8_t *out = malloc(BIG), *in = malloc(BIG);

	assert_non_null(out);
	assert_non_null(in);
	for (size_t i = 0; i < BIG; i++)
		out[i] = (uint8_t)(i * 13 + 5);
	established(&ctx, &c, &srv);

	/* One write of several records' worth. */
	assert_int_equal(tls_conn_write(c, out, BIG), 0);
	client_to_server(c, &srv);
	server_read_all(&srv, in, BIG);
	assert_memory_equal(in, out, BIG);

	size_t written = 0;
	assert_int_equal(SSL_write_ex(srv.ssl, out, BIG, &written), 1);
	assert_int_equal(written, BIG);
	server_to_client(&srv, c);
	/* A small read buffer: the plaintext comes out in pieces. */
	size_t got = 0;
	for (int i = 0; got < BIG && i < 100000; i++) {
		int n = tls_conn_read(c, in + got, BIG - got < 1000 ? BIG - got : 1000);
		assert_true(n > 0);
		got += (size_t)n;
	}
	assert_int_equal(got, BIG);
	assert_memory_equal(in, out, BIG);

	free(out);
	free(in);
	tls_conn_free(c);
	server_deinit(&srv);
	tls_ctx_free(ctx);
}

static void peer_close_notify(void **state)
{
	(void)state;
	struct tls_ctx *ctx;
	struct tls_conn *c;
	struct server srv;
	uint8_t buf[64];

	established(&ctx, &c, &srv);
	/* Data, then close_notify, in one delivery: the data comes first. */
	assert_int_equal(SSL_write(srv.ssl, "bye", 3), 3);
	ERR_clear_error();
	assert_true(SSL_shutdown(srv.ssl) >= 0);
	server_to_client(&srv, c);
	client_read_all(c, buf, 3);
	assert_memory_equal(buf, "bye", 3);
	assert_int_equal(tls_conn_read(c, buf, sizeof(buf)), TLS_ECLOSED);
	assert_contains(tls_conn_error(c), "closed");
	assert_int_equal(tls_conn_read(c, buf, sizeof(buf)), TLS_ECLOSED);
	tls_conn_free(c);
	server_deinit(&srv);
	tls_ctx_free(ctx);
}

static void our_shutdown(void **state)
{
	(void)state;
	struct tls_ctx *ctx;
	struct tls_conn *c;
	struct server srv;
	uint8_t buf[64];

	established(&ctx, &c, &srv);
	client_to_server(c, &srv);
	tls_conn_shutdown(c);
	assert_true(tls_conn_out_pending(c) > 0);
	client_to_server(c, &srv);
	ERR_clear_error();
	int n = SSL_read(srv.ssl, buf, sizeof(buf));
	assert_true(n <= 0);
	assert_int_equal(SSL_get_error(srv.ssl, n), SSL_ERROR_ZERO_RETURN);
	tls_conn_shutdown(c); /* twice: harmless */
	tls_conn_free(c);
	server_deinit(&srv);
	tls_ctx_free(ctx);
}

/* One connection through @slot: handshake, let the client take the session
 * tickets, close in order.  Returns whether it was resumed. */
static bool connect_once(struct tls_ctx *ctx, struct server *srv, struct tls_session *slot,
			 const char *auth_name, bool orderly_close)
{
	struct tls_conn *c = tls_conn_new(ctx, auth_name, NULL, slot);
	uint8_t buf[16];

	assert_non_null(c);
	server_next_conn(srv);
	assert_int_equal(pump_handshake(c, srv), 0);
	/* TLS 1.3 tickets arrive after the handshake, read like data. */
	assert_int_equal(tls_conn_read(c, buf, sizeof(buf)), TLS_EAGAIN);
	bool resumed = tls_conn_resumed(c) != 0;
	char desc[128];
	tls_conn_describe(c, desc, sizeof(desc));
	assert_int_equal(strstr(desc, "(resumed)") != NULL, resumed);
	if (orderly_close) {
		tls_conn_shutdown(c);
		client_to_server(c, srv);
	}
	tls_conn_free(c);
	return resumed;
}

static void session_resumption(void **state)
{
	(void)state;
	struct tls_ctx *ctx = test_ctx();
	struct tls_session *slot = tls_session_new();
	struct server srv;

	assert_non_null(slot);
	server_init(&srv, pki.server, 0);
	assert_false(connect_once(ctx, &srv, slot, "dns.test", true));
	assert_true(connect_once(ctx, &srv, slot, "dns.test", true));
	assert_true(connect_once(ctx, &srv, slot, "dns.test", true));

	/* A connection without a slot neither offers nor stores a session. */
	struct tls_conn *c = tls_conn_new(ctx, "dns.test", NULL, NULL);
	assert_non_null(c);
	server_next_conn(&srv);
	assert_int_equal(pump_handshake(c, &srv), 0);
	assert_false(tls_conn_resumed(c));
	tls_conn_free(c);

	/* A fresh slot starts with a full handshake. */
	struct tls_session *other = tls_session_new();
	assert_non_null(other);
	assert_false(connect_once(ctx, &srv, other, "dns.test", true));
	tls_session_free(other);

	server_deinit(&srv);
	tls_session_free(slot);
	tls_session_free(NULL);
	tls_ctx_free(ctx);
}

/*
 * A session must never let a connection skip verification it would fail:
 * the slot holds a session for dns.test, and a connection to the same server
 * under another name must still fail with a hostname mismatch.
 */
static void resumption_keeps_verification(void **state)
{
	(void)state;
	struct tls_ctx *ctx = test_ctx();
	struct tls_session *slot = tls_session_new();
	struct server srv;

	assert_non_null(slot);
	server_init(&srv, pki.server, 0);
	assert_false(connect_once(ctx, &srv, slot, "dns.test", true));

	struct tls_conn *c = tls_conn_new(ctx, "other.test", NULL, slot);
	assert_non_null(c);
	server_next_conn(&srv);
	int rc = pump_handshake(c, &srv);
	bool resumed = tls_conn_resumed(c) != 0;
	char why[256];
	snprintf(why, sizeof(why), "%s", tls_conn_error(c));
	/* Free before asserting, so that a failure here leaks nothing. */
	tls_conn_free(c);
	server_deinit(&srv);
	tls_session_free(slot);
	tls_ctx_free(ctx);
	if (rc == 0)
		fail_msg("handshake as other.test succeeded (%s) on a certificate for dns.test",
			 resumed ? "resumed" : "full");
	assert_int_equal(rc, TLS_EPROTO);
	assert_contains(why, "hostname mismatch");
}

static void corrupted_record(void **state)
{
	(void)state;
	struct tls_ctx *ctx;
	struct tls_conn *c;
	struct server srv;
	uint8_t cipher[512], buf[64];

	established(&ctx, &c, &srv);
	/* Let the client consume the session tickets first. */
	assert_int_equal(tls_conn_read(c, buf, sizeof(buf)), TLS_EAGAIN);
	assert_int_equal(SSL_write(srv.ssl, "answer", 6), 6);
	int n = BIO_read(srv.out, cipher, sizeof(cipher));
	assert_true(n > 10);
	cipher[n - 3] ^= 0x40; /* inside the authentication tag */
	assert_int_equal(tls_conn_feed(c, cipher, (size_t)n), 0);
	assert_int_equal(tls_conn_read(c, buf, sizeof(buf)), TLS_EPROTO);
	assert_contains(tls_conn_error(c), "TLS read failed");
	tls_conn_free(c);
	server_deinit(&srv);
	tls_ctx_free(ctx);
}

static void read_before_handshake(void **state)
{
	(void)state;
	struct tls_ctx *ctx = test_ctx();
	struct tls_conn *c = tls_conn_new(ctx, "dns.test", NULL, NULL);
	uint8_t buf[8];

	assert_non_null(c);
	/* Before any handshake bytes came back there is nothing to read. */
	assert_int_equal(tls_conn_read(c, buf, sizeof(buf)), TLS_EAGAIN);
	assert_int_equal(tls_conn_out_take(c, buf, 0), 0);
	tls_conn_free(c);
	tls_ctx_free(ctx);
}

static void ctx_errors(void **state)
{
	(void)state;
	char err[256];

	err[0] = '\0';
	assert_null(tls_ctx_new("/nonexistent/ca.pem", err, sizeof(err)));
	/* What the system said, not an OpenSSL code ("system lib"). */
	assert_string_equal(err,
			    "cannot read trust anchors from /nonexistent/ca.pem: No such file or "
			    "directory");
	assert_null(tls_ctx_new("/tmp", err, sizeof(err)));
	assert_string_equal(err, "cannot read trust anchors from /tmp: Is a directory");

	/* A file that is not PEM. */
	char path[64];
	snprintf(path, sizeof(path), "/tmp/dotproxy-notpem-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "not a certificate\n", 18), 18);
	close(fd);
	err[0] = '\0';
	assert_null(tls_ctx_new(path, err, sizeof(err)));
	assert_contains(err, path);
	assert_contains(err, "no certificate or crl found (expected PEM certificates)");
	assert_null(strstr(err, "error:")); /* no OpenSSL code */
	unlink(path);

	/* The system store always yields a context (it may be empty). */
	struct tls_ctx *ctx = tls_ctx_new(NULL, err, sizeof(err));
	assert_non_null(ctx);
	tls_ctx_free(ctx);
	tls_ctx_free(NULL);
	tls_conn_free(NULL);
}

static void system_store_rejects_test_ca(void **state)
{
	(void)state;
	char err[256];
	struct tls_ctx *ctx = tls_ctx_new(NULL, err, sizeof(err));
	struct tls_conn *c;
	struct server srv;

	assert_non_null(ctx);
	c = tls_conn_new(ctx, "dns.test", NULL, NULL);
	assert_non_null(c);
	server_init(&srv, pki.server, 0);
	assert_int_equal(pump_handshake(c, &srv), TLS_EPROTO);
	assert_contains(tls_conn_error(c), "certificate verification failed");
	tls_conn_free(c);
	server_deinit(&srv);
	tls_ctx_free(ctx);
}

/* ---- our server side --------------------------------------------------- */

/* PEM files of @cert and @key in /tmp; the paths go to @cert_path and
 * @key_path (64 bytes each), unlinked by the caller. */
static void write_pair(X509 *cert, EVP_PKEY *key, char *cert_path, char *key_path)
{
	snprintf(cert_path, 64, "/tmp/dotproxy-cert-XXXXXX");
	snprintf(key_path, 64, "/tmp/dotproxy-key-XXXXXX");
	FILE *c = fdopen(mkstemp(cert_path), "w");
	FILE *k = fdopen(mkstemp(key_path), "w");
	assert_non_null(c);
	assert_non_null(k);
	assert_int_equal(PEM_write_X509(c, cert), 1);
	assert_int_equal(PEM_write_PrivateKey(k, key, NULL, NULL, 0, NULL, NULL), 1);
	fclose(c);
	fclose(k);
}

/* Carry bytes both ways between our client and our server until neither
 * has anything to say; the handshake results of both. */
static void pump_ours(struct tls_conn *c, struct tls_conn *srv, int *crc, int *src)
{
	uint8_t buf[16384];
	size_t n;

	*crc = *src = TLS_EAGAIN;
	for (int round = 0; round < PUMP_ROUNDS; round++) {
		if (*crc == TLS_EAGAIN)
			*crc = tls_conn_handshake(c);
		while ((n = tls_conn_out_take(c, buf, sizeof(buf))) > 0)
			assert_int_equal(tls_conn_feed(srv, buf, n), 0);
		if (*src == TLS_EAGAIN)
			*src = tls_conn_handshake(srv);
		while ((n = tls_conn_out_take(srv, buf, sizeof(buf))) > 0)
			assert_int_equal(tls_conn_feed(c, buf, n), 0);
		if (*crc != TLS_EAGAIN && *src != TLS_EAGAIN)
			return;
	}
}

static void server_ctx_handshake_alpn_and_resumption(void **state)
{
	(void)state;
	char cert[64], key[64], err[512] = "", alpn[16];
	write_pair(pki.server, pki.server_key, cert, key);
	struct tls_ctx *sctx = tls_server_ctx_new(cert, key, TLS_SERVER_DOT, err, sizeof(err));
	if (!sctx)
		fail_msg("tls_server_ctx_new: %s", err);
	tls_server_ctx_describe(sctx, err, sizeof(err));
	assert_contains(err, "CN=dns.test, serial ");
	struct tls_ctx *cctx = test_ctx();
	struct tls_session *slot = tls_session_new();

	for (int i = 0; i < 2; i++) {
		struct tls_conn *c = tls_conn_new(cctx, "dns.test", NULL, slot);
		struct tls_conn *srv = tls_conn_new_server(sctx);
		int crc, src;
		pump_ours(c, srv, &crc, &src);
		assert_int_equal(crc, 0);
		assert_int_equal(src, 0);
		tls_conn_alpn(srv, alpn, sizeof(alpn));
		assert_string_equal(alpn, "dot");
		/* Data both ways (TLS 1.3 tickets ride along with it). */
		uint8_t got[8];
		assert_int_equal(tls_conn_write(c, (const uint8_t *)"ping", 4), 0);
		int crc2, src2;
		pump_ours(c, srv, &crc2, &src2);
		assert_int_equal(tls_conn_read(srv, got, sizeof(got)), 4);
		assert_int_equal(tls_conn_write(srv, (const uint8_t *)"pong", 4), 0);
		pump_ours(c, srv, &crc2, &src2);
		assert_int_equal(tls_conn_read(c, got, sizeof(got)), 4);
		assert_memory_equal(got, "pong", 4);
		assert_int_equal(tls_conn_resumed(srv), i == 1); /* the ticket of the first */
		tls_conn_shutdown(c);
		tls_conn_free(c);
		tls_conn_free(srv);
	}
	tls_session_free(slot);
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
	unlink(cert);
	unlink(key);
}

/* An h2-only context refuses a client that offers only "dot". */
static void server_ctx_h2_only_refuses_other_alpn(void **state)
{
	(void)state;
	char cert[64], key[64], err[512] = "";
	write_pair(pki.server, pki.server_key, cert, key);
	struct tls_ctx *sctx = tls_server_ctx_new(cert, key, TLS_SERVER_H2, err, sizeof(err));
	assert_non_null(sctx);
	struct tls_ctx *cctx = test_ctx();
	struct tls_conn *c = tls_conn_new(cctx, "dns.test", NULL, NULL); /* offers "dot" */
	struct tls_conn *srv = tls_conn_new_server(sctx);
	int crc, src;
	pump_ours(c, srv, &crc, &src);
	assert_int_equal(src, TLS_EPROTO);
	assert_int_equal(crc, TLS_EPROTO);
	assert_contains(tls_conn_error(c), "no application protocol");
	tls_conn_free(c);
	tls_conn_free(srv);
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
	unlink(cert);
	unlink(key);
}

static void server_ctx_errors_name_the_cause(void **state)
{
	(void)state;
	char cert[64], key[64], other_cert[64], other_key[64], err[512] = "";
	write_pair(pki.server, pki.server_key, cert, key);
	write_pair(pki.ca, pki.ca_key, other_cert, other_key);

	assert_null(
	    tls_server_ctx_new("/nonexistent/cert.pem", key, TLS_SERVER_DOT, err, sizeof(err)));
	assert_string_equal(err, "--cert-file /nonexistent/cert.pem: No such file or directory");
	assert_null(tls_server_ctx_new(cert, other_key, TLS_SERVER_DOT, err, sizeof(err)));
	char want[256];
	snprintf(want, sizeof(want), "--key-file %s is not the key of the certificate in %s",
		 other_key, cert);
	assert_string_equal(err, want);
	/* A key file that holds a certificate, not a key. */
	assert_null(tls_server_ctx_new(cert, other_cert, TLS_SERVER_DOT, err, sizeof(err)));
	assert_contains(err, "no PEM private key in it");
	/* A certificate file that holds a key. */
	assert_null(tls_server_ctx_new(key, key, TLS_SERVER_DOT, err, sizeof(err)));
	assert_contains(err, "no usable PEM certificate chain");
	unlink(cert);
	unlink(key);
	unlink(other_cert);
	unlink(other_key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(handshake_by_name),
		cmocka_unit_test(server_ctx_handshake_alpn_and_resumption),
		cmocka_unit_test(server_ctx_h2_only_refuses_other_alpn),
		cmocka_unit_test(server_ctx_errors_name_the_cause),
		cmocka_unit_test(handshake_by_ip),
		cmocka_unit_test(handshake_tls12),
		cmocka_unit_test(alpn_h2_required_and_selected),
		cmocka_unit_test(alpn_h2_not_selected_fails),
		cmocka_unit_test(hostname_mismatch),
		cmocka_unit_test(ip_mismatch),
		cmocka_unit_test(unknown_ca),
		cmocka_unit_test(expired),
		cmocka_unit_test(old_protocol_refused),
		cmocka_unit_test(verification_failure_sends_alert),
		cmocka_unit_test(garbage_from_server),
		cmocka_unit_test(roundtrip),
		cmocka_unit_test(roundtrip_large),
		cmocka_unit_test(peer_close_notify),
		cmocka_unit_test(our_shutdown),
		cmocka_unit_test(session_resumption),
		cmocka_unit_test(resumption_keeps_verification),
		cmocka_unit_test(corrupted_record),
		cmocka_unit_test(read_before_handshake),
		cmocka_unit_test(ctx_errors),
		cmocka_unit_test(system_store_rejects_test_ca),
	};

	return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
