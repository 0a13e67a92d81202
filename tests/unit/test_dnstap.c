/*
 * Unit tests for lib/dnstap: events encoded and decoded again with
 * protobuf-c's generated unpacker (every field we set comes back, nothing
 * else appears), and the same bytes walked by a small decoder of our own
 * that knows the field numbers and wire types of the published schema, so
 * that a wrong number in lib/dnstap.proto -- which a round trip through
 * code generated from that same file cannot see -- fails here.  Also the
 * size bound, a buffer too small, and the protocol names.
 */
#include "lib/dnstap.h"

#include "dnstap.pb-c.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- helpers ------------------------------------------------------------ */

static struct sockaddr_storage addr(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons(port);
	} else {
		assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
	}
	return ss;
}

/* www.example A: the query and an answer (192.0.2.1), without their NUL. */
static const uint8_t query_msg[] = "\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
				   "\x03www\x07"
				   "example\x00\x00\x01\x00\x01";
static const uint8_t response_msg[] =
    "\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
    "\x03www\x07"
    "example\x00\x00\x01\x00\x01"
    "\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\xc0\x00\x02\x01";
#define QUERY_LEN    (sizeof(query_msg) - 1)
#define RESPONSE_LEN (sizeof(response_msg) - 1)

static Dnstap__Dnstap *roundtrip(const struct dnstap_event *ev)
{
	uint8_t buf[4096];
	size_t len = dnstap_encode(ev, buf, sizeof(buf));

	assert_true(len > 0 && len <= sizeof(buf));
	assert_true(len <= dnstap_size_bound(ev));
	Dnstap__Dnstap *d = dnstap__dnstap__unpack(NULL, len, buf);
	assert_non_null(d);
	assert_int_equal(d->type, DNSTAP__DNSTAP__TYPE__MESSAGE);
	assert_non_null(d->message);
	return d;
}

static void assert_bytes(protobuf_c_boolean has, ProtobufCBinaryData b, const void *want,
			 size_t len)
{
	assert_true(has);
	assert_int_equal(b.len, len);
	assert_memory_equal(b.data, want, len);
}

/* ---- round trips -------------------------------------------------------- */

static void client_query_v4(void **state)
{
	(void)state;
	struct sockaddr_storage client = addr("192.0.2.7", 40000);
	struct sockaddr_storage us = addr("127.0.0.1", 53);
	struct dnstap_event ev = {
		.type = DNSTAP_CLIENT_QUERY,
		.protocol = DNSTAP_UDP,
		.query_addr = (struct sockaddr *)&client,
		.response_addr = (struct sockaddr *)&us,
		.query_time_ns = 1700000000123456789ull,
		.query = query_msg,
		.query_len = QUERY_LEN,
		.identity = "host.example",
		.version = "dotproxy 1.2.3",
	};
	Dnstap__Dnstap *d = roundtrip(&ev);
	Dnstap__Message *m = d->message;

	assert_bytes(d->has_identity, d->identity, "host.example", 12);
	assert_bytes(d->has_version, d->version, "dotproxy 1.2.3", 14);
	assert_false(d->has_extra);
	assert_int_equal(m->type, DNSTAP__MESSAGE__TYPE__CLIENT_QUERY);
	assert_true(m->has_socket_family && m->socket_family == DNSTAP__SOCKET_FAMILY__INET);
	assert_true(m->has_socket_protocol && m->socket_protocol == DNSTAP__SOCKET_PROTOCOL__UDP);
	assert_bytes(m->has_query_address, m->query_address, "\xc0\x00\x02\x07", 4);
	assert_bytes(m->has_response_address, m->response_address, "\x7f\x00\x00\x01", 4);
	assert_true(m->has_query_port && m->query_port == 40000);
	assert_true(m->has_response_port && m->response_port == 53);
	assert_true(m->has_query_time_sec && m->query_time_sec == 1700000000u);
	assert_true(m->has_query_time_nsec && m->query_time_nsec == 123456789u);
	assert_false(m->has_response_time_sec || m->has_response_time_nsec);
	assert_bytes(m->has_query_message, m->query_message, query_msg, QUERY_LEN);
	assert_false(m->has_response_message || m->has_query_zone || m->has_http_protocol);
	assert_null(m->policy);
	dnstap__dnstap__free_unpacked(d, NULL);
}

