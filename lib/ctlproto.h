/*
 * The control protocol between dotproxyctl and dotproxy (--control), on a
 * unix stream socket, one request per connection:
 *
 *   request   = [ "--json" WS ] command [ WS argument ] LF
 *   command   = "stats" | "upstreams" | "flush" [ WS name ] | "reload"
 *   response  = ( "ok" LF body | "error" SP message LF ), then the server closes
 *
 * WS is one or more spaces or tabs; a CR before the LF is ignored; the line
 * is printable ASCII and at most CTLPROTO_MAX_LINE bytes, LF included.
 * With --json the body is one JSON document; without, text lines:
 *   stats       one "NAME{LABELS}=VALUE" line per sample of GET /metrics
 *   upstreams   one "SPEC up|down SRTT FAILURES CONNECTIONS TRANSPORT" line each
 *   flush       one line saying how many cache entries went
 *   reload      one line saying what was loaded
 * Both the daemon and dotproxyctl parse requests with ctlproto_parse(), so
 * dotproxyctl rejects a bad command before connecting.
 */
#pragma once

#include "lib/wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
	CTLPROTO_MAX_LINE = 1024, /**< bytes of a request line, LF included */
};

enum ctlproto_command {
	CTLPROTO_STATS,
	CTLPROTO_UPSTREAMS,
	CTLPROTO_FLUSH,
	CTLPROTO_RELOAD,
};

struct ctlproto_request {
	enum ctlproto_command command;
	bool json;
	/** flush: the name in wire form, lower case; 0 bytes: the whole cache */
	uint8_t name[WIRE_MAX_NAME];
	size_t name_len;
	char
	    name_text[WIRE_MAX_NAME + 8]; /**< flush: the name as text, absolute ("example.com.") */
};

/** Parse one request line (@len bytes, without its LF).  Returns 0, or
 * -EINVAL with the reason in @err ("unknown command 'foo'"). */
int ctlproto_parse(const char *line, size_t len, struct ctlproto_request *req, char *err,
		   size_t errlen);

/** The request line for @req, LF included, into @out (CTLPROTO_MAX_LINE).
 * Returns its length. */
size_t ctlproto_format(const struct ctlproto_request *req, char *out, size_t cap);

/** The name of @command ("stats"). */
const char *ctlproto_command_name(enum ctlproto_command command);
