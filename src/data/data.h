/* data: the paper's data path (sections 2 and 4.1). Public header of src/data.
 * Images become 256x256x3 uint8 (shorter side to 256, central square), the trainer gets
 * augmented batches (random 224 crops, mirrors, mean subtraction, PCA lighting) or the
 * 10 test views, and a prefetch thread keeps batches ready. Knows nothing of src/train.
 *
 * Layouts (written once here, used everywhere below):
 *   - a stored image is HWC uint8, (DATA_SIZE, DATA_SIZE, 3), RGB, row-major;
 *   - the mean image is HWC float, (DATA_SIZE, DATA_SIZE, 3), in pixel units 0..255;
 *   - a float batch is NCHW, (B, 3, crop, crop): x = pixel - mean + lighting offset;
 *   - a uint8 crop batch (the GPU path) is NHWC, (B, crop, crop, 3), already mirrored.
 * Every random draw is a pure function of (seed, epoch, position in the epoch), so the
 * same cursor gives the same batch whatever the thread count. */
#ifndef DATA_H
#define DATA_H

#include <stddef.h>
#include <stdint.h>

#ifdef TT_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define DATA_SIZE 256       /* stored side: shorter side rescaled to 256, center cut */
#define DATA_CHANNELS 3
#define DATA_IMAGE_BYTES ((size_t)DATA_SIZE * DATA_SIZE * DATA_CHANNELS)
#define DATA_LIGHTING_STD 0.1 /* alpha_i ~ N(0, 0.1), section 4.1 */

/* The 10 test views (section 4.1), in Caffe's oversample order:
 *   0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right, 4 center,
 *   5..9 the same five crops mirrored left-right. */
#define DATA_VIEWS 10
#define DATA_VIEW_CENTER 4

/* ---- sources ---------------------------------------------------------------------- */

typedef struct data_source data_source; /* opaque; read-only after open, safe to share */

/* Fashion-MNIST from the gzip IDX files in dir (train=1: train-*, 0: t10k-*). 28x28 grey
 * images reach 256x256 by bilinear upscaling, done on the fly per image (60k images at
 * 256x256x3 would be 11.8 GB), grey copied to three channels. The mean image and the
 * PCA always come from the training file (also for train=0): the mean exactly, by
 * linearity, as the upscaled mean 28x28 image; the PCA from every 64th training image.
 * Checked at open: regular files only (never waiting on a FIFO), header counts equal to
 * the data, every label below Fashion-MNIST's 10 classes (the class count is always
 * 10); errors name the file. */
data_source *data_open_idx(const char *dir, int train, char *err, size_t errlen);
/* Shards written by `twotower prep` (split "train" or "val"), memory-mapped. Checked at
 * open: meta.bin (version, CRC, bounds), every shard's header, size and labels, each
 * header's payload checksum against the one meta.bin lists (a shard or meta.bin from
 * another prep is refused), and no file named like a shard that meta.bin does not list.
 * The payloads themselves only by data_shards_verify (reading every byte of ImageNet at
 * each start would take minutes). */
data_source *data_open_shards(const char *dir, const char *split, char *err, size_t errlen);
void data_close(data_source *s);

int64_t data_count(const data_source *s);
int data_classes(const data_source *s);
const char *data_class_name(const data_source *s, int c); /* NULL when c is out of range */
/* Label of image i (stored order), or -1 when i is out of range. */
int32_t data_label(const data_source *s, int64_t i);
/* Copies image i (stored order) as HWC uint8 (DATA_SIZE, DATA_SIZE, 3). */
int data_image(const data_source *s, int64_t i, uint8_t *dst, char *err, size_t errlen);