static void forwarder_response_v6_doh(void **state)
{
	(void)state;
	struct sockaddr_storage up = addr("2001:db8::53", 443);
	struct dnstap_event ev = {
		.type = DNSTAP_FORWARDER_RESPONSE,
		.protocol = DNSTAP_DOH,
		.response_addr = (struct sockaddr *)&up,
		.query_time_ns = 1700000000000000001ull,
		.response_time_ns = 1700000001999999999ull,
		.response = response_msg,
		.response_len = RESPONSE_LEN,
		.identity = "h",
		.version = "v",
	};
	Dnstap__Dnstap *d = roundtrip(&ev);
	Dnstap__Message *m = d->message;
	struct in6_addr want;

	inet_pton(AF_INET6, "2001:db8::53", &want);
	assert_int_equal(m->type, DNSTAP__MESSAGE__TYPE__FORWARDER_RESPONSE);
	assert_true(m->has_socket_family && m->socket_family == DNSTAP__SOCKET_FAMILY__INET6);
	assert_true(m->has_socket_protocol && m->socket_protocol == DNSTAP__SOCKET_PROTOCOL__DOH);
	assert_true(m->has_http_protocol && m->http_protocol == DNSTAP__HTTP_PROTOCOL__HTTP2);
	assert_false(m->has_query_address || m->has_query_port);
	assert_bytes(m->has_response_address, m->response_address, &want, 16);
	assert_true(m->has_response_port && m->response_port == 443);
	assert_true(m->query_time_sec == 1700000000u && m->query_time_nsec == 1);
	assert_true(m->has_response_time_sec && m->response_time_sec == 1700000001u);
	assert_true(m->has_response_time_nsec && m->response_time_nsec == 999999999u);
	assert_false(m->has_query_message);
	assert_bytes(m->has_response_message, m->response_message, response_msg, RESPONSE_LEN);
	dnstap__dnstap__free_unpacked(d, NULL);
}

/* Unknown addresses, protocol, times and names are left out, not zero. */
static void unknowns_are_left_out(void **state)
{
	(void)state;
	struct dnstap_event ev = {
		.type = DNSTAP_CLIENT_RESPONSE,
		.response = response_msg,
		.response_len = RESPONSE_LEN,
	};
	Dnstap__Dnstap *d = roundtrip(&ev);
	Dnstap__Message *m = d->message;

	assert_false(d->has_identity || d->has_version);
	assert_int_equal(m->type, DNSTAP__MESSAGE__TYPE__CLIENT_RESPONSE);
	assert_false(m->has_socket_family || m->has_socket_protocol || m->has_http_protocol);
	assert_false(m->has_query_address || m->has_response_address);
	assert_false(m->has_query_port || m->has_response_port);
	assert_false(m->has_query_time_sec || m->has_response_time_sec);
	assert_true(m->has_response_message);
	dnstap__dnstap__free_unpacked(d, NULL);

	/* An address of another family (a unix socket) is not an address here. */
	struct sockaddr_storage other;
	memset(&other, 0, sizeof(other));
	other.ss_family = AF_UNIX;
	ev.query_addr = (struct sockaddr *)&other;
	d = roundtrip(&ev);
	assert_false(d->message->has_socket_family || d->message->has_query_address);
	dnstap__dnstap__free_unpacked(d, NULL);
}

/* ---- the wire, by the published field numbers --------------------------- */

struct field {
	uint32_t number;
	unsigned wire_type; /* 0 varint, 2 length-delimited, 5 fixed32 */
	uint64_t value;	    /* varint or fixed32 */
	const uint8_t *data;
	size_t len;
};

