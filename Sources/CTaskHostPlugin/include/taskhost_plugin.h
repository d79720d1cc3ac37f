/*
 * taskhost_plugin.h -- the TaskHost executor plugin ABI, version 1.0.
 *
 * A plugin is a shared library exporting one symbol, TH_PLUGIN_ENTRY ("taskhost_plugin_entry"),
 * that returns a pointer to a constant th_plugin table. Build one with nothing but this header:
 *
 *     cc -shared -fPIC -I path/to/include -o libmyplugin.so myplugin.c
 *
 * THE HOST'S PROMISE: one plugin instance never has two tasks with the same target id inside
 * `execute` (or pending completion) at the same time. Tasks of one target reach an instance one
 * at a time, in arrival order (a retry of a task comes before the next task of its target).
 * Tasks of different targets may be executed concurrently, from different host threads.
 *
 * RULES
 *  - Versioning: the host loads a plugin when abi_major equals TH_ABI_MAJOR and the plugin's
 *    abi_minor is at most the host's. Structs only ever grow at the end; struct_size says how much
 *    of a struct its producer knows. A NULL function pointer means "not implemented".
 *  - Ownership: every pointer passed INTO a plugin function is borrowed for the duration of that
 *    call only (copy what you keep). Strings the plugin hands TO the host in a th_outcome are
 *    copied by the host: for a synchronous result right after execute() returns, so they must stay
 *    valid until the plugin's next call on the same thread (a thread-local buffer is enough, a
 *    per-instance one is not: executions run concurrently); for a pending result, until
 *    host->complete() returns. Table strings (name, version, ...) live as long as the library.
 *  - Errors: functions return a th_status; no C++ exception, Swift error or longjmp crosses the
 *    boundary. Messages are UTF-8, not necessarily NUL-terminated, passed as th_str.
 *  - Threads: each function below says from which threads it may be called.
 */
#ifndef TASKHOST_PLUGIN_H
#define TASKHOST_PLUGIN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TH_ABI_MAJOR 1
#define TH_ABI_MINOR 0
#define TH_PLUGIN_ENTRY taskhost_plugin_entry
#define TH_PLUGIN_ENTRY_NAME "taskhost_plugin_entry"

#if defined(_WIN32)
#define TH_EXPORT __declspec(dllexport)
#else
#define TH_EXPORT __attribute__((visibility("default")))
#endif

/* Status codes (int32_t, never a C enum inside a struct). */
typedef int32_t th_status;
#define TH_OK 0               /* success */
#define TH_PENDING 1          /* execute only: the plugin will call host->complete exactly once */
#define TH_ERROR 2            /* failure; retried under the host's retry policy */
#define TH_RETRYABLE 3        /* failure worth retrying; th_outcome.retry_after_ms may say when */
#define TH_TIMEOUT 4          /* the work timed out inside the plugin (retried like TH_ERROR) */
#define TH_CANCELLED 5        /* the host cancelled the call (retried like TH_ERROR unless shutting down) */
#define TH_INVALID_CONFIG 6   /* validate/create: the configuration is wrong */
#define TH_NOT_SUPPORTED 7    /* the request is not supported */
#define TH_PERMANENT 8        /* failure that retrying cannot fix: the host skips remaining attempts */

/* Log levels for th_host_api.log. */
#define TH_LOG_TRACE 0
#define TH_LOG_DEBUG 1
#define TH_LOG_INFO 2
#define TH_LOG_WARNING 3
#define TH_LOG_ERROR 4

/* A UTF-8 string or byte buffer: pointer plus length. ptr may be NULL when len is 0. */
typedef struct th_str {
    const char *ptr;
    uint64_t len;
} th_str;

/* A buffer the caller owns, for the callee to write a message into (truncated to cap - 1 bytes,
 * always NUL-terminated when cap > 0). */
typedef struct th_message_buffer {
    char *ptr;
    uint64_t cap;
} th_message_buffer;

/* One execution of a task, borrowed for the duration of execute(). */
typedef struct th_task {
    uint32_t struct_size;     /* sizeof(th_task) as the host knows it */
    uint32_t attempt;         /* 1 for the first attempt */
    uint64_t sequence;        /* admission number: unique per run, increasing in arrival order */
    th_str target_id;         /* the target id as text (integers in decimal) */
    int32_t target_is_integer;/* 1 when the target id is an integer, then target_integer holds it;
                               * integer 7 and string "7" are DIFFERENT targets with the same text */
    int32_t reserved0;
    int64_t target_integer;
    th_str task_id;           /* the producer's id; len 0 when none */
    th_str payload;           /* the task's data: UTF-8 JSON for pipelines, any bytes for library use */
    int64_t deadline_ns;      /* CLOCK_MONOTONIC deadline of this attempt in ns, 0 when none */
} th_task;

/* The result of an execution, written by the plugin. For a synchronous result the host passes
 * an outcome already set to {struct_size = sizeof(th_outcome), status = 0, retry_after_ms = -1,
 * empty strings}, and execute()'s RETURN VALUE is the status (outcome->status is ignored). For a
 * pending result the plugin fills its own th_outcome (set struct_size and retry_after_ms) and
 * passes it to host->complete(). String lifetimes: see "Ownership" above. */
