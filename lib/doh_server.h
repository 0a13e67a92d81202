/*
 * DNS over HTTPS, the server side (RFC 8484 over HTTP/2, RFC 9113), without
 * I/O: one nghttp2 server session per client connection, on memory buffers,
 * as lib/tls is for TLS.  The caller feeds it the plaintext received
 * (doh_server_feed), takes the plaintext to send (doh_server_output) and
 * takes what happened as events (doh_server_next_event): a DNS query
 * arrived on a stream, or the stream of a query handed out closed before
 * its answer went.  It answers with doh_server_respond().
 *
 * Everything that is not a DNS query is answered here, with the HTTP
 * status RFC 8484 and RFC 9110 give it: a path other than the one served
 * (404), a method other than GET, POST and HEAD (405, or 501 for one HTTP
 * does not define), a POST body that is not application/dns-message (415)
 * or is over 65,535 bytes (413), a :path over DOH_SERVER_MAX_PATH (414),
 * headers over DOH_SERVER_MAX_HEADERS (431), no dns= parameter, bad
 * base64url, or a message that is not a DNS query (400).
 *
 * The limits hold whatever the client does: DOH_SERVER_MAX_STREAMS streams
 * at once (SETTINGS_MAX_CONCURRENT_STREAMS), request bodies buffered only
 * within the connection's flow-control window (DOH_SERVER_CONN_WINDOW),
 * and nghttp2's own protections set explicitly: RST_STREAM rate (HTTP/2
 * Rapid Reset, CVE-2023-44487), CONTINUATION frames per header block
 * (CVE-2024-28182), SETTINGS entries and queued SETTINGS/PING
 * acknowledgements.  A client that breaks them is sent GOAWAY and the
 * session ends (doh_server_alive() turns false).
 *
 * Events are queued while nghttp2 works and handed out after it returns,
 * never from inside it: while handling one, the caller may respond, feed
 * nothing, or free the session.  A stream reset before its query was
 * handed out costs nothing more: its event is dropped.  State is keyed by
 * stream, never by DNS ID (RFC 8484 §4.1: clients send ID 0).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
	DOH_SERVER_MAX_STREAMS = 100,	  /**< SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113
					   *   §6.5.2's recommended minimum) */
	DOH_SERVER_MAX_BODY = 65535,	  /**< a longer POST body: 413 */
	DOH_SERVER_MAX_PATH = 4096,	  /**< a longer :path: 414 */
	DOH_SERVER_MAX_HEADERS = 16384,	  /**< SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113 §6.5.2
					   *   accounting: name + value + 32 per field);
					   *   more: 431 */
	DOH_SERVER_MAX_CONTINUATIONS = 4, /**< CONTINUATION frames after one HEADERS */
	DOH_SERVER_CONN_WINDOW = 262144,  /**< request bytes not yet consumed, per connection */
	DOH_SERVER_RESET_BURST = 100,	  /**< RST_STREAMs a client may send at once ... */
	DOH_SERVER_RESET_RATE = 10,	  /**< ... and per second after that */
	DOH_SERVER_MAX_PATH_OPTION = 255, /**< the longest --https-path */
};

/** Results (negative, below -1000). */
enum {
	DOH_SERVER_EPROTO = -1301,  /**< the client broke HTTP/2 or a limit: the session
				     *   is over; send what doh_server_output() still has
				     *   (a GOAWAY), then close */
	DOH_SERVER_ENOENT = -1302,  /**< no such stream waiting for an answer */
	DOH_SERVER_ENOMEM = -1303,  /**< nghttp2 could not allocate */
	DOH_SERVER_ECLOSED = -1304, /**< the session ended already */
};

/** The request methods that carry a DNS query. */
enum doh_server_method {
	DOH_SERVER_GET,	 /**< the query base64url-encoded in ?dns= */
	DOH_SERVER_POST, /**< the query as the body */
	DOH_SERVER_HEAD, /**< as GET, answered without the body */
};

enum doh_server_event_type {
	DOH_SERVER_QUERY,     /**< a DNS query: answer it with doh_server_respond() */
	DOH_SERVER_CANCELLED, /**< the stream of a query handed out closed before its
			       *   answer was sent (reset by the client, or the
			       *   session ended): no answer is wanted any more */
};

