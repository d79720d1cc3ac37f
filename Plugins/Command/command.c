/*
 * command.c -- the "command" executor plugin: runs a configured program once per task.
 *
 * Configuration (JSON):
 *     {"program": "/bin/sh", "args": ["-c", "..."], "timeoutMs": 30000, "env": {"K": "V"}}
 *   program    required; an absolute path, or a bare name looked up in PATH at create()
 *   args       optional array of strings, passed after the program name (argv[1..])
 *   timeoutMs  optional whole number of milliseconds (default 30000); the task's own deadline,
 *              when the host sets one, wins when it is earlier
 *   env        optional object of extra environment variables (string values)
 *
 * Per task, the program gets the payload on stdin and, in its environment, TASKHOST_TARGET_ID,
 * TASKHOST_SEQUENCE, TASKHOST_ATTEMPT and TASKHOST_TASK_ID (empty when the task has none).
 * Its stdout (first 64 KiB) becomes the outcome's output; the last 4 KiB of stderr go into the
 * message. Exit 0 -> TH_OK; exit 75 (EX_TEMPFAIL) -> TH_RETRYABLE; other exits and deaths by a
 * signal -> TH_ERROR "exit status N: <stderr tail>"; too slow -> SIGTERM to its process group,
 * SIGKILL 2 s later, TH_TIMEOUT. Capability "taskhost.cancel/1" stops it the same way and
 * completes with TH_CANCELLED.
 *
 * execute() copies the task, starts one worker thread and returns TH_PENDING. The worker spawns
 * the program (posix_spawn, own process group, default signal dispositions), pumps the pipes with
 * poll(), enforces the deadline, reaps the child and calls host->complete exactly once. Only the
 * worker signals and reaps its child, so a cancel racing with a normal exit can neither signal a
 * recycled pid nor complete twice: cancel() only sets a flag and wakes the worker. One thread
 * per running task: the host's maxConcurrency bounds them.
 *
 * Linux only (pipe2, waitid with WNOWAIT); with glibc 2.34 or later the child also inherits no
 * descriptor of the host besides its three pipes.
 *
 * Build: cc -std=c11 -Wall -Wextra -shared -fPIC -I <folder of taskhost_plugin.h> -o libCommand.so command.c
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2, posix_spawn_file_actions_addclosefrom_np */
#endif

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "taskhost_plugin.h"

extern char **environ;

#define STDOUT_CAP (64 * 1024)
#define STDERR_TAIL (4 * 1024)
#define DEFAULT_TIMEOUT_MS 30000
#define KILL_GRACE_NS (2 * 1000000000LL) /* SIGTERM, then SIGKILL this much later */
#define DRAIN_GRACE_NS (200 * 1000000LL) /* after the child exits, read what is left for this long */
#define EXAMPLE_CONFIG "{\"program\": \"/bin/sh\", \"args\": [\"-c\", \"cat\"], \"timeoutMs\": 30000}"

static const char *const reserved_env[] = {"TASKHOST_TARGET_ID", "TASKHOST_SEQUENCE", "TASKHOST_ATTEMPT",
                                           "TASKHOST_TASK_ID"};

/* ---- Small helpers ----------------------------------------------------------------------------- */

static void set_error(th_message_buffer error, const char *format, ...) {
    if (error.ptr == NULL || error.cap == 0) return;
    va_list args;
    va_start(args, format);
    vsnprintf(error.ptr, (size_t)error.cap, format, args);
    va_end(args);
}

/* strerror, thread-safe, whichever strerror_r the C library declares. */
static const char *error_text(int err, char *buffer, size_t cap) {
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    return strerror_r(err, buffer, cap);
#else
    if (strerror_r(err, buffer, cap) != 0) snprintf(buffer, cap, "error %d", err);
    return buffer;
#endif
}

static int64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- Reading JSON (the same small strict reader as Plugins/TargetFile) ------------------------- */

typedef struct json {
    const unsigned char *p, *end;
} json;

static void json_ws(json *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

/* Length (1-4) of the valid UTF-8 sequence at p, or 0 when the bytes there are not valid UTF-8. */
static int utf8_len(const unsigned char *p, const unsigned char *end) {
    size_t left = (size_t)(end - p);
    if (p[0] < 0x80) return 1;
    if (p[0] >= 0xC2 && p[0] <= 0xDF) return left >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (p[0] >= 0xE0 && p[0] <= 0xEF) {
        if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] >= 0xA0)) return 0; /* overlong, surrogate */
        return 3;
    }
    if (p[0] >= 0xF0 && p[0] <= 0xF4) {
        if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
        if ((p[0] == 0xF0 && p[1] < 0x90) || (p[0] == 0xF4 && p[1] >= 0x90)) return 0; /* overlong, > U+10FFFF */
        return 4;
    }
    return 0;
}

static int json_hex4(json *j, unsigned *out) {
    if (j->end - j->p < 4) return 0;
    *out = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = *j->p++;
        unsigned digit = c >= '0' && c <= '9' ? c - '0'
                       : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : 16;
        if (digit == 16) return 0;
        *out = *out << 4 | digit;
    }
    return 1;
}

/* Reads the JSON string at j->p (a '"'), decoding it into out (at most cap bytes; out may be NULL
 * to measure or skip). Returns the decoded length, or -1 when it is not a valid JSON string. */
