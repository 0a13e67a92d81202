/*
 * TLS on OpenSSL 3 memory BIOs.  The error queue is cleared before every
 * SSL_* call so that an error reported belongs to that call, and every
 * SSL_get_error() outcome is mapped to one of our three results.
 */
#include "lib/tls.h"

#include <errno.h>
#include <stdbool.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tls_ctx {
	SSL_CTX *ssl_ctx;
	bool opportunistic;
};

/* TLS 1.3 tickets are single-use and servers send two or more per full
 * handshake (often none on a resumption), so keep a few: each reconnect
 * spends one, and a run of reconnects stays cheap. */
enum { KEPT_SESSIONS = 4 };

struct tls_session {
	SSL_SESSION *kept[KEPT_SESSIONS]; /* owned references, newest last */
	unsigned n;
	char peer[256]; /* the name (or IP) the kept sessions were verified for */
};

struct tls_conn {
	SSL *ssl;
	bool opportunistic;
	struct tls_session *resume; /* not owned */
	uint8_t (*pins)[32];	    /* owned copy, or NULL */
	unsigned n_pins;
	char auth_failure[256]; /* opportunistic: why authentication failed */
	char alpn[32];		/* tls_conn_require_alpn(): the protocol the server must select */
	BIO *in;		/* ciphertext from the peer, read by OpenSSL; owned by ssl */
	BIO *out;		/* ciphertext for the peer, written by OpenSSL; owned by ssl */
	char error[256];
};

static void openssl_error(char *buf, size_t cap, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	char reason[200];

	if (e) {
		ERR_error_string_n(e, reason, sizeof(reason));
		snprintf(buf, cap, "%s: %s", what, reason);
	} else {
		snprintf(buf, cap, "%s", what);
	}
	ERR_clear_error();
}

struct tls_session *tls_session_new(void)
{
	return calloc(1, sizeof(struct tls_session));
}

void tls_session_free(struct tls_session *s)
{
	if (!s)
		return;
	for (unsigned i = 0; i < s->n; i++)
		SSL_SESSION_free(s->kept[i]);
	free(s);
}

static void keep_session(struct tls_session *s, SSL_SESSION *session)
{
	if (s->n == KEPT_SESSIONS) {
		SSL_SESSION_free(s->kept[0]);
		memmove(s->kept, s->kept + 1, (KEPT_SESSIONS - 1) * sizeof(s->kept[0]));
		s->n--;
	}
	s->kept[s->n++] = session;
}

/* Take the newest resumable session out of @s (the caller owns it), or NULL.
 * A resumed session skips certificate checks, so sessions verified for
 * another peer identity are discarded rather than offered. */
static SSL_SESSION *take_session(struct tls_session *s, const char *peer)
{
	if (strcmp(s->peer, peer) != 0) {
		while (s->n > 0)
			SSL_SESSION_free(s->kept[--s->n]);
		snprintf(s->peer, sizeof(s->peer), "%s", peer);
	}
	while (s->n > 0) {
		SSL_SESSION *session = s->kept[--s->n];
		if (SSL_SESSION_is_resumable(session))
			return session;
		SSL_SESSION_free(session);
	}
	return NULL;
}

/* OpenSSL hands over each new session (TLS 1.3: each ticket, possibly after
 * the handshake); keep the latest in the connection's slot. */
static int new_session_cb(SSL *ssl, SSL_SESSION *session)
{
	struct tls_conn *conn = SSL_get_app_data(ssl);

	if (!conn || !conn->resume)
		return 0;
	keep_session(conn->resume, session);
	return 1; /* we keep the reference */
}

struct tls_ctx *tls_ctx_new(const char *ca_file, char *err, size_t errlen)
{
	static const unsigned char alpn[] = { 3, 'd', 'o', 't' };
	struct tls_ctx *ctx = calloc(1, sizeof(*ctx));
	int ok;

