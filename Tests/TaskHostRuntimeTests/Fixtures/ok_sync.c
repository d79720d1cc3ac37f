/* Fixture "fixture-ok": a correct minimal plugin that completes every task synchronously.
 *   payload "fail"      -> TH_ERROR, message "asked to fail"
 *   payload "retry"     -> TH_RETRYABLE, retry_after_ms 1500
 *   payload "permanent" -> TH_PERMANENT
 *   any other payload   -> TH_OK, output = a copy of the payload (in a per-thread buffer)
 * Config: {} is accepted; an object with a key, like {"bad": true}, gets TH_INVALID_CONFIG and
 * "key 'bad' is not allowed" from validate and create. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "taskhost_plugin.h"

typedef struct instance {
    const th_host_api *host;
} instance;

static void set_error(th_message_buffer error, const char *text, size_t len) {
    if (error.ptr == NULL || error.cap == 0) return;
    snprintf(error.ptr, (size_t)error.cap, "%.*s", (int)len, text);
}

/* Accepts an empty JSON object; names the first key of a non-empty one. */
static th_status check_config(th_str config, th_message_buffer error) {
    const char *p = config.ptr != NULL ? config.ptr : "", *end = p + (config.ptr != NULL ? config.len : 0);
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    if (p < end && *p == '{') {
        p++;
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
        if (p < end && *p == '}') {
            p++;
            while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
            if (p == end) return TH_OK;
        } else if (p < end && *p == '"') {
            const char *key = ++p;
            while (p < end && *p != '"') p += *p == '\\' && p + 1 < end ? 2 : 1;
            char text[200];
            int len = snprintf(text, sizeof text, "key '%.*s' is not allowed", (int)(p - key < 100 ? p - key : 100), key);
            set_error(error, text, (size_t)len);
            return TH_INVALID_CONFIG;
        }
    }
    const char *text = "the configuration must be a JSON object without keys: use {}";
    set_error(error, text, strlen(text));
    return TH_INVALID_CONFIG;
}

static th_status ok_validate(th_str config_json, th_message_buffer error) {
    return check_config(config_json, error);
}

static th_status ok_create(const th_host_api *host, th_str config_json, void **instance_out, th_message_buffer error) {
    th_status status = check_config(config_json, error);
    if (status != TH_OK) return status;
    instance *self = malloc(sizeof *self);
    if (self == NULL) return TH_ERROR;
    self->host = host;
    *instance_out = self;
    return TH_OK;
}

static void ok_destroy(void *self) {
    free(self);
}

static int payload_is(const th_task *task, const char *word) {
    size_t len = strlen(word);
    return task->payload.len == len && (len == 0 || memcmp(task->payload.ptr, word, len) == 0);
}

static th_status ok_execute(void *self, const th_task *task, th_completion *token, th_outcome *outcome) {
    (void)self;
    (void)token; /* synchronous: never used */
    if (payload_is(task, "fail")) {
        outcome->message = (th_str){"asked to fail", 13};
        return outcome->status = TH_ERROR;
    }
    if (payload_is(task, "retry")) {
        outcome->message = (th_str){"asked to retry", 14};
        outcome->retry_after_ms = 1500;
        return outcome->status = TH_RETRYABLE;
    }
    if (payload_is(task, "permanent")) {
        outcome->message = (th_str){"asked to fail for good", 22};
        return outcome->status = TH_PERMANENT;
    }
    /* The payload is borrowed for this call only, and the host copies the outcome after execute
     * returns: hand it a copy that lives until this thread's next call. */
    static _Thread_local char *copy;
    static _Thread_local size_t capacity;
    size_t len = (size_t)task->payload.len;
    if (len > capacity) {
        char *grown = realloc(copy, len);
        if (grown == NULL) {
            outcome->message = (th_str){"out of memory", 13};
            return outcome->status = TH_RETRYABLE;
        }
        copy = grown;
        capacity = len;
    }
    if (len > 0) memcpy(copy, task->payload.ptr, len);
    outcome->output = (th_str){copy, len};
    return outcome->status = TH_OK;
}

static const th_plugin plugin = {
    .abi_major = TH_ABI_MAJOR,
    .abi_minor = TH_ABI_MINOR,
    .struct_size = sizeof(th_plugin),
    .name = "fixture-ok",
    .version = "0.1.0",
    .description = "Test fixture: completes synchronously; payload fail/retry/permanent picks the outcome",
    .config_schema = "{\"type\":\"object\",\"additionalProperties\":false}",
    .validate = ok_validate,
    .create = ok_create,
    .destroy = ok_destroy,
    .execute = ok_execute,
    .get_capability = NULL,
};

TH_EXPORT const th_plugin *TH_PLUGIN_ENTRY(void) {
    return &plugin;
}