static int64_t json_string(json *j, char *out, size_t cap) {
    size_t n = 0;
#define EMIT(byte) do { if (out != NULL && n < cap) out[n] = (char)(byte); n++; } while (0)
    if (j->p >= j->end || *j->p != '"') return -1;
    j->p++;
    for (;;) {
        if (j->p >= j->end || *j->p < 0x20) return -1; /* unterminated, or a raw control character */
        unsigned char c = *j->p;
        if (c == '"') { j->p++; return (int64_t)n; }
        if (c != '\\') {
            int len = utf8_len(j->p, j->end);
            if (len == 0) return -1;
            for (int i = 0; i < len; i++) EMIT(j->p[i]);
            j->p += len;
            continue;
        }
        if (++j->p >= j->end) return -1;
        unsigned cp;
        switch (*j->p++) {
        case '"': EMIT('"'); continue;
        case '\\': EMIT('\\'); continue;
        case '/': EMIT('/'); continue;
        case 'b': EMIT('\b'); continue;
        case 'f': EMIT('\f'); continue;
        case 'n': EMIT('\n'); continue;
        case 'r': EMIT('\r'); continue;
        case 't': EMIT('\t'); continue;
        case 'u':
            if (!json_hex4(j, &cp) || (cp >= 0xDC00 && cp <= 0xDFFF)) return -1;
            if (cp >= 0xD800 && cp <= 0xDBFF) { /* a surrogate pair: \uD83D\uDE00 */
                unsigned low;
                if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u') return -1;
                j->p += 2;
                if (!json_hex4(j, &low) || low < 0xDC00 || low > 0xDFFF) return -1;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            }
            if (cp < 0x80) EMIT(cp);
            else if (cp < 0x800) { EMIT(0xC0 | cp >> 6); EMIT(0x80 | (cp & 0x3F)); }
            else if (cp < 0x10000) { EMIT(0xE0 | cp >> 12); EMIT(0x80 | (cp >> 6 & 0x3F)); EMIT(0x80 | (cp & 0x3F)); }
            else { EMIT(0xF0 | cp >> 18); EMIT(0x80 | (cp >> 12 & 0x3F)); EMIT(0x80 | (cp >> 6 & 0x3F)); EMIT(0x80 | (cp & 0x3F)); }
            continue;
        default: return -1;
        }
    }
#undef EMIT
}

/* ---- Configuration ----------------------------------------------------------------------------- */

typedef struct config {
    char *program;      /* resolved absolute path of the executable */
    char **argv;        /* program as configured, then args; NULL-terminated */
    size_t argc;
    char **env;         /* config env as "K=V" strings */
    size_t env_count;
    int64_t timeout_ms;
    char **envp_base;   /* create(): the host's environment + config env, NULL-terminated */
    size_t envp_count;
} config;

static void free_strings(char **list, size_t count) {
    if (list == NULL) return;
    for (size_t i = 0; i < count; i++) free(list[i]);
    free(list);
}

static void free_config(config *cfg) {
    free(cfg->program);
    free_strings(cfg->argv, cfg->argc);
    free_strings(cfg->env, cfg->env_count);
    free(cfg->envp_base); /* its strings belong to environ or to cfg->env */
    memset(cfg, 0, sizeof *cfg);
}

/* Appends s to a NULL-terminated, malloc'd list. Returns 0, or -1 when out of memory. */
static int push_string(char ***list, size_t *count, char *s) {
    char **grown = realloc(*list, (*count + 2) * sizeof *grown);
    if (grown == NULL) return -1;
    grown[(*count)++] = s;
    grown[*count] = NULL;
    *list = grown;
    return 0;
}

/* Decodes the JSON string at j->p into a malloc'd NUL-terminated copy. *status: 0 ok, -1 not a
 * valid JSON string, -2 out of memory, -3 contains a NUL character. */
static char *json_dup(json *j, int *status) {
    json probe = *j;
    int64_t len = json_string(&probe, NULL, 0);
    *status = len < 0 ? -1 : 0;
    if (len < 0) return NULL;
    char *s = malloc((size_t)len + 1);
    if (s == NULL) { *status = -2; return NULL; }
    json_string(j, s, (size_t)len);
    s[len] = '\0';
    if (strlen(s) != (size_t)len) { free(s); *status = -3; return NULL; }
    return s;
}

static int is_absolute_executable(const char *path) {
    struct stat st;
    return path[0] == '/' && stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* Finds the program: an absolute path as is, a bare name in PATH. */
static th_status resolve_program(const char *program, char **resolved, th_message_buffer error) {
    if (strchr(program, '/') != NULL) {
        if (program[0] != '/') {
            set_error(error, "key 'program': '%s' is a relative path: use an absolute path, or a bare name found in "
                      "PATH", program);
            return TH_INVALID_CONFIG;
        }
        if (!is_absolute_executable(program)) {
            char reason[128];
            int err = errno;
            set_error(error, "key 'program': '%s' is not an executable file (%s): set it to an absolute path of a "
                      "program, or a bare name found in PATH", program,
                      access(program, F_OK) == 0 ? "not a regular file with execute permission"
                                                 : error_text(err, reason, sizeof reason));
            return TH_INVALID_CONFIG;
        }
        *resolved = strdup(program);
        return *resolved != NULL ? TH_OK : TH_ERROR;
    }
    const char *path = getenv("PATH");
    if (path == NULL || path[0] == '\0') path = "/usr/local/bin:/usr/bin:/bin";
    size_t name_len = strlen(program);
    for (const char *dir = path; *dir != '\0';) {
        const char *colon = strchr(dir, ':');
        size_t dir_len = colon != NULL ? (size_t)(colon - dir) : strlen(dir);
        if (dir_len > 0 && dir[0] == '/') { /* relative PATH entries would depend on the working directory */
            char *candidate = malloc(dir_len + 1 + name_len + 1);
            if (candidate == NULL) return TH_ERROR;
            memcpy(candidate, dir, dir_len);
            candidate[dir_len] = '/';
            memcpy(candidate + dir_len + 1, program, name_len + 1);
            if (is_absolute_executable(candidate)) {
                *resolved = candidate;
                return TH_OK;
            }
            free(candidate);
        }
        dir += dir_len;
        if (*dir == ':') dir++;
    }
    set_error(error, "key 'program': '%s' was not found in PATH (%s): set it to an absolute path such as "
              "/usr/bin/%s", program, path, program);
    return TH_INVALID_CONFIG;
}

static int is_reserved(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof reserved_env / sizeof *reserved_env; i++)
        if (strlen(reserved_env[i]) == len && memcmp(reserved_env[i], name, len) == 0) return 1;
    return 0;
}

