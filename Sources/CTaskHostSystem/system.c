#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
#include <time.h>
#include "taskhost_system.h"

static void copy_error(const char *message, char *error, uint64_t cap) {
    if (cap == 0) return;
    if (message == NULL) message = "unknown error";
    strncpy(error, message, cap - 1);
    error[cap - 1] = '\0';
}

__attribute__((visibility("hidden"))) void *th_dlopen(const char *path, char *error, uint64_t error_cap) {
    dlerror();
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) copy_error(dlerror(), error, error_cap);
    return handle;
}

__attribute__((visibility("hidden"))) void *th_dlsym(void *handle, const char *symbol, char *error, uint64_t error_cap) {
    dlerror();
    void *address = dlsym(handle, symbol);
    const char *message = dlerror();
    if (message != NULL) {
        copy_error(message, error, error_cap);
        return NULL;
    }
    if (address == NULL) copy_error("symbol resolves to NULL", error, error_cap);
    return address;
}

__attribute__((visibility("hidden"))) int th_object_path(const void *address, char *path, uint64_t path_cap) {
    Dl_info info;
    if (dladdr(address, &info) == 0 || info.dli_fname == NULL || path_cap == 0) return 0;
    strncpy(path, info.dli_fname, path_cap - 1);
    path[path_cap - 1] = '\0';
    return 1;
}

__attribute__((visibility("hidden"))) int64_t th_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

_Thread_local void *th_spare_token;
