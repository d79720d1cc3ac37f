/* Fixture "fixture-never-complete-cancellable": execute returns TH_PENDING and completes only when
 * cancelled. Its "taskhost.cancel/1" cancel completes the token with TH_CANCELLED from a new
 * thread, once: a second cancel of the same token, or a cancel of an unknown one, does nothing. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "taskhost_plugin.h"

typedef struct pending {
    struct pending *next;
    th_completion *token;
} pending;

typedef struct instance {
    const th_host_api *host;
    pthread_mutex_t lock;
    pthread_cond_t idle;
    pending *waiting; /* tokens not completed yet */
    int running;      /* completing threads not yet finished: destroy waits for them */
} instance;

typedef struct job {
    instance *self;
    th_completion *token;
} job;

static void *complete_cancelled(void *arg) {
    job *work = arg;
    instance *self = work->self;
    th_outcome outcome = {.struct_size = sizeof(th_outcome), .status = TH_CANCELLED, .retry_after_ms = -1};
    outcome.message = (th_str){"cancelled on request", 20};
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
    while (self->waiting != NULL) { /* abandoned by the host: never completed */
        pending *next = self->waiting->next;
        free(self->waiting);
        self->waiting = next;
    }
    pthread_cond_destroy(&self->idle);
    pthread_mutex_destroy(&self->lock);
    free(self);
}

static th_status fixture_execute(void *raw, const th_task *task, th_completion *token, th_outcome *outcome) {
    (void)task;
    instance *self = raw;
    pending *entry = malloc(sizeof *entry);
    if (entry == NULL) {
        outcome->message = (th_str){"out of memory", 13};
        return outcome->status = TH_RETRYABLE;
    }
    pthread_mutex_lock(&self->lock);
    *entry = (pending){self->waiting, token};
    self->waiting = entry;
    pthread_mutex_unlock(&self->lock);
    return TH_PENDING;
}

static void fixture_cancel(void *raw, th_completion *token) {
    instance *self = raw;
    if (self == NULL) return;
    pthread_mutex_lock(&self->lock);
    pending *found = NULL;
    for (pending **p = &self->waiting; *p != NULL; p = &(*p)->next) {
        if ((*p)->token == token) {
            found = *p;
            *p = found->next;
            break;
        }
    }
    job *work = found != NULL ? malloc(sizeof *work) : NULL;
    if (work != NULL) self->running++;
    else if (found != NULL) { /* out of memory: keep it pending so a later cancel can retry */
        found->next = self->waiting;
        self->waiting = found;
        found = NULL;
    }
    pthread_mutex_unlock(&self->lock);
    if (found == NULL) return;
    free(found);
    *work = (job){self, token};
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int rc = pthread_create(&thread, &attr, complete_cancelled, work);
    pthread_attr_destroy(&attr);
    if (rc != 0) { /* no thread: complete from here instead, still exactly once */
        complete_cancelled(work);
    }
}

static const th_cancel_v1 cancel_v1 = {.struct_size = sizeof(th_cancel_v1), .cancel = fixture_cancel};

static const void *fixture_get_capability(void *instance, const char *id) {
    (void)instance;
    return id != NULL && strcmp(id, TH_CAPABILITY_CANCEL_V1) == 0 ? &cancel_v1 : NULL;
}

static const th_plugin plugin = {
    .abi_major = TH_ABI_MAJOR,
    .abi_minor = TH_ABI_MINOR,
    .struct_size = sizeof(th_plugin),
    .name = "fixture-never-complete-cancellable",
    .version = "0.1.0",
    .description = "Test fixture: completes a task only when cancelled, with TH_CANCELLED from a new thread",
    .create = fixture_create,
    .destroy = fixture_destroy,
    .execute = fixture_execute,
    .get_capability = fixture_get_capability,
};

TH_EXPORT const th_plugin *TH_PLUGIN_ENTRY(void) {
    return &plugin;
}