/* Reads a config key: "program", "args", "timeoutMs" or "env". */
static th_status read_config(th_str text, config *cfg, th_message_buffer error) {
    const unsigned char *start = text.ptr != NULL ? (const unsigned char *)text.ptr : (const unsigned char *)"";
    json j = {start, start + (text.ptr != NULL ? text.len : 0)};
    char *program = NULL;
    int seen_args = 0, seen_timeout = 0, seen_env = 0, status;
    memset(cfg, 0, sizeof *cfg);
    cfg->timeout_ms = DEFAULT_TIMEOUT_MS;

    json_ws(&j);
    if (j.p >= j.end || *j.p++ != '{') {
        set_error(error, "the configuration must be a JSON object: write it as %s", EXAMPLE_CONFIG);
        return TH_INVALID_CONFIG;
    }
    json_ws(&j);
    if (j.p < j.end && *j.p == '}') j.p++;
    else for (;;) {
        char key[64];
        json_ws(&j);
        int64_t key_len = json_string(&j, key, sizeof key - 1);
        if (key_len < 0) goto syntax;
        key[key_len < (int64_t)sizeof key ? key_len : (int64_t)sizeof key - 1] = '\0';
        json_ws(&j);
        if (j.p >= j.end || *j.p++ != ':') goto syntax;
        json_ws(&j);
        if (j.p >= j.end) goto syntax;
        if ((size_t)key_len != strlen(key)) goto unknown_key;
        if (strcmp(key, "program") == 0) {
            if (program != NULL) goto duplicate;
            if (*j.p != '"') goto program_type;
            program = json_dup(&j, &status);
            if (status == -1) goto syntax;
            if (status == -2) goto out_of_memory;
            if (status == -3 || program[0] == '\0') goto program_type;
        } else if (strcmp(key, "args") == 0) {
            if (seen_args++) goto duplicate;
            if (*j.p != '[') goto args_type;
            j.p++;
            json_ws(&j);
            if (j.p < j.end && *j.p == ']') j.p++;
            else for (;;) {
                json_ws(&j);
                if (j.p >= j.end || *j.p != '"') goto args_type;
                char *arg = json_dup(&j, &status);
                if (status == -1) goto syntax;
                if (status == -2) goto out_of_memory;
                if (status == -3) goto args_type;
                if (push_string(&cfg->argv, &cfg->argc, arg) != 0) { free(arg); goto out_of_memory; }
                json_ws(&j);
                if (j.p < j.end && *j.p == ',') { j.p++; continue; }
                if (j.p < j.end && *j.p == ']') { j.p++; break; }
                goto syntax;
            }
        } else if (strcmp(key, "timeoutMs") == 0) {
            if (seen_timeout++) goto duplicate;
            int64_t value = 0;
            int ok = *j.p >= '1' && *j.p <= '9';
            while (ok && j.p < j.end && *j.p >= '0' && *j.p <= '9') {
                value = value * 10 + (*j.p++ - '0');
                if (value > INT32_MAX) ok = 0;
            }
            if (!ok || (j.p < j.end && (*j.p == '.' || *j.p == 'e' || *j.p == 'E'))) {
                set_error(error, "key 'timeoutMs' must be a whole number of milliseconds from 1 to %d: set it, for "
                          "example, to 30000 (the default)", INT32_MAX);
                goto invalid;
            }
            cfg->timeout_ms = value;
        } else if (strcmp(key, "env") == 0) {
            if (seen_env++) goto duplicate;
            if (*j.p != '{') goto env_type;
            j.p++;
            json_ws(&j);
            if (j.p < j.end && *j.p == '}') j.p++;
            else for (;;) {
                json_ws(&j);
                if (j.p >= j.end || *j.p != '"') goto syntax;
                char *name = json_dup(&j, &status);
                if (status == -1) goto syntax;
                if (status == -2) goto out_of_memory;
                if (status == -3 || name[0] == '\0' || strchr(name, '=') != NULL) {
                    set_error(error, "key 'env' has a variable name that is empty or contains '=' or NUL: use names "
                              "like \"LANG\"");
                    free(name);
                    goto invalid;
                }
                size_t name_len = strlen(name);
                if (is_reserved(name, name_len)) {
                    set_error(error, "key 'env.%s' is set by the plugin for each task: remove it", name);
                    free(name);
                    goto invalid;
                }
                for (size_t i = 0; i < cfg->env_count; i++) {
                    if (strncmp(cfg->env[i], name, name_len) == 0 && cfg->env[i][name_len] == '=') {
                        set_error(error, "key 'env.%.100s' appears twice: keep one", name);
                        free(name);
                        goto invalid;
                    }
                }
                json_ws(&j);
                if (j.p >= j.end || *j.p++ != ':') { free(name); goto syntax; }
                json_ws(&j);
                char *value = j.p < j.end && *j.p == '"' ? json_dup(&j, &status) : NULL;
                if (value == NULL) {
                    if (status == -2) { free(name); goto out_of_memory; }
                    if (status == -1 && j.p < j.end && *j.p == '"') { free(name); goto syntax; }
                    set_error(error, "key 'env.%.100s' must be a string without NUL characters: write it as "
                              "\"%.100s\": \"value\"", name, name);
                    free(name);
                    goto invalid;
                }
                char *pair = malloc(name_len + 1 + strlen(value) + 1);
                if (pair != NULL) sprintf(pair, "%s=%s", name, value);
                free(name);
                free(value);
                if (pair == NULL || push_string(&cfg->env, &cfg->env_count, pair) != 0) { free(pair); goto out_of_memory; }
                json_ws(&j);
                if (j.p < j.end && *j.p == ',') { j.p++; continue; }
                if (j.p < j.end && *j.p == '}') { j.p++; break; }
                goto syntax;
            }
        } else {
            goto unknown_key;
        }
        json_ws(&j);
        if (j.p < j.end && *j.p == ',') { j.p++; continue; }
        if (j.p < j.end && *j.p == '}') { j.p++; break; }
        goto syntax;

    unknown_key:
        set_error(error, "key '%s%s' is not allowed: remove it (allowed keys: program, args, timeoutMs, env)", key,
                  key_len >= (int64_t)sizeof key ? "..." : "");
        goto invalid;
    duplicate:
        set_error(error, "key '%s' appears twice: keep one", key);
        goto invalid;
    }
    json_ws(&j);
    if (j.p != j.end) goto syntax;
    if (program == NULL) {
        set_error(error, "missing key 'program': set it to the program to run for each task, as in %s",
                  EXAMPLE_CONFIG);
        goto invalid;
    }
    status = resolve_program(program, &cfg->program, error);
    if (status != TH_OK) {
        if (status == TH_ERROR) goto out_of_memory;
        goto invalid;
    }
    /* argv: the program as configured (argv[0]), then the args. */
    char **argv = malloc((cfg->argc + 2) * sizeof *argv);
    if (argv == NULL) goto out_of_memory;
    argv[0] = program;
    for (size_t i = 0; i < cfg->argc; i++) argv[i + 1] = cfg->argv[i];
    argv[cfg->argc + 1] = NULL;
    free(cfg->argv);
    cfg->argv = argv;
    cfg->argc += 1;
    return TH_OK;

syntax:
    set_error(error, "the configuration is not valid JSON (at byte %zu): write it as %s", (size_t)(j.p - start),
              EXAMPLE_CONFIG);
    goto invalid;
program_type:
    set_error(error, "key 'program' must be a non-empty string without NUL characters: set it to an absolute path "
              "or a name found in PATH, as in %s", EXAMPLE_CONFIG);
    goto invalid;
args_type:
    set_error(error, "key 'args' must be an array of strings (without NUL characters), as in [\"-c\", \"cat\"]");
    goto invalid;
env_type:
    set_error(error, "key 'env' must be an object of strings, as in {\"LANG\": \"C.UTF-8\"}");
    goto invalid;
out_of_memory:
    set_error(error, "out of memory while reading the configuration");
    free(program);
    free_config(cfg);
    return TH_ERROR;
invalid:
    free(program);
    free_config(cfg);
    return TH_INVALID_CONFIG;
}

