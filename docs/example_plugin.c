/* example_plugin.c -- "example-echo": answers every task with its payload.
 *
 * Config: {} or {"delayMs": 250}. With no delay, execute completes synchronously; with a delay,
 * it returns TH_PENDING and a thread of its own completes the task later.
 *
 * Build: cc -shared -fPIC -I <folder of taskhost_plugin.h> -o libexample.so example_plugin.c
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "taskhost_plugin.h"

typedef struct echo {
    const th_host_api *host; /* valid until destroy() returns */
    long delay_ms;
    pthread_mutex_t lock;
    pthread_cond_t idle;
    int pending;             /* tasks not completed yet; destroy() waits for 0 */
} echo;

/* Reads {} or {"delayMs": N}. A real plugin parses JSON fully: see Plugins/TargetFile. */
static th_status read_config(th_str config, long *delay_ms, th_message_buffer error) {
    char text[128], key[64];
    long value = 0;
    int used = 0;
    *delay_ms = 0;
    if (config.len >= sizeof text) goto invalid;
    if (config.len > 0) memcpy(text, config.ptr, config.len);
    text[config.len] = '\0';
    if (sscanf(text, " { } %n", &used) == 0 && used == (int)config.len) return TH_OK;
    if (sscanf(text, " { \"%63[^\"]\"", key) == 1 && strcmp(key, "delayMs") != 0) {
        snprintf(error.ptr, error.cap, "key '%s' is not allowed: remove it (the only key is 'delayMs')", key);
        return TH_INVALID_CONFIG;
    }
    used = 0;
    if (sscanf(text, " { \"delayMs\" : %ld } %n", &value, &used) == 1 && used == (int)config.len) {
        if (value < 0 || value > 60000) {
            snprintf(error.ptr, error.cap, "key 'delayMs' must be from 0 to 60000 milliseconds: set, say, 250");
            return TH_INVALID_CONFIG;
        }
        *delay_ms = value;
        return TH_OK;
    }
invalid:
    snprintf(error.ptr, error.cap, "the configuration must be {} or {\"delayMs\": 250}: write it that way");
    return TH_INVALID_CONFIG;
}

/* validate: any thread, concurrently; checks only. */
static th_status echo_validate(th_str config, th_message_buffer error) {
    long delay_ms;
    return read_config(config, &delay_ms, error);
}

/* create: `config` is borrowed; keep a copy of whatever you need. */
static th_status echo_create(const th_host_api *host, th_str config, void **instance_out, th_message_buffer error) {
    long delay_ms;
    th_status status = read_config(config, &delay_ms, error);
    if (status != TH_OK) return status;
    echo *self = calloc(1, sizeof *self);
    if (self == NULL) return TH_ERROR;
    self->host = host;
    self->delay_ms = delay_ms;
    pthread_mutex_init(&self->lock, NULL);
    pthread_cond_init(&self->idle, NULL);
    const char *line = "example-echo ready";
    if (host->log != NULL) host->log(host->host_context, TH_LOG_INFO, (th_str){line, strlen(line)});
    *instance_out = self;
    return TH_OK;
}

/* destroy: once, after every execution completed. Wait for our own threads anyway. */
static void echo_destroy(void *instance) {
    echo *self = instance;
    pthread_mutex_lock(&self->lock);
    while (self->pending > 0) pthread_cond_wait(&self->idle, &self->lock);
    pthread_mutex_unlock(&self->lock);
    pthread_cond_destroy(&self->idle);
    pthread_mutex_destroy(&self->lock);
    free(self);
}

typedef struct later {
    echo *self;
    th_completion *token;
    size_t len;
    char payload[]; /* our copy: the task itself is gone once execute returns */
} later;

static void *complete_later(void *arg) {
    later *job = arg;
    echo *self = job->self;
    struct timespec delay = {job->self->delay_ms / 1000, (job->self->delay_ms % 1000) * 1000000};
    nanosleep(&delay, NULL);
    th_outcome outcome = {.struct_size = sizeof(th_outcome), .status = TH_OK, .retry_after_ms = -1};
    outcome.output = (th_str){job->payload, job->len};
    self->host->complete(self->host->host_context, job->token, &outcome); /* exactly once */
    free(job); /* the host copied the outcome before complete() returned */
    pthread_mutex_lock(&self->lock);
    if (--self->pending == 0) pthread_cond_broadcast(&self->idle);
    pthread_mutex_unlock(&self->lock);
    return NULL;
}

/* execute: several host threads at once, never two tasks of one target at once. */
static th_status echo_execute(void *instance, const th_task *task, th_completion *token, th_outcome *outcome) {
    echo *self = instance;
    if (self->delay_ms == 0) { /* synchronous: fill *outcome, return its status, forget the token */
        outcome->output = task->payload;
        return outcome->status = TH_OK;
    }
    later *job = malloc(sizeof *job + task->payload.len);
    if (job == NULL) {
        outcome->message = (th_str){"out of memory", 13};
        return outcome->status = TH_RETRYABLE;
    }
    job->self = self;
    job->token = token;
    job->len = task->payload.len;
    if (job->len > 0) memcpy(job->payload, task->payload.ptr, job->len);
    pthread_mutex_lock(&self->lock);
    self->pending++;
    pthread_mutex_unlock(&self->lock);
    pthread_t thread;
    if (pthread_create(&thread, NULL, complete_later, job) != 0) {
        pthread_mutex_lock(&self->lock);
        self->pending--;
        pthread_mutex_unlock(&self->lock);
        free(job);
        outcome->message = (th_str){"cannot start a thread", 21};
        return outcome->status = TH_RETRYABLE;
    }
    pthread_detach(thread);
    return TH_PENDING; /* complete_later calls host->complete, maybe before we even return */
}

static const th_plugin plugin = {
    .abi_major = TH_ABI_MAJOR,
    .abi_minor = TH_ABI_MINOR,
    .struct_size = sizeof(th_plugin),
    .name = "example-echo",
    .version = "1.0.0",
    .description = "Answers every task with its payload, optionally after a delay",
    .config_schema = "{\"type\":\"object\",\"properties\":{\"delayMs\":{\"type\":\"integer\",\"minimum\":0,"
                     "\"maximum\":60000}},\"additionalProperties\":false}",
    .validate = echo_validate,
    .create = echo_create,
    .destroy = echo_destroy,
    .execute = echo_execute,
    .get_capability = NULL, /* no capabilities */
};

TH_EXPORT const th_plugin *TH_PLUGIN_ENTRY(void) {
    return &plugin;
}
