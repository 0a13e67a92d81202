/*
 * TLS without I/O: client sessions towards upstreams (RFC 7858, RFC 8310
 * strict profile) and server sessions for the DoT and DoH listeners.  A
 * tls_ctx holds what every connection of one kind shares (trust anchors
 * and policy, or the certificate, key and ticket keys); a tls_conn is one
 * session over memory buffers: the caller feeds it ciphertext received
 * from the network, takes the ciphertext it produces and sends it, and
 * reads and writes plaintext.  Nothing here ever touches a socket, so
 * handshakes, verification failures and closes can be exercised entirely
 * in memory.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/** Results (negative, below -1000). */
enum {
	TLS_EAGAIN = -1101,  /**< needs more ciphertext from the peer */
	TLS_ECLOSED = -1102, /**< the peer closed the session cleanly (close_notify) */
	TLS_EPROTO = -1103,  /**< handshake, verification or record failure: see tls_conn_error() */
};

struct tls_ctx;
struct tls_conn;
struct tls_session;

/**
 * A client context: TLS 1.2 minimum, certificate chain verification against
 * @ca_file (PEM) or, when NULL, the system trust store; ALPN "dot".
 * On failure returns NULL with a reason in @err.
 */
struct tls_ctx *tls_ctx_new(const char *ca_file, char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *ctx);

/** Which application protocol a server context accepts (ALPN). */
enum tls_server_alpn {
	TLS_SERVER_DOT, /**< "dot" when offered; a client offering none is served too */
	TLS_SERVER_H2,	/**< "h2" only: anything else gets the no_application_protocol alert */
};

/** How often a server context makes a new session-ticket key.  Tickets
 * under the one before are still accepted (and replaced by a new ticket),
 * so a ticket resumes for one to two periods at most. */
enum { TLS_TICKET_KEY_SECONDS = 3600 };

/**
 * A server context: the certificate chain in @cert_file (PEM, leaf first)
 * and its private key in @key_file, which must match; TLS 1.2 minimum,
 * no renegotiation or compression; session tickets whose keys rotate every
 * TLS_TICKET_KEY_SECONDS.  NULL with the reason in @err (naming the file,
 * and the system's words for a file that cannot be read).  Safe to share
 * between threads.
 */
struct tls_ctx *tls_server_ctx_new(const char *cert_file, const char *key_file,
				   enum tls_server_alpn alpn, char *err, size_t errlen);

/** One line about the server certificate of @ctx ("CN=dns.example, serial
 * 1A2B, until 2027-03-01"), for the log. */
void tls_server_ctx_describe(const struct tls_ctx *ctx, char *buf, size_t cap);

/** A server session of @ctx, waiting for the client's hello.  NULL on
 * allocation failure. */
struct tls_conn *tls_conn_new_server(struct tls_ctx *ctx);

/** The application protocol agreed on ("dot", "h2"), or "" for none. */
void tls_conn_alpn(const struct tls_conn *conn, char *buf, size_t cap);

/** RFC 8310 opportunistic profile for every connection of @ctx: a failed
 * verification (chain, name, IP or pin) no longer aborts the handshake;
 * tls_conn_auth_failure() tells what failed.  Strict is the default. */
void tls_ctx_set_opportunistic(struct tls_ctx *ctx);

/** A slot remembering the latest TLS session of one upstream, so that a
 * reconnect resumes it (RFC 7858 §3.4) instead of a full handshake. */
struct tls_session *tls_session_new(void);
void tls_session_free(struct tls_session *s);

/**
 * A session towards one upstream.  With @auth_name, that name is sent as SNI
 * and must match the certificate; otherwise the certificate must carry the
 * IP address @ip_text.  With @resume (not owned, must outlive the
 * connection), offer the session remembered there and remember the new one.
 * NULL on allocation failure.
 */
struct tls_conn *tls_conn_new(struct tls_ctx *ctx, const char *auth_name, const char *ip_text,
			      struct tls_session *resume);

/** Accept the server only if the SHA-256 of its certificate's
 * SubjectPublicKeyInfo is one of the @n 32-byte @pins (RFC 7858 §4.2), on
 * top of the chain and name checks.  Call before the handshake; @pins is
 * copied. */
void tls_conn_set_pins(struct tls_conn *conn, const uint8_t (*pins)[32], unsigned n);

/** Offer ALPN @proto (1 to 31 bytes, e.g. "h2") instead of the context's
 * "dot", and fail the handshake (TLS_EPROTO, with the reason in
 * tls_conn_error()) unless the server selects it: a server that does not
 * speak the protocol cannot be used, authenticated or not.  Call before the
 * handshake.  Returns 0, or TLS_EPROTO for a bad @proto. */
int tls_conn_require_alpn(struct tls_conn *conn, const char *proto);

/** After a completed handshake: NULL if the server authenticated, else why
 * not (only possible in the opportunistic profile). */
const char *tls_conn_auth_failure(const struct tls_conn *conn);

/** True once the handshake completed by resuming a remembered session. */
int tls_conn_resumed(const struct tls_conn *conn);
void tls_conn_free(struct tls_conn *conn);

/** Hand over ciphertext received from the network.  Returns 0 or -ENOMEM. */
int tls_conn_feed(struct tls_conn *conn, const uint8_t *data, size_t len);

/** Advance the handshake: 0 once complete and verified, TLS_EAGAIN while
 * waiting for the peer, TLS_EPROTO on failure. */
int tls_conn_handshake(struct tls_conn *conn);

/** Encrypt @len bytes of plaintext (after the handshake).  The ciphertext
 * waits in the session until taken.  Returns 0 or TLS_EPROTO. */
int tls_conn_write(struct tls_conn *conn, const uint8_t *data, size_t len);

/** Decrypt available plaintext into @buf: the number of bytes, TLS_EAGAIN when
 * nothing is complete yet, TLS_ECLOSED or TLS_EPROTO. */
int tls_conn_read(struct tls_conn *conn, uint8_t *buf, size_t cap);

/** Bytes of ciphertext waiting to be sent. */
size_t tls_conn_out_pending(struct tls_conn *conn);

/** Move up to @cap bytes of waiting ciphertext into @buf; returns how many. */
size_t tls_conn_out_take(struct tls_conn *conn, uint8_t *buf, size_t cap);

/** End the session in order: queue a close_notify alert (ciphertext to
 * send before closing the socket) and keep the session resumable. */
void tls_conn_shutdown(struct tls_conn *conn);

/** Why the last call failed, in words (e.g. "certificate verification failed:
 * hostname mismatch").  Valid until the next call on @conn. */
const char *tls_conn_error(const struct tls_conn *conn);

/** "TLSv1.3 TLS_AES_256_GCM_SHA384" after the handshake, for the log. */
void tls_conn_describe(const struct tls_conn *conn, char *buf, size_t cap);