/* The environment every execution starts from: the host's environment at create(), minus the
 * names the config sets and the per-task names, plus the config's variables. */
static int build_base_environment(config *cfg) {
    for (char **e = environ; e != NULL && *e != NULL; e++) {
        const char *eq = strchr(*e, '=');
        size_t len = eq != NULL ? (size_t)(eq - *e) : strlen(*e);
        int overridden = is_reserved(*e, len);
        for (size_t i = 0; !overridden && i < cfg->env_count; i++)
            overridden = strncmp(cfg->env[i], *e, len) == 0 && cfg->env[i][len] == '=';
        if (!overridden && push_string(&cfg->envp_base, &cfg->envp_count, *e) != 0) return -1;
    }
    for (size_t i = 0; i < cfg->env_count; i++)
        if (push_string(&cfg->envp_base, &cfg->envp_count, cfg->env[i]) != 0) return -1;
    return 0;
}

/* ---- The instance and its executions --------------------------------------------------------------- */

typedef struct command command;
typedef struct execution execution;

enum stop_reason { STOP_NONE, STOP_TIMEOUT, STOP_DEADLINE, STOP_CANCEL };

struct execution {
    execution *next;          /* in owner->running, then owner->finished (guarded by owner->lock) */
    command *owner;
    th_completion *token;
    pthread_t thread;         /* set by the worker itself before it joins owner->finished */
    int cancel_requested;     /* guarded by owner->lock */
    int wake[2];              /* cancel() writes a byte to wake[1] so that the worker's poll() returns */
    /* Copied from the borrowed th_task in execute(): */
    char *payload;
    size_t payload_len;
    char **envp;              /* base environment + the four TASKHOST_ variables */
    char *task_env;           /* the storage of those four strings */
    int64_t deadline_ns;
    int deadline_is_task;     /* the task's deadline came before timeoutMs */
    int64_t started_ns;
    uint64_t sequence;
    /* Results, freed after host->complete returns: */
    char *out;                /* stdout, at most STDOUT_CAP bytes */
    size_t out_len;
    int out_truncated;
    char err[STDERR_TAIL];    /* the last STDERR_TAIL bytes of stderr */
    size_t err_len;
    char message[STDERR_TAIL + 256];
};

struct command {
    config cfg;
    const th_host_api *host;
    pthread_mutex_t lock;
    pthread_cond_t idle;      /* signalled when active drops to 0 */
    execution *running;       /* executions not yet completed: cancel() looks tokens up here */
    execution *finished;      /* workers done, waiting to be joined */
    size_t active;            /* workers that have not finished */
};

static void host_log(command *c, int32_t level, const char *format, ...) {
    if (c->host == NULL || c->host->log == NULL) return;
    char line[512];
    va_list args;
    va_start(args, format);
    int len = vsnprintf(line, sizeof line, format, args);
    va_end(args);
    if (len < 0) return;
    c->host->log(c->host->host_context, level, (th_str){line, (size_t)len < sizeof line ? (uint64_t)len : sizeof line - 1});
}

/* Pipe ends above 2 (so that the dup2 of the file actions never collide) and close-on-exec (so
 * that no other child of the host inherits them). */
static int make_pipe(int fds[2]) {
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    for (int i = 0; i < 2; i++) {
        if (fds[i] > 2) continue;
        int moved = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
        if (moved < 0) {
            int err = errno;
            close(fds[0]);
            close(fds[1]);
            errno = err;
            return -1;
        }
        close(fds[i]);
        fds[i] = moved;
    }
    return 0;
}

static void close_fd(int *fd) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

static void set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static void keep_stdout(execution *e, const char *data, size_t n) {
    size_t room = STDOUT_CAP - e->out_len;
    if (n > room) { e->out_truncated = 1; n = room; }
    if (n > 0) {
        memcpy(e->out + e->out_len, data, n);
        e->out_len += n;
    }
}

