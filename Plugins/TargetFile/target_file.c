/*
 * target_file.c -- the "target-file" executor plugin, and the template for plugin authors.
 *
 * For every task it appends one line to <directory>/<target id>.jsonl:
 *
 *     {"sequence":12,"attempt":1,"targetId":"db-7","payload":{"sql":"select 1"}}
 *
 * Configuration (JSON):  {"directory": "out/targets"}
 *     directory  required; the folder receiving one file per target, created (like mkdir -p) when
 *                missing. A relative path is resolved against the host's working directory at create().
 *
 * Build it with nothing but the ABI header:
 *
 *     cc -std=c11 -Wall -Wextra -shared -fPIC -I <folder of taskhost_plugin.h> \
 *        -o libTargetFile.so target_file.c
 *
 * Read it top to bottom: (1) the instance and the buffers handed to the host, (2) a small JSON
 * reader for the configuration, (3) validate/create/destroy, (4) execute, (5) the table and the one
 * exported symbol. Everything except that symbol is `static`: `nm -D` shows one TaskHost symbol.
 */
#define _POSIX_C_SOURCE 200809L /* openat, strdup, strerror_r (the POSIX one) */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "taskhost_plugin.h"

/* ---- 1. The instance, and the buffers for text handed to the host -------------------------- */

typedef struct target_file {
    const th_host_api *host; /* valid until destroy() returns */
    char *directory;         /* as configured; used in the paths we report */
    const char *separator;   /* "/" unless directory already ends with one */
    int dir_fd;              /* the open folder: files are opened relative to it (openat) */
} target_file;

/* Text in a synchronous outcome (message, output) is copied by the host right after execute()
 * returns, so it must stay valid until this thread's next call into the plugin. execute() runs on
 * several host threads at once, so a buffer per instance would not do: each thread gets its own.
 * tl_path fits any path that open() accepted: folder (< 4096 bytes), '/', file name (<= 255). */
static _Thread_local char tl_path[4096 + 1 + 256];
static _Thread_local char tl_message[sizeof tl_path + 512];

/* Writes a message into a host-owned buffer: truncated, always NUL-terminated (header rule). */
static void set_error(th_message_buffer error, const char *format, ...) {
    if (error.ptr == NULL || error.cap == 0) return;
    va_list args;
    va_start(args, format);
    vsnprintf(error.ptr, (size_t)error.cap, format, args);
    va_end(args);
}

/* strerror, but thread-safe: strerror_r, in whichever form the C library declares it. */
static void error_text(int err, char *buffer, size_t cap) {
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    const char *text = strerror_r(err, buffer, cap); /* the GNU form returns the text */
    if (text != buffer) snprintf(buffer, cap, "%s", text);
#else
    if (strerror_r(err, buffer, cap) != 0) snprintf(buffer, cap, "error %d", err);
#endif
}

/* ---- 2. Reading JSON -----------------------------------------------------------------------
 * The config arrives as JSON text in a th_str (pointer + length, not NUL-terminated). A small
 * strict reader is enough: it checks the whole text, so a typo is reported, never ignored. */

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

static int json_literal(json *j, const char *word) {
    size_t len = strlen(word);
    if ((size_t)(j->end - j->p) < len || memcmp(j->p, word, len) != 0) return -1;
    j->p += len;
    return 0;
}

static int json_digits(json *j) {
    const unsigned char *start = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    return j->p > start ? 0 : -1;
}

