/* Fixture "fixture-create-fails": create always answers TH_INVALID_CONFIG with the message
 * "missing key 'endpoint': set it to the service URL". It has no validate (so create is the
 * only check); the host must report the plugin's message. */
#include <stdio.h>

#include "taskhost_plugin.h"

static th_status fixture_create(const th_host_api *host, th_str config_json, void **instance_out,
                                th_message_buffer error) {
    (void)host;
    (void)config_json;
    (void)instance_out;
    if (error.ptr != NULL && error.cap > 0)
        snprintf(error.ptr, (size_t)error.cap, "%s", "missing key 'endpoint': set it to the service URL");
    return TH_INVALID_CONFIG;
}

static void fixture_destroy(void *instance) {
    (void)instance;
}

static th_status fixture_execute(void *instance, const th_task *task, th_completion *token, th_outcome *outcome) {
    (void)instance;
    (void)task;
    (void)token;
    outcome->message = (th_str){"no instance can exist", 21};
    return outcome->status = TH_PERMANENT;
}

static const th_plugin plugin = {
    .abi_major = TH_ABI_MAJOR,
    .abi_minor = TH_ABI_MINOR,
    .struct_size = sizeof(th_plugin),
    .name = "fixture-create-fails",
    .version = "0.1.0",
    .description = "Test fixture: create always fails with a config error",
    .validate = NULL,
    .create = fixture_create,
    .destroy = fixture_destroy,
    .execute = fixture_execute,
};

TH_EXPORT const th_plugin *TH_PLUGIN_ENTRY(void) {
    return &plugin;
}