	if (!ctx) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ERR_clear_error();
	ctx->ssl_ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx->ssl_ctx) {
		openssl_error(err, errlen, "cannot create TLS context");
		goto fail;
	}
	SSL_CTX_set_min_proto_version(ctx->ssl_ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_mode(ctx->ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(ctx->ssl_ctx,
				       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx->ssl_ctx, new_session_cb);
	/* RFC 8310 §8.2: no renegotiation, no compression. */
	SSL_CTX_set_options(ctx->ssl_ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	if (SSL_CTX_set_alpn_protos(ctx->ssl_ctx, alpn, sizeof(alpn)) != 0) {
		openssl_error(err, errlen, "cannot set ALPN");
		goto fail;
	}
	if (ca_file)
		ok = SSL_CTX_load_verify_locations(ctx->ssl_ctx, ca_file, NULL);
	else
		ok = SSL_CTX_set_default_verify_paths(ctx->ssl_ctx);
	if (ok != 1) {
		char what[300];
		snprintf(what, sizeof(what), "cannot load trust anchors from %s",
			 ca_file ? ca_file : "the system store");
		openssl_error(err, errlen, what);
		goto fail;
	}
	return ctx;
fail:
	tls_ctx_free(ctx);
	return NULL;
}

/* Opportunistic profile: note the failure, carry on (RFC 8310 §5). */
static int verify_anyway_cb(int ok, X509_STORE_CTX *store)
{
	(void)ok;
	(void)store;
	return 1;
}

void tls_ctx_set_opportunistic(struct tls_ctx *ctx)
{
	ctx->opportunistic = true;
	SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_PEER, verify_anyway_cb);
}

void tls_ctx_free(struct tls_ctx *ctx)
{
	if (!ctx)
		return;
	SSL_CTX_free(ctx->ssl_ctx);
	free(ctx);
}

struct tls_conn *tls_conn_new(struct tls_ctx *ctx, const char *auth_name, const char *ip_text,
			      struct tls_session *resume)
{
	struct tls_conn *conn = calloc(1, sizeof(*conn));

	if (!conn)
		return NULL;
	ERR_clear_error();
	conn->ssl = SSL_new(ctx->ssl_ctx);
	conn->in = BIO_new(BIO_s_mem());
	conn->out = BIO_new(BIO_s_mem());
	if (!conn->ssl || !conn->in || !conn->out)
		goto fail;
	/* An empty input BIO means "wait for more", not end of file. */
	BIO_set_mem_eof_return(conn->in, -1);
	SSL_set_bio(conn->ssl, conn->in, conn->out); /* ssl owns both from here */
	SSL_set_connect_state(conn->ssl);
	SSL_set_app_data(conn->ssl, conn);
	conn->opportunistic = ctx->opportunistic;
	conn->resume = resume;
	if (resume) {
		SSL_SESSION *session = take_session(resume, auth_name ? auth_name : ip_text);
		if (session) {
			SSL_set_session(conn->ssl, session); /* takes its own reference */
			SSL_SESSION_free(session);
		}
	}
	if (auth_name) {
		SSL_set_hostflags(conn->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (SSL_set_tlsext_host_name(conn->ssl, auth_name) != 1 ||
		    SSL_set1_host(conn->ssl, auth_name) != 1)
			goto fail_ssl;
	} else {
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(conn->ssl), ip_text) != 1)
			goto fail_ssl;
	}
	return conn;
fail:
	BIO_free(conn->in);
	BIO_free(conn->out);
	SSL_free(conn->ssl);
	free(conn);
	return NULL;
fail_ssl:
	tls_conn_free(conn);
	return NULL;
}

void tls_conn_free(struct tls_conn *conn)
{
	if (!conn)
		return;
	SSL_free(conn->ssl);
	free(conn->pins);
	free(conn);
}

void tls_conn_set_pins(struct tls_conn *conn, const uint8_t (*pins)[32], unsigned n)
{
	free(conn->pins);
	conn->pins = NULL;
	conn->n_pins = 0;
	if (n == 0)
		return;
	conn->pins = malloc(n * sizeof(*pins));
	if (!conn->pins)
		abort(); /* tiny and bounded: no memory left means no service */
	memcpy(conn->pins, pins, n * sizeof(*pins));
	conn->n_pins = n;
}