/* Skips one JSON value (checking it). Returns 0, or -1 when the text there is not valid JSON. */
static int json_skip(json *j, int depth) {
    json_ws(j);
    if (j->p >= j->end || depth > 64) return -1;
    unsigned char c = *j->p;
    if (c == '"') return json_string(j, NULL, 0) < 0 ? -1 : 0;
    if (c == 't') return json_literal(j, "true");
    if (c == 'f') return json_literal(j, "false");
    if (c == 'n') return json_literal(j, "null");
    if (c == '{' || c == '[') {
        unsigned char close = c == '{' ? '}' : ']';
        j->p++;
        json_ws(j);
        if (j->p < j->end && *j->p == close) { j->p++; return 0; }
        for (;;) {
            json_ws(j);
            if (c == '{') {
                if (json_string(j, NULL, 0) < 0) return -1;
                json_ws(j);
                if (j->p >= j->end || *j->p++ != ':') return -1;
            }
            if (json_skip(j, depth + 1) < 0) return -1;
            json_ws(j);
            if (j->p >= j->end) return -1;
            if (*j->p == ',') { j->p++; continue; }
            if (*j->p++ == close) return 0;
            return -1;
        }
    }
    /* A number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
    if (c == '-') j->p++;
    if (j->p < j->end && *j->p == '0') j->p++;
    else if (json_digits(j) < 0) return -1;
    if (j->p < j->end && *j->p == '.') { j->p++; if (json_digits(j) < 0) return -1; }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
        if (json_digits(j) < 0) return -1;
    }
    return 0;
}

/* ---- 3. Configuration, validate, create, destroy --------------------------------------------- */

#define EXAMPLE_CONFIG "{\"directory\": \"out/targets\"}"

/* Parses the configuration. On TH_OK, *directory_out is a malloc'd, NUL-terminated copy. */
static th_status read_config(th_str config, char **directory_out, th_message_buffer error) {
    const unsigned char *text = config.ptr != NULL ? (const unsigned char *)config.ptr : (const unsigned char *)"";
    json j = {text, text + (config.ptr != NULL ? config.len : 0)};
    char *directory = NULL;
    json_ws(&j);
    if (j.p >= j.end || *j.p++ != '{') {
        set_error(error, "the configuration must be a JSON object: write it as " EXAMPLE_CONFIG);
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
        if (key_len != 9 || strcmp(key, "directory") != 0) {
            set_error(error, "key '%s%s' is not allowed: remove it (the only key is 'directory', as in %s)",
                      key, key_len >= (int64_t)sizeof key ? "..." : "", EXAMPLE_CONFIG);
            goto invalid;
        }
        if (directory != NULL) {
            set_error(error, "key 'directory' appears twice: keep one");
            goto invalid;
        }
        json probe = j; /* measure first, then decode into a buffer of the right size */
        int64_t len = j.p < j.end && *j.p == '"' ? json_string(&probe, NULL, 0) : 0;
        if (len < 0) goto syntax;
        if (len == 0) {
            set_error(error, "key 'directory' must be a non-empty string: set it to a folder path, as in %s",
                      EXAMPLE_CONFIG);
            goto invalid;
        }
        if ((directory = malloc((size_t)len + 1)) == NULL) {
            set_error(error, "out of memory");
            return TH_ERROR;
        }
        json_string(&j, directory, (size_t)len);
        directory[len] = '\0';
        if (strlen(directory) != (size_t)len) {
            set_error(error, "key 'directory' must not contain NUL characters (\\u0000): remove them");
            goto invalid;
        }
        json_ws(&j);
        if (j.p < j.end && *j.p == ',') { j.p++; continue; }
        if (j.p < j.end && *j.p == '}') { j.p++; break; }
        goto syntax;
    }
    json_ws(&j);
    if (j.p != j.end) goto syntax;
    if (directory == NULL) {
        set_error(error, "missing key 'directory': set it to the folder that receives one .jsonl file per "
                  "target, as in %s", EXAMPLE_CONFIG);
        return TH_INVALID_CONFIG;
    }
    *directory_out = directory;
    return TH_OK;
syntax:
    set_error(error, "the configuration is not valid JSON (at byte %zu): write it as %s",
              (size_t)(j.p - text), EXAMPLE_CONFIG);
invalid:
    free(directory);
    return TH_INVALID_CONFIG;
}

/* validate: checks a configuration without applying it (creates nothing). Any thread. */
static th_status tf_validate(th_str config_json, th_message_buffer error) {
    char *directory = NULL;
    th_status status = read_config(config_json, &directory, error);
    if (status != TH_OK) return status;
    struct stat st;
    if (stat(directory, &st) == 0 && !S_ISDIR(st.st_mode)) {
        set_error(error, "key 'directory': '%s' exists and is not a folder: point it to a folder", directory);
        status = TH_INVALID_CONFIG;
    }
    free(directory);
    return status;
}

/* mkdir -p: creates each missing folder of path. Returns 0 or an errno value. */
static int make_directories(const char *path) {
    char *copy = strdup(path);
    if (copy == NULL) return ENOMEM;
    for (char *s = copy + 1;; s++) {
        if (*s != '/' && *s != '\0') continue;
        char saved = *s;
        *s = '\0';
        if (mkdir(copy, 0777) != 0 && errno != EEXIST) {
            int err = errno;
            free(copy);
            return err;
        }
        if ((*s = saved) == '\0') break;
    }
    free(copy);
    return 0;
}

/* create: the host serializes create/destroy per instance. `host` stays valid until destroy returns. */
static th_status tf_create(const th_host_api *host, th_str config_json, void **instance_out,
                           th_message_buffer error) {
    char *directory = NULL, reason[256];
    th_status status = read_config(config_json, &directory, error);
    if (status != TH_OK) return status;
    int err = make_directories(directory);
    int fd = err == 0 ? open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (fd < 0) {
        if (err == 0) err = errno;
        error_text(err, reason, sizeof reason);
        set_error(error, "key 'directory': cannot create or open the folder '%s': %s", directory, reason);
        free(directory);
        return err == ENOTDIR || err == EEXIST ? TH_INVALID_CONFIG : TH_ERROR;
    }
    target_file *tf = malloc(sizeof *tf);
    if (tf == NULL) {
        close(fd);
        free(directory);
        set_error(error, "out of memory");
        return TH_ERROR;
    }
    size_t len = strlen(directory);
    *tf = (target_file){.host = host, .directory = directory, .separator = directory[len - 1] == '/' ? "" : "/",
                        .dir_fd = fd};
    if (host != NULL && host->log != NULL) { /* the host's log: any thread, create() until destroy() */
        char line[4200];
        int n = snprintf(line, sizeof line, "appending one line per task to %s%s<target>.jsonl", directory,
                         tf->separator);
        host->log(host->host_context, TH_LOG_INFO, (th_str){line, n < (int)sizeof line ? (uint64_t)n : sizeof line - 1});
    }
    *instance_out = tf;
    return TH_OK;
}

/* destroy: called once, after every execution completed. Nothing of ours is still running (all
 * completions are synchronous), so this just releases the instance. */
static void tf_destroy(void *instance) {
    target_file *tf = instance;
    if (tf == NULL) return;
    close(tf->dir_fd);
    free(tf->directory);
    free(tf);
}

/* ---- 4. execute ---------------------------------------------------------------------------- */

/* Appends s as a JSON string to out (which has room for 6 bytes per input byte + 2). Invalid
 * UTF-8 becomes U+FFFD, so the line is always valid JSON. Returns the new end. */
static char *put_json_string(char *out, const char *s, uint64_t len) {
    const unsigned char *p = (const unsigned char *)s, *end = len > 0 ? p + len : p;
    *out++ = '"';
    while (p < end) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') { *out++ = '\\'; *out++ = (char)c; p++; }
        else if (c == '\n') { memcpy(out, "\\n", 2); out += 2; p++; }
        else if (c == '\t') { memcpy(out, "\\t", 2); out += 2; p++; }
        else if (c == '\r') { memcpy(out, "\\r", 2); out += 2; p++; }
        else if (c < 0x20) { out += sprintf(out, "\\u%04x", c); p++; }
        else {
            int n = utf8_len(p, end);
            if (n == 0) { memcpy(out, "\\ufffd", 6); out += 6; p++; }
            else { memcpy(out, p, (size_t)n); out += n; p += n; }
        }
    }
    *out++ = '"';
    return out;
}