typedef struct th_outcome {
    uint32_t struct_size;     /* sizeof(th_outcome) as its producer knows it */
    th_status status;         /* TH_OK, TH_ERROR, TH_RETRYABLE, TH_TIMEOUT, TH_CANCELLED, TH_PERMANENT */
    int64_t retry_after_ms;   /* TH_RETRYABLE: ms before the next attempt; < 0: the host's policy; 0: now */
    th_str message;           /* an error message, or a note */
    th_str output;            /* a result for the results sink (UTF-8 JSON or text) */
} th_outcome;

/* Opaque completion token handed to execute(). */
typedef struct th_completion th_completion;

/* The host's functions, given to create(). Valid until destroy() returns. In ABI 1.0 every
 * function pointer here is non-NULL. */
typedef struct th_host_api {
    uint32_t abi_major;
    uint32_t abi_minor;
    uint32_t struct_size;
    uint32_t reserved0;
    void *host_context;       /* pass back as the first argument of every function here */

    /* Writes one line into the host's structured log, tagged with the plugin's name.
     * Any thread, any time between create() and the return of destroy(). */
    void (*log)(void *host_context, int32_t level, th_str message);

    /* Completes an execution that returned TH_PENDING. Call exactly once per such token, from any
     * thread, also after cancel(); it may even run before execute() has returned TH_PENDING. The
     * outcome is copied before this returns; the token is invalid afterwards. A second call is
     * detected and logged as plugin misbehaviour. If a cancelled execution still has not completed
     * after the host's abandon period, the host abandons it: a later complete() is ignored and
     * logged. Never call any host function after destroy() has returned. */
    void (*complete)(void *host_context, th_completion *token, const th_outcome *outcome);

    /* Looks up a host capability by versioned id (for example "taskhost.host.metrics/1");
     * NULL when the host does not offer it. Any thread. */
    const void *(*get_capability)(void *host_context, const char *id);
} th_host_api;

/* The table a plugin exports. Constant, valid for the life of the process. */
typedef struct th_plugin {
    uint32_t abi_major;       /* TH_ABI_MAJOR the plugin was built against */
    uint32_t abi_minor;       /* TH_ABI_MINOR the plugin was built against */
    uint32_t struct_size;     /* sizeof(th_plugin) as the plugin knows it */
    uint32_t reserved0;

    const char *name;         /* NUL-terminated, required: "command", "http-request", ... */
    const char *version;      /* NUL-terminated, required: the plugin's own version, "1.2.0" */
    const char *description;  /* NUL-terminated, may be NULL */
    const char *config_schema;/* NUL-terminated JSON Schema of the config, may be NULL */

    /* Checks a configuration without applying it. Returns TH_OK or TH_INVALID_CONFIG with a
     * message in `error`. May be NULL (then create() is the only check). Any thread, concurrently. */
    th_status (*validate)(th_str config_json, th_message_buffer error);

    /* Creates an instance from its JSON configuration ("{}" when none). On TH_OK stores the
     * instance in *instance_out; otherwise writes the reason into `error`. `host` stays valid until
     * destroy() returns. The host serializes create/destroy per instance. Required. */
    th_status (*create)(const th_host_api *host, th_str config_json, void **instance_out,
                        th_message_buffer error);

    /* Destroys an instance. Called once, after every execution of the instance has completed (or
     * been abandoned after its deadline). Required. */
    void (*destroy)(void *instance);

    /* Runs one attempt of a task. Either write the result into *outcome and return its status
     * (synchronous completion: the token must then never be used), or return TH_PENDING and call
     * host->complete(token, ...) exactly once later, from any thread. Called concurrently from
     * several host threads, never for two tasks of one target at once (the host's promise).
     * Must not block for long: the host may run it on its scheduler path. Required. */
    th_status (*execute)(void *instance, const th_task *task, th_completion *token, th_outcome *outcome);

    /* Looks up an optional plugin capability by versioned id; NULL when not offered. Any thread.
     * `instance` is NULL when the host asks at load time whether the plugin offers it at all; the
     * answer must then be the same for every instance. May be NULL (no capabilities).
     * Capability ids of ABI 1.0:
     *   "taskhost.cancel/1" -> const th_cancel_v1 *  (every function in it non-NULL) */
    const void *(*get_capability)(void *instance, const char *id);
} th_plugin;

/* Capability "taskhost.cancel/1": asks a pending execution to stop (after its timeout, or at
 * shutdown). The plugin should complete the token soon with TH_CANCELLED; the host still waits
 * for complete(). Any thread; may race with complete(), which the plugin must tolerate. */
#define TH_CAPABILITY_CANCEL_V1 "taskhost.cancel/1"
typedef struct th_cancel_v1 {
    uint32_t struct_size;
    uint32_t reserved0;
    void (*cancel)(void *instance, th_completion *token);
} th_cancel_v1;

/* The one symbol a plugin exports. */
typedef const th_plugin *(*th_plugin_entry_fn)(void);
TH_EXPORT const th_plugin *TH_PLUGIN_ENTRY(void);

#ifdef __cplusplus
}
#endif
#endif /* TASKHOST_PLUGIN_H */
