/* data_internal: what the files of src/data share and nobody else sees: the on-disk
 * shard and meta formats, the source struct, per-thread scratch and small helpers (the
 * little-endian byte helpers are src/base's).
 * Not installed, not included outside src/data (and the tests of src/data). */
#ifndef DATA_INTERNAL_H
#define DATA_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "data/data.h"

/* printf into err (NULL-safe); returns -1 so `return data_fail(...)` reads naturally */
int data_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* crc32 (zlib) of any length */
uint32_t data_crc32(uint32_t crc, const uint8_t *p, size_t n);

/* ---- shard file -------------------------------------------------------------------
 * [header, DATA_SHARD_HEADER bytes][pixels: count x (256, 256, 3) uint8][labels: count
 * x int32 LE]. Header fields at fixed offsets (LE):
 *   0 magic "TTSHARD1"  8 version  12 header bytes  16 height  20 width  24 channels
 *   28 classes  32 count (u64)  40 first index in the split  48 shard index
 *   56 pixels offset  64 labels offset  72 file bytes  80 payload crc32 (pixels+labels)
 *   84 split name (8 bytes, NUL padded)  124 crc32 of bytes 0..123. Rest zero. */
#define DATA_SHARD_MAGIC "TTSHARD1"
#define DATA_SHARD_VERSION 1u
#define DATA_SHARD_HEADER 4096u /* pixels start page-aligned for mmap */
#define DATA_MAX_CLASSES 100000
#define DATA_MAX_SHARD_IMAGES (1 << 20)
#define DATA_MAX_NAME 1024

typedef struct {
    char split[9];
    uint32_t classes;
    uint64_t count, first, index;
    uint32_t payload_crc;
} data_shard_header;

/* Encodes a header (DATA_SHARD_HEADER bytes) for a shard of h->count images. */
void data_shard_header_encode(uint8_t *buf, const data_shard_header *h);
/* Parses and bounds-checks buf (n bytes, the whole file): header, sizes, label range,
 * payload CRC when check_payload. Returns 0 or -1 with err. */
int data_shard_parse(const uint8_t *buf, size_t n, int check_payload, data_shard_header *h,
                     char *err, size_t errlen);

/* ---- meta.bin ----------------------------------------------------------------------
 * 0 magic "TTMETA01"  8 version  12 height  16 width  20 channels  24 classes
 * 28 shard size  32 n_train (u64)  40 n_val (u64)  48 train shards  52 val shards
 * 56 seed (u64)  64 reserved (8)  72 24 doubles: rgb_mean[3] cov[9] eigval[3] eigvec[9]
 * 264 mean image (256, 256, 3) float32  then (version 2) the payload crc32 of every
 * shard, u32 each: train-00000.tts.. then val-00000.tts..; then per class: u16 length +
 * name bytes; last 4 bytes: crc32 of everything before. The shard checksums tie the
 * shards to this meta.bin: a shard or a meta.bin from another prep run is refused at
 * open even when every count agrees. Version 1 (no shard checksums) is refused. */
#define DATA_META_MAGIC "TTMETA01"
#define DATA_META_VERSION 2u
#define DATA_META_FIXED 264u
#define DATA_META_MAX_BYTES ((size_t)1 << 30)

typedef struct {
    int classes;
    char **names;           /* (classes) NUL-terminated */
    uint32_t shard_size;
    uint64_t n_train, n_val;
    uint32_t train_shards, val_shards;
    uint64_t seed;
    data_pca pca;
    float *mean;            /* (256, 256, 3) HWC */
    uint32_t *shard_crc;    /* (train_shards + val_shards): payload crc32 of each train
                               shard, then of each val shard */
} data_meta;

/* Serialises m into *buf (malloc'd), *n bytes. 0 or -1. */
int data_meta_encode(const data_meta *m, uint8_t **buf, size_t *n, char *err, size_t errlen);
/* Parses buf into m (allocates names, mean and shard_crc; data_meta_free releases).
 * 0 or -1. */
