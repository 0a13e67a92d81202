/*
 * TLS on OpenSSL 3 memory BIOs.  The error queue is cleared before every
 * SSL_* call so that an error reported belongs to that call, and every
 * SSL_get_error() outcome is mapped to one of our three results.
 */
#include "lib/tls.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A session-ticket key of a server context (RFC 5077 layout: a name that
 * says which key sealed a ticket, an AES-256 key, an HMAC-SHA256 key). */
struct ticket_key {
	unsigned char name[16];
	unsigned char aes[32];
	unsigned char hmac[32];
};
#include <sys/stat.h>

struct tls_ctx {
	SSL_CTX *ssl_ctx;
	bool opportunistic;
	/* Server contexts only.  Workers share a context, hence the lock. */
	bool server;
	enum tls_server_alpn alpn;
	pthread_mutex_t ticket_lock;
	struct ticket_key ticket_keys[2]; /* [0] seals new tickets; [1] the one before */
	unsigned n_ticket_keys;
	time_t ticket_key_made;	   /* when [0] was made */
	EVP_CIPHER *ticket_cipher; /* AES-256-CBC, fetched once (not per ticket) */
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
	bool server; /* a listener's session: nothing of the peer to check */
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

/* OpenSSL reports a file it cannot open as "system lib" with a code: say
 * what the system said instead ("No such file or directory", "Permission
 * denied", "Is a directory").  0 or -errno with @err. */
static int check_readable(const char *path, char *err, size_t errlen)
{
	struct stat st;
	FILE *f = fopen(path, "r");
	int rc = 0;

	if (!f)
		rc = -errno;
	else if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode))
		rc = -EISDIR;
	if (f)
		fclose(f);
	if (rc)
		snprintf(err, errlen, "cannot read trust anchors from %s: %s", path, strerror(-rc));
	return rc;
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
	if (ca_file) {
		if (check_readable(ca_file, err, errlen) < 0)
			goto fail;
		ok = SSL_CTX_load_verify_locations(ctx->ssl_ctx, ca_file, NULL);
	} else {
		ok = SSL_CTX_set_default_verify_paths(ctx->ssl_ctx);
	}
	if (ok != 1 && ca_file) {
		/* Readable, so the content: OpenSSL's reason without its code. */
		unsigned long e = ERR_peek_last_error();
		const char *reason = e ? ERR_reason_error_string(e) : NULL;
		snprintf(err, errlen,
			 "cannot load trust anchors from %s: %s (expected PEM certificates)",
			 ca_file, reason ? reason : "no certificate found");
		ERR_clear_error();
		goto fail;
	}
	if (ok != 1) {
		openssl_error(err, errlen, "cannot load trust anchors from the system store");
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
	if (ctx->server) {
		EVP_CIPHER_free(ctx->ticket_cipher);
		pthread_mutex_destroy(&ctx->ticket_lock);
		OPENSSL_cleanse(ctx->ticket_keys, sizeof(ctx->ticket_keys));
	}
	free(ctx);
}

/* A session of @ctx on two memory BIOs, side not chosen yet; NULL when out
 * of memory. */
static struct tls_conn *conn_new(struct tls_ctx *ctx)
{
	struct tls_conn *conn = calloc(1, sizeof(*conn));

	if (!conn)
		return NULL;
	ERR_clear_error();
	conn->ssl = SSL_new(ctx->ssl_ctx);
	conn->in = BIO_new(BIO_s_mem());
	conn->out = BIO_new(BIO_s_mem());
	if (!conn->ssl || !conn->in || !conn->out) {
		BIO_free(conn->in);
		BIO_free(conn->out);
		SSL_free(conn->ssl);
		free(conn);
		return NULL;
	}
	/* An empty input BIO means "wait for more", not end of file. */
	BIO_set_mem_eof_return(conn->in, -1);
	SSL_set_bio(conn->ssl, conn->in, conn->out); /* ssl owns both from here */
	SSL_set_app_data(conn->ssl, conn);
	return conn;
}

/* -- server contexts ------------------------------------------------------------ */

static bool make_ticket_key(struct ticket_key *k)
{
	return RAND_bytes(k->name, sizeof(k->name)) == 1 &&
	       RAND_bytes(k->aes, sizeof(k->aes)) == 1 && RAND_bytes(k->hmac, sizeof(k->hmac)) == 1;
}

/* Seal (enc) or open a session ticket.  A new key every
 * TLS_TICKET_KEY_SECONDS, made when the first ticket after that is sealed
 * or opened; the previous key still opens tickets.  Every ticket opened is
 * replaced (return 2): TLS 1.3 clients use a ticket once (RFC 8446, C.4),
 * so a resumption without a new ticket would leave the next connection a
 * full handshake.  An unknown key name means a full handshake. */