/* Statistics of the training images, in pixel units 0..255. */
typedef struct {
    double rgb_mean[3]; /* mean of every training pixel */
    double cov[9];      /* (3, 3) row-major RGB covariance of every training pixel */
    double eigval[3];   /* eigenvalues of cov, descending */
    double eigvec[9];   /* (3, 3) row-major, column i = eigenvector p_i of eigval[i],
                           unit length, largest-magnitude component positive */
} data_pca;
/* Mean image, HWC float (DATA_SIZE, DATA_SIZE, 3); owned by s. */
const float *data_mean_image(const data_source *s);
const data_pca *data_get_pca(const data_source *s);
/* Standard deviation of the lighting alphas (default DATA_LIGHTING_STD; 0 turns PCA
 * lighting off, e.g. for tests). Set it before starting a prefetcher. */
void data_set_lighting_std(data_source *s, double std);
/* Whether training crops are mirrored at random (section 4.1; on by default). Off: no
 * training crop is flipped (the crop corners and the lighting stay what they were, since
 * every draw is keyed by the image's place in the stream). Set it before a prefetcher. */
void data_set_mirror(data_source *s, int on);

/* ---- training batches ------------------------------------------------------------- */

/* Training position, serialisable into checkpoints (plain struct, no pointers).
 * Image k of epoch e is stored image perm_e[k], perm_e a permutation drawn from
 * (seed, e); pos is the next k. Batches run on across epoch ends (a batch may hold the
 * last images of epoch e and the first of e + 1). */
typedef struct {
    uint64_t seed;
    int64_t epoch;
    int64_t pos;
} data_cursor;

/* Per-image augmentation of one crop: where it was cut, whether it was mirrored and
 * the PCA lighting offset (added to all three channels' pixels as given). */
typedef struct {
    int32_t oy, ox;  /* top-left corner of the crop in the 256x256 image */
    int32_t mirror;  /* 1: the crop was flipped left-right */
    float rgb[3];    /* sum_i p_i * alpha_i * sqrt(lambda_i) (paper_notes.md, PCA lighting) */
} data_aug_params;

/* The augmentation formula, on the CPU. x (B, 3, crop, crop) float NCHW;
 * crops (B, crop, crop, 3) uint8, already mirrored; mean (DATA_SIZE, DATA_SIZE, 3):
 *   x[b][c][y][j] = crops[b][y][j][c] - mean[p.oy + y][p.ox + (p.mirror ? crop-1-j : j)][c]
 *                   + p.rgb[c]
 * i.e. the mean is subtracted at the pixel's place in the full image, then the crop is
 * mirrored with it. */
void data_augment_cpu(float *x, const uint8_t *crops, const float *mean,
                      const data_aug_params *params, int B, int crop);
/* The same formula with each F x F block of the crop averaged to one pixel (--downsample):
 * x (B, 3, crop/F, crop/F); crop is a multiple of F. Each output pixel is the sum, from 0,
 * of its block's data_augment_cpu values row by row and left to right, times 1/(F*F):
 * bit for bit what data_augment_cpu followed by that averaging gives, without the
 * full-size float crop in between. F = 1 is data_augment_cpu. */
void data_augment_reduce_cpu(float *x, const uint8_t *crops, const float *mean,
                             const data_aug_params *params, int B, int crop, int F);
#ifdef TT_HAVE_CUDA
/* The same formula on the GPU (augment_cuda.cu); every pointer is device memory:
 * x (B, 3, crop, crop), crops (B, crop, crop, 3), mean (DATA_SIZE, DATA_SIZE, 3),
 * params (B). Bit-identical to data_augment_cpu (two float adds, same order). x16: NULL,
 * or (B, 3, crop, crop) uint16_t that receives x rounded to bf16 (to nearest even) as well:
 * the first conv's bf16 input on cuDNN's bf16 path (tower_cuda_input_copy).
 * Returns 0, or -1 with err when the launch fails. */
int data_augment_cuda(float *x, uint16_t *x16, const uint8_t *crops, const float *mean,
                      const data_aug_params *params, int B, int crop, cudaStream_t stream,
                      char *err, size_t errlen);
#endif

