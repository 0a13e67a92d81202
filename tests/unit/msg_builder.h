/*
 * A tiny DNS message builder shared by the unit tests: bytes appended with
 * bounds checks (cmocka assertions), names from dotted text, pointers,
 * headers and the fixed part of records.  Header-only, static inline so
 * that a test file using a few of them gets no unused-function warnings.
 */
#pragma once

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>

#include <cmocka.h>

struct msg {
	uint8_t b[8192];
	size_t len;
};

static inline void put8(struct msg *m, unsigned v)
{
	assert_true(m->len < sizeof(m->b));
	m->b[m->len++] = (uint8_t)v;
}

static inline void put16(struct msg *m, unsigned v)
{
	put8(m, (v >> 8) & 0xff);
	put8(m, v & 0xff);
}

static inline void put32(struct msg *m, uint32_t v)
{
	put16(m, v >> 16);
	put16(m, v & 0xffff);
}

static inline void put_raw(struct msg *m, const void *p, size_t n)
{
	assert_true(m->len + n <= sizeof(m->b));
	memcpy(m->b + m->len, p, n);
	m->len += n;
}

static inline void set16(struct msg *m, size_t off, unsigned v)
{
	m->b[off] = (uint8_t)(v >> 8);
	m->b[off + 1] = (uint8_t)v;
}

/* Dotted text to uncompressed labels; "" or "." is the root.  No escapes:
 * tests needing odd bytes in a label write them with put_raw(). */
static inline void put_name(struct msg *m, const char *text)
{
	const char *p = text;

	while (*p && strcmp(p, ".") != 0) {
		const char *dot = strchr(p, '.');
		size_t n = dot ? (size_t)(dot - p) : strlen(p);
		assert_true(n > 0 && n < 64);
		put8(m, (unsigned)n);
		put_raw(m, p, n);
		p += n;
		if (*p == '.')
			p++;
	}
	put8(m, 0);
}

/* A compression pointer to @off. */
static inline void put_ptr(struct msg *m, size_t off)
{
	put16(m, 0xc000 | (unsigned)off);
}

static inline void put_header(struct msg *m, unsigned id, unsigned flags, unsigned qd, unsigned an,
			      unsigned ns, unsigned ar)
{
	m->len = 0;
	put16(m, id);
	put16(m, flags);
	put16(m, qd);
	put16(m, an);
	put16(m, ns);
	put16(m, ar);
}

/* Type, class, TTL and RDLENGTH; the owner name is written before. */
static inline void put_rr_fixed(struct msg *m, unsigned type, unsigned cls, uint32_t ttl,
				unsigned rdlen)
{
	put16(m, type);
	put16(m, cls);
	put32(m, ttl);
	put16(m, rdlen);
}
