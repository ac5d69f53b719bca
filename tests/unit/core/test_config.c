/* Unit tests for configuration layering: defaults < INI file < TESSERA_* < flags, and errors. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "../check.h"
#include "core/config.h"

static void test_layers(void)
{
    char path[] = "/tmp/tessera-config-XXXXXX";
    int fd = mkstemp(path);
    const char ini[] = "[serve]\nlisten = 0.0.0.0:9000\nworkers = 3\nlog_level = debug\n"
                       "cors_origin = http://a.example,http://b.example\n";
    CHECK(write(fd, ini, sizeof(ini) - 1) == (ssize_t)(sizeof(ini) - 1));
    close(fd);
    setenv("TESSERA_WORKERS", "5", 1);
    char *argv[] = {"--config", path, "--log-level", "warn", "--demo"};
    struct config c;
    char err[256];
    CHECK_INT(config_load(&c, CMD_SERVE, 5, argv, err, sizeof(err)), 0);
    CHECK_STR(c.listen, "0.0.0.0:9000");   /* INI beats default */
    CHECK_INT(c.workers, 5);               /* env beats INI */
    CHECK_STR(c.log_level, "warn");        /* flag beats INI */
    CHECK(c.demo);
    CHECK_STR(c.data_dir, "./tessera-data"); /* default */
    CHECK_INT(c.cors_origins.n, 2);
    CHECK_STR(c.cors_origins.v[1], "http://b.example");
    config_free(&c);
    unsetenv("TESSERA_WORKERS");
    unlink(path);
}

static void test_errors(void)
{
    struct config c;
    char err[256];
    char *a1[] = {"--nope"};
    CHECK_INT(config_load(&c, CMD_SERVE, 1, a1, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "--nope") != NULL);
    config_free(&c);
    char *a2[] = {"--workers", "65"}; /* max + 1 */
    CHECK_INT(config_load(&c, CMD_SERVE, 2, a2, err, sizeof(err)), -EINVAL);
    config_free(&c);
    char *a3[] = {"--workers", "64"}; /* max */
    CHECK_INT(config_load(&c, CMD_SERVE, 2, a3, err, sizeof(err)), 0);
    config_free(&c);
    char *a4[] = {"--durability", "sometimes"};
    CHECK_INT(config_load(&c, CMD_SERVE, 2, a4, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "normal|full") != NULL);
    config_free(&c);
    char *a5[] = {"--email", "x@y"}; /* a create-user flag is not a serve flag */
    CHECK_INT(config_load(&c, CMD_SERVE, 2, a5, err, sizeof(err)), -EINVAL);
    config_free(&c);
    char *a6[] = {"--help"};
    CHECK_INT(config_load(&c, CMD_SERVE, 1, a6, err, sizeof(err)), 1);
    config_free(&c);
    char *a7[] = {"--config", "/nonexistent/tessera.ini"};
    CHECK_INT(config_load(&c, CMD_SERVE, 2, a7, err, sizeof(err)), -EINVAL);
    config_free(&c);
}

int main(void)
{
    test_layers();
    test_errors();
    CHECK_DONE();
}