int data_meta_parse(const uint8_t *buf, size_t n, data_meta *m, char *err, size_t errlen);
void data_meta_free(data_meta *m);
/* Reads and parses DIR/meta.bin; errors name the file. 0 or -1. */
int data_meta_load(const char *dir, data_meta *m, char *err, size_t errlen);
/* N of a file name "<split>-N.tts" (N decimal digits, capped near 2^40), or -1 when the
 * name is not named like a shard of split. */
int64_t data_shard_name_index(const char *name, const char *split);
/* Every file in dir named like a shard ("train-N.tts", "val-N.tts") must be one that m
 * lists: a stray shard (left by an earlier prep with more images, or copied in) would
 * otherwise be ignored while verify reports every checksum matching. 0, or -1 naming
 * the first stray file. */
int data_shards_check_listed(const char *dir, const data_meta *m, char *err, size_t errlen);
/* Opens and maps a shard file read-only (regular files only, never blocking). 0, or -1
 * with err naming the file. */
int data_shard_map_file(const char *path, uint8_t **map, size_t *bytes, char *err,
                        size_t errlen);

/* ---- PCA --------------------------------------------------------------------------
 * Exact integer sums over pixels: s[c] = sum x_c, ss[3*a+b] = sum x_a x_b. */
typedef struct {
    uint64_t n;        /* pixels */
    uint64_t s[3];
    uint64_t ss[9];
} data_pixel_sums;
void data_pixel_sums_add_image(data_pixel_sums *acc, const uint8_t *rgb, size_t pixels);
void data_pixel_sums_merge(data_pixel_sums *acc, const data_pixel_sums *x);
/* Covariance, eigen-decomposition (Jacobi, descending, signs normalised). */
void data_pca_from_sums(data_pca *out, const data_pixel_sums *acc);

/* ---- sources ---------------------------------------------------------------------- */
enum { DATA_SRC_IDX = 1, DATA_SRC_SHARDS = 2 };

typedef struct {
    uint8_t *map;           /* mmap of the whole file */
    size_t bytes;
    int64_t first, count;   /* images [first, first + count) of the split */
} data_shard_map;

#define DATA_PERM_SLOTS 2
typedef struct {
    int valid;
    uint64_t seed;
    int64_t epoch;
    uint32_t *perm;         /* (n) */
    uint64_t last_use;
} data_perm_slot;

struct data_source {
    int kind;
    int64_t n;
    int classes;
    char **names;           /* (classes) */
    int32_t *labels;        /* (n) */
    float *mean;            /* (256, 256, 3) HWC */
    data_pca pca;
    double lighting_std;
    int mirror;                 /* 1: random mirrors (data_set_mirror) */
    /* DATA_SRC_IDX: raw grey images (n, idx_h, idx_w) */
    uint8_t *idx_pixels;
    int idx_h, idx_w;
    /* DATA_SRC_SHARDS */
    data_shard_map *shards;
    int nshards;
    /* epoch permutations, computed on first use, two epochs cached */
    pthread_mutex_t perm_lock;
    data_perm_slot perm[DATA_PERM_SLOTS];
    uint64_t perm_clock;
    /* scratch of the synchronous batch functions */
    pthread_mutex_t sync_lock;
    struct data_scratch *sync_scratch;
};

/* What one thread needs to produce images: a 256x256x3 image and resize workspace. */
typedef struct data_scratch {
    uint8_t *img;           /* (256, 256, 3) */
    void *ws;
} data_scratch;
data_scratch *data_scratch_new(const data_source *s);
void data_scratch_free(data_scratch *sc);

/* Image i as (256, 256, 3) HWC: a pointer into the shard map, or sc->img for IDX. */
const uint8_t *data_source_image(const data_source *s, int64_t i, data_scratch *sc);
/* Stored indices of epoch positions [pos, pos + n) of (seed, epoch); pos + n <= count. */
int data_perm_lookup(data_source *s, uint64_t seed, int64_t epoch, int64_t pos, int n,
                     int64_t *out, char *err, size_t errlen);

