/* `--conv auto`'s decision (tower_conv_choose) from injected timings, with no device: the
 * faster path by forward + backward, GEMM on a tie within TOWER_CONV_TIE_FRACTION, GEMM
 * when cuDNN was not measured (absent from the build, no algorithm), cuDNN where it alone
 * was measured or wins by more than the tie, GEMM for rows that are not convs. */
#include <criterion/criterion.h>
#include <math.h>

#include "tower/tower.h"

/* one row: GEMM's and cuDNN's forward and backward (ms); -1: not measured */
static tower_conv_timing row(double gf, double gb, double cf, double cb)
{
    tower_conv_timing t;
    t.fwd_ms[TOWER_CONV_GEMM] = gf;
    t.bwd_ms[TOWER_CONV_GEMM] = gb;
    t.fwd_ms[TOWER_CONV_CUDNN] = cf;
    t.bwd_ms[TOWER_CONV_CUDNN] = cb;
    return t;
}

Test(conv_choose, one_layer_where_cudnn_wins)
{
    /* the paper's net: five convs, then three fc rows that were not measured */
    tower_conv_timing t[8] = {
        row(4.0, 9.0, 5.0, 10.0),   /* conv1: GEMM faster */
        row(6.0, 12.0, 3.0, 7.0),   /* conv2: cuDNN by far */
        row(2.0, 4.0, 2.0, 4.0),    /* conv3: an exact tie */
        row(1.5, 3.0, 1.5, 2.95),   /* conv4: cuDNN 1% faster: a tie */
        row(1.0, 2.0, 2.0, 4.0),    /* conv5: GEMM */
        row(-1, -1, -1, -1), row(-1, -1, -1, -1), row(-1, -1, -1, -1)};
    int path[8];
    for (int l = 0; l < 8; l++) path[l] = -7;
    cr_assert_eq(tower_conv_choose(t, 8, path), 1);
    const int want[8] = {TOWER_CONV_GEMM, TOWER_CONV_CUDNN, TOWER_CONV_GEMM, TOWER_CONV_GEMM,
                         TOWER_CONV_GEMM, TOWER_CONV_GEMM,  TOWER_CONV_GEMM, TOWER_CONV_GEMM};
    for (int l = 0; l < 8; l++) cr_expect_eq(path[l], want[l], "row %d: %d", l, path[l]);
}

Test(conv_choose, the_tie_margin)
{
    /* GEMM 10 ms in all: cuDNN must take less than 10 * (1 - 0.03) = 9.7 ms */
    double edge = 10.0 * (1.0 - TOWER_CONV_TIE_FRACTION);
    tower_conv_timing t[3] = {row(5, 5, edge / 2, edge / 2), row(5, 5, 4.8, 4.8),
                              row(5, 5, 4.9, 4.9)};
    int path[3];
    cr_assert_eq(tower_conv_choose(t, 3, path), 1);
    cr_expect_eq(path[0], TOWER_CONV_GEMM, "exactly at the margin is a tie");
    cr_expect_eq(path[1], TOWER_CONV_CUDNN, "4%% faster wins");
    cr_expect_eq(path[2], TOWER_CONV_GEMM, "2%% faster is a tie");
}

Test(conv_choose, cudnn_absent)
{
    /* a build without cuDNN, or cuDNN without an algorithm: every layer on GEMM, however
     * slow GEMM was */
    tower_conv_timing t[5];
    for (int l = 0; l < 5; l++) t[l] = row(100.0 + l, 200.0, -1, -1);
    t[2].fwd_ms[TOWER_CONV_CUDNN] = 0.1; /* a forward without its backward: not measured */
    t[3].fwd_ms[TOWER_CONV_CUDNN] = t[3].bwd_ms[TOWER_CONV_CUDNN] = NAN;
    int path[5];
    cr_assert_eq(tower_conv_choose(t, 5, path), 0);
    for (int l = 0; l < 5; l++) cr_expect_eq(path[l], TOWER_CONV_GEMM, "row %d", l);
}

Test(conv_choose, only_cudnn_measured)
{
    tower_conv_timing t[2] = {row(-1, -1, 3, 4), row(-1, 2, 3, 4)};
    int path[2];
    cr_assert_eq(tower_conv_choose(t, 2, path), 2);
    cr_expect_eq(path[0], TOWER_CONV_CUDNN);
    cr_expect_eq(path[1], TOWER_CONV_CUDNN);
}

Test(conv_choose, names)
{
    cr_expect_str_eq(tower_conv_path_name(TOWER_CONV_GEMM), "gemm");
    cr_expect_str_eq(tower_conv_path_name(TOWER_CONV_CUDNN), "cudnn");
    cr_expect_str_eq(tower_conv_path_name(7), "?");
}
