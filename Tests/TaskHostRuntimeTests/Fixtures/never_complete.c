/* Fixture "fixture-never-complete": execute returns TH_PENDING and never completes. It offers
 * "taskhost.cancel/1", but its cancel does nothing: a plugin that ignores cancellation. The host
 * must abandon the execution at its deadline and stay healthy. */
#include <stddef.h>
#include <string.h>

#include "taskhost_plugin.h"

static int instance_storage;

static th_status fixture_create(const th_host_api *host, th_str config_json, void **instance_out,
                                th_message_buffer error) {
    (void)host;
    (void)config_json;
    (void)error;
    *instance_out = &instance_storage;
    return TH_OK;
}

static void fixture_destroy(void *instance) {
    (void)instance;
}

static th_status fixture_execute(void *instance, const th_task *task, th_completion *token, th_outcome *outcome) {
    (void)instance;
    (void)task;
    (void)token; /* dropped: complete() is never called */
    (void)outcome;
    return TH_PENDING;
}

static void fixture_cancel(void *instance, th_completion *token) {
    (void)instance;
    (void)token; /* ignored on purpose */
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
    .name = "fixture-never-complete",
    .version = "0.1.0",
    .description = "Test fixture: never completes, ignores cancel",
    .create = fixture_create,
    .destroy = fixture_destroy,
    .execute = fixture_execute,
    .get_capability = fixture_get_capability,
};

TH_EXPORT const th_plugin *TH_PLUGIN_ENTRY(void) {
    return &plugin;
}
