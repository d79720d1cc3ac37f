/*
 * pricing.h -- a small plain C library with no knowledge of TaskHost.
 *
 * TaskHost calls functions like these through libffi (a "library" executor configured with a
 * symbol name and a signature), so this library deliberately covers the argument and return
 * types such calls must get right: 8-, 32- and 64-bit integers, float, double, a bool-like byte,
 * C strings and byte buffers.
 *
 * Build:  cc -std=c11 -Wall -Wextra -shared -fPIC -I include -o libPricing.so pricing.c
 *
 * Every function may be called from any thread at any time.
 */
#ifndef PRICING_H
#define PRICING_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define PRICING_API __declspec(dllexport)
#else
#define PRICING_API __attribute__((visibility("default")))
#endif

/* Result codes of pricing_reprice. */
#define PRICING_OK 0
#define PRICING_EMPTY_SKU 2
#define PRICING_NEGATIVE_CENTS 3

/* Validates a repricing of `sku` to `cents` and counts the call (see pricing_calls). Stores
 * nothing. Returns PRICING_OK (0), PRICING_EMPTY_SKU (2) when sku is NULL or "", or
 * PRICING_NEGATIVE_CENTS (3) when cents < 0 (the sku is checked first). */
PRICING_API int32_t pricing_reprice(const char *sku, int64_t cents);

/* price * (1 - percent / 100), computed in double: (100.0, 25.0f) -> 75.0. A negative percent
 * raises the price; no rounding, no clamping. */
PRICING_API double pricing_apply_discount(double price, float percent);

/* The Adler-32 checksum of len bytes, as a signed 32-bit value (the same 32 bits):
 * "Wikipedia" -> 0x11E60398; no bytes -> 1. bytes may be NULL only when len is 0. */
PRICING_API int32_t pricing_checksum(const uint8_t *bytes, uint64_t len);

/* How many times pricing_reprice has been called in this process, failed calls included. */
PRICING_API int64_t pricing_calls(void);

/* 1 when sku is exactly three ASCII capital letters, '-', four digits ("ABC-1234"), else 0
 * (NULL included). */
PRICING_API uint8_t pricing_is_valid_sku(const char *sku);

/* A short description: "SKU ABC-1234" for a valid sku, "invalid SKU 'x'" otherwise ("no SKU" for
 * NULL or ""; long skus are cut to 64 bytes and end in "..."). The text lives in a buffer of the
 * calling thread, valid until that thread's next call of pricing_describe; never free it. */
PRICING_API const char *pricing_describe(const char *sku);

/* `value` in decimal ("18446744073709551615" for UINT64_MAX): what a uint64 argument arrived as.
 * The text lives in a buffer of the calling thread, valid until that thread's next call. */
PRICING_API const char *pricing_format_u64(uint64_t value);

#ifdef __cplusplus
}
#endif
#endif /* PRICING_H */