int tls_conn_require_alpn(struct tls_conn *conn, const char *proto)
{
	unsigned char wire[sizeof(conn->alpn)];
	size_t len = strlen(proto);

	if (len == 0 || len >= sizeof(conn->alpn))
		return TLS_EPROTO;
	wire[0] = (unsigned char)len;
	memcpy(wire + 1, proto, len);
	ERR_clear_error();
	/* Per connection: it replaces the context's "dot" for this one only. */
	if (SSL_set_alpn_protos(conn->ssl, wire, (unsigned)len + 1) != 0) {
		ERR_clear_error();
		return TLS_EPROTO;
	}
	memcpy(conn->alpn, proto, len + 1);
	return 0;
}

/* The server must have selected the protocol we require (RFC 7301): one
 * that ignores ALPN, or picks another, does not speak it. */
static int check_alpn(struct tls_conn *conn)
{
	const unsigned char *sel = NULL;
	unsigned len = 0;

	if (!conn->alpn[0])
		return 0;
	SSL_get0_alpn_selected(conn->ssl, &sel, &len);
	if (sel && len == strlen(conn->alpn) && memcmp(sel, conn->alpn, len) == 0)
		return 0;
	if (sel && len)
		snprintf(conn->error, sizeof(conn->error),
			 "the server selected ALPN \"%.*s\", not \"%s\"",
			 (int)(len < 32 ? len : 32), (const char *)sel, conn->alpn);
	else
		snprintf(conn->error, sizeof(conn->error),
			 "the server did not select ALPN \"%s\" (it does not speak it)",
			 conn->alpn);
	return TLS_EPROTO;
}

const char *tls_conn_auth_failure(const struct tls_conn *conn)
{
	return conn->auth_failure[0] ? conn->auth_failure : NULL;
}

/* Does the server's key match a pin?  On mismatch, @why says what it was. */
static bool pins_match(struct tls_conn *conn, char *why, size_t cap)
{
	X509 *cert = SSL_get0_peer_certificate(conn->ssl);
	unsigned char *der = NULL;
	unsigned char digest[32];
	unsigned char b64[64];

	if (!cert) {
		snprintf(why, cap, "SPKI pin check failed: no server certificate");
		return false;
	}
	int len = i2d_PUBKEY(X509_get0_pubkey(cert), &der);
	if (len <= 0 || !EVP_Digest(der, (size_t)len, digest, NULL, EVP_sha256(), NULL)) {
		OPENSSL_free(der);
		snprintf(why, cap, "SPKI pin check failed: cannot hash the server key");
		return false;
	}
	OPENSSL_free(der);
	for (unsigned i = 0; i < conn->n_pins; i++)
		if (CRYPTO_memcmp(digest, conn->pins[i], sizeof(digest)) == 0)
			return true;
	EVP_EncodeBlock(b64, digest, sizeof(digest));
	snprintf(why, cap, "SPKI pin mismatch: the server key is %s", (const char *)b64);
	return false;
}

/* After the handshake: pins, and in the opportunistic profile what failed. */
static int check_authentication(struct tls_conn *conn)
{
	char why[200];
	long verify = SSL_get_verify_result(conn->ssl);

	if (verify != X509_V_OK) {
		/* Only reachable in the opportunistic profile: strict aborted already. */
		snprintf(conn->auth_failure, sizeof(conn->auth_failure),
			 "certificate verification failed: %s",
			 X509_verify_cert_error_string(verify));
	}
	if (conn->n_pins && !pins_match(conn, why, sizeof(why))) {
		if (!conn->opportunistic) {
			snprintf(conn->error, sizeof(conn->error), "%s", why);
			return TLS_EPROTO;
		}
		if (!conn->auth_failure[0])
			snprintf(conn->auth_failure, sizeof(conn->auth_failure), "%s", why);
	}
	return 0;
}