/* True when the payload is one complete JSON value whose first non-space byte is { [ " a digit - t f
 * n; such a payload is written verbatim, anything else as a JSON string. */
static int payload_is_json(th_str payload) {
    if (payload.ptr == NULL || payload.len == 0) return 0;
    json j = {(const unsigned char *)payload.ptr, (const unsigned char *)payload.ptr + payload.len};
    json_ws(&j);
    if (j.p >= j.end || *j.p == '\0' || strchr("{[\"-0123456789tfn", *j.p) == NULL) return 0;
    if (json_skip(&j, 0) < 0) return 0;
    json_ws(&j);
    return j.p == j.end;
}

static th_status fail(th_outcome *outcome, th_status status) {
    outcome->status = status;
    outcome->message = (th_str){tl_message, strlen(tl_message)};
    return status;
}

/* execute: runs concurrently on several host threads, but never for two tasks of one target at
 * once (the host's promise). So the per-target file needs no lock: only one thread appends to
 * <target>.jsonl at a time, in the order the host delivers the tasks. (Two distinct ids that map to
 * one file name, say "a/b" and "a_b", could append at once; each line goes out in a single
 * O_APPEND write, so lines still do not interleave on a local file system.)
 *
 * Everything in `task` is borrowed until we return; we complete synchronously, so that is enough.
 * The token is never used: a synchronous result must not call host->complete. */
