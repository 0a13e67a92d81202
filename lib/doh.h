/*
 * DNS over HTTPS (RFC 8484) over HTTP/2 (RFC 9113), the client side, without
 * I/O: an nghttp2 client session on memory buffers, as lib/tls is for TLS.
 * The caller feeds it the plaintext received from the server (doh_feed),
 * takes the plaintext to send (doh_output), submits DNS queries, each one
 * stream (POST with the message as the body, or GET with it base64url in
 * ?dns=), and takes what happened as events (doh_next_event): a stream
 * ended (a complete response with its status, content type, Age and body;
 * or refused, reset, too large), a GOAWAY, a PING answered.
 *
 * Events are queued while nghttp2 works and handed out one at a time after
 * it returns, never from inside nghttp2: while handling one, the caller may
 * submit, cancel, ping or shut down freely.  Nothing here interprets the
 * DNS message, except doh_check_answer(), which the caller applies to a
 * body before believing it.
 */
#pragma once

#include "lib/wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
	DOH_MAX_BODY = 65535,	   /**< a DNS message; a longer response fails its stream */
	DOH_MAX_STREAMS = 256,	   /**< our cap on streams at once, whatever the server allows */
	DOH_ASSUMED_STREAMS = 100, /**< the server's limit until its SETTINGS arrive (RFC 9113
				    *   §6.5.2 recommends no less; nghttp2 assumes the same) */
	DOH_MAX_GET_PATH = 4096,   /**< a GET whose path would be longer goes as a POST */
};

/** Results (negative, below -1000). */
enum {
	DOH_EFULL = -1201,    /**< no stream may open now (the server's concurrency limit) */
	DOH_ECLOSING = -1202, /**< no stream will ever open on this session again: a GOAWAY
			       *   came or went, the stream IDs are used up, or it broke */
	DOH_EPROTO = -1203,   /**< the server broke HTTP/2: the session is over (doh_error()) */
	DOH_EINVAL = -1204,   /**< an empty message, or one over 65,535 bytes */
};

/** How queries are sent (RFC 8484 §4.1). */
enum doh_method {
	DOH_POST, /**< the message as the body, content-type application/dns-message */
	DOH_GET,  /**< the message base64url-encoded, unpadded, in the dns= parameter */
};

enum doh_event_type {
	DOH_EV_STREAM,	 /**< a stream ended: @result says how */
	DOH_EV_GOAWAY,	 /**< the server takes no new stream; those above @last_stream_id
			  *   end as DOH_REFUSED events (after this one) */
	DOH_EV_PING_ACK, /**< the server answered a doh_ping() */
};

/** How a stream ended. */
enum doh_result {
	DOH_ANSWER,	  /**< status 200, content-type application/dns-message, a body of at
			   *   most 65,535 bytes: @body (check it with doh_check_answer()) */
	DOH_HTTP_STATUS,  /**< a complete response with another status */
	DOH_CONTENT_TYPE, /**< status 200 with another content type, or none */
	DOH_TOO_LARGE,	  /**< the body grew past 65,535 bytes (we reset the stream) */
	DOH_REFUSED,	  /**< the server did not process it (RFC 9113 §8.7): RST_STREAM
			   *   REFUSED_STREAM, above a GOAWAY's last stream ID, never sent
			   *   at all, or sent before the server's SETTINGS and reset
			   *   PROTOCOL_ERROR (beyond a stream limit we could not know,
			   *   RFC 9113 §5.1.2) */
	DOH_RESET,	  /**< reset before the response was complete (RST_STREAM with
			   *   another code, or a malformed response): maybe processed */
};

/** One event (doh_next_event()). */
struct doh_event {
	enum doh_event_type type;
	/* DOH_EV_STREAM */
	int32_t stream_id;
	void *user; /**< as given to doh_submit() */
	enum doh_result result;
	unsigned status; /**< the final HTTP status; 0 when no response head came */
	uint32_t age;	 /**< the Age header, in seconds (0 when absent or not a number) */
	uint8_t *body;	 /**< DOH_ANSWER: the body, which the caller may modify; valid
			  *   until the next doh_next_event() or doh_session_free() */
	size_t body_len;
	/* DOH_EV_STREAM (DOH_REFUSED, DOH_RESET) and DOH_EV_GOAWAY */
	uint32_t error_code; /**< the HTTP/2 error code (doh_error_code_name()) */
	/* DOH_EV_GOAWAY */
	int32_t last_stream_id;
};

struct doh_session;