/* Next training batch: epoch permutation from (seed, epoch); random crop (crop x crop out
 * of 256x256), random mirror, mean subtraction, PCA lighting with alpha_i ~ N(0, 0.1)
 * per image per use; x (B, 3, crop, crop) float NCHW, labels (B) int32. Advances cur.
 * Deterministic: same cursor -> same batch. One caller at a time per source (it uses
 * the source's scratch); the prefetcher below is the parallel path. */
int data_train_batch(data_source *s, data_cursor *cur, int B, int crop, float *x,
                     int32_t *labels, char *err, size_t errlen);
/* The GPU half of the same batch: crops (B, crop, crop, 3) uint8 mirrored, params (B),
 * labels (B). data_augment_{cpu,cuda}(x, crops, mean, params) then gives exactly what
 * data_train_batch gives. */
int data_train_batch_u8(data_source *s, data_cursor *cur, int B, int crop, uint8_t *crops,
                        data_aug_params *params, int32_t *labels, char *err, size_t errlen);

/* Evaluation batch of images [start, start+n) in stored order (the tail batch is short):
 * view 0..9 (DATA_VIEWS order above), mean subtracted, no lighting. */
int data_eval_batch(data_source *s, int64_t start, int n, int crop, int view, float *x,
                    int32_t *labels, char *err, size_t errlen);
/* The same with every F x F block averaged (data_augment_reduce_cpu): x (n, 3, crop/F,
 * crop/F). */
int data_eval_batch_reduced(data_source *s, int64_t start, int n, int crop, int view, int F,
                            float *x, int32_t *labels, char *err, size_t errlen);
int data_eval_batch_u8(data_source *s, int64_t start, int n, int crop, int view,
                       uint8_t *crops, data_aug_params *params, int32_t *labels, char *err,
                       size_t errlen);
/* Crop corner and mirror flag of a view (the 10-view geometry); -1 for a bad view. */
int data_view_geometry(int view, int crop, int *oy, int *ox, int *mirror);

/* Cursor advanced by n images (wrapping epochs over count images). */
data_cursor data_cursor_advance(data_cursor c, int64_t n, int64_t count);

/* ---- prefetcher ------------------------------------------------------------------- */

typedef struct data_prefetch data_prefetch;

typedef struct {
    int depth;   /* batches ready or being made, >= 2 (2: double buffering) */
    int threads; /* worker threads; 0: one per core less one, at least 1 */
    int u8;      /* 1: hand out uint8 crops + params (the GPU path); 0: float batches */
    int pinned;  /* 1: slots in pinned memory (cudaHostAlloc); only with TT_HAVE_CUDA */
    int downsample; /* float batches: each F x F block of the crop averaged to one pixel
                       (data_augment_reduce_cpu), x (B, 3, crop/F, crop/F); 0 or 1: none */
} data_prefetch_opts;

/* Worker threads prepare the batches that follow `start` into `depth` slots, splitting
 * each batch over the threads by images, so a step never waits for data. Float
 * batches, default threads, not pinned. */
data_prefetch *data_prefetch_start(data_source *s, data_cursor start, int B, int crop,
                                   int depth, char *err, size_t errlen);
data_prefetch *data_prefetch_start_ex(data_source *s, data_cursor start, int B, int crop,
                                      const data_prefetch_opts *opts, char *err,
                                      size_t errlen);
/* Blocks until the next batch is ready; returns pointers valid until the next call;
 * *after is the cursor just past this batch (what a checkpoint stores); *wait_s the
 * seconds this call waited. Float mode only. */
int data_prefetch_next(data_prefetch *p, const float **x, const int32_t **labels,
                       data_cursor *after, double *wait_s, char *err, size_t errlen);
/* The same in u8 mode: crops (B, crop, crop, 3), params (B), labels (B). */
int data_prefetch_next_u8(data_prefetch *p, const uint8_t **crops,
                          const data_aug_params **params, const int32_t **labels,
                          data_cursor *after, double *wait_s, char *err, size_t errlen);
/* Batches handed out and the total seconds the consumer waited for them. */
void data_prefetch_stats(const data_prefetch *p, int64_t *batches, double *wait_total_s);
void data_prefetch_stop(data_prefetch *p);

