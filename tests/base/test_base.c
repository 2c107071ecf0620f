/* test_base: src/base's helpers: strict numbers, byte order, Box-Muller's determinism,
 * the input opener's refusals (folders, FIFOs: without blocking), the output checks
 * (same file as an input, a device, inside a protected folder, also by a path that does
 * not exist yet) and the crash-safe write
 * (a header filled in at the end included). */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"

static char dir[256];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/tt_base_XXXXXX");
    cr_assert(mkdtemp(dir));
}

static void rm_dir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(base, .init = make_dir, .fini = rm_dir, .timeout = 20);

Test(base, integers_are_strict)
{
    int64_t v = 0;
    cr_assert_eq(base_parse_i64("42", &v), 0);
    cr_assert_eq(v, 42);
    cr_assert_eq(base_parse_i64("-7", &v), 0);
    cr_assert_eq(v, -7);
    const char *bad[] = {"", "2.5", "0x10", "10k", " 3", "3 ", "1e3", "+", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect_eq(base_parse_i64(bad[i], &v), -1, "accepted '%s'", bad[i]);
}

Test(base, reals_are_decimal)
{
    double v = 0;
    cr_assert_eq(base_parse_f64("0.01", &v), 0);
    cr_assert_eq(v, 0.01);
    cr_assert_eq(base_parse_f64("1e-4", &v), 0);
    cr_assert_eq(v, 1e-4);
    const char *bad[] = {"", "0x1p3", "inf", "nan", "1.0x", " 1", "1e999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect_eq(base_parse_f64(bad[i], &v), -1, "accepted '%s'", bad[i]);
}

Test(base, little_endian_round_trip)
{
    uint8_t b[8];
    base_put_le32(b, 0x11223344u);
    cr_assert_eq(b[0], 0x44);
    cr_assert_eq(b[3], 0x11);
    cr_assert_eq(base_get_le32(b), 0x11223344u);
    base_put_le64(b, 0x0102030405060708ull);
    cr_assert_eq(b[0], 0x08);
    cr_assert_eq(b[7], 0x01);
    cr_assert_eq(base_get_le64(b), 0x0102030405060708ull);
}

Test(base, normals_are_pure_functions_of_the_counter)
{
    double a = base_rng_normal(7, 10, 0), b = base_rng_normal(7, 10, 0);
    cr_assert_eq(a, b);
    cr_assert_neq(base_rng_normal(7, 10, 0), base_rng_normal(7, 10, 1));
    /* mean and variance of 20000 draws near 0 and 1 */
    double s = 0, s2 = 0;
    for (int i = 0; i < 20000; i++) {
        double x = base_rng_normal(3, 2 * (uint64_t)i, 0);
        s += x;
        s2 += x * x;
    }
    cr_assert(fabs(s / 20000) < 0.03);
    cr_assert(fabs(s2 / 20000 - 1) < 0.05);
    cr_assert(strlen(base_version()) > 0);
}

Test(base, input_refuses_folders_and_fifos_without_blocking)
{
    char err[512], fifo[300], file[300];
    cr_assert_eq(base_open_input(dir, "IDX file", err, sizeof err), -1);
    cr_assert(strstr(err, "a folder"), "%s", err);
    snprintf(fifo, sizeof fifo, "%s/train-images-idx3-ubyte", dir);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    cr_assert_eq(base_open_input(fifo, "IDX file", err, sizeof err), -1); /* no hang */
    cr_assert(strstr(err, "a FIFO") && strstr(err, fifo), "%s", err);
    snprintf(file, sizeof file, "%s/missing", dir);
    cr_assert_eq(base_open_input(file, "shard", err, sizeof err), -1);
    cr_assert(strstr(err, "shard") && strstr(err, file), "%s", err);
    snprintf(file, sizeof file, "%s/ok", dir);
    cr_assert_eq(base_write_file(file, "test file", "hello", 5, err, sizeof err), 0, "%s", err);
    size_t n = 0;
    char *got = base_read_file(file, "test file", 100, &n, err, sizeof err);
    cr_assert(got, "%s", err);
    cr_assert_eq(n, 5);
    cr_assert_str_eq(got, "hello");
    free(got);
    cr_assert_null(base_read_file(file, "test file", 4, &n, err, sizeof err));
}

Test(base, output_checks)
{
    char err[512], in[300], out[300], sub[300];
    snprintf(in, sizeof in, "%s/ckpt.ttc", dir);
    cr_assert_eq(base_write_file(in, "checkpoint", "x", 1, err, sizeof err), 0, "%s", err);
    const char *inputs[] = {in};
    /* the input itself, and a link to it */
    cr_assert_eq(base_check_output(in, "export", inputs, 1, NULL, 0, err, sizeof err), -1);
    cr_assert(strstr(err, "same file as the input"), "%s", err);
    snprintf(out, sizeof out, "%s/link", dir);
    cr_assert_eq(symlink(in, out), 0);
    cr_assert_eq(base_check_output(out, "export", inputs, 1, NULL, 0, err, sizeof err), -1);
    /* a device and a folder */
    cr_assert_eq(base_check_output("/dev/null", "export", NULL, 0, NULL, 0, err, sizeof err), -1);
    cr_assert(strstr(err, "character device"), "%s", err);
    cr_assert_eq(base_check_output(dir, "plot", NULL, 0, NULL, 0, err, sizeof err), -1);
    /* inside a protected folder, even when it does not exist yet */
    snprintf(sub, sizeof sub, "%s/run", dir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    snprintf(out, sizeof out, "%s/run/new.png", dir);
    const char *protect[] = {sub};
    cr_assert_eq(base_check_output(out, "plot", NULL, 0, protect, 1, err, sizeof err), -1);
    cr_assert(strstr(err, "lies inside"), "%s", err);
    /* deeper folders that do not exist yet, and ".." out of them or back in */
    snprintf(out, sizeof out, "%s/run/new/deeper/x.png", dir);
    cr_assert_eq(base_check_output(out, "plot", NULL, 0, protect, 1, err, sizeof err), -1);
    cr_assert_eq(base_path_inside(out, sub), 1);
    snprintf(out, sizeof out, "%s/run/new/../../x.png", dir);
    cr_assert_eq(base_path_inside(out, sub), 0);
    snprintf(out, sizeof out, "%s/new/../run", dir);
    cr_assert_eq(base_path_inside(out, sub), 1, "the folder itself");
    snprintf(out, sizeof out, "%s/runx/y", dir);
    cr_assert_eq(base_path_inside(out, sub), 0, "a name that only starts like it");
    /* a fresh file elsewhere is fine */
    snprintf(out, sizeof out, "%s/new.safetensors", dir);
    cr_assert_eq(base_check_output(out, "export", inputs, 1, protect, 1, err, sizeof err), 0,
                 "%s", err);
}

Test(base, failed_write_leaves_the_old_file)
{
    char err[512], path[300];
    snprintf(path, sizeof path, "%s/f", dir);
    cr_assert_eq(base_write_file(path, "file", "old", 3, err, sizeof err), 0);
    base_out o;
    cr_assert_eq(base_out_open(&o, path, "file", err, sizeof err), 0);
    base_out_write(&o, "new", 3);
    base_out_abort(&o);
    size_t n;
    char *got = base_read_file(path, "file", 10, &n, err, sizeof err);
    cr_assert_str_eq(got, "old");
    free(got);
    cr_assert_neq(access(o.tmp, F_OK), 0);
    /* a sticky failure: writing to /dev/full */
    cr_assert_eq(base_out_open(&o, path, "file", err, sizeof err), 0);
    fclose(o.f);
    o.f = fopen("/dev/full", "wb");
    cr_assert(o.f);
    char big[8192] = {0};
    for (int i = 0; i < 4; i++) base_out_write(&o, big, sizeof big);
    cr_assert_eq(base_out_commit(&o, err, sizeof err), -1);
    cr_assert(strstr(err, "write failed"), "%s", err);
    got = base_read_file(path, "file", 10, &n, err, sizeof err);
    cr_assert_str_eq(got, "old");
    free(got);
}

Test(base, pwrite_fills_a_header_at_the_end)
{
    char err[512], path[300];
    snprintf(path, sizeof path, "%s/h", dir);
    base_out o;
    cr_assert_eq(base_out_open(&o, path, "file", err, sizeof err), 0, "%s", err);
    base_out_write(&o, "....body", 8);
    cr_assert_eq(base_out_pwrite(&o, "HEAD", 4, 0), 0);
    base_out_write(&o, "!", 1);
    cr_assert_eq(base_out_commit(&o, err, sizeof err), 0, "%s", err);
    size_t n;
    char *got = base_read_file(path, "file", 100, &n, err, sizeof err);
    cr_assert_str_eq(got, "HEADbody!");
    free(got);
    /* past the end: refused, and the failure sticks (the old file stays) */
    cr_assert_eq(base_out_open(&o, path, "file", err, sizeof err), 0);
    base_out_write(&o, "abc", 3);
    cr_assert_eq(base_out_pwrite(&o, "xy", 2, 2), -1);
    cr_assert_eq(base_out_write(&o, "d", 1), -1);
    cr_assert_eq(base_out_commit(&o, err, sizeof err), -1);
    got = base_read_file(path, "file", 100, &n, err, sizeof err);
    cr_assert_str_eq(got, "HEADbody!");
    free(got);
}