/**
 * A client session that sends its queries to @authority (the :authority
 * header: a name, or an IP literal with IPv6 in brackets, with ":PORT"
 * unless 443) at @path ("/dns-query"; it may hold a query string) with
 * @method.  Its connection preface is the first output.  NULL on
 * allocation failure.
 */
struct doh_session *doh_session_new(const char *authority, const char *path,
				    enum doh_method method);

/** Free @s and every stream in it; no event follows. */
void doh_session_free(struct doh_session *s);

/** Hand over plaintext received from the server.  Returns 0, or DOH_EPROTO
 * when it broke HTTP/2 (the GOAWAY that says so waits in the output). */
int doh_feed(struct doh_session *s, const uint8_t *data, size_t len);

/** Take the next piece of output to send (*@data valid until the next call
 * on @s); 0 when there is none.  Call until it returns 0. */
size_t doh_output(struct doh_session *s, const uint8_t **data);

/**
 * Start one query: the DNS message @msg (copied; its ID should be 0, RFC
 * 8484 §4.1) as a request, which an event with @user ends (unless
 * cancelled).  Returns the stream ID (> 0), DOH_EFULL when doh_room() is 0
 * but streams are open, DOH_ECLOSING, or DOH_EINVAL.
 */
int32_t doh_submit(struct doh_session *s, const uint8_t *msg, size_t len, void *user);

/** Forget the stream @stream_id: no event comes for it any more.  If its
 * response is not complete, it is reset (RST_STREAM CANCEL), which frees
 * its slot once sent; a stream whose response came is never reset. */
void doh_cancel(struct doh_session *s, int32_t stream_id);

/** Streams that may open now: the server's SETTINGS_MAX_CONCURRENT_STREAMS
 * (DOH_ASSUMED_STREAMS before its SETTINGS, at most DOH_MAX_STREAMS) less
 * those open, and no more than the stream IDs left; 0 once closing. */
unsigned doh_room(struct doh_session *s);

/** Streams submitted and not yet closed (cancelled ones until their reset
 * has gone out). */
unsigned doh_streams(const struct doh_session *s);

/** No stream will open on @s again (see DOH_ECLOSING). */
bool doh_closing(struct doh_session *s);

/** Nothing more to read or write: every stream is over after a GOAWAY (ours
 * or the server's), or the session broke.  Close the connection. */
bool doh_finished(struct doh_session *s);

/** True when @stream_id's request was handed to doh_output(): the server may
 * have seen it.  False for a stream not known (any more). */
bool doh_stream_sent(const struct doh_session *s, int32_t stream_id);

/** Queue an HTTP/2 PING; its answer comes as DOH_EV_PING_ACK.  0 or
 * DOH_EPROTO (out of memory, or the session is over). */
int doh_ping(struct doh_session *s);

/** Queue a GOAWAY (NO_ERROR): we are closing.  Nothing opens after it. */
void doh_shutdown(struct doh_session *s);

/** Take the next event into @ev: true, or false when there is none.  The
 * previous event's body is freed now. */
bool doh_next_event(struct doh_session *s, struct doh_event *ev);

/** Why the session broke, in words. */
const char *doh_error(const struct doh_session *s);

/** The name of an HTTP/2 error code ("REFUSED_STREAM"). */
const char *doh_error_code_name(uint32_t code);

/** Room a query may need beyond its length once doh_make_query() rebuilds
 * it: another OPT and up to a block of padding. */
enum { DOH_QUERY_SLACK = 256 };

/**
 * The DoH form of the upstream query @msg (as wire_make_upstream_query()
 * made it, for any transport) into @out: ID 0 (RFC 8484 §4.1), our OPT
 * rebuilt without the edns-tcp-keepalive option (RFC 8484 §5.3: HTTP has
 * its own) and padded to 128-byte blocks when @pad (RFC 8467).  Returns the
 * length, or 0 when @msg does not parse or @cap is too small.
 */
size_t doh_make_query(const uint8_t *msg, size_t len, bool pad, uint8_t *out, size_t cap);

/**
 * Is the body @msg (@len bytes, from a DOH_ANSWER with @age) a DNS response
 * to one of our queries?  It must parse (wire_parse()), have QR set and ID
 * 0 (what we sent, RFC 8484 §4.1); its TTLs are then reduced by @age, not
 * below 0 (RFC 8484 §5.1), and @info describes it.  0, or -1 when it is not
 * an answer.
 */
int doh_check_answer(uint8_t *msg, size_t len, uint32_t age, struct wire_info *info);

/** Tests only: the next stream gets ID @id (odd, not below the next one),
 * to reach the end of the stream IDs without two billion queries.  0 or
 * DOH_EINVAL. */
int doh_set_next_stream_id(struct doh_session *s, int32_t id);
