/*
 * Per-connection map from a 16-bit upstream message ID to the query that
 * owns it.  IDs are drawn at random and never collide with one in flight on
 * the same connection (RFC 5452 §9.2, RFC 7766 §7): an answer can only ever
 * be matched to the query that was sent with its ID.
 */
#pragma once

#include <stdint.h>

struct idmap;

/** A map holding up to @capacity entries (1..32768), its table sized to
 * the entries actually held; NULL on allocation failure.  Freed with
 * idmap_free(); values are not owned. */
struct idmap *idmap_new(unsigned capacity);
void idmap_free(struct idmap *map);

/** Bind @value (non-NULL) to a fresh random ID written to @id.
 * Returns 0, -ENOSPC when the map is full, or -ENOMEM when its table could
 * not grow. */
int idmap_alloc(struct idmap *map, void *value, uint16_t *id);

/** The value bound to @id, or NULL. */
void *idmap_get(const struct idmap *map, uint16_t id);

/** Unbind @id; returns the value it had, or NULL. */
void *idmap_remove(struct idmap *map, uint16_t id);

/** Number of IDs bound. */
unsigned idmap_count(const struct idmap *map);

/** Unbind the entry of some bound ID and return its value (NULL when empty):
 * lets the owner empty the map one entry at a time, e.g. to resend queries. */
void *idmap_pop(struct idmap *map, uint16_t *id);