static void keep_stderr_tail(execution *e, const char *data, size_t n) {
    if (n >= STDERR_TAIL) {
        memcpy(e->err, data + n - STDERR_TAIL, STDERR_TAIL);
        e->err_len = STDERR_TAIL;
        return;
    }
    if (e->err_len + n > STDERR_TAIL) {
        size_t drop = e->err_len + n - STDERR_TAIL;
        memmove(e->err, e->err + drop, e->err_len - drop);
        e->err_len -= drop;
    }
    memcpy(e->err + e->err_len, data, n);
    e->err_len += n;
}

/* Reads what is available on *fd into the capture; closes *fd at end of file or on error. */
static void pump_read(execution *e, int *fd, int is_stdout) {
    char chunk[16384];
    ssize_t n = read(*fd, chunk, sizeof chunk);
    if (n > 0) {
        if (is_stdout) keep_stdout(e, chunk, (size_t)n);
        else keep_stderr_tail(e, chunk, (size_t)n);
    } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        close_fd(fd);
    }
}

static const char *signal_name(int sig) {
    switch (sig) {
    case SIGHUP: return "SIGHUP";
    case SIGINT: return "SIGINT";
    case SIGQUIT: return "SIGQUIT";
    case SIGILL: return "SIGILL";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGKILL: return "SIGKILL";
    case SIGSEGV: return "SIGSEGV";
    case SIGPIPE: return "SIGPIPE";
    case SIGALRM: return "SIGALRM";
    case SIGTERM: return "SIGTERM";
    default: return "a signal";
    }
}

/* The stderr tail as message text: whole UTF-8 characters, trailing line breaks and spaces cut. */
static const char *stderr_tail(execution *e, size_t *len) {
    size_t start = 0, end = e->err_len;
    if (e->err_len == STDERR_TAIL)
        while (start < end && start < 3 && ((unsigned char)e->err[start] & 0xC0) == 0x80) start++;
    while (end > start && (e->err[end - 1] == '\n' || e->err[end - 1] == '\r' || e->err[end - 1] == ' ' ||
                           e->err[end - 1] == '\t'))
        end--;
    *len = end - start;
    return e->err + start;
}

/* Writes "<text>: <stderr tail>" (or just text when stderr was empty) into e->message. */
static void describe(execution *e, th_outcome *outcome, th_status status, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int len = vsnprintf(e->message, 256, format, args);
    va_end(args);
    if (len < 0) len = 0;
    if (len > 255) len = 255;
    size_t tail_len;
    const char *tail = stderr_tail(e, &tail_len);
    if (tail_len > 0) {
        memcpy(e->message + len, ": ", 2);
        memcpy(e->message + len + 2, tail, tail_len);
        len += 2 + (int)tail_len;
    }
    outcome->status = status;
    outcome->message = (th_str){e->message, (uint64_t)len};
}

