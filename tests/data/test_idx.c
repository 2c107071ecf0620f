/* test_idx: the Fashion-MNIST source read straight from the IDX files: counts, names,
 * the 28 -> 256 upscale against the reference, the mean image (the upscaled mean) and
 * the PCA of grey images, and the test split centred with the training statistics. */
#include <sys/stat.h>
#include <zlib.h>

#include "helpers.h"

#define FMNIST "/usr/share/datasets/fashion-mnist"

static uint8_t *raw_images(const char *path, int *n)
{
    gzFile f = gzopen(path, "rb");
    cr_assert_not_null(f);
    uint8_t h[16];
    cr_assert_eq(gzread(f, h, 16), 16);
    *n = (h[4] << 24) | (h[5] << 16) | (h[6] << 8) | h[7];
    uint8_t *px = malloc((size_t)*n * 784);
    cr_assert_eq(gzread(f, px, (unsigned)(*n * 784)), *n * 784);
    gzclose(f);
    return px;
}

Test(idx, fashion_mnist_on_the_fly, .timeout = 120)
{
    struct stat st;
    if (stat(FMNIST "/train-images-idx3-ubyte.gz", &st) != 0)
        cr_skip_test("no Fashion-MNIST at " FMNIST " (Debian package dataset-fashion-mnist)");
    char err[256];
    data_source *s = data_open_idx(FMNIST, 1, err, sizeof err);
    cr_assert_not_null(s, "%s", err);
    cr_assert_eq(data_count(s), 60000);
    cr_assert_eq(data_classes(s), 10);
    cr_assert_str_eq(data_class_name(s, 0), "T-shirt/top");
    int n;
    uint8_t *raw = raw_images(FMNIST "/train-images-idx3-ubyte.gz", &n);
    cr_assert_eq(n, 60000);

    /* image 123: the reference bilinear upscale, rounded */
    uint8_t *img = malloc(DATA_IMAGE_BYTES);
    double *ref = malloc(DATA_IMAGE_BYTES * sizeof *ref);
    cr_assert_eq(data_image(s, 123, img, err, sizeof err), 0);
    th_ref_resize(ref, DATA_SIZE, raw + 123 * 784, 28, 28, 1);
    for (size_t k = 0; k < DATA_IMAGE_BYTES; k++)
        cr_assert(fabs(img[k] - ref[k]) <= 0.5 + 1e-3, "sample %zu: %d vs %.3f", k, img[k], ref[k]);

    /* mean image: the reference upscale of the mean 28x28 image (linearity) */
    double m28[784] = {0};
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 784; k++)
            m28[k] += raw[(size_t)i * 784 + k];
    /* th_ref_resize wants uint8: upscale each pixel's share through linearity instead */
    double *mref = calloc(DATA_IMAGE_BYTES, sizeof *mref);
    uint8_t probe[784] = {0};
    for (int k = 0; k < 784; k++) {
        if (m28[k] == 0)
            continue;
        probe[k] = 1;
        th_ref_resize(ref, DATA_SIZE, probe, 28, 28, 1);
        probe[k] = 0;
        for (size_t q = 0; q < DATA_IMAGE_BYTES; q++)
            mref[q] += ref[q] * m28[k] / n;
    }
    const float *mean = data_mean_image(s);
    for (size_t q = 0; q < DATA_IMAGE_BYTES; q++)
        cr_assert_float_eq(mean[q], mref[q], 2e-3, "mean[%zu] %f vs %f", q, mean[q], mref[q]);

    /* grey images: one principal direction, (1,1,1)/sqrt(3) */
    const data_pca *pc = data_get_pca(s);
    for (int r = 0; r < 3; r++)
        cr_assert_float_eq(pc->eigvec[3 * r], 1 / sqrt(3.0), 1e-6);
    cr_assert_gt(pc->eigval[0], 1000.0);
    cr_assert_lt(pc->eigval[1], 1e-6 * pc->eigval[0]);

    data_source *t = data_open_idx(FMNIST, 0, err, sizeof err);
    cr_assert_not_null(t, "%s", err);
    cr_assert_eq(data_count(t), 10000);
    cr_assert_eq(memcmp(data_mean_image(t), mean, DATA_IMAGE_BYTES * sizeof(float)), 0,
                 "the test split must be centred with the training mean");
    data_close(t);
    cr_assert_null(data_open_idx("/nonexistent", 1, err, sizeof err));
    cr_assert_not_null(strstr(err, "/nonexistent/train-images-idx3-ubyte.gz"), "%s", err);
    free(mref);
    free(raw);
    free(img);
    free(ref);
    data_close(s);
}
