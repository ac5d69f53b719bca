/* libFuzzer target for configuration loading (src/core/config.c with inih): the first byte
 * picks the command, the input up to the first NUL is the INI file given as --config, and the
 * NUL-separated rest are command-line flags. A load either fails with a message or gives a
 * config whose every option obeys its table row (integers and numbers in range, enums among
 * their choices, lists at most CONFIG_MAX_LIST long); the rate limits it names then go through
 * ratelimit_class_parse as the server would. config_free must leave nothing behind. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "auth/ratelimit.h"
#include "core/config.h"

#define MAX_ARGS 16

static const unsigned cmds[] = {CMD_SERVE, CMD_TENANT, CMD_USER, CMD_BACKUP};
static int ini_fd = -1;
static char ini_path[64];

static void must(bool ok)
{
    if (!ok)
        abort();
}

static bool enum_ok(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        size_t len = strcspn(p, "|");
        if (len == n && strncmp(p, v, n) == 0)
            return true;
        p += len + (p[len] == '|');
    }
    return false;
}

static void check_config(const struct config *c, unsigned cmd)
{
    for (const struct config_opt *o = config_opts; o->name; o++) {
        const void *f = (const char *)c + o->offset;
        if (!(o->cmds & cmd))
            continue;
        switch (o->type) {
        case CFG_INT: must(*(const int *)f >= o->min && *(const int *)f <= o->max); break;
        case CFG_DOUBLE:
            must(*(const double *)f >= o->min && *(const double *)f <= o->max);
            break;
        case CFG_ENUM: must(*(char *const *)f && enum_ok(o->choices, *(char *const *)f)); break;
        case CFG_LIST: {
            const struct config_list *l = f;
            must(l->n >= 0 && l->n <= CONFIG_MAX_LIST);
            for (int i = 0; i < l->n; i++)
                must(l->v[i] && l->v[i][0]);
            break;
        }
        default: break;
        }
    }
}

static void parse_rate_limits(const struct config *c)
{
    struct ratelimit *rl = ratelimit_new(64);
    must(rl != NULL);
    for (int i = 0; i < c->rate_limits.n; i++) {
        char err[256] = "";
        int r = ratelimit_class_parse(rl, c->rate_limits.v[i], err, sizeof(err));
        must(r >= 0 || err[0]);
    }
    ratelimit_free(rl);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    /* the environment is a layer of its own: keep the inputs the only source */
    extern char **environ;
    for (char **e = environ; *e;) {
        if (strncmp(*e, "TESSERA_", 8) == 0) {
            char name[128];
            snprintf(name, sizeof(name), "%.*s", (int)strcspn(*e, "="), *e);
            unsetenv(name);
        } else {
            e++;
        }
    }
    ini_fd = memfd_create("fuzz-config.ini", 0);
    must(ini_fd >= 0);
    snprintf(ini_path, sizeof(ini_path), "/proc/self/fd/%d", ini_fd);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned cmd = cmds[data[0] % 4];
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    const char *nul = memchr(in, '\0', n);
    size_t ini_len = nul ? (size_t)(nul - in) : n;
    must(ftruncate(ini_fd, 0) == 0);
    must(pwrite(ini_fd, in, ini_len, 0) == (ssize_t)ini_len);

    /* argv: --config FILE, then the NUL-separated flags (a copy, NUL-terminated each) */
    char *copy = malloc(n + 1);
    memcpy(copy, in, n);
    copy[n] = '\0';
    char *args[MAX_ARGS + 2] = {"--config", ini_path};
    int argc = 2;
    for (size_t off = ini_len + 1; nul && off <= n && argc < MAX_ARGS + 2;) {
        char *a = copy + off;
        if (strcmp(a, "--help") != 0) /* help prints and returns 1: nothing to parse */
            args[argc++] = a;
        off += strlen(a) + 1;
    }
    struct config c;
    char err[512];
    memset(err, 'x', sizeof(err));
    int r = config_load(&c, cmd, argc, args, err, sizeof(err));
    if (r == 0) {
        check_config(&c, cmd);
        parse_rate_limits(&c);
    } else {
        must(r == -EINVAL && memchr(err, '\0', sizeof(err)) && err[0] != 'x');
    }
    config_free(&c);
    free(copy);
    return 0;
}
