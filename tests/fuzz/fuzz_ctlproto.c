/*
 * Fuzz target for lib/ctlproto, the control socket's request parser.  The
 * input is one request line (without its LF).  Parsing must succeed or fail
 * with a reason; a request that parses must be well-formed (a flush name is
 * a valid wire name, other commands have none) and format back into a line
 * that parses to the same request.
 */
#include "tests/fuzz/fuzz.h"

#include "lib/ctlproto.h"

#include <errno.h>

/* A wire name: labels of 1..63 bytes ending in the root, 255 bytes at most. */
static bool valid_wire(const uint8_t *name, size_t len)
{
	size_t pos = 0;

	if (len == 0 || len > WIRE_MAX_NAME)
		return false;
	while (pos < len && name[pos] != 0) {
		if (name[pos] > 63)
			return false;
		pos += 1u + name[pos];
	}
	return pos + 1 == len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctlproto_request req, again;
	char err[256], line[CTLPROTO_MAX_LINE + 8];

	err[0] = '\0';
	int rc = ctlproto_parse((const char *)data, size, &req, err, sizeof(err));
	if (rc != 0) {
		CHECK(rc == -EINVAL);
		CHECK(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
		return 0;
	}
	CHECK(size < CTLPROTO_MAX_LINE);
	if (req.command == CTLPROTO_FLUSH && req.name_len)
		CHECK(valid_wire(req.name, req.name_len));
	else
		CHECK(req.name_len == 0);
	size_t n = ctlproto_format(&req, line, sizeof(line));
	CHECK(n > 0 && n <= CTLPROTO_MAX_LINE && line[n - 1] == '\n');
	CHECK(ctlproto_parse(line, n - 1, &again, err, sizeof(err)) == 0);
	CHECK(again.command == req.command && again.json == req.json);
	CHECK(again.name_len == req.name_len);
	CHECK(memcmp(again.name, req.name, req.name_len) == 0);
	return 0;
}