/* Runs the program for one execution and fills *outcome (its texts point into e). */
static void run_program(command *c, execution *e, th_outcome *outcome) {
    char reason[128];
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};

    pthread_mutex_lock(&c->lock);
    int cancelled = e->cancel_requested;
    pthread_mutex_unlock(&c->lock);
    if (cancelled) {
        describe(e, outcome, TH_CANCELLED, "cancelled before the program started");
        return;
    }
    if (monotonic_ns() >= e->deadline_ns) {
        describe(e, outcome, TH_TIMEOUT, "the task's deadline passed before the program started");
        return;
    }
    e->out = malloc(STDOUT_CAP);
    if (e->out == NULL || make_pipe(in) != 0 || make_pipe(out) != 0 || make_pipe(err) != 0) {
        int code = e->out == NULL ? ENOMEM : errno;
        close_fd(&in[0]), close_fd(&in[1]), close_fd(&out[0]), close_fd(&out[1]);
        describe(e, outcome, TH_RETRYABLE, "cannot start %s: %s", c->cfg.program, error_text(code, reason, sizeof reason));
        outcome->retry_after_ms = -1;
        return;
    }

    /* The child: pipes on 0, 1, 2, nothing else inherited (where the C library can do it), an
     * empty signal mask and default dispositions (this thread blocks every signal, and the host
     * may ignore SIGPIPE), and its own process group so that a stop reaches its children too. */
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    sigset_t no_signals, all_signals;
    sigemptyset(&no_signals);
    sigfillset(&all_signals);
    pid_t pid = -1;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc == 0) {
        rc = posix_spawnattr_init(&attr);
        if (rc == 0) {
            posix_spawn_file_actions_adddup2(&actions, in[0], 0);
            posix_spawn_file_actions_adddup2(&actions, out[1], 1);
            posix_spawn_file_actions_adddup2(&actions, err[1], 2);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
            posix_spawn_file_actions_addclosefrom_np(&actions, 3);
#endif
            posix_spawnattr_setsigmask(&attr, &no_signals);
            posix_spawnattr_setsigdefault(&attr, &all_signals);
            posix_spawnattr_setpgroup(&attr, 0);
            posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
            rc = posix_spawn(&pid, c->cfg.program, &actions, &attr, c->cfg.argv, e->envp);
            posix_spawnattr_destroy(&attr);
        }
        posix_spawn_file_actions_destroy(&actions);
    }
    close_fd(&in[0]), close_fd(&out[1]), close_fd(&err[1]);
    if (rc != 0) {
        close_fd(&in[1]), close_fd(&out[0]), close_fd(&err[0]);
        int transient = rc == EAGAIN || rc == ENOMEM || rc == EMFILE || rc == ENFILE;
        describe(e, outcome, transient ? TH_RETRYABLE : TH_ERROR, "cannot start %s: %s", c->cfg.program,
                 error_text(rc, reason, sizeof reason));
        outcome->retry_after_ms = -1;
        return;
    }
    set_nonblocking(in[1]);
    set_nonblocking(out[0]);
    set_nonblocking(err[0]);
    if (e->payload_len == 0) close_fd(&in[1]); /* nothing to send: stdin reads end of file at once */

    size_t written = 0;
    int exited = 0, status_unknown = 0, killed = 0;
    enum stop_reason stop = STOP_NONE;
    int64_t exit_ns = 0, term_ns = 0, tick_ns = 1000000;
    for (;;) {
        int64_t now = monotonic_ns();
        if (!exited) { /* has it exited? WNOWAIT leaves the zombie, so its pid and group stay ours */
            siginfo_t info;
            memset(&info, 0, sizeof info);
            if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0) {
                if (info.si_pid == pid) exited = 1, exit_ns = now;
            } else if (errno == ECHILD) { /* reaped by someone else (SIGCHLD ignored in the host?) */
                exited = 1, status_unknown = 1, exit_ns = now;
            }
        }
        if (!exited && stop == STOP_NONE) {
            pthread_mutex_lock(&c->lock);
            cancelled = e->cancel_requested;
            pthread_mutex_unlock(&c->lock);
            if (cancelled) stop = STOP_CANCEL;
            else if (now >= e->deadline_ns) stop = e->deadline_is_task ? STOP_DEADLINE : STOP_TIMEOUT;
            if (stop != STOP_NONE) {
                kill(-pid, SIGTERM);
                term_ns = now;
            }
        }
        if (stop != STOP_NONE && !exited && !killed && now >= term_ns + KILL_GRACE_NS) {
            kill(-pid, SIGKILL);
            killed = 1;
        }
        int pipes_open = out[0] >= 0 || err[0] >= 0;
        if (exited && (!pipes_open || now >= exit_ns + DRAIN_GRACE_NS)) break;

        /* Sleep in poll() until output, room for input, a cancel, or the next thing to check. A
         * child holding no pipe open is checked after 1, 2, 4 ... 64 ms; one that writes, every
         * 100 ms (its pipes may outlive it when it leaves children behind). */
        int64_t wake = now + (pipes_open ? 100000000 : tick_ns);
        if (!pipes_open && tick_ns < 64000000) tick_ns *= 2;
        if (!exited && stop == STOP_NONE && e->deadline_ns < wake) wake = e->deadline_ns;
        if (stop != STOP_NONE && !exited && !killed && term_ns + KILL_GRACE_NS < wake) wake = term_ns + KILL_GRACE_NS;
        if (exited && exit_ns + DRAIN_GRACE_NS < wake) wake = exit_ns + DRAIN_GRACE_NS;
        struct pollfd fds[4];
        int count = 0, at_wake = -1, at_in = -1, at_out = -1, at_err = -1;
        fds[at_wake = count++] = (struct pollfd){.fd = e->wake[0], .events = POLLIN};
        if (in[1] >= 0) fds[at_in = count++] = (struct pollfd){.fd = in[1], .events = POLLOUT};
        if (out[0] >= 0) fds[at_out = count++] = (struct pollfd){.fd = out[0], .events = POLLIN};
        if (err[0] >= 0) fds[at_err = count++] = (struct pollfd){.fd = err[0], .events = POLLIN};
        int64_t wait_ms = wake > now ? (wake - now + 999999) / 1000000 : 0;
        if (poll(fds, (nfds_t)count, (int)(wait_ms < INT_MAX ? wait_ms : INT_MAX)) <= 0) continue;
        if (fds[at_wake].revents != 0) {
            char drain[64];
            while (read(e->wake[0], drain, sizeof drain) > 0) {}
        }
        if (at_in >= 0 && fds[at_in].revents != 0) {
            size_t chunk = e->payload_len - written < 65536 ? e->payload_len - written : 65536;
            ssize_t n = write(in[1], e->payload + written, chunk);
            if (n > 0) written += (size_t)n;
            /* EPIPE: the program closed its stdin without reading everything; that is its right.
             * (SIGPIPE is blocked in this thread, so it cannot kill the host.) */
            if ((n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) || written == e->payload_len)
                close_fd(&in[1]);
        }
        if (at_out >= 0 && fds[at_out].revents != 0) pump_read(e, &out[0], 1);
        if (at_err >= 0 && fds[at_err].revents != 0) pump_read(e, &err[0], 0);
    }
    /* Stopped on purpose: whatever is left of its process group goes too. The leader is still an
     * unreaped zombie, so the group id cannot belong to anyone else yet. */
    if (stop != STOP_NONE && !status_unknown) kill(-pid, SIGKILL);
    int wait_status = 0;
    if (!status_unknown) {
        pid_t reaped;
        while ((reaped = waitpid(pid, &wait_status, 0)) < 0 && errno == EINTR) {}
        if (reaped != pid) status_unknown = 1;
    }
    close_fd(&in[1]), close_fd(&out[0]), close_fd(&err[0]);

    outcome->output = (th_str){e->out, e->out_len};
    outcome->retry_after_ms = -1;
    int64_t elapsed_ms = (monotonic_ns() - e->started_ns) / 1000000;
    const char *how = killed ? "SIGKILL" : "SIGTERM";
    if (stop == STOP_CANCEL) {
        describe(e, outcome, TH_CANCELLED, "cancelled after %" PRId64 " ms: stopped %s with %s", elapsed_ms,
                 c->cfg.program, how);
    } else if (stop == STOP_TIMEOUT) {
        describe(e, outcome, TH_TIMEOUT, "timed out after %" PRId64 " ms (timeoutMs): stopped %s with %s",
                 c->cfg.timeout_ms, c->cfg.program, how);
    } else if (stop == STOP_DEADLINE) {
        describe(e, outcome, TH_TIMEOUT, "reached the task's deadline after %" PRId64 " ms: stopped %s with %s",
                 elapsed_ms, c->cfg.program, how);
    } else if (status_unknown) {
        describe(e, outcome, TH_ERROR, "%s ended, but its exit status is unknown (does the host ignore SIGCHLD?)",
                 c->cfg.program);
    } else if (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0) {
        outcome->status = TH_OK;
    } else if (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 75) {
        describe(e, outcome, TH_RETRYABLE, "exit status 75 (EX_TEMPFAIL)");
    } else if (WIFEXITED(wait_status)) {
        describe(e, outcome, TH_ERROR, "exit status %d", WEXITSTATUS(wait_status));
    } else {
        int sig = WIFSIGNALED(wait_status) ? WTERMSIG(wait_status) : 0;
        describe(e, outcome, TH_ERROR, "killed by signal %d (%s)", sig, signal_name(sig));
    }
    if (e->out_truncated)
        host_log(c, TH_LOG_WARNING, "task %" PRIu64 ": stdout cut to its first %d bytes", e->sequence, STDOUT_CAP);
}