static int ticket_key_cb(SSL *ssl, unsigned char name[16], unsigned char *iv,
			 EVP_CIPHER_CTX *cipher, EVP_MAC_CTX *mac, int enc)
{
	struct tls_ctx *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	struct ticket_key key;
	time_t now = time(NULL);
	int ret = 1;

	pthread_mutex_lock(&ctx->ticket_lock);
	if (now - ctx->ticket_key_made >= TLS_TICKET_KEY_SECONDS || now < ctx->ticket_key_made) {
		struct ticket_key fresh;
		if (make_ticket_key(&fresh)) {
			ctx->ticket_keys[1] = ctx->ticket_keys[0];
			ctx->ticket_keys[0] = fresh;
			ctx->n_ticket_keys = 2;
			ctx->ticket_key_made = now;
			OPENSSL_cleanse(&fresh, sizeof(fresh));
		}
	}
	if (enc) {
		key = ctx->ticket_keys[0];
	} else {
		unsigned i = 0;
		while (i < ctx->n_ticket_keys && memcmp(ctx->ticket_keys[i].name, name, 16) != 0)
			i++;
		if (i == ctx->n_ticket_keys) {
			pthread_mutex_unlock(&ctx->ticket_lock);
			return 0;
		}
		key = ctx->ticket_keys[i];
		ret = 2;
	}
	pthread_mutex_unlock(&ctx->ticket_lock);

	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key.hmac, sizeof(key.hmac)),
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	if (enc) {
		memcpy(name, key.name, sizeof(key.name));
		if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(ctx->ticket_cipher)) != 1 ||
		    EVP_EncryptInit_ex(cipher, ctx->ticket_cipher, NULL, key.aes, iv) != 1)
			ret = -1;
	} else if (EVP_DecryptInit_ex(cipher, ctx->ticket_cipher, NULL, key.aes, iv) != 1) {
		ret = -1;
	}
	if (ret > 0 && EVP_MAC_CTX_set_params(mac, params) != 1)
		ret = -1;
	OPENSSL_cleanse(&key, sizeof(key));
	return ret;
}

/* ALPN: "dot" or "h2", whichever the context serves. */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			  const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char dot[] = { 3, 'd', 'o', 't' };
	static const unsigned char h2[] = { 2, 'h', '2' };
	const struct tls_ctx *ctx = arg;
	const unsigned char *want = ctx->alpn == TLS_SERVER_H2 ? h2 : dot;
	unsigned char *chosen = NULL;

	(void)ssl;
	if (SSL_select_next_proto(&chosen, outlen, want, (unsigned)want[0] + 1, in, inlen) ==
	    OPENSSL_NPN_NEGOTIATED) {
		*out = chosen;
		return SSL_TLSEXT_ERR_OK;
	}
	/* DoT (RFC 7858 predates ALPN "dot"): serve without ALPN.  DoH needs
	 * HTTP/2: refuse with no_application_protocol rather than hang an
	 * HTTP/1.1 client. */
	return ctx->alpn == TLS_SERVER_H2 ? SSL_TLSEXT_ERR_ALERT_FATAL : SSL_TLSEXT_ERR_NOACK;
}

/* Can @path be read at all?  The system's words when not ("No such file or
 * directory"), which OpenSSL's error codes would hide. */
static bool readable(const char *what, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");

	if (!f) {
		snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
		return false;
	}
	fclose(f);
	return true;
}

/* Never ask for a passphrase (a daemon has no one to ask). */
static int no_passphrase(char *buf, int size, int rwflag, void *arg)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)arg;
	return 0;
}

/* Load the private key and check it against the certificate loaded. */
static bool use_key(SSL_CTX *ssl_ctx, const char *cert_file, const char *key_file, char *err,
		    size_t errlen)
{
	FILE *f = fopen(key_file, "r");
	EVP_PKEY *key = f ? PEM_read_PrivateKey(f, NULL, no_passphrase, NULL) : NULL;
	bool ok = false;

	if (f)
		fclose(f);
	ERR_clear_error();
	if (!key)
		snprintf(err, errlen,
			 "--key-file %s: no PEM private key in it (an encrypted key cannot be "
			 "used: no one can type its passphrase)",
			 key_file);
	else if (X509_check_private_key(SSL_CTX_get0_certificate(ssl_ctx), key) != 1)
		snprintf(err, errlen, "--key-file %s is not the key of the certificate in %s",
			 key_file, cert_file);
	else if (SSL_CTX_use_PrivateKey(ssl_ctx, key) != 1)
		openssl_error(err, errlen, "cannot use the private key");
	else
		ok = true;
	ERR_clear_error();
	EVP_PKEY_free(key);
	return ok;
}

/*
 * The cipher suites a listener accepts, in the order it prefers them
 * (server preference).  AES-128-GCM first, as Mozilla's server guidelines
 * and RFC 9325 §4.2 have it: its SHA-256 key schedule runs on the SHA
 * instructions of current CPUs, where AES-256-GCM's SHA-384 does not, so a
 * handshake costs both sides about 5% less CPU (measured with
 * bench/tlsload).  A client that lists ChaCha20 first (a phone without AES
 * instructions) gets it (SSL_OP_PRIORITIZE_CHACHA).  TLS 1.2: ECDHE and
 * AEAD only (RFC 9325 §4.2, RFC 8310 §8.2), no CBC, no RSA key transport.
 */
