/* Fixture "fixture-double-complete" (misbehaving on purpose): execute returns TH_PENDING, and a new
 * thread calls host->complete TWICE for the same token: TH_OK "first completion", then TH_OK
 * "second completion". The host must keep the first, detect the second and log it as plugin
 * misbehaviour. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdlib.h>

#include "taskhost_plugin.h"

typedef struct instance {
    const th_host_api *host;
    pthread_mutex_t lock;
    pthread_cond_t idle;
    int running; /* completing threads not yet finished: destroy waits, so both calls happen before it returns */
} instance;

typedef struct job {
    instance *self;
    th_completion *token;
} job;

static void *complete_twice(void *arg) {
    job *work = arg;
    instance *self = work->self;
    th_outcome outcome = {.struct_size = sizeof(th_outcome), .status = TH_OK, .retry_after_ms = -1};
    outcome.output = (th_str){"first completion", 16};
    self->host->complete(self->host->host_context, work->token, &outcome);
    outcome.output = (th_str){"second completion", 17}; /* wrong: the token is invalid now */
    self->host->complete(self->host->host_context, work->token, &outcome);
    free(work);
    pthread_mutex_lock(&self->lock);
    if (--self->running == 0) pthread_cond_broadcast(&self->idle);
    pthread_mutex_unlock(&self->lock);
    return NULL;
}

static th_status fixture_create(const th_host_api *host, th_str config_json, void **instance_out,
                                th_message_buffer error) {
    (void)config_json;
    (void)error;
    instance *self = calloc(1, sizeof *self);
    if (self == NULL) return TH_ERROR;
    self->host = host;
    pthread_mutex_init(&self->lock, NULL);
    pthread_cond_init(&self->idle, NULL);
    *instance_out = self;
    return TH_OK;
}

static void fixture_destroy(void *raw) {
    instance *self = raw;
    pthread_mutex_lock(&self->lock);
    while (self->running > 0) pthread_cond_wait(&self->idle, &self->lock);
    pthread_mutex_unlock(&self->lock);
    pthread_cond_destroy(&self->idle);
    pthread_mutex_destroy(&self->lock);
    free(self);
}

static th_status fixture_execute(void *raw, const th_task *task, th_completion *token, th_outcome *outcome) {
    (void)task;
    instance *self = raw;
    job *work = malloc(sizeof *work);
    if (work == NULL) {
        outcome->message = (th_str){"out of memory", 13};
        return outcome->status = TH_RETRYABLE;
    }
    *work = (job){self, token};
    pthread_mutex_lock(&self->lock);
    self->running++;
    pthread_mutex_unlock(&self->lock);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int rc = pthread_create(&thread, &attr, complete_twice, work);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pthread_mutex_lock(&self->lock);
        if (--self->running == 0) pthread_cond_broadcast(&self->idle);
        pthread_mutex_unlock(&self->lock);
        free(work);
        outcome->message = (th_str){"cannot start a thread", 21};
        return outcome->status = TH_RETRYABLE;
    }
    return TH_PENDING;
}

static const th_plugin plugin = {
    .abi_major = TH_ABI_MAJOR,
    .abi_minor = TH_ABI_MINOR,
    .struct_size = sizeof(th_plugin),
    .name = "fixture-double-complete",
    .version = "0.1.0",
    .description = "Test fixture: completes every task twice (misbehaviour the host must detect)",
    .create = fixture_create,
    .destroy = fixture_destroy,
    .execute = fixture_execute,
};

TH_EXPORT const th_plugin *TH_PLUGIN_ENTRY(void) {
    return &plugin;
}