int tls_conn_feed(struct tls_conn *conn, const uint8_t *data, size_t len)
{
	while (len > 0) {
		int chunk = len > INT32_MAX ? INT32_MAX : (int)len;
		int n = BIO_write(conn->in, data, chunk);
		if (n <= 0)
			return -ENOMEM;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Classify a failed SSL_* call; @what names it for the error text. */
static int failure(struct tls_conn *conn, int ret, const char *what)
{
	int e = SSL_get_error(conn->ssl, ret);

	switch (e) {
	case SSL_ERROR_WANT_READ:
		ERR_clear_error();
		return TLS_EAGAIN;
	case SSL_ERROR_ZERO_RETURN:
		ERR_clear_error();
		snprintf(conn->error, sizeof(conn->error), "peer closed the TLS session");
		return TLS_ECLOSED;
	case SSL_ERROR_WANT_WRITE: /* memory BIOs grow; cannot happen */
	case SSL_ERROR_SYSCALL:
	case SSL_ERROR_SSL:
	default:
		break;
	}
	long verify = SSL_get_verify_result(conn->ssl);
	if (verify != X509_V_OK) {
		snprintf(conn->error, sizeof(conn->error), "certificate verification failed: %s",
			 X509_verify_cert_error_string(verify));
		ERR_clear_error();
	} else {
		openssl_error(conn->error, sizeof(conn->error), what);
	}
	return TLS_EPROTO;
}

int tls_conn_handshake(struct tls_conn *conn)
{
	ERR_clear_error();
	int ret = SSL_do_handshake(conn->ssl);
	if (ret == 1) {
		int rc = check_authentication(conn);
		return rc ? rc : check_alpn(conn);
	}
	int rc = failure(conn, ret, "TLS handshake failed");
	return rc == TLS_ECLOSED ? TLS_EPROTO : rc;
}

int tls_conn_write(struct tls_conn *conn, const uint8_t *data, size_t len)
{
	size_t written = 0;

	ERR_clear_error();
	int ret = SSL_write_ex(conn->ssl, data, len, &written);
	if (ret == 1 && written == len)
		return 0;
	int rc = failure(conn, ret, "TLS write failed");
	return rc == TLS_EAGAIN ? TLS_EPROTO : rc;
}

int tls_conn_read(struct tls_conn *conn, uint8_t *buf, size_t cap)
{
	size_t got = 0;

	ERR_clear_error();
	int ret = SSL_read_ex(conn->ssl, buf, cap > INT32_MAX ? INT32_MAX : cap, &got);
	if (ret == 1)
		return (int)got;
	return failure(conn, ret, "TLS read failed");
}

size_t tls_conn_out_pending(struct tls_conn *conn)
{
	return BIO_ctrl_pending(conn->out);
}

size_t tls_conn_out_take(struct tls_conn *conn, uint8_t *buf, size_t cap)
{
	int n = BIO_read(conn->out, buf, cap > INT32_MAX ? INT32_MAX : (int)cap);
	return n > 0 ? (size_t)n : 0;
}

void tls_conn_shutdown(struct tls_conn *conn)
{
	ERR_clear_error();
	if (SSL_shutdown(conn->ssl) < 0)
		ERR_clear_error();
	/* A session whose connection ends without a shutdown is marked
	 * unresumable by SSL_free(); an orderly close keeps it for the next. */
	SSL_set_shutdown(conn->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
}

const char *tls_conn_error(const struct tls_conn *conn)
{
	return conn->error[0] ? conn->error : "unknown TLS error";
}

int tls_conn_resumed(const struct tls_conn *conn)
{
	return SSL_session_reused(conn->ssl);
}

void tls_conn_describe(const struct tls_conn *conn, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s %s%s", SSL_get_version(conn->ssl),
		 SSL_CIPHER_get_name(SSL_get_current_cipher(conn->ssl)),
		 SSL_session_reused(conn->ssl) ? " (resumed)" : "");
}
