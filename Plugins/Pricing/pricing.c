/*
 * pricing.c -- see include/pricing.h. Plain C11 + POSIX threads; no TaskHost header.
 */
#include "pricing.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* The process-wide call counter of pricing_reprice. */
static pthread_mutex_t calls_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t calls;

PRICING_API int32_t pricing_reprice(const char *sku, int64_t cents) {
    pthread_mutex_lock(&calls_lock);
    calls += 1;
    pthread_mutex_unlock(&calls_lock);
    if (sku == NULL || sku[0] == '\0') return PRICING_EMPTY_SKU;
    if (cents < 0) return PRICING_NEGATIVE_CENTS;
    return PRICING_OK;
}

PRICING_API int64_t pricing_calls(void) {
    pthread_mutex_lock(&calls_lock);
    int64_t value = calls;
    pthread_mutex_unlock(&calls_lock);
    return value;
}

PRICING_API double pricing_apply_discount(double price, float percent) {
    return price * (1.0 - (double)percent / 100.0);
}

PRICING_API int32_t pricing_checksum(const uint8_t *bytes, uint64_t len) {
    const uint32_t mod = 65521;
    uint32_t a = 1, b = 0;
    if (bytes == NULL) len = 0;
    while (len > 0) {
        /* 5552 bytes is the most that can be summed before b could overflow 32 bits. */
        uint64_t block = len < 5552 ? len : 5552;
        len -= block;
        while (block-- > 0) {
            a += *bytes++;
            b += a;
        }
        a %= mod;
        b %= mod;
    }
    uint32_t sum = b << 16 | a;
    int32_t result;
    memcpy(&result, &sum, sizeof result); /* the same 32 bits, as a signed value */
    return result;
}

PRICING_API uint8_t pricing_is_valid_sku(const char *sku) {
    if (sku == NULL) return 0;
    for (int i = 0; i < 8; i++) {
        char c = sku[i];
        int ok = i < 3 ? (c >= 'A' && c <= 'Z') : i == 3 ? c == '-' : (c >= '0' && c <= '9');
        if (!ok) return 0; /* also stops at the terminating NUL of a short sku */
    }
    return sku[8] == '\0';
}

PRICING_API const char *pricing_describe(const char *sku) {
    static _Thread_local char text[96];
    if (sku == NULL || sku[0] == '\0') return "no SKU";
    if (pricing_is_valid_sku(sku)) {
        snprintf(text, sizeof text, "SKU %s", sku);
    } else {
        size_t len = strlen(sku);
        snprintf(text, sizeof text, "invalid SKU '%.*s%s'", len > 64 ? 64 : (int)len, sku, len > 64 ? "..." : "");
    }
    return text;
}

PRICING_API const char *pricing_format_u64(uint64_t value) {
    static _Thread_local char text[24];
    snprintf(text, sizeof text, "%llu", (unsigned long long)value);
    return text;
}
