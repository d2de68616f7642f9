/* test_atomic_file.c — runtime/atomic_file.c: the one atomic writer.
 *
 * Each test works in a fresh directory and checks the contract of atomic_file.h: the
 * target has the old content or the new, never a mix; no temporary survives a commit,
 * an abort or a failure; stale temporaries of dead writers (and of the caller's own
 * pid) are removed by the next begin, and other files — a live process's temporary,
 * another path's, look-alike names — are left alone.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic_file.h"

static char g_dir[64];

static int setup(void **state)
{
    strcpy(g_dir, "/tmp/kiln_atomic_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    DIR *d = opendir(g_dir);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
            if (unlink(p) != 0) rmdir(p);
        }
        closedir(d);
    }
    return rmdir(g_dir);
}

static const char *in_dir(const char *name)
{
    static char buf[4][256];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 256, "%s/%s", g_dir, name);
    return p;
}

static int entries(void)
{
    int n = 0;
    DIR *d = opendir(g_dir);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void assert_content(const char *path, const char *want)
{
    char buf[256] = {0};
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    assert_string_equal(buf, want);
}

static void test_write_replace(void **state)
{
    const char *path = in_dir("a.txt");
    kiln_rt_error err;
    assert_int_equal(kiln_atomic_write_file(path, "first", 5, &err), 0);
    assert_content(path, "first");
    kiln_atomic_file f;
    assert_int_equal(kiln_atomic_begin(&f, path, &err), 0);
    assert_int_equal(kiln_atomic_write(&f, "sec", 3, &err), 0);
    assert_int_equal(entries(), 2); /* the target and one temporary */
    assert_content(path, "first");  /* readers still see the old content */
    assert_int_equal(kiln_atomic_write(&f, "ond", 3, &err), 0);
    assert_int_equal(kiln_atomic_commit(&f, &err), 0);
    assert_content(path, "second");
    assert_int_equal(entries(), 1);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    mode_t mask = umask(0);
    umask(mask);
    assert_int_equal(st.st_mode & 0777, 0666 & ~mask);
}

static void test_abort_keeps_old(void **state)
{
    const char *path = in_dir("b.txt");
    put(path, "old");
    kiln_atomic_file f;
    kiln_rt_error err;
    assert_int_equal(kiln_atomic_begin(&f, path, &err), 0);
    assert_int_equal(kiln_atomic_write(&f, "new!", 4, &err), 0);
    kiln_atomic_abort(&f);
    kiln_atomic_abort(&f); /* twice is harmless */
    assert_content(path, "old");
    assert_int_equal(entries(), 1);
}

static void test_failures(void **state)
{
    kiln_rt_error err;
    /* no directory: begin fails, names the path, creates nothing */
    const char *missing = in_dir("no/such/dir/x");
    assert_int_not_equal(kiln_atomic_write_file(missing, "x", 1, &err), 0);
    assert_non_null(strstr(err.msg, missing));
    assert_non_null(strstr(err.msg, "temporary"));
    /* the target is a non-empty directory: the rename fails, the temporary goes */
    const char *dir = in_dir("d");
    assert_int_equal(mkdir(dir, 0777), 0);
    char inside[300];
    snprintf(inside, sizeof inside, "%s/keep", dir);
    put(inside, "k");
    assert_int_not_equal(kiln_atomic_write_file(dir, "x", 1, &err), 0);
    assert_non_null(strstr(err.msg, "renaming"));
    assert_int_equal(entries(), 1);
    unlink(inside);
    /* empty name */
    assert_int_not_equal(kiln_atomic_write_file("", "x", 1, &err), 0);
    kiln_atomic_file f = {.fd = -1};
    assert_int_not_equal(kiln_atomic_commit(&f, &err), 0);
}

static void test_stale_temporaries(void **state)
{
    const char *path = in_dir("ckpt.safetensors");
    char own[300], dead[300], live[300], other[300], odd[300];
    snprintf(own, sizeof own, "%s.tmp.%ld.3", path, (long)getpid());
    snprintf(dead, sizeof dead, "%s.tmp.%d.0", path, 2147483000); /* no such process */
    snprintf(live, sizeof live, "%s.tmp.%ld.0", path, (long)getppid());
    snprintf(other, sizeof other, "%s/other.tmp.%d.0", g_dir, 2147483000);
    snprintf(odd, sizeof odd, "%s.tmp.%d.x", path, 2147483000);
    const char *all[] = {own, dead, live, other, odd};
    for (int i = 0; i < 5; i++) put(all[i], "stale");
    kiln_rt_error err;
    assert_int_equal(kiln_atomic_write_file(path, "ok", 2, &err), 0);
    assert_int_equal(access(own, F_OK), -1);
    assert_int_equal(access(dead, F_OK), -1);
    assert_int_equal(access(live, F_OK), 0);  /* a live writer's: kept */
    assert_int_equal(access(other, F_OK), 0); /* another file's: kept */
    assert_int_equal(access(odd, F_OK), 0);   /* not our naming: kept */
    assert_int_equal(kiln_atomic_clean(path), 0);
    unlink(live);
    unlink(other);
    unlink(odd);
    assert_content(path, "ok");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_replace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_keeps_old, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_temporaries, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