static uint64_t varint(const uint8_t **p, const uint8_t *end)
{
	uint64_t v = 0;

	for (unsigned shift = 0; shift < 64; shift += 7) {
		assert_true(*p < end);
		uint8_t b = *(*p)++;
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return v;
	}
	fail_msg("varint too long");
	return 0;
}

/* Split @data into fields; at most @max. */
static size_t fields_of(const uint8_t *data, size_t len, struct field *out, size_t max)
{
	const uint8_t *p = data, *end = data + len;
	size_t n = 0;

	while (p < end) {
		assert_true(n < max);
		uint64_t key = varint(&p, end);
		struct field *f = &out[n++];
		memset(f, 0, sizeof(*f));
		f->number = (uint32_t)(key >> 3);
		f->wire_type = (unsigned)(key & 7);
		if (f->wire_type == 0) {
			f->value = varint(&p, end);
		} else if (f->wire_type == 2) {
			f->len = varint(&p, end);
			assert_true(f->len <= (size_t)(end - p));
			f->data = p;
			p += f->len;
		} else if (f->wire_type == 5) {
			assert_true(end - p >= 4);
			f->value = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
				   (uint32_t)p[3] << 24;
			p += 4;
		} else {
			fail_msg("wire type %u", f->wire_type);
		}
	}
	return n;
}

static const struct field *find(const struct field *fs, size_t n, uint32_t number,
				unsigned wire_type)
{
	for (size_t i = 0; i < n; i++)
		if (fs[i].number == number) {
			assert_int_equal(fs[i].wire_type, wire_type);
			return &fs[i];
		}
	fail_msg("field %u missing", number);
	return NULL;
}

static void published_field_numbers(void **state)
{
	(void)state;
	struct sockaddr_storage client = addr("::1", 5353);
	struct sockaddr_storage us = addr("::1", 853);
	struct dnstap_event ev = {
		.type = DNSTAP_CLIENT_RESPONSE,
		.protocol = DNSTAP_DOT,
		.query_addr = (struct sockaddr *)&client,
		.response_addr = (struct sockaddr *)&us,
		.query_time_ns = 5000000007ull,
		.response_time_ns = 6000000008ull,
		.query = query_msg,
		.query_len = QUERY_LEN,
		.response = response_msg,
		.response_len = RESPONSE_LEN,
		.identity = "id",
		.version = "ver",
	};
	uint8_t buf[1024];
	size_t len = dnstap_encode(&ev, buf, sizeof(buf));
	struct field top[8], m[20];

	/* Dnstap: identity 1, version 2, message 14, type 15 (MESSAGE = 1). */
	size_t n = fields_of(buf, len, top, 8);
	assert_int_equal(n, 4);
	assert_memory_equal(find(top, n, 1, 2)->data, "id", 2);
	assert_memory_equal(find(top, n, 2, 2)->data, "ver", 3);
	assert_int_equal(find(top, n, 15, 0)->value, 1);
	const struct field *msg = find(top, n, 14, 2);

	/* Message: type 1, socket_family 2, socket_protocol 3, addresses 4
	 * and 5, ports 6 and 7, query time 8 and 9 (fixed32), query 10,
	 * response time 12 and 13 (fixed32), response 14. */
	n = fields_of(msg->data, msg->len, m, 20);
	assert_int_equal(n, 13);
	assert_int_equal(find(m, n, 1, 0)->value, 6);
	assert_int_equal(find(m, n, 2, 0)->value, 2); /* INET6 */
	assert_int_equal(find(m, n, 3, 0)->value, 3); /* DOT */
	assert_int_equal(find(m, n, 4, 2)->len, 16);
	assert_int_equal(find(m, n, 5, 2)->len, 16);
	assert_int_equal(find(m, n, 6, 0)->value, 5353);
	assert_int_equal(find(m, n, 7, 0)->value, 853);
	assert_int_equal(find(m, n, 8, 0)->value, 5);
	assert_int_equal(find(m, n, 9, 5)->value, 7);
	assert_memory_equal(find(m, n, 10, 2)->data, query_msg, QUERY_LEN);
	assert_int_equal(find(m, n, 12, 0)->value, 6);
	assert_int_equal(find(m, n, 13, 5)->value, 8);
	assert_memory_equal(find(m, n, 14, 2)->data, response_msg, RESPONSE_LEN);

	/* DOH adds http_protocol 16 (HTTP2 = 2). */
	ev.protocol = DNSTAP_DOH;
	len = dnstap_encode(&ev, buf, sizeof(buf));
	n = fields_of(buf, len, top, 8);
	msg = find(top, n, 14, 2);
	n = fields_of(msg->data, msg->len, m, 20);
	assert_int_equal(find(m, n, 3, 0)->value, 4);
	assert_int_equal(find(m, n, 16, 0)->value, 2);
}

