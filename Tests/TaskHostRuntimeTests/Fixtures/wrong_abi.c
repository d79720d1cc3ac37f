/* Fixture "fixture-wrong-abi": a valid plugin built against ABI 2.0, which this host does not know
 * (abi_major 2, abi_minor 0); the host must refuse to load it. */
#include <stddef.h>

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

static const th_plugin plugin = {
    .abi_major = 2,
    .abi_minor = 0,
    .struct_size = sizeof(th_plugin),
    .name = "fixture-wrong-abi",
    .version = "0.1.0",
    .description = "Test fixture: built against ABI 2.0, which this host does not know",
    .config_schema = NULL,
    .validate = NULL,
    .create = fixture_create,
    .destroy = fixture_destroy,
    .execute = fixture_execute,
    .get_capability = NULL,
};

TH_EXPORT const th_plugin *TH_PLUGIN_ENTRY(void) {
    return &plugin;
}