/** One event (doh_server_next_event()). */
struct doh_server_event {
	enum doh_server_event_type type;
	int32_t stream_id;
	/** DOH_SERVER_QUERY: the method, and the message (at least a DNS header,
	 * parsed by wire_parse(), QR=0), valid until the next call on the
	 * session. */
	enum doh_server_method method;
	const uint8_t *msg;
	size_t len;
	/** DOH_SERVER_CANCELLED: what doh_server_set_user() attached. */
	void *user;
};

struct doh_server;

/**
 * A session for one client connection that has agreed on ALPN "h2" (or
 * offered none), serving DNS queries at @path (copied; "/dns-query").  Its
 * SETTINGS are queued for doh_server_output() at once.  NULL when out of
 * memory.
 */
struct doh_server *doh_server_new(const char *path);

/** Free @s and every stream's buffers.  No event comes after this. */
void doh_server_free(struct doh_server *s);

/**
 * Hand over @len bytes of plaintext received from the client.  Returns 0,
 * or DOH_SERVER_EPROTO when the client broke the protocol or a limit (the
 * output then holds the GOAWAY that says so), or DOH_SERVER_ENOMEM.  A
 * client that speaks HTTP/1.x gets "505 HTTP Version Not Supported" in the
 * output and DOH_SERVER_EPROTO.  Events may be waiting afterwards.
 */
int doh_server_feed(struct doh_server *s, const uint8_t *data, size_t len);

/** Take the next event into @ev; false when there is none. */
bool doh_server_next_event(struct doh_server *s, struct doh_server_event *ev);

/** Attach @user to @stream_id (a query handed out): it comes back in that
 * stream's DOH_SERVER_CANCELLED event.  Returns 0 or DOH_SERVER_ENOENT. */
int doh_server_set_user(struct doh_server *s, int32_t stream_id, void *user);

/**
 * Answer the query of @stream_id with the DNS message @msg (copied): status
 * 200, content-type application/dns-message, content-length, and
 * cache-control max-age of the smallest TTL (RFC 8484 §5.1; the SOA's for
 * a negative answer, 0 for one that must not be cached).  A HEAD gets the
 * same headers and no body.  Returns 0, or DOH_SERVER_ENOENT when the
 * stream is gone (it was reset: its CANCELLED event comes or came), or
 * DOH_SERVER_ENOMEM.
 */
int doh_server_respond(struct doh_server *s, int32_t stream_id, const uint8_t *msg, size_t len);

/** Answer the query of @stream_id with an HTTP error @status (and no
 * body) instead.  Returns as doh_server_respond(). */
int doh_server_respond_status(struct doh_server *s, int32_t stream_id, unsigned status);

/**
 * Bytes to send (HTTP/2 frames, or the HTTP/1 refusal), in one buffer
 * valid until the next call on @s; *@len 0 when there is nothing.  Call
 * until it returns nothing.  Each call ends with at most one response
 * (and whatever frames came before it), up to about 64 KiB: written with
 * one TLS write each, every answer is a TLS record of its own, as the DoT
 * listener's are (and clients that read one record per answer, such as
 * dnsperf's, keep up).
 */
const uint8_t *doh_server_output(struct doh_server *s, size_t *len);

/** Bytes of responses submitted and not yet taken by doh_server_output()
 * (flow control holds them, or output was not called). */
size_t doh_server_unsent(const struct doh_server *s);

/** Is the session still going?  False once it ended (a GOAWAY for an
 * error, or the client's own GOAWAY with nothing left to answer) and its
 * last output was taken: close the connection. */
bool doh_server_alive(const struct doh_server *s);

/** Did the session end through the client's fault: a protocol error, a
 * flood or a limit (a GOAWAY with an error code), or not HTTP/2 at all? */
bool doh_server_failed(const struct doh_server *s);

/** End the session politely: GOAWAY (NO_ERROR) with the last stream
 * received, so that the client opens no new stream; streams already open
 * are still answered, and the session ends once they are. */
void doh_server_shutdown(struct doh_server *s);

/** Requests answered here with an HTTP error status since the last call
 * (for counting). */
unsigned doh_server_take_rejected(struct doh_server *s);

/**
 * Decode the base64url text @in (@n bytes; RFC 4648 §5, without padding
 * as RFC 8484 §6 asks, though trailing '=' are accepted) into @out (room
 * for @cap bytes).  Returns the length decoded, or -1 when @in is not
 * base64url (a character outside the alphabet, a length that cannot be,
 * non-zero bits after the last byte) or does not fit.
 */
long doh_server_base64url_decode(const char *in, size_t n, uint8_t *out, size_t cap);