static void free_execution(execution *e) {
    free(e->payload);
    free(e->envp);
    free(e->task_env);
    free(e->out);
    free(e);
}

static void *worker_main(void *arg) {
    execution *e = arg;
    command *c = e->owner;
    th_outcome outcome;
    memset(&outcome, 0, sizeof outcome);
    outcome.struct_size = sizeof outcome; /* the struct as this plugin knows it */
    outcome.retry_after_ms = -1;           /* TH_RETRYABLE: the host's retry policy decides when */
    run_program(c, e, &outcome);

    /* Leave the running list first: from here on a cancel() for this token finds nothing, so
     * nothing can touch the execution after its completion. */
    pthread_mutex_lock(&c->lock);
    for (execution **p = &c->running; *p != NULL; p = &(*p)->next) {
        if (*p == e) { *p = e->next; break; }
    }
    pthread_mutex_unlock(&c->lock);
    close_fd(&e->wake[0]);
    close_fd(&e->wake[1]);

    c->host->complete(c->host->host_context, e->token, &outcome); /* exactly once, never under our lock */

    free(e->payload), e->payload = NULL;
    free(e->envp), e->envp = NULL;
    free(e->task_env), e->task_env = NULL;
    free(e->out), e->out = NULL;
    pthread_mutex_lock(&c->lock);
    e->thread = pthread_self();
    e->next = c->finished; /* joined by the next execute() or by destroy() */
    c->finished = e;
    if (--c->active == 0) pthread_cond_broadcast(&c->idle);
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* Joins the workers that have finished (each is past its last use of the instance). */
static void join_finished(command *c) {
    pthread_mutex_lock(&c->lock);
    execution *list = c->finished;
    c->finished = NULL;
    pthread_mutex_unlock(&c->lock);
    while (list != NULL) {
        execution *next = list->next;
        pthread_join(list->thread, NULL);
        free_execution(list);
        list = next;
    }
}

/* ---- The plugin functions -------------------------------------------------------------------------- */

static th_status cmd_validate(th_str config_json, th_message_buffer error) {
    config cfg;
    th_status status = read_config(config_json, &cfg, error);
    if (status == TH_OK) free_config(&cfg);
    return status;
}

static th_status cmd_create(const th_host_api *host, th_str config_json, void **instance_out,
                            th_message_buffer error) {
    if (host == NULL || host->complete == NULL) {
        set_error(error, "this plugin completes tasks asynchronously, and the host offers no complete()");
        return TH_NOT_SUPPORTED;
    }
    command *c = calloc(1, sizeof *c);
    if (c == NULL) {
        set_error(error, "out of memory");
        return TH_ERROR;
    }
    th_status status = read_config(config_json, &c->cfg, error);
    if (status != TH_OK) {
        free(c);
        return status;
    }
    if (build_base_environment(&c->cfg) != 0) {
        set_error(error, "out of memory");
        free_config(&c->cfg);
        free(c);
        return TH_ERROR;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->idle, NULL);
    c->host = host;
    host_log(c, TH_LOG_INFO, "runs %s with %zu argument(s), timeout %" PRId64 " ms", c->cfg.program,
             c->cfg.argc - 1, c->cfg.timeout_ms);
    *instance_out = c;
    return TH_OK;
}

/* Called once all executions completed; still, a worker that is running is asked to stop and
 * awaited, so that no thread of ours outlives the instance. */
static void cmd_destroy(void *instance) {
    command *c = instance;
    if (c == NULL) return;
    pthread_mutex_lock(&c->lock);
    for (execution *e = c->running; e != NULL; e = e->next) {
        e->cancel_requested = 1;
        if (write(e->wake[1], "", 1) < 0) {} /* full pipe: the worker wakes anyway */
    }
    while (c->active > 0) pthread_cond_wait(&c->idle, &c->lock);
    pthread_mutex_unlock(&c->lock);
    join_finished(c);
    pthread_cond_destroy(&c->idle);
    pthread_mutex_destroy(&c->lock);
    free_config(&c->cfg);
    free(c);
}

/* A th_str as a C string for the environment: it ends at the first NUL byte, if any. */
static size_t env_text_len(th_str s) {
    if (s.ptr == NULL) return 0;
    const char *nul = memchr(s.ptr, '\0', (size_t)s.len);
    return nul != NULL ? (size_t)(nul - s.ptr) : (size_t)s.len;
}

static _Thread_local char tl_message[256];

static th_status fail_now(th_outcome *outcome, th_status status, const char *text) {
    snprintf(tl_message, sizeof tl_message, "%s", text);
    outcome->status = status;
    outcome->retry_after_ms = -1;
    outcome->message = (th_str){tl_message, strlen(tl_message)};
    return status;
}

/* execute: copies what it needs of the borrowed task, starts a worker, returns TH_PENDING. The
 * worker may complete before this returns. Any host thread; never blocks on the program. */
static th_status cmd_execute(void *instance, const th_task *task, th_completion *token, th_outcome *outcome) {
    command *c = instance;
    join_finished(c);

    execution *e = calloc(1, sizeof *e);
    if (e == NULL) return fail_now(outcome, TH_RETRYABLE, "out of memory");
    e->owner = c;
    e->token = token;
    e->wake[0] = e->wake[1] = -1;
    e->started_ns = monotonic_ns();
    e->sequence = task->sequence;
    e->deadline_ns = e->started_ns + c->cfg.timeout_ms * 1000000;
    if (task->deadline_ns > 0 && task->deadline_ns < e->deadline_ns) {
        e->deadline_ns = task->deadline_ns;
        e->deadline_is_task = 1;
    }
    e->payload_len = task->payload.ptr != NULL ? (size_t)task->payload.len : 0;
    if (e->payload_len > 0 && (e->payload = malloc(e->payload_len)) != NULL)
        memcpy(e->payload, task->payload.ptr, e->payload_len);
    size_t target_len = env_text_len(task->target_id), task_id_len = env_text_len(task->task_id);
    if (target_len > INT_MAX / 2 || task_id_len > INT_MAX / 2) {
        free_execution(e);
        return fail_now(outcome, TH_PERMANENT, "the target id or task id is too long for an environment variable");
    }
    size_t block = target_len + task_id_len + 160;
    e->task_env = malloc(block);
    e->envp = malloc((c->cfg.envp_count + 5) * sizeof *e->envp);
    if ((e->payload_len > 0 && e->payload == NULL) || e->task_env == NULL || e->envp == NULL) {
        free_execution(e);
        return fail_now(outcome, TH_RETRYABLE, "out of memory for the task's copy");
    }
    memcpy(e->envp, c->cfg.envp_base, c->cfg.envp_count * sizeof *e->envp);
    char *p = e->task_env;
    size_t n = c->cfg.envp_count;
    e->envp[n++] = p;
    p += sprintf(p, "TASKHOST_TARGET_ID=%.*s", (int)target_len, task->target_id.ptr != NULL ? task->target_id.ptr : "") + 1;
    e->envp[n++] = p;
    p += sprintf(p, "TASKHOST_SEQUENCE=%" PRIu64, task->sequence) + 1;
    e->envp[n++] = p;
    p += sprintf(p, "TASKHOST_ATTEMPT=%" PRIu32, task->attempt) + 1;
    e->envp[n++] = p;
    sprintf(p, "TASKHOST_TASK_ID=%.*s", (int)task_id_len, task->task_id.ptr != NULL ? task->task_id.ptr : "");
    e->envp[n] = NULL;
    if (pipe2(e->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        char reason[128], text[200];
        snprintf(text, sizeof text, "cannot create a pipe: %s", error_text(errno, reason, sizeof reason));
        free_execution(e);
        return fail_now(outcome, TH_RETRYABLE, text);
    }

    pthread_mutex_lock(&c->lock);
    e->next = c->running;
    c->running = e;
    c->active++;
    pthread_mutex_unlock(&c->lock);

    /* The worker starts with every signal blocked: the host's signals go to the host's threads,
     * and a write to a closed stdin pipe returns EPIPE instead of killing the process. */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    pthread_t thread;
    int rc = pthread_create(&thread, &attr, worker_main, e);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pthread_mutex_lock(&c->lock);
        for (execution **q = &c->running; *q != NULL; q = &(*q)->next) {
            if (*q == e) { *q = e->next; break; }
        }
        if (--c->active == 0) pthread_cond_broadcast(&c->idle);
        pthread_mutex_unlock(&c->lock);
        close_fd(&e->wake[0]);
        close_fd(&e->wake[1]);
        free_execution(e);
        char reason[128], text[200];
        snprintf(text, sizeof text, "cannot start a worker thread: %s", error_text(rc, reason, sizeof reason));
        return fail_now(outcome, TH_RETRYABLE, text);
    }
    return TH_PENDING;
}

/* Capability "taskhost.cancel/1": asks the worker of `token` to stop its program. The worker
 * sends SIGTERM, SIGKILL 2 s later, and completes with TH_CANCELLED; if the program already
 * ended, the real result stands. An unknown or completed token is ignored. Any thread. */
static void cmd_cancel(void *instance, th_completion *token) {
    command *c = instance;
    if (c == NULL) return;
    pthread_mutex_lock(&c->lock);
    for (execution *e = c->running; e != NULL; e = e->next) {
        if (e->token != token) continue;
        e->cancel_requested = 1;
        if (write(e->wake[1], "", 1) < 0) {} /* full pipe: the worker wakes anyway */
        break;
    }
    pthread_mutex_unlock(&c->lock);
}

static const th_cancel_v1 cancel_v1 = {.struct_size = sizeof(th_cancel_v1), .cancel = cmd_cancel};

/* `instance` may be NULL when the host asks at load time. */
static const void *cmd_get_capability(void *instance, const char *id) {
    (void)instance;
    if (id != NULL && strcmp(id, TH_CAPABILITY_CANCEL_V1) == 0) return &cancel_v1;
    return NULL;
}

static const th_plugin plugin = {
    .abi_major = TH_ABI_MAJOR,
    .abi_minor = TH_ABI_MINOR,
    .struct_size = sizeof(th_plugin),
    .name = "command",
    .version = "1.0.0",
    .description = "Runs a program per task: payload on stdin, stdout as the output, exit status as the outcome",
    .config_schema =
        "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"type\":\"object\",\"properties\":{"
        "\"program\":{\"type\":\"string\",\"minLength\":1,\"description\":\"Absolute path, or a name found in PATH\"},"
        "\"args\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"description\":\"Arguments after the program\"},"
        "\"timeoutMs\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":2147483647,\"default\":30000},"
        "\"env\":{\"type\":\"object\",\"additionalProperties\":{\"type\":\"string\"},"
        "\"description\":\"Extra environment variables\"}},"
        "\"required\":[\"program\"],\"additionalProperties\":false}",
    .validate = cmd_validate,
    .create = cmd_create,
    .destroy = cmd_destroy,
    .execute = cmd_execute,
    .get_capability = cmd_get_capability,
};

TH_EXPORT const th_plugin *TH_PLUGIN_ENTRY(void) {
    return &plugin;
}
