/* Pins the layout of ABI 1.0 on LP64 platforms: a change to any size or offset here breaks
 * every plugin already built, so it fails the build instead. */
#include <stddef.h>
#include "taskhost_plugin.h"

#if defined(__LP64__) || defined(_WIN64)
_Static_assert(sizeof(th_str) == 16, "th_str");
_Static_assert(sizeof(th_message_buffer) == 16, "th_message_buffer");
_Static_assert(sizeof(th_task) == 88, "th_task");
_Static_assert(offsetof(th_task, attempt) == 4, "th_task.attempt");
_Static_assert(offsetof(th_task, sequence) == 8, "th_task.sequence");
_Static_assert(offsetof(th_task, target_id) == 16, "th_task.target_id");
_Static_assert(offsetof(th_task, target_is_integer) == 32, "th_task.target_is_integer");
_Static_assert(offsetof(th_task, target_integer) == 40, "th_task.target_integer");
_Static_assert(offsetof(th_task, task_id) == 48, "th_task.task_id");
_Static_assert(offsetof(th_task, payload) == 64, "th_task.payload");
_Static_assert(offsetof(th_task, deadline_ns) == 80, "th_task.deadline_ns");
_Static_assert(sizeof(th_outcome) == 48, "th_outcome");
_Static_assert(offsetof(th_outcome, status) == 4, "th_outcome.status");
_Static_assert(offsetof(th_outcome, retry_after_ms) == 8, "th_outcome.retry_after_ms");
_Static_assert(offsetof(th_outcome, message) == 16, "th_outcome.message");
_Static_assert(offsetof(th_outcome, output) == 32, "th_outcome.output");
_Static_assert(sizeof(th_host_api) == 48, "th_host_api");
_Static_assert(offsetof(th_host_api, host_context) == 16, "th_host_api.host_context");
_Static_assert(offsetof(th_host_api, log) == 24, "th_host_api.log");
_Static_assert(offsetof(th_host_api, complete) == 32, "th_host_api.complete");
_Static_assert(offsetof(th_host_api, get_capability) == 40, "th_host_api.get_capability");
_Static_assert(sizeof(th_plugin) == 88, "th_plugin");
_Static_assert(offsetof(th_plugin, name) == 16, "th_plugin.name");
_Static_assert(offsetof(th_plugin, config_schema) == 40, "th_plugin.config_schema");
_Static_assert(offsetof(th_plugin, validate) == 48, "th_plugin.validate");
_Static_assert(offsetof(th_plugin, create) == 56, "th_plugin.create");
_Static_assert(offsetof(th_plugin, destroy) == 64, "th_plugin.destroy");
_Static_assert(offsetof(th_plugin, execute) == 72, "th_plugin.execute");
_Static_assert(offsetof(th_plugin, get_capability) == 80, "th_plugin.get_capability");
_Static_assert(sizeof(th_cancel_v1) == 16, "th_cancel_v1");
#endif

/* A translation unit must not be empty; hidden so that it is never exported by a plugin. */
__attribute__((visibility("hidden"))) int th_abi_layout_checked = 1;
