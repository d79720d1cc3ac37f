/* Fixture "fixture-crash-host": a plugin with a bug that kills the host on some tasks.
 *   payload "\"poison\""       -> abort() inside execute (an attempt that would finish inline)
 *   payload "\"poison-later\"" -> TH_PENDING, then abort() from another thread 2 ms later
 *   payload "\"slow\""         -> TH_OK after 500 ms (an innocent task running beside a crash)
 *   payload "\"hang\""         -> never returns: blocks the host's thread that called execute
 *   any other payload          -> TH_OK
 * Before it crashes it appends "<payload> <attempt>\n" to the file named by the environment
 * variable TASKHOST_CRASH_LOG, so that a test can count the attempts that really ran. */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "taskhost_plugin.h"

static th_status crash_validate(th_str config_json, th_message_buffer error) {
    (void)config_json;
    (void)error;
    return TH_OK;
}

static th_status crash_create(const th_host_api *host, th_str config_json, void **instance_out,
                              th_message_buffer error) {
    (void)host;
    (void)config_json;
    (void)error;
    *instance_out = (void *)1;
    return TH_OK;
}

static void crash_destroy(void *self) { (void)self; }

static int payload_is(const th_task *task, const char *word) {
    size_t len = strlen(word);
    return task->payload.len == len && memcmp(task->payload.ptr, word, len) == 0;
}

static void note(const th_task *task) {
    const char *path = getenv("TASKHOST_CRASH_LOG");
    if (path == NULL) return;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) return;
    char line[128];
    int len = snprintf(line, sizeof line, "%.*s %u\n", (int)(task->payload.len < 64 ? task->payload.len : 64),
                       task->payload.ptr, task->attempt);
    if (write(fd, line, (size_t)len) != len) abort();
    close(fd);
}

static void *abort_soon(void *unused) {
    (void)unused;
    struct timespec delay = {0, 2000000};
    nanosleep(&delay, NULL);
    abort();
}

static th_status crash_execute(void *self, const th_task *task, th_completion *token, th_outcome *outcome) {
    (void)self;
    (void)token;
    (void)outcome;
    if (payload_is(task, "\"poison\"")) {
        note(task);
        abort();
    }
    if (payload_is(task, "\"poison-later\"")) {
        note(task);
        pthread_t thread;
        if (pthread_create(&thread, NULL, abort_soon, NULL) != 0) abort();
        return TH_PENDING;
    }
    if (payload_is(task, "\"hang\"")) {
        note(task);
        for (;;) sleep(1000);
    }
    if (payload_is(task, "\"slow\"")) {
        note(task);
        struct timespec d = {0, 500000000};
        nanosleep(&d, NULL);
    }
    return TH_OK;
}

static const th_plugin plugin = {
    .abi_major = TH_ABI_MAJOR,
    .abi_minor = TH_ABI_MINOR,
    .struct_size = sizeof(th_plugin),
    .name = "fixture-crash-host",
    .version = "0.1.0",
    .description = "Test fixture: kills the host on the payloads \"poison\" (inline) and \"poison-later\"",
    .config_schema = NULL,
    .validate = crash_validate,
    .create = crash_create,
    .destroy = crash_destroy,
    .execute = crash_execute,
    .get_capability = NULL,
};

TH_EXPORT const th_plugin *TH_PLUGIN_ENTRY(void) {
    return &plugin;
}
