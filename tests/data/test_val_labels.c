/* test_val_labels: ILSVRC-2012's flat validation ground truth in its three forms (the
 * devkit's ID file with a meta.mat written here by matio, LOC_val_solution.csv, one WNID
 * a line), mapped to the sorted train class folders; and the refusals, by name. */
#include <criterion/criterion.h>

#include <matio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"

static char dir[128];
static char *classes[3] = {"n01440764", "n01443537", "n01484850"}; /* sorted, as prep lists */

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/tt_val_XXXXXX");
    cr_assert(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(val_labels, .init = setup, .fini = teardown, .timeout = 30);

static const char *write_text(const char *name, const char *text)
{
    static char path[4][256];
    static int k;
    char *p = path[k++ % 4];
    snprintf(p, 256, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
    return p;
}

/* A meta.mat like the devkit's: a struct array `synsets` whose entries hold
 * ILSVRC2012_ID (double) and WNID (char), in an order that is not the sorted one, plus a
 * non-leaf entry with an ID above 1000 (the devkit's inner WordNet nodes). */
static void write_meta_mat(const char *path)
{
    static const char *wnids[4] = {"n01484850", "n01440764", "n01443537", "n00001740"};
    static const double ids[4] = {1, 2, 3, 1001};
    mat_t *mat = Mat_CreateVer(path, NULL, MAT_FT_MAT5);
    cr_assert(mat);
    size_t dims[2] = {4, 1};
    const char *fields[2] = {"ILSVRC2012_ID", "WNID"};
    matvar_t *s = Mat_VarCreateStruct("synsets", 2, dims, fields, 2);
    cr_assert(s);
    for (size_t i = 0; i < 4; i++) {
        size_t d1[2] = {1, 1}, dw[2] = {1, strlen(wnids[i])};
        double *v = malloc(sizeof *v);
        *v = ids[i];
        matvar_t *id = Mat_VarCreate(NULL, MAT_C_DOUBLE, MAT_T_DOUBLE, 2, d1, v, 0);
        matvar_t *wn = Mat_VarCreate(NULL, MAT_C_CHAR, MAT_T_UINT8, 2, dw, (void *)wnids[i],
                                     MAT_F_DONT_COPY_DATA);
        Mat_VarSetStructFieldByName(s, "ILSVRC2012_ID", i, id);
        Mat_VarSetStructFieldByName(s, "WNID", i, wn);
        free(v);
    }
    /* uncompressed: matio 1.5.23 cannot read back its own zlib-compressed struct arrays
     * (MATLAB's and scipy's compressed files it reads: see the fixture test below) */
    cr_assert_eq(Mat_VarWrite(mat, s, MAT_COMPRESSION_NONE), 0);
    Mat_VarFree(s);
    Mat_Close(mat);
}

Test(val_labels, devkit_ids_through_meta_mat)
{
    char mat[256], err[512];
    snprintf(mat, sizeof mat, "%s/meta.mat", dir);
    write_meta_mat(mat);
    /* images 1..4 have IDs 2, 1, 3, 1 -> n01440764 (0), n01484850 (2), n01443537 (1), 2 */
    const char *truth = write_text("ILSVRC2012_validation_ground_truth.txt", "2\n1\n3\n1\n");
    data_val_labels v;
    cr_assert_eq(data_val_labels_load(truth, mat, classes, 3, &v, err, sizeof err), 0, "%s", err);
    cr_assert_eq(v.n, 4);
    cr_assert_eq(data_val_label_of(&v, "ILSVRC2012_val_00000001.JPEG"), 0);
    cr_assert_eq(data_val_label_of(&v, "ILSVRC2012_val_00000002.JPEG"), 2);
    cr_assert_eq(data_val_label_of(&v, "ILSVRC2012_val_00000003.JPEG"), 1);
    cr_assert_eq(data_val_label_of(&v, "ILSVRC2012_val_00000004.jpeg"), 2);
    cr_assert_eq(data_val_label_of(&v, "ILSVRC2012_val_00000005.JPEG"), -1);
    data_val_labels_free(&v);
    /* without the synset map the IDs mean nothing: refused, saying what to give */
    cr_assert_eq(data_val_labels_load(truth, NULL, classes, 3, &v, err, sizeof err), -1);
    cr_assert(strstr(err, "--val-synsets"), "%s", err);
    /* an ID the map does not have, named with its line */
    truth = write_text("gt_bad.txt", "2\n7\n");
    cr_assert_eq(data_val_labels_load(truth, mat, classes, 3, &v, err, sizeof err), -1);
    cr_assert(strstr(err, "line 2") && strstr(err, "gt_bad.txt"), "%s", err);
}

Test(val_labels, devkit_ids_through_a_text_map)
{
    char err[512];
    const char *map = write_text("synsets.txt", "1 n01484850 great white shark\n"
                                                "2 n01440764 tench\n3 n01443537 goldfish\n");
    const char *truth = write_text("gt.txt", "3\n2\n");
    data_val_labels v;
    cr_assert_eq(data_val_labels_load(truth, map, classes, 3, &v, err, sizeof err), 0, "%s", err);
    cr_assert_eq(data_val_label_of(&v, "ILSVRC2012_val_00000001.JPEG"), 1);
    cr_assert_eq(data_val_label_of(&v, "ILSVRC2012_val_00000002.JPEG"), 0);
    data_val_labels_free(&v);
}

Test(val_labels, kaggle_csv_and_wnid_lines)
{
    char err[512];
    const char *csv = write_text("LOC_val_solution.csv",
                                 "ImageId,PredictionString\r\n"
                                 "ILSVRC2012_val_00008726,n01443537 255 142 454 329 "
                                 "n01443537 44 21 322 295\r\n"
                                 "ILSVRC2012_val_00000001,n01484850 1 2 3 4\r\n");
    data_val_labels v;
    cr_assert_eq(data_val_labels_load(csv, NULL, classes, 3, &v, err, sizeof err), 0, "%s", err);
    cr_assert_eq(v.n, 2);
    cr_assert_eq(data_val_label_of(&v, "ILSVRC2012_val_00008726.JPEG"), 1);
    cr_assert_eq(data_val_label_of(&v, "ILSVRC2012_val_00000001.JPEG"), 2);
    cr_assert_eq(v.seen[0] + v.seen[1], 2);
    data_val_labels_free(&v);
    const char *lines = write_text("val_synsets.txt", "n01484850\nn01440764\n");
    cr_assert_eq(data_val_labels_load(lines, NULL, classes, 3, &v, err, sizeof err), 0, "%s", err);
    cr_assert_eq(data_val_label_of(&v, "ILSVRC2012_val_00000002.JPEG"), 0);
    cr_assert_eq(v.seen[0] + v.seen[1], 1); /* image 1 not looked up: unseen */
    data_val_labels_free(&v);
}

Test(val_labels, refusals_name_the_file_and_the_class)
{
    char err[512];
    data_val_labels v;
    const char *csv = write_text("bad.csv", "ImageId,PredictionString\n"
                                            "ILSVRC2012_val_00000001,n09999999 1 2 3 4\n");
    cr_assert_eq(data_val_labels_load(csv, NULL, classes, 3, &v, err, sizeof err), -1);
    cr_assert(strstr(err, "n09999999") && strstr(err, "bad.csv") && strstr(err, "line 2"), "%s",
              err);
    const char *dup = write_text("dup.csv", "ImageId,PredictionString\n"
                                            "ILSVRC2012_val_00000001,n01440764\n"
                                            "ILSVRC2012_val_00000001,n01440764\n");
    cr_assert_eq(data_val_labels_load(dup, NULL, classes, 3, &v, err, sizeof err), -1);
    cr_assert(strstr(err, "listed twice"), "%s", err);
    char missing[256];
    snprintf(missing, sizeof missing, "%s/nothing.csv", dir);
    cr_assert_eq(data_val_labels_load(missing, NULL, classes, 3, &v, err, sizeof err), -1);
    cr_assert(strstr(err, "nothing.csv"), "%s", err);
    const char *empty = write_text("empty.txt", "\n\n");
    cr_assert_eq(data_val_labels_load(empty, NULL, classes, 3, &v, err, sizeof err), -1);
    cr_assert(strstr(err, "no entries"), "%s", err);
}

/* A compressed MAT5 file as MATLAB saves it (the devkit's meta.mat is one), written by
 * scipy.io.savemat(..., do_compression=True) with the same four synsets as above, plus the
 * devkit's other fields (words, num_children, children):
 *   dt = [('ILSVRC2012_ID','O'), ('WNID','O'), ('words','O'), ('num_children','O'),
 *         ('children','O')]; IDs as float arrays [[d]], WNIDs as np.array([w]). */
Test(val_labels, compressed_meta_mat_fixture)
{
    char err[512], mat[512];
    snprintf(mat, sizeof mat, "%s/fixtures/meta_scipy_zlib.mat", TEST_DATA_DIR);
    const char *truth = write_text("gt.txt", "1\n2\n3\n");
    data_val_labels v;
    cr_assert_eq(data_val_labels_load(truth, mat, classes, 3, &v, err, sizeof err), 0, "%s", err);
    cr_assert_eq(data_val_label_of(&v, "ILSVRC2012_val_00000001.JPEG"), 2);
    cr_assert_eq(data_val_label_of(&v, "ILSVRC2012_val_00000002.JPEG"), 0);
    cr_assert_eq(data_val_label_of(&v, "ILSVRC2012_val_00000003.JPEG"), 1);
    data_val_labels_free(&v);
}
