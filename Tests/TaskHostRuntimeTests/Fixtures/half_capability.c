/* Fixture "fixture-half-capability": offers "taskhost.cancel/1" through a th_cancel_v1 whose
 * cancel pointer is NULL -- a half-implemented capability the host must refuse at load. Otherwise
 * valid (completes every task synchronously with TH_OK). */
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
    (void)token;
    return outcome->status = TH_OK;
}

static const th_cancel_v1 half_cancel = {.struct_size = sizeof(th_cancel_v1), .cancel = NULL};

static const void *fixture_get_capability(void *instance, const char *id) {
    (void)instance;
    return id != NULL && strcmp(id, TH_CAPABILITY_CANCEL_V1) == 0 ? &half_cancel : NULL;
}

static const th_plugin plugin = {
    .abi_major = TH_ABI_MAJOR,
    .abi_minor = TH_ABI_MINOR,
    .struct_size = sizeof(th_plugin),
    .name = "fixture-half-capability",
    .version = "0.1.0",
    .description = "Test fixture: taskhost.cancel/1 with a NULL cancel function",
    .create = fixture_create,
    .destroy = fixture_destroy,
    .execute = fixture_execute,
    .get_capability = fixture_get_capability,
};

TH_EXPORT const th_plugin *TH_PLUGIN_ENTRY(void) {
    return &plugin;
}
