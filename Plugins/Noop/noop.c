/* The smallest correct TaskHost plugin: every task succeeds at once. With {"echo": true} it
 * answers with the payload as output, the same work as the Swift SDK's Echo plugin, so the two
 * can be compared (taskhost-bench P1 and P6 against P3). */
#include <stdlib.h>
#include <string.h>
#include "taskhost_plugin.h"

typedef struct noop {
    int echo;
} noop;

/* The output must stay valid until this thread's next call: a thread-local copy. */
static _Thread_local char *tl_output;
static _Thread_local uint64_t tl_capacity;

static int wants_echo(th_str config) {
    /* The only key is "echo"; anything but {} / {"echo": true|false} is refused. */
    char text[64];
    uint64_t n = 0;
    for (uint64_t i = 0; i < config.len && n < sizeof text - 1; i++)
        if (config.ptr[i] != ' ' && config.ptr[i] != '\n' && config.ptr[i] != '\t') text[n++] = config.ptr[i];
    text[n] = '\0';
    if (n == 0 || strcmp(text, "{}") == 0 || strcmp(text, "{\"echo\":false}") == 0) return 0;
    if (strcmp(text, "{\"echo\":true}") == 0) return 1;
    return -1;
}

static void write_message(th_message_buffer error, const char *message) {
    if (error.ptr == NULL || error.cap == 0) return;
    strncpy(error.ptr, message, error.cap - 1);
    error.ptr[error.cap - 1] = '\0';
}

static th_status noop_validate(th_str config, th_message_buffer error) {
    if (wants_echo(config) >= 0) return TH_OK;
    write_message(error, "the configuration is {} or {\"echo\": true}");
    return TH_INVALID_CONFIG;
}

static th_status noop_create(const th_host_api *host, th_str config, void **instance_out, th_message_buffer error) {
    (void)host;
    int echo = wants_echo(config);
    if (echo < 0) {
        write_message(error, "the configuration is {} or {\"echo\": true}");
        return TH_INVALID_CONFIG;
    }
    noop *instance = malloc(sizeof *instance);
    if (instance == NULL) {
        write_message(error, "out of memory");
        return TH_ERROR;
    }
    instance->echo = echo;
    *instance_out = instance;
    return TH_OK;
}

static void noop_destroy(void *instance) { free(instance); }

static th_status noop_execute(void *instance, const th_task *task, th_completion *token, th_outcome *outcome) {
    (void)token;
    if (!((noop *)instance)->echo) return TH_OK;
    if (task->payload.len > tl_capacity) {
        char *grown = realloc(tl_output, task->payload.len);
        if (grown == NULL) return TH_RETRYABLE;
        tl_output = grown;
        tl_capacity = task->payload.len;
    }
    if (task->payload.len > 0) memcpy(tl_output, task->payload.ptr, task->payload.len);
    outcome->output = (th_str){tl_output, task->payload.len};
    return TH_OK;
}

static const th_plugin noop_plugin = {
    .abi_major = TH_ABI_MAJOR,
    .abi_minor = TH_ABI_MINOR,
    .struct_size = sizeof(th_plugin),
    .name = "noop",
    .version = "1.0.0",
    .description = "Completes every task at once; with {\"echo\": true} answers with the payload.",
    .config_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"echo\":{\"type\":\"boolean\"}}}",
    .validate = noop_validate,
    .create = noop_create,
    .destroy = noop_destroy,
    .execute = noop_execute,
};

TH_EXPORT const th_plugin *TH_PLUGIN_ENTRY(void) { return &noop_plugin; }