#define TLS_SERVER_SUITES                                                                          \
	"TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"
#define TLS_SERVER_CIPHERS_TLS12                                                                   \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                               \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"

struct tls_ctx *tls_server_ctx_new(const char *cert_file, const char *key_file,
				   enum tls_server_alpn alpn, char *err, size_t errlen)
{
	if (!readable("--cert-file", cert_file, err, errlen) ||
	    !readable("--key-file", key_file, err, errlen))
		return NULL;
	struct tls_ctx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ctx->server = true;
	ctx->alpn = alpn;
	pthread_mutex_init(&ctx->ticket_lock, NULL);
	ERR_clear_error();
	ctx->ssl_ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx->ssl_ctx) {
		openssl_error(err, errlen, "cannot create TLS context");
		goto fail;
	}
	SSL_CTX_set_app_data(ctx->ssl_ctx, ctx);
	SSL_CTX_set_min_proto_version(ctx->ssl_ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx->ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
	/* RFC 8310 §8.2 and RFC 7525: no renegotiation, no compression; the
	 * server's cipher order.  Resumption by tickets only: no per-session
	 * state kept here for a client to fill. */
	SSL_CTX_set_options(ctx->ssl_ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
					      SSL_OP_CIPHER_SERVER_PREFERENCE |
					      SSL_OP_PRIORITIZE_CHACHA);
	SSL_CTX_set_session_cache_mode(ctx->ssl_ctx, SSL_SESS_CACHE_OFF);
	if (SSL_CTX_set_ciphersuites(ctx->ssl_ctx, TLS_SERVER_SUITES) != 1 ||
	    SSL_CTX_set_cipher_list(ctx->ssl_ctx, TLS_SERVER_CIPHERS_TLS12) != 1) {
		openssl_error(err, errlen, "cannot set the cipher suites");
		goto fail;
	}
	/* An explicit fetch: EVP_aes_256_cbc() would be looked up again for
	 * every ticket sealed or opened (OpenSSL 3). */
	ctx->ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
	if (!ctx->ticket_cipher) {
		openssl_error(err, errlen, "cannot set up session tickets");
		goto fail;
	}
	/* One ticket per connection, full or resumed (see ticket_key_cb()):
	 * each client always holds one fresh ticket, and a full handshake
	 * does not pay for a second one that a client rarely uses. */
	SSL_CTX_set_num_tickets(ctx->ssl_ctx, 1);
	SSL_CTX_set_alpn_select_cb(ctx->ssl_ctx, alpn_select_cb, ctx);
	if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx->ssl_ctx, ticket_key_cb) != 1) {
		openssl_error(err, errlen, "cannot set up session tickets");
		goto fail;
	}
	char what[4200];
	if (SSL_CTX_use_certificate_chain_file(ctx->ssl_ctx, cert_file) != 1) {
		snprintf(what, sizeof(what), "--cert-file %s: no usable PEM certificate chain",
			 cert_file);
		openssl_error(err, errlen, what);
		goto fail;
	}
	if (!use_key(ctx->ssl_ctx, cert_file, key_file, err, errlen))
		goto fail;
	return ctx;
fail:
	tls_ctx_free(ctx);
	return NULL;
}

void tls_server_ctx_describe(const struct tls_ctx *ctx, char *buf, size_t cap)
{
	X509 *cert = SSL_CTX_get0_certificate(ctx->ssl_ctx);
	char cn[256] = "?", serial[80] = "?", until[32] = "?";

	if (!cert) {
		snprintf(buf, cap, "no certificate");
		return;
	}
	X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	if (hex)
		snprintf(serial, sizeof(serial), "%s", hex);
	OPENSSL_free(hex);
	BN_free(bn);
	struct tm tm;
	if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) == 1)
		strftime(until, sizeof(until), "%Y-%m-%d", &tm);
	ERR_clear_error();
	snprintf(buf, cap, "CN=%s, serial %s, valid until %s", cn, serial, until);
}

struct tls_conn *tls_conn_new_server(struct tls_ctx *ctx)
{
	struct tls_conn *conn = conn_new(ctx);

	if (!conn)
		return NULL;
	SSL_set_accept_state(conn->ssl);
	conn->server = true;
	return conn;
}

void tls_conn_alpn(const struct tls_conn *conn, char *buf, size_t cap)
{
	const unsigned char *p = NULL;
	unsigned len = 0;

	SSL_get0_alpn_selected(conn->ssl, &p, &len);
	snprintf(buf, cap, "%.*s", (int)len, p ? (const char *)p : "");
}

/* -- sessions --------------------------------------------------------------------- */

struct tls_conn *tls_conn_new(struct tls_ctx *ctx, const char *auth_name, const char *ip_text,
			      struct tls_session *resume)
{
	struct tls_conn *conn = conn_new(ctx);

	if (!conn)
		return NULL;
	SSL_set_connect_state(conn->ssl);
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

	if (conn->server)
		return 0;
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
