/*
 * RFC 1035 §4.2.2 / RFC 7766 two-byte length framing over a byte stream that
 * arrives in arbitrary pieces.  Whole frames inside a received chunk are
 * handed over in place; only a frame split across chunks is copied, into a
 * buffer that grows once to the size that frame needs.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/** Reassembly state of one direction of one connection.  Embedded; the
 * owner calls framing_init() and framing_deinit(). */
struct framing {
	uint8_t *buf;	 /**< partial frame, length prefix included; owned, may be NULL */
	size_t have;	 /**< bytes of the partial frame held in buf */
	size_t cap;	 /**< allocated size of buf */
	uint8_t *held;	 /**< stream bytes not yet looked at (after FRAMING_HOLD); owned */
	size_t held_len; /**< bytes in held */
	size_t held_cap; /**< allocated size of held */
};

/** A frame callback's "stop here": the frame just delivered is consumed, the
 * bytes after it are kept, and framing_resume() delivers them later (a
 * reader at its cap of queries in flight). */
enum { FRAMING_HOLD = 0x4844 };

/**
 * Called once per complete frame with the message (without its prefix).
 * @msg is valid only during the call; it may point into the caller's chunk,
 * which the callback may modify.  Return 0 to go on, anything else to stop:
 * framing_feed() then returns that value at once (e.g. the connection was
 * closed from inside the callback).
 */
typedef int (*framing_frame_cb)(void *arg, uint8_t *msg, size_t len);

void framing_init(struct framing *f);
void framing_deinit(struct framing *f);

/**
 * Consume @len bytes of stream: call @cb for each frame completed, keep the
 * rest.  Returns 0, the callback's non-zero value, or -ENOMEM.  When the
 * callback returns FRAMING_HOLD, everything after that frame is held (and
 * so is anything fed while bytes are held), for framing_resume().
 */
int framing_feed(struct framing *f, uint8_t *data, size_t len, framing_frame_cb cb, void *arg);

/**
 * Deliver the held bytes as framing_feed() would.  Returns 0 when none are
 * left, FRAMING_HOLD when the callback asked to stop again, another
 * non-zero value of the callback, or -ENOMEM.
 */
int framing_resume(struct framing *f, framing_frame_cb cb, void *arg);

/** Bytes held after a FRAMING_HOLD, not looked at yet. */
static inline size_t framing_held(const struct framing *f)
{
	return f->held_len;
}

/** Bytes of an incomplete frame being held (0 when between frames). */
static inline size_t framing_pending(const struct framing *f)
{
	return f->have;
}
