/*
 * dnstap messages (https://dnstap.info): one event -- a DNS message seen at
 * one end of an exchange with a client or an upstream, with its addresses,
 * times and the whole message -- encoded as the protobuf payload of one
 * Frame Streams data frame (content type "protobuf:dnstap.Dnstap"), from
 * the schema in lib/dnstap.proto.  Pure: it only encodes into the caller's
 * buffer; daemon/dnstap sends what it builds.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/** The Message types dotproxy reports (the schema's numbers). */
enum dnstap_type {
	DNSTAP_CLIENT_QUERY = 5,
	DNSTAP_CLIENT_RESPONSE = 6,
	DNSTAP_FORWARDER_QUERY = 7,
	DNSTAP_FORWARDER_RESPONSE = 8,
};

/** What carried the message (the schema's SocketProtocol numbers). */
enum dnstap_protocol {
	DNSTAP_PROTOCOL_NONE = 0, /**< unknown: left out */
	DNSTAP_UDP = 1,
	DNSTAP_TCP = 2,
	DNSTAP_DOT = 3,
	DNSTAP_DOH = 4, /**< always over HTTP/2 here: http_protocol says so */
};

/** Bytes an encoded event may take beyond its two messages, identity and
 * version: tags, lengths, addresses, ports and times. */
enum { DNSTAP_OVERHEAD = 160 };

/** One event.  Pointers are only read during dnstap_encode(). */
struct dnstap_event {
	enum dnstap_type type;
	enum dnstap_protocol protocol;
	/** The initiator of the exchange (a client; dotproxy towards an
	 * upstream) and the responder (dotproxy towards a client; the
	 * upstream): AF_INET or AF_INET6 socket addresses, or NULL when
	 * unknown (left out).  Their family is the socket_family. */
	const struct sockaddr *query_addr;
	const struct sockaddr *response_addr;
	/** Wall-clock times in nanoseconds since the UNIX epoch; 0: left out. */
	uint64_t query_time_ns;
	uint64_t response_time_ns;
	/** The whole messages in wire format; NULL: left out. */
	const uint8_t *query;
	size_t query_len;
	const uint8_t *response;
	size_t response_len;
	/** The server's name and software version, NUL-terminated; NULL: left
	 * out. */
	const char *identity;
	const char *version;
};

/** An upper bound of dnstap_encode()'s result for @ev, without encoding. */
size_t dnstap_size_bound(const struct dnstap_event *ev);

/** Encode @ev as a Dnstap message into @buf.  Returns its length; when
 * that is more than @cap nothing was written. */
size_t dnstap_encode(const struct dnstap_event *ev, uint8_t *buf, size_t cap);

/** The protocol of a frontend or transport by its name: "udp" and "plain"
 * (plain DNS to a forward zone's server) UDP, "tcp" TCP, "dot" DOT, "doh"
 * DOH; anything else (or NULL) NONE. */
enum dnstap_protocol dnstap_protocol_of(const char *name);