static th_status tf_execute(void *instance, const th_task *task, th_completion *token, th_outcome *outcome) {
    (void)token;
    target_file *tf = instance;

    /* The file name: [A-Za-z0-9._-] kept, other bytes become '_'; "", "." and ".." become "_". */
    char name[256];
    uint64_t id_len = task->target_id.len;
    const char *id = task->target_id.ptr;
    if (id_len > sizeof name - sizeof ".jsonl") {
        snprintf(tl_message, sizeof tl_message, "target id is %" PRIu64 " bytes long; file names allow at most %zu",
                 id_len, sizeof name - sizeof ".jsonl");
        return fail(outcome, TH_PERMANENT); /* retrying cannot make it shorter */
    }
    for (uint64_t i = 0; i < id_len; i++) {
        char c = id[i];
        int keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                   c == '_' || c == '-';
        name[i] = keep ? c : '_';
    }
    name[id_len] = '\0';
    if (id_len == 0 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) strcpy(name, "_");
    strcat(name, ".jsonl");
    snprintf(tl_path, sizeof tl_path, "%s%s%s", tf->directory, tf->separator, name);

    /* The line, built whole so that it goes out in one write(). */
    uint64_t payload_len = task->payload.ptr != NULL ? task->payload.len : 0;
    if (payload_len > (SIZE_MAX - 256 - 6 * id_len) / 6) {
        snprintf(tl_message, sizeof tl_message, "payload of %" PRIu64 " bytes is too large", payload_len);
        return fail(outcome, TH_PERMANENT);
    }
    char *line = malloc(256 + 6 * (size_t)id_len + 6 * (size_t)payload_len);
    if (line == NULL) {
        snprintf(tl_message, sizeof tl_message, "out of memory for a line of %" PRIu64 " payload bytes", payload_len);
        return fail(outcome, TH_RETRYABLE);
    }
    char *end = line + sprintf(line, "{\"sequence\":%" PRIu64 ",\"attempt\":%" PRIu32 ",\"targetId\":",
                               task->sequence, task->attempt);
    end = put_json_string(end, id, id_len);
    memcpy(end, ",\"payload\":", 11);
    end += 11;
    if (payload_is_json(task->payload)) {
        /* Verbatim, minus surrounding spaces. Line breaks can only be spaces between tokens in
         * valid JSON (raw ones are not allowed inside strings), so they become ' ': one task, one line. */
        json j = {(const unsigned char *)task->payload.ptr, (const unsigned char *)task->payload.ptr + payload_len};
        json_ws(&j);
        while (j.end > j.p && (j.end[-1] == ' ' || j.end[-1] == '\t' || j.end[-1] == '\n' || j.end[-1] == '\r')) j.end--;
        for (; j.p < j.end; j.p++) *end++ = *j.p == '\n' || *j.p == '\r' ? ' ' : (char)*j.p;
    } else {
        end = put_json_string(end, task->payload.ptr, payload_len);
    }
    memcpy(end, "}\n", 2);
    end += 2;

    /* Append. O_APPEND puts every write at the current end of the file, even if another process
     * appends too. */
    int fd = openat(tf->dir_fd, name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    int err = fd < 0 ? errno : 0;
    for (const char *p = line; err == 0 && p < end;) {
        ssize_t n = write(fd, p, (size_t)(end - p));
        if (n < 0 && errno != EINTR) err = errno;
        if (n > 0) p += n;
    }
    if (fd >= 0 && close(fd) != 0 && err == 0 && errno != EINTR) err = errno;
    free(line);
    if (err != 0) {
        char reason[256];
        error_text(err, reason, sizeof reason);
        snprintf(tl_message, sizeof tl_message, "cannot append to %s: %s", tl_path, reason);
        return fail(outcome, TH_ERROR);
    }
    outcome->status = TH_OK;
    outcome->output = (th_str){tl_path, strlen(tl_path)}; /* thread-local: valid until our next call here */
    return TH_OK;
}

/* ---- 5. The table and the one exported symbol ------------------------------------------------ */

/* Capabilities are looked up by versioned id ("taskhost.cancel/1"). This plugin completes every
 * task before execute returns, so it offers none. `instance` may be NULL when the host asks at load. */
static const void *tf_get_capability(void *instance, const char *id) {
    (void)instance;
    (void)id;
    return NULL;
}

static const th_plugin plugin = {
    .abi_major = TH_ABI_MAJOR, /* the header this was built against: the host checks these */
    .abi_minor = TH_ABI_MINOR,
    .struct_size = sizeof(th_plugin),
    .name = "target-file",
    .version = "1.0.0",
    .description = "Appends one JSON line per task to <directory>/<target id>.jsonl",
    .config_schema =
        "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"type\":\"object\","
        "\"properties\":{\"directory\":{\"type\":\"string\",\"minLength\":1,\"description\":"
        "\"Folder receiving one <target id>.jsonl file per target; created when missing.\"}},"
        "\"required\":[\"directory\"],\"additionalProperties\":false}",
    .validate = tf_validate,
    .create = tf_create,
    .destroy = tf_destroy,
    .execute = tf_execute,
    .get_capability = tf_get_capability,
};

TH_EXPORT const th_plugin *TH_PLUGIN_ENTRY(void) {
    return &plugin;
}