/* ---- images (prep, tests and the fuzz harness use these on memory buffers) -------- */

typedef struct {
    int64_t max_side;   /* widest/tallest accepted side (libpng user limits) */
    int64_t max_pixels; /* width * height accepted before any pixel buffer is made */
    int max_scans;      /* progressive JPEG scans accepted (slow-decode bombs) */
} data_image_limits;
/* 32768 per side, 64 M pixels, 500 scans. */
data_image_limits data_image_limits_default(void);

/* Any PNG (palette, grey 1..16 bit, grey+alpha, RGB 8/16, RGBA, interlaced, tRNS) to
 * 8-bit RGB, (h, w, 3) in *rgb (malloc'd; the caller frees). 16-bit samples are
 * rounded (v / 257); alpha is composited over white, out = (c a + 255 (255 - a)) / 255
 * rounded, which is what a viewer shows on a white page. gAMA/iCCP are ignored.
 * Returns 0, or -1 with the reason in err. */
int data_png_decode(const uint8_t *buf, size_t n, const data_image_limits *lim,
                    uint8_t **rgb, int *w, int *h, char *err, size_t errlen);
/* Baseline/progressive JPEG (grey, YCbCr, CMYK/YCCK) to 8-bit RGB. min_side > 0 lets
 * libjpeg's DCT scaling decode at 1/2, 1/4 or 1/8 size as long as the shorter side
 * stays >= min_side (what prep uses: the image is about to be shrunk anyway). A
 * truncated file is an error, not a grey-padded image. */
int data_jpeg_decode(const uint8_t *buf, size_t n, const data_image_limits *lim,
                     int min_side, uint8_t **rgb, int *w, int *h, char *err, size_t errlen);
/* PNG or JPEG by signature (never by file name), then data_resize_center to DATA_SIZE:
 * dst (DATA_SIZE, DATA_SIZE, 3). The fuzz harness's entry point. */
int data_image_decode(const uint8_t *buf, size_t n, const data_image_limits *lim,
                      uint8_t *dst, char *err, size_t errlen);

/* Shorter side rescaled to S, central S x S cut out: dst (S, S, 3) from src (h, w, ch),
 * ch 1 (copied to three channels) or 3. Separable triangle filter whose support grows
 * with the shrink factor (antialiased bilinear, PIL's BILINEAR), plain bilinear when
 * enlarging; pixel centres aligned; output rounded to nearest. ws: scratch of
 * data_resize_workspace() bytes. */
size_t data_resize_workspace(int w, int h, int ch, int S);
void data_resize_center(uint8_t *dst, int S, const uint8_t *src, int w, int h, int ch,
                        void *ws);

/* ---- shards ----------------------------------------------------------------------- */

/* Checks a shard held in memory (header magic, version, CRC of the header, sizes,
 * label range; the payload CRC too when check_payload): what data_open_shards checks
 * on each mmap'd file, and the shard fuzz harness's entry point. Returns the image
 * count, or -1 with err. */
int64_t data_shard_check(const uint8_t *buf, size_t n, int check_payload, char *err,
                         size_t errlen);
/* Checks meta.bin held in memory (magic, version, CRC, bounds, class names). 0 or -1. */
int data_meta_check(const uint8_t *buf, size_t n, char *err, size_t errlen);
/* Reads every shard of the split and checks its payload against its header's checksum
 * and meta.bin's, and that no unlisted shard lies in dir. 0 or -1 with err naming the
 * file. */
int data_shards_verify(const char *dir, const char *split, char *err, size_t errlen);

/* ---- prep ------------------------------------------------------------------------- */

/* `twotower prep SRC OUT [flags]` (argv[0] = "prep"); the lead's main.c calls it for the
 * subcommand. Returns the process exit status: 0, 1 (failed, or too many skipped
 * images), 2 (usage). `prep --help` lists the flags. */
int data_prep_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
