/* The smallest correct TaskHost plugin: every task succeeds at once, with no output.
 * It measures what crossing the plugin ABI costs (see taskhost-bench --scenario P1). */
#include <stdlib.h>
#include "taskhost_plugin.h"

static th_status noop_create(const th_host_api *host, th_str config, void **instance_out, th_message_buffer error) {
    (void)host;
    (void)config;
    (void)error;
    static int instance;
    *instance_out = &instance;
    return TH_OK;
}

static void noop_destroy(void *instance) { (void)instance; }

static th_status noop_execute(void *instance, const th_task *task, th_completion *token, th_outcome *outcome) {
    (void)instance;
    (void)task;
    (void)token;
    (void)outcome;
    return TH_OK;
}

static const th_plugin noop_plugin = {
    .abi_major = TH_ABI_MAJOR,
    .abi_minor = TH_ABI_MINOR,
    .struct_size = sizeof(th_plugin),
    .name = "noop",
    .version = "1.0.0",
    .description = "Completes every task at once; for measuring the plugin path.",
    .create = noop_create,
    .destroy = noop_destroy,
    .execute = noop_execute,
};

TH_EXPORT const th_plugin *TH_PLUGIN_ENTRY(void) { return &noop_plugin; }