/* One training item: stored image idx at epoch position (epoch, pos): its augmentation
 * params (lighting from s->lighting_std) and, when crop_dst is not NULL, its crop (crop,
 * crop, 3). Returns the stored image (in sc when it had to be made). */
const uint8_t *data_make_train_item(const data_source *s, uint64_t seed, int64_t epoch,
                                    int64_t pos, int64_t idx, int crop, uint8_t *crop_dst,
                                    data_aug_params *p, data_scratch *sc);
/* Cuts the crop (crop, crop, 3) at (oy, ox) out of img (256, 256, 3), mirrored if asked. */
void data_cut_crop(uint8_t *dst, const uint8_t *img, int crop, int oy, int ox, int mirror);
/* n training items from cursor c (already validated): labels (n) always; crops
 * (n, crop, crop, 3) and params (n) when non-NULL; x (n, 3, crop/F, crop/F) augmented
 * and F x F averaged (data_augment_reduce_cpu; F = 1: none) when non-NULL. Each item
 * depends on its own (seed, epoch, pos) only. */
int data_fill_train(data_source *s, data_cursor c, int n, int crop, int F, uint8_t *crops,
                    data_aug_params *params, int32_t *labels, float *x, data_scratch *sc,
                    char *err, size_t errlen);
/* Checks a cursor and batch shape against s. 0 or -1 with err. */
int data_check_batch(const data_source *s, const data_cursor *c, int B, int crop, char *err,
                     size_t errlen);

/* data_resize_center on floats, no rounding (the IDX mean image). Same workspace. */
void data_resize_center_f32(float *dst, int S, const float *src, int w, int h, int ch,
                            void *ws);

/* Reads a whole, non-empty regular file (at most max_bytes) into a malloc'd buffer
 * through base_read_file. `what` names the file's role; err is "<what> <path>: <reason>".
 * 0 or -1. */
int data_read_file(const char *path, const char *what, size_t max_bytes, uint8_t **buf,
                   size_t *n, char *err, size_t errlen);

/* Fashion-MNIST has 10 classes: an IDX folder is Fashion-MNIST, and a label of 10 or
 * more in any of its files is an error at open, never a bigger net. */
#define DATA_IDX_CLASSES 10
/* Fashion-MNIST IDX, gzip (or plain): images (n, rows, cols) and labels (n). The files
 * are opened through base_open_input (no FIFOs, no waiting); the header counts must
 * match the data exactly (a short file and bytes after the declared images are both
 * refused) and every label must be below `classes`; errors name the file (and the image
 * and value for a label). */
int data_idx_load(const char *images_gz, const char *labels_gz, int classes,
                  uint8_t **pixels, int32_t **labels, int64_t *n, int *rows, int *cols,
                  char *err, size_t errlen);
extern const char *const data_fashion_names[10];

/* ---- ILSVRC-2012's flat validation folder (val_labels.c) ----------------------------- */
typedef struct {
    char name[64]; /* file name without its extension: ILSVRC2012_val_00000001 */
    int label;     /* index among the sorted train class names */
} data_val_entry;

typedef struct {
    data_val_entry *e; /* (n) sorted by name */
    uint8_t *seen;     /* (n) set by data_val_label_of: which entries found their image */
    size_t n, cap;
} data_val_labels;

/* Reads a ground-truth file (the devkit's ILSVRC2012_validation_ground_truth.txt with
 * `synsets` = its meta.mat or an "ID WNID" text file; LOC_val_solution.csv; or one WNID a
 * line) and maps every WNID to its index in classes (nclasses sorted names). 0, or -1
 * with err naming the file, the line and what is wrong. */
int data_val_labels_load(const char *truth, const char *synsets, char *const *classes,
                         int nclasses, data_val_labels *out, char *err, size_t errlen);
/* The label of an image file name ("ILSVRC2012_val_00000001.JPEG"), or -1 when the
 * ground truth does not list it. Marks the entry as seen. */
int data_val_label_of(data_val_labels *v, const char *file_name);
void data_val_labels_free(data_val_labels *v);

#endif