/* ---- sizes ---------------------------------------------------------------- */

/* The largest event there can be stays under the bound; a buffer one byte
 * short is left untouched, and the length needed is still returned. */
static void bound_and_short_buffer(void **state)
{
	(void)state;
	static uint8_t big[65535];
	char identity[256], version[256];
	struct sockaddr_storage a = addr("2001:db8::1", 65535), b = addr("2001:db8::2", 65535);

	memset(big, 0xab, sizeof(big));
	memset(identity, 'i', sizeof(identity) - 1);
	identity[sizeof(identity) - 1] = 0;
	memset(version, 'v', sizeof(version) - 1);
	version[sizeof(version) - 1] = 0;
	struct dnstap_event ev = {
		.type = DNSTAP_FORWARDER_RESPONSE,
		.protocol = DNSTAP_DOH,
		.query_addr = (struct sockaddr *)&a,
		.response_addr = (struct sockaddr *)&b,
		.query_time_ns = UINT64_MAX,
		.response_time_ns = UINT64_MAX - 1,
		.query = big,
		.query_len = sizeof(big),
		.response = big,
		.response_len = sizeof(big),
		.identity = identity,
		.version = version,
	};
	size_t cap = dnstap_size_bound(&ev);
	uint8_t *buf = malloc(cap);
	assert_non_null(buf);
	size_t len = dnstap_encode(&ev, buf, cap);
	assert_true(len > 2 * sizeof(big) && len <= cap);
	Dnstap__Dnstap *d = dnstap__dnstap__unpack(NULL, len, buf);
	assert_non_null(d);
	assert_int_equal(d->message->query_message.len, sizeof(big));
	dnstap__dnstap__free_unpacked(d, NULL);

	memset(buf, 0x5a, cap);
	assert_int_equal(dnstap_encode(&ev, buf, len - 1), len);
	for (size_t i = 0; i < cap; i++)
		assert_int_equal(buf[i], 0x5a);
	free(buf);
}

static void protocol_names(void **state)
{
	(void)state;
	assert_int_equal(dnstap_protocol_of("udp"), DNSTAP_UDP);
	assert_int_equal(dnstap_protocol_of("plain"), DNSTAP_UDP);
	assert_int_equal(dnstap_protocol_of("tcp"), DNSTAP_TCP);
	assert_int_equal(dnstap_protocol_of("dot"), DNSTAP_DOT);
	assert_int_equal(dnstap_protocol_of("doh"), DNSTAP_DOH);
	assert_int_equal(dnstap_protocol_of("prefetch"), DNSTAP_PROTOCOL_NONE);
	assert_int_equal(dnstap_protocol_of(NULL), DNSTAP_PROTOCOL_NONE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(client_query_v4),
		cmocka_unit_test(forwarder_response_v6_doh),
		cmocka_unit_test(unknowns_are_left_out),
		cmocka_unit_test(published_field_numbers),
		cmocka_unit_test(bound_and_short_buffer),
		cmocka_unit_test(protocol_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
