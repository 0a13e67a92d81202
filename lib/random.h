/*
 * Unpredictable numbers for message IDs (RFC 5452 §9.2): read from the
 * kernel's CSPRNG in blocks, so an ID costs no system call.
 */
#pragma once

#include <stdint.h>

/** A uniformly random 16-bit value.  Aborts if the kernel cannot supply
 * randomness (predictable IDs would invite cache poisoning). */
uint16_t random_u16(void);
