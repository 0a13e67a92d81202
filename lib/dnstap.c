/* The encoder fills protobuf-c's generated structures, which point at the
 * caller's bytes (nothing is copied before pack). */
#include "lib/dnstap.h"

#include "dnstap.pb-c.h"

#include <netinet/in.h>
#include <string.h>

/* Address bytes and port of @sa into @bytes/@port; its dnstap family, or 0
 * when it is not an IP address (then nothing is set). */
static int addr_of(const struct sockaddr *sa, ProtobufCBinaryData *bytes, uint32_t *port)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		bytes->data = (uint8_t *)&in->sin_addr;
		bytes->len = sizeof(in->sin_addr);
		*port = ntohs(in->sin_port);
		return DNSTAP__SOCKET_FAMILY__INET;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		bytes->data = (uint8_t *)&in6->sin6_addr;
		bytes->len = sizeof(in6->sin6_addr);
		*port = ntohs(in6->sin6_port);
		return DNSTAP__SOCKET_FAMILY__INET6;
	}
	return 0;
}

static void set_bytes(protobuf_c_boolean *has, ProtobufCBinaryData *field, const void *data,
		      size_t len)
{
	if (!data)
		return;
	*has = 1;
	field->data = (uint8_t *)data;
	field->len = len;
}

static size_t string_len(const char *s)
{
	return s ? strlen(s) : 0;
}

size_t dnstap_size_bound(const struct dnstap_event *ev)
{
	/* Each variable field costs its bytes plus a tag and a length of at
	 * most 1 + 5 bytes; DNSTAP_OVERHEAD covers the rest with room. */
	return DNSTAP_OVERHEAD + 4 * 6 + string_len(ev->identity) + string_len(ev->version) +
	       (ev->query ? ev->query_len : 0) + (ev->response ? ev->response_len : 0);
}

size_t dnstap_encode(const struct dnstap_event *ev, uint8_t *buf, size_t cap)
{
	Dnstap__Dnstap top = DNSTAP__DNSTAP__INIT;
	Dnstap__Message m = DNSTAP__MESSAGE__INIT;

	top.type = DNSTAP__DNSTAP__TYPE__MESSAGE;
	top.message = &m;
	set_bytes(&top.has_identity, &top.identity, ev->identity, string_len(ev->identity));
	set_bytes(&top.has_version, &top.version, ev->version, string_len(ev->version));
	m.type = (Dnstap__Message__Type)ev->type;
	if (ev->protocol != DNSTAP_PROTOCOL_NONE) {
		m.has_socket_protocol = 1;
		m.socket_protocol = (Dnstap__SocketProtocol)ev->protocol;
		if (ev->protocol == DNSTAP_DOH) {
			m.has_http_protocol = 1;
			m.http_protocol = DNSTAP__HTTP_PROTOCOL__HTTP2;
		}
	}
	int family = 0;
	if (ev->query_addr) {
		family = addr_of(ev->query_addr, &m.query_address, &m.query_port);
		m.has_query_address = m.has_query_port = family != 0;
	}
	if (ev->response_addr) {
		int f = addr_of(ev->response_addr, &m.response_address, &m.response_port);
		m.has_response_address = m.has_response_port = f != 0;
		if (!family)
			family = f;
	}
	if (family) {
		m.has_socket_family = 1;
		m.socket_family = (Dnstap__SocketFamily)family;
	}
	if (ev->query_time_ns) {
		m.has_query_time_sec = m.has_query_time_nsec = 1;
		m.query_time_sec = ev->query_time_ns / 1000000000u;
		m.query_time_nsec = (uint32_t)(ev->query_time_ns % 1000000000u);
	}
	if (ev->response_time_ns) {
		m.has_response_time_sec = m.has_response_time_nsec = 1;
		m.response_time_sec = ev->response_time_ns / 1000000000u;
		m.response_time_nsec = (uint32_t)(ev->response_time_ns % 1000000000u);
	}
	set_bytes(&m.has_query_message, &m.query_message, ev->query, ev->query_len);
	set_bytes(&m.has_response_message, &m.response_message, ev->response, ev->response_len);

	/* Room for the bound: pack at once (sizing first would walk it twice). */
	if (cap >= dnstap_size_bound(ev))
		return dnstap__dnstap__pack(&top, buf);
	size_t len = dnstap__dnstap__get_packed_size(&top);
	if (len <= cap)
		dnstap__dnstap__pack(&top, buf);
	return len;
}

enum dnstap_protocol dnstap_protocol_of(const char *name)
{
	static const struct {
		const char *name;
		enum dnstap_protocol protocol;
	} names[] = {
		{ "udp", DNSTAP_UDP }, { "plain", DNSTAP_UDP }, { "tcp", DNSTAP_TCP },
		{ "dot", DNSTAP_DOT }, { "doh", DNSTAP_DOH },
	};

	for (size_t i = 0; name && i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(name, names[i].name) == 0)
			return names[i].protocol;
	return DNSTAP_PROTOCOL_NONE;
}
