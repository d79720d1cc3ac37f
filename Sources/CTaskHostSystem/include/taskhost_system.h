#ifndef TASKHOST_SYSTEM_H
#define TASKHOST_SYSTEM_H
#include <stdint.h>

/* dlopen with RTLD_NOW | RTLD_LOCAL; on failure copies dlerror() into error (read right after
 * the call that set it) and returns NULL. */
void *th_dlopen(const char *path, char *error, uint64_t error_cap);

/* dlsym; on failure copies dlerror() into error and returns NULL. */
void *th_dlsym(void *handle, const char *symbol, char *error, uint64_t error_cap);

/* The path of the shared object that contains `address` (dladdr), or 0 when unknown. */
int th_object_path(const void *address, char *path, uint64_t path_cap);

/* This thread's spare completion token for synchronous plugin calls (TaskHostRuntime's
 * TokenCache): a thread-local slot read and written without a call into libc. */
extern _Thread_local void *th_spare_token;

/* Takes the thread's spare token (NULL when there is none). */
static inline void *th_take_spare_token(void) {
    void *token = th_spare_token;
    th_spare_token = 0;
    return token;
}

/* Stores `token` as the thread's spare and returns the one it replaces (NULL when none). */
static inline void *th_swap_spare_token(void *token) {
    void *previous = th_spare_token;
    th_spare_token = token;
    return previous;
}

/* A 64-bit store that is never torn or reordered before earlier stores (the durable queue's
 * journal of running attempts, read by the next host after a crash of this one). */
static inline void th_store_release_u64(uint64_t *address, uint64_t value) {
    __atomic_store_n(address, value, __ATOMIC_RELEASE);
}

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t th_monotonic_ns(void);
#endif
