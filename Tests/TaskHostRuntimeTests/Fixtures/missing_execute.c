/* Fixture "fixture-missing-execute": a table whose required execute pointer is NULL; the host
 * must refuse it at load and name the missing function. */
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

static const th_plugin plugin = {
    .abi_major = TH_ABI_MAJOR,
    .abi_minor = TH_ABI_MINOR,
    .struct_size = sizeof(th_plugin),
    .name = "fixture-missing-execute",
    .version = "0.1.0",
    .description = "Test fixture: execute is NULL",
    .create = fixture_create,
    .destroy = fixture_destroy,
    .execute = NULL,
};

TH_EXPORT const th_plugin *TH_PLUGIN_ENTRY(void) {
    return &plugin;
}
