"""model.py: the default net's training step on one GPU as a list of GPU operations, and
their predicted times on an H100 from stated peaks. Part of tools/gpu_cost (docs/BENCH.md,
"Predicted"); standard library only.

The operations mirror, call for call, what the CUDA backend enqueues for one
model_train_step with both towers on one GPU (--gpus 0, --conv gemm): model.c's step,
net_cuda.cu's per-layer passes, layers_cuda.cu's launchers (convolutions in chunks of
TOWER_CUDA_CONV_IMAGES images), comm_cuda.cu's same-device exchange and augment_cuda.cu.
When those change, this list must follow; the test checks the shapes against
`twotower summary` and that every kernel the build has is costed. precision "bf16" is the
step of --precision bf16 (bf16 GEMM operands, fp32 activations): the bf16 im2col and
gradient transpose, cublasGemmEx reading 2-byte operands, the fc operands' casts and the
weights' cast at the start of the forward; "fp32" and "tf32" share one list (TF32 changes
only the GEMMs' rate)."""

import math
from dataclasses import dataclass, field


@dataclass
class Device:
    """One H100 SXM5 as the prediction assumes it."""
    name: str = "H100 SXM5 (assumed peaks)"
    sms: int = 132
    schedulers: int = 4            # per SM, each issuing one warp-instruction per cycle
    clock_hz: float = 1.75e9       # sustained clock under load (boost is 1.98 GHz)
    xu_per_sm_clk: int = 16        # MUFU, conversions (I2F, F2I): lanes per SM per cycle
    fp32_flops: float = 67e12      # FMA pipes, no tensor cores
    tf32_flops: float = 495e12     # tensor cores, dense
    bf16_flops: float = 990e12     # tensor cores, dense
    hbm_bytes: float = 3.35e12
    h2d_bytes: float = 50e9        # pinned host to device over PCIe 5.0 x16
    launch_s: float = 2.0e-6       # per kernel, cuBLAS call, copy or memset on a stream
    sync_s: float = 10.0e-6        # per host synchronisation: the GPU idles meanwhile

    @property
    def issue_per_s(self):
        return self.sms * self.schedulers * self.clock_hz


# ---- the default net: alexnet2012, per tower (net.c's table) ----------------------------

ALEXNET2012 = [
    # name, kind, out/tower, k, stride, pad, reads both, relu, lrn, pool, dropout
    ("conv1", "conv", 48, 11, 4, 2, 0, 1, 1, 1, 0),
    ("conv2", "conv", 128, 5, 1, 2, 0, 1, 1, 1, 0),
    ("conv3", "conv", 192, 3, 1, 1, 1, 1, 0, 0, 0),
    ("conv4", "conv", 192, 3, 1, 1, 0, 1, 0, 0, 0),
    ("conv5", "conv", 128, 3, 1, 1, 0, 1, 0, 1, 0),
    ("fc6", "fc", 2048, 1, 1, 0, 1, 1, 0, 0, 1),
    ("fc7", "fc", 2048, 1, 1, 0, 1, 1, 0, 0, 1),
    ("fc8", "fc", 1000, 1, 1, 0, 1, 0, 0, 0, 0),
]
LRN_N, POOL_K, POOL_S = 5, 3, 2
CONV_IMAGES = 128     # TOWER_CUDA_CONV_IMAGES
THREADS = 256         # TOWER_CUDA_THREADS
BLOCK_CAP = 65535 * 8  # tower_cuda_blocks' cap
CAST_WEIGHTS_BLOCKS = 1024  # layers_cuda.cu's cap of cast_weights_bf16_kernel's grid
DATA_SIZE = 256       # the stored image side (the mean image is DATA_SIZE^2 x 3)
AUG_PARAMS_BYTES = 24  # sizeof(data_aug_params)


def conv_out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


@dataclass
class Layer:
    name: str
    kind: str
    in_ch: int
    in_h: int
    out_ch: int
    out_h: int
    final_h: int
    k: int
    s: int
    p: int
    sources: int
    relu: int
    lrn: int
    pool: int
    drop: int

    @property
    def params(self):
        taps = self.k * self.k if self.kind == "conv" else 1
        return self.out_ch * self.sources * self.in_ch * taps + self.out_ch

    @property
    def macs(self):
        return (self.params - self.out_ch) * self.out_h * self.out_h


def plan(size=224, towers=2, classes=1000):
    """The per-tower shapes, as tower_plan_make computes them."""
    layers, ch, side = [], 3, size
    for l, (name, kind, out, k, s, p, both, relu, lrn, pool, drop) in enumerate(ALEXNET2012):
        out_ch = classes // towers if l == len(ALEXNET2012) - 1 else out
        if kind == "conv":
            in_ch, in_h, out_h = ch, side, conv_out(side, k, s, p)
        else:
            in_ch, in_h, out_h = ch * side * side, 1, 1
        final_h = (out_h - POOL_K) // POOL_S + 1 if pool else out_h
        layers.append(Layer(name, kind, in_ch, in_h, out_ch, out_h, final_h, k, s, p,
                            towers if both else 1, relu, lrn, pool, drop))
        ch, side = out_ch, final_h
    return layers


# ---- the operations of one step ---------------------------------------------------------

@dataclass
class Op:
    layer: str          # conv1 ... fc8, or data, loss, update
    phase: str          # fwd, bwd, xchg, data, loss, update
    kind: str           # kernel, gemm, gemv, copy_h2d, copy_d2d, copy_d2h, memset, event, sync
    name: str = ""      # the kernel (kind kernel) or the library call
    n: int = 0          # elements of a kernel (its grid-stride loop's iterations)
    threads: int = 0    # threads launched
    trips: list = field(default_factory=list)  # inner loops: (regex on the for line, trips[, step])
    bytes: float = 0.0  # compulsory DRAM (or PCIe) bytes
    flops: float = 0.0
    mnk: tuple = None
    stream: str = ""    # "copy": the input's copy stream, beside the towers' streams
    idle: bool = False  # a kernel launched with nothing to do in the step (bound by launch)


def _grid(n, cap=BLOCK_CAP):
    b = max(1, min((n + THREADS - 1) // THREADS, cap))
    return b * THREADS


def _k(layer, phase, name, n, nbytes, trips=(), threads=None):
    return Op(layer, phase, "kernel", name, n, threads or _grid(n), list(trips), nbytes)


def _gemm(layer, phase, m, n, k, beta, bf16=False):
    """bf16: cublasGemmEx with bf16 A and B (2 bytes an element), fp32 C."""
    ab = 2.0 if bf16 else 4.0
    by = ab * (m * k + k * n) + 4.0 * m * n * (2 if beta else 1)
    return Op(layer, phase, "gemm", "cublasGemmEx" if bf16 else "cublasSgemm", bytes=by,
              flops=2.0 * m * n * k, mnk=(m, n, k))


def _cast(layer, phase, n):
    """cast_bf16_kernel: n floats read, n bf16 written"""
    return _k(layer, phase, "cast_bf16_kernel", n, 6.0 * n)


def _lrn_trips(C, n=LRN_N):
    half = n // 2
    tot = sum(min(C - 1, c + half) - max(0, c - half) + 1 for c in range(C))
    return [(r"for \(int j = lo; j <= hi", tot / C)]


def _im2col_trips(K):
    """One thread per (channel, column) writes its K x K taps."""
    return [(r"for \(int kh = 0; kh < g.K", K), (r"for \(int kw = 0; kw < g.K", K)]


def _col2im_trips(H, K, S, P, Ho):
    """The taps that reach a pixel, row by row (tower_k_taps_at): on average `hits / H`
    rows, and as many columns for each of them (square planes)."""
    hits = 0
    for ih in range(H):
        for kh in range(K):
            th = ih + P - kh
            if th >= 0 and th % S == 0 and th // S < Ho:
                hits += 1
    return [(r"for \(int jh = 0; jh < th.n", hits / H), (r"for \(int jw = 0; jw < tw.n", hits / H)]


def _pool_cells(H, S):
    """S x S cells per plane side (tower_k_pool_cells): ceil(H / S)."""
    return -(-H // S)


def _pool_bwd_cell_trips(H, K, S, Ho):
    """maxpool_backward_kernel: one thread per S x S cell, its rows and columns (the last
    cell of a side holds what is left), then each input's windows."""
    per = H / _pool_cells(H, S)
    return ([(r"for \(int r = 0; r < nr", per), (r"for \(int c = 0; c < nc", per)] +
            _pool_bwd_trips(H, K, S, Ho))


def _pool_bwd_trips(H, K, S, Ho):
    def windows(h):
        o0 = 0 if h - K + 1 <= 0 else (h - K + S) // S
        o1 = min(h // S, Ho - 1)
        return max(0, o1 - o0 + 1)
    avg = sum(windows(h) for h in range(H)) / H
    return [(r"for \(int oh = v\.oh0", avg), (r"for \(int ow = v\.ow0", avg)]


# ---- the fused LRN + max-pool kernels (kernels.h, tower_k_lrnpool_make) -------------------

LRNPOOL_P, LRNPOOL_LANES, LRNPOOL_G = 32, 4, 64   # TOWER_K_LRNPOOL_P, _LANES, _G
LRNPOOL_TILE = 4096                               # TOWER_K_LRNPOOL_TILE
SOFTMAX_THREADS = 128                             # layers_cuda.cu's SOFTMAX_THREADS


def _warp_iters(n, block, stride):
    """Average over a block's warps of the iterations of `for (e = tid; e < n; e += stride)`
    (the warp runs while its first lane does)."""
    warps = block // 32
    return sum(max(0, -(-(n - 32 * w) // stride)) for w in range(warps)) / warps


def _band_rows(band, R, bands, H, Ho, K, S):
    oh0 = band * R
    noh = min(R, Ho - oh0)
    own_end = H if band == bands - 1 else (oh0 + R) * S
    win_end = (oh0 + noh - 1) * S + K
    return max(own_end, win_end) - oh0 * S, noh


def lrnpool_forward(B, C, H, K, S, n=LRN_N):
    """The fused forward's launch: (threads, trips) for a (B, C, H, H) input."""
    Ho = (H - K) // S + 1
    R, np_ = Ho, 1
    if H * H > LRNPOOL_TILE:
        R = min(Ho, max(1, (LRNPOOL_TILE // H - K) // S + 1))
    else:
        np_ = min(B * C, LRNPOOL_TILE // (H * H))
    bands = -(-Ho // R)
    ptiles = -(-(B * C) // np_)
    tiles = ptiles * bands
    blocks = max(1, min(tiles, BLOCK_CAP))
    # phase 1 and phase 2 iterations of a warp per tile: the tiles of np_ planes, the
    # last with what is left, every band
    def iters(planes):
        e = o = 0.0
        for band in range(bands):
            rows, noh = _band_rows(band, R, bands, H, Ho, K, S)
            e += _warp_iters(planes * rows * H, THREADS, THREADS)
            o += _warp_iters(planes * noh * Ho, THREADS, THREADS)
        return e, o
    last = B * C - (ptiles - 1) * np_
    (e_full, o_full), (e_last, o_last) = iters(np_), iters(last)
    e = (e_full * (ptiles - 1) + e_last) / tiles
    o = (o_full * (ptiles - 1) + o_last) / tiles
    trips = [(r"FOR_EACH_TILE\(t, g\.fwd_tiles", tiles / blocks),
             (r"FOR_EACH_IN_TILE\(e,", e, THREADS), (r"FOR_EACH_IN_TILE\(o,", o, THREADS),
             (r"for \(int kh = 0; kh < K", K), (r"for \(int kw = 0; kw < K", K)]
    return blocks * THREADS, trips + _lrn_trips(C, n)


def lrnpool_backward(B, C, H, K, S, n=LRN_N):
    """The fused backward's launch: (threads, trips)."""
    half = n // 2
    Ho = (H - K) // S + 1
    G = min(C, LRNPOOL_G)
    groups = -(-C // G)
    ptiles = -(-(H * H) // LRNPOOL_P)
    tiles = B * groups * ptiles
    blocks = max(1, min(tiles, BLOCK_CAP))
    terms = outs = 0.0
    for g in range(groups):
        c0, c1 = g * G, min(C, g * G + G)
        nj = min(C - 1, c1 - 1 + half) - max(0, c0 - half) + 1
        terms += sum(max(0, -(-(nj - y) // LRNPOOL_LANES)) for y in range(LRNPOOL_LANES))
        outs += sum(max(0, -(-(c1 - c0 - y) // LRNPOOL_LANES)) for y in range(LRNPOOL_LANES))
    terms /= groups * LRNPOOL_LANES
    outs /= groups * LRNPOOL_LANES
    trips = [(r"FOR_EACH_TILE\(t, g\.bwd_tiles", tiles / blocks),
             (r"for \(int jj = \(int\)threadIdx\.y", terms, LRNPOOL_LANES),
             (r"for \(int c = v\.c0 \+ \(int\)threadIdx\.y", outs, LRNPOOL_LANES)]
    return (blocks * LRNPOOL_P * LRNPOOL_LANES,
            trips + _pool_bwd_trips(H, K, S, Ho) + _lrn_trips(C, n))


def _exchange(ops, layer, phase, count, towers, reduce):
    """comm_cuda.cu's same-device all-gather (copies) or reduce-scatter (an add kernel),
    between event record/wait pairs on both streams."""
    for _ in range(2 * towers):
        ops.append(Op(layer, phase, "event", "cudaEventRecord/StreamWaitEvent"))
    for t in range(towers):
        if reduce:
            ops.append(_k(layer, phase, "comm_add_kernel", count, 12.0 * count))
        else:
            ops.append(Op(layer, phase, "copy_d2d", "cudaMemcpyAsync", bytes=8.0 * count))
    for _ in range(2 * towers):
        ops.append(Op(layer, phase, "event", "cudaEventRecord/StreamWaitEvent"))


CONVS = ("gemm", "cudnn")


def step_ops(batch=128, size=224, towers=2, classes=1000, fused=True, precision="fp32",
             conv="gemm", bf16_acts=False):
    """Every GPU operation of one training step, both towers on one GPU. fused: LRN and
    the max-pool after it as one kernel each way (the code); False: the two kernels each
    way that ran before (and still run where a row has only one of them). precision: the
    step's operations at that --precision (bf16 has its own; fp32 and tf32 share them).
    conv: every conv layer's path, "gemm" (im2col + cuBLAS in chunks) or "cudnn"
    (conv_cudnn.cu: cuDNN's calls, timed at their FLOP or memory bound as cuBLAS's are).
    bf16_acts: --bf16-acts (bf16 on cuDNN: conv1's and conv2's ReLU output kept in bf16)."""
    bf16 = precision == "bf16"
    assert conv in CONVS
    P = plan(size, towers, classes)
    B, ops = batch, []
    vt = classes // towers
    n_params = sum(L.params for L in P)
    crop = size
    # ---- data: one upload and augmentation on tower 0's stream, which tower 1 reads
    # (model_set_batch_u8's shared input): tower 1's stream records `in_free`, tower 0's
    # waits for it, records `in_ready`, tower 1's waits for that
    # the crops and their parameters go up on the input's copy stream (model.c's in_copy),
    # beside the towers' streams: the next batch's while this step runs (copy_stream_time)
    ops.append(Op("data", "data", "copy_h2d", "crops", bytes=float(B * crop * crop * 3),
                  stream="copy"))
    ops.append(Op("data", "data", "copy_h2d", "params", bytes=float(B * AUG_PARAMS_BYTES),
                  stream="copy"))
    ops.append(Op("data", "data", "copy_h2d", "labels", bytes=4.0 * B))
    n = B * 3 * crop * crop
    # bf16 on cuDNN: the augmentation writes conv1's bf16 input beside x, which both towers'
    # conv1 read (model.c: tower_cuda_input_copy, tower_cuda_share_input), so neither casts
    x16 = bf16 and conv == "cudnn" and P[0].kind == "conv" and P[0].sources == 1
    ops.append(_k("data", "data", "augment_bf16_kernel" if x16 else "augment_kernel", n,
                  n * 1.0 + (6.0 if x16 else 4.0) * n + 4.0 * DATA_SIZE * DATA_SIZE * 3,
                  threads=_grid(n, 65535 * 16)))
    if towers > 1:
        for _ in range(4):
            ops.append(Op("data", "data", "event", "cudaEventRecord/StreamWaitEvent"))
    # bf16 on cuDNN: a conv whose ReLU'd output is the next one-source conv's input writes
    # it as that conv's bf16 input copy (net_cuda.cu's bf16_chain_row, the input hand-over)
    def next_reads(i):
        return i + 1 < len(P) and P[i + 1].kind == "conv" and P[i + 1].sources == 1
    chain = [bf16 and conv == "cudnn" and L.kind == "conv" and L.relu and
             not (L.lrn or L.pool or L.drop) and next_reads(i) for i, L in enumerate(P)]
    # and a conv whose fused LRN + max-pool ends the row writes its pooled output as the
    # next one-source conv's bf16 input copy too (bf16_pool_row: conv1's into conv2)
    pooled = [conv == "cudnn" and L.kind == "conv" and _bf16_lrn_row(L, fused, bf16) and
              not L.drop and next_reads(i) for i, L in enumerate(P)]
    # ---- forward
    for i, L in enumerate(P):
        if L.sources > 1:  # the all-gather of this layer's input
            cnt = B * L.in_ch * (L.in_h * L.in_h if L.kind == "conv" else 1)
            _exchange(ops, L.name, "xchg", cnt, towers, reduce=False)
        for t in range(towers):
            if bf16 and L is P[0]:  # the weights' bf16 copy, at each tower's first layer: the
                # update wrote it (and said so), so every thread reads the flag and returns
                ops.append(_k("update", "fwd", "cast_weights_bf16_kernel", 1, 4.0,
                              threads=_grid(n_params, CAST_WEIGHTS_BLOCKS)))
                ops[-1].idle = True
            ops += (_cudnn_forward(L, B, fused, bf16, bf16_acts, chain[i],
                                   x16 if i == 0 else chain[i - 1] or pooled[i - 1],
                                   pooled[i])
                    if conv == "cudnn" and L.kind == "conv"
                    else _layer_forward(L, B, fused, bf16))
    _exchange(ops, "loss", "xchg", B * vt, towers, reduce=False)  # the logits
    for t in range(towers):
        V = vt * towers
        # one block of SOFTMAX_THREADS per sample; each pass runs the towers, and in each
        # a thread's classes of the tower's row
        ops.append(_k("loss", "loss", "softmax_xent_forward_kernel", B,
                      4.0 * (2 * B * V + 2 * B),
                      [(r"for \(int t = 0; t < T", towers),
                       (r"for \(int j = tid; j < Vt",
                        _warp_iters(vt, SOFTMAX_THREADS, SOFTMAX_THREADS), SOFTMAX_THREADS),
                       (r"for \(int w = 1; w < SOFTMAX_WARPS", SOFTMAX_THREADS // 32 - 1)],
                      threads=B * SOFTMAX_THREADS))
        ops.append(Op("loss", "loss", "copy_d2h", "losses", bytes=4.0 * B))
        ops.append(Op("loss", "loss", "sync", "cudaStreamSynchronize"))
    # ---- backward
    # no zeroing of the gradients: each is written once, with beta 0 (net_cuda.cu's
    # grad_zeroing 0), so the dw GEMMs read no C
    for t in range(towers):
        ops.append(_k("loss", "loss", "softmax_xent_backward_kernel", B * vt,
                      4.0 * (2 * B * vt + B)))
    for l in range(len(P) - 1, -1, -1):
        L = P[l]
        for t in range(towers):
            ops += (_cudnn_backward(L, B, l == 0, fused, bf16, bf16_acts, chain[l])
                    if conv == "cudnn" and L.kind == "conv"
                    else _layer_backward(L, B, first=(l == 0), fused=fused, bf16=bf16))
        if l > 0 and L.sources > 1:  # the reduce-scatter of this layer's input gradient
            cnt = B * L.in_ch * (L.in_h * L.in_h if L.kind == "conv" else 1)
            _exchange(ops, L.name, "xchg", cnt, towers, reduce=True)
    # w, v, g read, w, v written; in bf16 the weights' bf16 copy written too
    for t in range(towers):
        ops.append(_k("update", "update", "sgd_arena_step_kernel", n_params,
                      (22.0 if bf16 else 20.0) * n_params))
    return P, ops


def _layer_forward(L, B, fused=True, bf16=False):
    ops, act = [], B * L.out_ch * L.out_h * L.out_h
    colb = 2.0 if bf16 else 4.0  # bytes a col entry
    if L.kind == "conv":
        HWo, CKK = L.out_h * L.out_h, L.in_ch * L.k * L.k
        nin = L.in_ch * L.in_h * L.in_h
        for src in range(L.sources):
            for n0 in range(0, B, CONV_IMAGES):
                nb = min(CONV_IMAGES, B - n0)
                nq, ncol, nout = nb * HWo, CKK * nb * HWo, L.out_ch * nb * HWo
                ops.append(_k(L.name, "fwd", "im2col_chunk_bf16_kernel" if bf16 else
                              "im2col_chunk_kernel", L.in_ch * nq,
                              colb * ncol + 4.0 * nb * nin, _im2col_trips(L.k)))
                ops.append(_gemm(L.name, "fwd", L.out_ch, nq, CKK, 0, bf16))
                ops.append(_k(L.name, "fwd", "conv_out_kernel", nout,
                              4.0 * nout * (3 if src > 0 else 2)))
    else:
        for src in range(L.sources):
            if bf16 and src == 0:  # every source's input cast to bf16 at once, into the row's
                # operands (net_cuda.cu's fc16), which the backward reads again
                ops.append(_cast(L.name, "fwd", L.sources * B * L.in_ch))
            ops.append(_gemm(L.name, "fwd", B, L.out_ch, L.in_ch, src > 0, bf16))
            if src == 0:
                ops.append(_k(L.name, "fwd", "bias_add_kernel", B * L.out_ch,
                              4.0 * (2 * B * L.out_ch + L.out_ch)))
        if L.relu:
            ops.append(_k(L.name, "fwd", "relu_forward_kernel", act, 8.0 * act))
    ops += _pool_lrn_forward(L, B, fused)
    if L.drop:
        ops.append(_k(L.name, "fwd", "dropout_forward_kernel", act, 8.0 * act))
    return ops


def _pool_lrn_forward(L, B, fused, kept=False, out16=False):
    """The LRN and max-pool passes after a conv layer's output (the same on both paths).
    kept: the row keeps its ReLU's output in bf16 (net_cuda.cu's kept activations), which
    the fused kernels read (lrn_maxpool_forward_h_kernel, 2 bytes an element less). out16:
    the fused forward writes the pooled output in bf16 too, as the next conv's input copy
    (net_cuda.cu's bf16_pool_row)."""
    ops, act = [], B * L.out_ch * L.out_h * L.out_h
    if L.lrn and L.pool and fused:
        # reads in, writes pw (s^-beta), the pooled output and its argmax
        npool = B * L.out_ch * L.final_h * L.final_h
        threads, trips = lrnpool_forward(B, L.out_ch, L.out_h, POOL_K, POOL_S)
        ops.append(_k(L.name, "fwd", "lrn_maxpool_forward_h_kernel" if kept else
                      "lrn_maxpool_forward_kernel", act,
                      (2.0 if kept else 4.0) * act + 4.0 * (act + 2 * npool) +
                      (2.0 * npool if out16 else 0.0), trips, threads=threads))
    elif L.lrn:
        ops.append(_k(L.name, "fwd", "lrn_forward_kernel", act, 12.0 * act,
                      _lrn_trips(L.out_ch)))
    if L.pool and not (L.lrn and fused):
        npool = B * L.out_ch * L.final_h * L.final_h
        ops.append(_k(L.name, "fwd", "maxpool_forward_kernel", npool,
                      4.0 * (act + 2 * npool),
                      [(r"for \(int kh = 0; kh < K", POOL_K), (r"for \(int kw = 0; kw < K", POOL_K)]))
    return ops


def _pool_lrn_backward(L, B, fused, g=False, kept=False):
    """g: the fused backward writes the bf16 masked gradient of a conv on cuDNN's bf16 path
    in place of the fp32 din, which then has no reader (lrn_maxpool_backward_g_kernel);
    kept: it reads the kept bf16 input (the _h_ kernels)."""
    ops, act = [], B * L.out_ch * L.out_h * L.out_h
    if L.lrn and L.pool and fused:
        # reads the pooled gradient, idx, in and pw; writes din or g's bf16 gradient
        npool = B * L.out_ch * L.final_h * L.final_h
        threads, trips = lrnpool_backward(B, L.out_ch, L.out_h, POOL_K, POOL_S)
        name = "lrn_maxpool_backward" + ("_g" if g else "") + ("_h" if kept else "") + "_kernel"
        ops.append(_k(L.name, "bwd", name, act,
                      (2.0 if kept else 4.0) * act + 4.0 * act + (2.0 if g else 4.0) * act +
                      8.0 * npool, trips, threads=threads))
    elif L.pool:
        npool = B * L.out_ch * L.final_h * L.final_h
        cells = B * L.out_ch * _pool_cells(L.out_h, POOL_S) ** 2
        ops.append(_k(L.name, "bwd", "maxpool_backward_kernel", cells, 4.0 * (act + 2 * npool),
                      _pool_bwd_cell_trips(L.out_h, POOL_K, POOL_S, L.final_h)))
    if L.lrn and not (L.pool and fused):
        ops.append(_k(L.name, "bwd", "lrn_backward_kernel", act, 20.0 * act,
                      _lrn_trips(L.out_ch)))
    return ops


def _conv_call(L, phase, name, B, eb, flops):
    """One cuDNN convolution call: its compulsory bytes (input, output, weights once, eb
    bytes an element) and FLOPs; timed like a GEMM at the precision's peak."""
    nin = B * L.in_ch * L.in_h * L.in_h
    nout = B * L.out_ch * L.out_h * L.out_h
    nw = L.out_ch * L.in_ch * L.k * L.k
    return Op(L.name, phase, "conv", name, bytes=eb * (nin + nout + nw), flops=flops)


def _bf16_lrn_row(L, fused, bf16):
    """net_cuda.cu's bf16_lrn_row: a conv on cuDNN's bf16 path with its ReLU, and the LRN
    and max-pool fused after it (the LRN hand-over; --bf16-acts keeps its activation)."""
    return bf16 and L.relu and L.lrn and L.pool and fused


def _cudnn_forward(L, B, fused=True, bf16=False, bf16_acts=False, chain_out=False,
                   chain_in=False, pool_out=False):
    """conv_cudnn.cu's forward of a conv layer, per source: fp32/TF32 cudnnConvolutionForward
    on the fp32 tensors, then cudnnAddTensor (the bias) and the ReLU's own kernel; bf16 the
    input cast to bf16 (kept for the weight gradient), the bf16 convolution into a bf16 y,
    and cudnn_out_bf16_kernel (y, the sum so far, the bias, the ReLU at the last source).
    chain_out: the output kept as the next conv's bf16 input copy (cudnn_act_bf16_kernel);
    pool_out: the pooled output written as that copy too (the fused LRN + max-pool's);
    chain_in: the input is such a copy, so no cast."""
    ops, act = [], B * L.out_ch * L.out_h * L.out_h
    nin = B * L.in_ch * L.in_h * L.in_h
    nw = L.out_ch * L.in_ch * L.k * L.k
    flops = 2.0 * B * L.out_ch * L.out_h * L.out_h * L.in_ch * L.k * L.k
    # with --bf16-acts, a row whose ReLU'd output only its fused LRN + max-pool read keeps it
    # in bf16 alone
    kept = bf16_acts and _bf16_lrn_row(L, fused, bf16) or chain_out
    for src in range(L.sources):
        if bf16 and not chain_in:
            ops.append(_cast(L.name, "fwd", nin))
        if L.sources > 1:  # the source's weight block packed (cuDNN's filters have no stride)
            ops.append(Op(L.name, "fwd", "copy_d2d", "cudaMemcpy2DAsync",
                          bytes=(4.0 if bf16 else 8.0) * nw))
        call = _conv_call(L, "fwd", "cudnnConvolutionForward", B, 2.0 if bf16 else 4.0, flops)
        if src > 0 and not bf16:  # beta 1: the sum so far read back
            call.bytes += 4.0 * act
        ops.append(call)
        if kept and src == L.sources - 1:  # y, the sum so far, the bf16 activation
            ops.append(_k(L.name, "fwd", "cudnn_act_bf16_kernel", act,
                          (2.0 + 2.0 + (4.0 if src > 0 else 0.0)) * act))
        elif bf16:
            ops.append(_k(L.name, "fwd", "cudnn_out_bf16_kernel", act,
                          (2.0 + 4.0 + (4.0 if src > 0 else 0.0)) * act))
        elif src == 0:
            ops.append(Op(L.name, "fwd", "conv", "cudnnAddTensor", bytes=8.0 * act,
                          flops=float(act)))
    if L.relu and not bf16:
        ops.append(_k(L.name, "fwd", "relu_forward_kernel", act, 8.0 * act))
    return ops + _pool_lrn_forward(L, B, fused, kept, pool_out)


def _cudnn_backward(L, B, first, fused=True, bf16=False, bf16_acts=False, chain=False):
    """conv_cudnn.cu's backward: fp32/TF32 the ReLU's own kernel, then per source
    cudnnConvolutionBackwardBias (source 0), BackwardFilter (into a packed block added to
    dw's when the layer has two sources), BackwardData; bf16 the gradient cast to bf16 once
    (grad_bf16_kernel, the ReLU's mask in it), the bias gradient as a one-column bf16 GEMM
    and an fp32 GEMV, the bf16 weight gradient added to dw (add_bf16_block_kernel), the
    bf16 input gradient widened into din (add_bf16_kernel)."""
    # the fused LRN + max-pool backward writes the bf16 gradient itself (net_cuda.cu's
    # lrn_grad_handover): no grad_bf16_kernel for that row
    # (with --bf16-acts such a row also keeps its activation in bf16: _cudnn_forward's kept)
    given = _bf16_lrn_row(L, fused, bf16)
    ops = _pool_lrn_backward(L, B, fused, g=given, kept=given and bf16_acts)
    act = B * L.out_ch * L.out_h * L.out_h
    nin = B * L.in_ch * L.in_h * L.in_h
    nw = L.out_ch * L.in_ch * L.k * L.k
    hw = L.out_h * L.out_h
    flops = 2.0 * B * L.out_ch * hw * L.in_ch * L.k * L.k
    eb = 2.0 if bf16 else 4.0
    if L.relu and not bf16:
        ops.append(_k(L.name, "bwd", "relu_backward_kernel", act, 12.0 * act))
    for src in range(L.sources):
        if bf16 and src == 0 and not given and chain:  # the mask: the kept bf16 output
            ops.append(_k(L.name, "bwd", "grad_bf16_h_kernel", act, 8.0 * act))
        elif bf16 and src == 0 and not given:
            ops.append(_k(L.name, "bwd", "grad_bf16_kernel", act, (10.0 if L.relu else 6.0) * act))
        if src == 0:
            if bf16:
                ops.append(_gemm(L.name, "bwd", B * L.out_ch, 1, hw, 0, True))
                ops.append(Op(L.name, "bwd", "gemv", "cublasSgemv",
                              bytes=4.0 * (B * L.out_ch + B + 2 * L.out_ch),
                              flops=2.0 * B * L.out_ch))
            else:
                ops.append(Op(L.name, "bwd", "conv", "cudnnConvolutionBackwardBias",
                              bytes=4.0 * (act + 2 * L.out_ch), flops=float(act)))
        ops.append(_conv_call(L, "bwd", "cudnnConvolutionBackwardFilter", B, eb, flops))
        if bf16:  # written into dw's block (beta 0: dw not read)
            ops.append(_k(L.name, "bwd", "add_bf16_block_kernel", nw, 6.0 * nw))
        elif L.sources > 1:
            ops.append(_k(L.name, "bwd", "add_block_kernel", nw, 8.0 * nw))
        if not first:
            if L.sources > 1:
                ops.append(Op(L.name, "bwd", "copy_d2d", "cudaMemcpy2DAsync",
                              bytes=(4.0 if bf16 else 8.0) * nw))
            ops.append(_conv_call(L, "bwd", "cudnnConvolutionBackwardData", B, eb, flops))
            if bf16:
                ops.append(_k(L.name, "bwd", "add_bf16_kernel", nin, 6.0 * nin))
    return ops


def _layer_backward(L, B, first, fused=True, bf16=False):
    ops, act = [], B * L.out_ch * L.out_h * L.out_h
    colb = 2.0 if bf16 else 4.0  # bytes a col or gradient entry the GEMMs read
    if L.drop:
        ops.append(_k(L.name, "bwd", "dropout_backward_kernel", act, 8.0 * act))
    ops += _pool_lrn_backward(L, B, fused)
    if L.kind == "conv":
        HWo, CKK = L.out_h * L.out_h, L.in_ch * L.k * L.k
        nin = L.in_ch * L.in_h * L.in_h
        for src in range(L.sources):
            db = src == 0
            if db:
                nones = min(B, CONV_IMAGES) * HWo
                ops.append(_k(L.name, "bwd", "fill_bf16_kernel" if bf16 else "fill_kernel",
                              nones, colb * nones))
            for n0 in range(0, B, CONV_IMAGES):
                nb = min(CONV_IMAGES, B - n0)
                nq, ncol, nout = nb * HWo, CKK * nb * HWo, L.out_ch * nb * HWo
                # reads dout and the ReLU's output, writes the transposed gradient
                ops.append(_k(L.name, "bwd", "to_cnhw_bf16_kernel" if bf16 else "to_cnhw_kernel",
                              nout, (8.0 + colb) * nout))
                if db and bf16:  # db: a bf16 GEMM of one column (g . ones)
                    ops.append(_gemm(L.name, "bwd", L.out_ch, 1, nq, 1, True))
                elif db:
                    ops.append(Op(L.name, "bwd", "gemv", "cublasSgemv",
                                  bytes=4.0 * (nout + nq), flops=2.0 * nout))
                ops.append(_k(L.name, "bwd", "im2col_chunk_bf16_kernel" if bf16 else
                              "im2col_chunk_kernel", L.in_ch * nq,
                              colb * ncol + 4.0 * nb * nin, _im2col_trips(L.k)))
                ops.append(_gemm(L.name, "bwd", L.out_ch, CKK, nq, n0 > 0, bf16))
                if not first:  # din's col is fp32 in both (the GEMM's C)
                    ops.append(_gemm(L.name, "bwd", CKK, nq, L.out_ch, 0, bf16))
                    ops.append(_k(L.name, "bwd", "col2im_chunk_kernel", nb * nin,
                                  4.0 * (ncol + nb * nin),
                                  _col2im_trips(L.in_h, L.k, L.s, L.p, L.out_h)))
    else:
        if L.relu:
            ops.append(_k(L.name, "bwd", "relu_backward_kernel", act, 12.0 * act))
        for src in range(L.sources):
            if bf16 and src == 0:  # the output gradient cast once, for every source's GEMMs;
                # the input's cast is the forward's
                ops.append(_cast(L.name, "bwd", B * L.out_ch))
            ops.append(_gemm(L.name, "bwd", B, L.in_ch, L.out_ch, 0, bf16))
            ops.append(_gemm(L.name, "bwd", L.out_ch, L.in_ch, B, 0, bf16))
            if src == 0:
                ops.append(_k(L.name, "bwd", "fc_bias_grad_kernel", L.out_ch,
                              4.0 * (B * L.out_ch + 2 * L.out_ch),
                              [(r"for \(int b = 0; b < B", B)]))
    return ops


# ---- times -----------------------------------------------------------------------------

PRECISIONS = ("fp32", "tf32", "bf16")


def op_time(op, dev, precision, kcost):
    """Predicted seconds of one operation and what bounds it. kcost(op) gives a kernel's
    (warp-instructions, instructions of its longest warp, XU warp-instructions) or None."""
    if op.kind == "event":
        return 0.0, "-", {}
    if op.kind == "sync":
        return dev.sync_s, "sync", {}
    parts = {}
    if op.kind == "copy_h2d":
        parts["pcie"] = op.bytes / dev.h2d_bytes
    elif op.kind in ("copy_d2d", "copy_d2h", "memset"):
        parts["memory"] = op.bytes / dev.hbm_bytes
    elif op.kind in ("gemm", "gemv", "conv"):
        peak = {"fp32": dev.fp32_flops, "tf32": dev.tf32_flops, "bf16": dev.bf16_flops}
        parts["flops"] = op.flops / (peak[precision] if op.kind != "gemv" else dev.fp32_flops)
        parts["memory"] = op.bytes / dev.hbm_bytes
    elif op.kind == "kernel":
        parts["memory"] = op.bytes / dev.hbm_bytes
        c = kcost(op)
        if c is not None:
            warp_instrs, longest, xu = c
            parts["issue"] = max(warp_instrs / dev.issue_per_s, longest / dev.clock_hz)
            # the XU pipe: 16 lanes per SM per cycle, a warp-instruction is 32 lanes
            parts["xu"] = xu * 32 / (dev.xu_per_sm_clk * dev.sms * dev.clock_hz)
    bound = max(parts, key=parts.get) if parts else "launch"
    busy = max(parts.values()) if parts else 0.0
    if op.stream == "copy":  # off the towers' streams: copy_stream_time has it
        return 0.0, "copy stream", dict(parts, copy=busy + dev.launch_s)
    return busy + dev.launch_s, bound, parts


def copy_stream_time(results):
    """Seconds of the copy stream's work in a step (the next batch's upload), which runs
    beside the step: it is hidden when shorter than what the towers' streams still have to
    do after the host has enqueued the step (at least its backward and update)."""
    return sum(parts.get("copy", 0.0) for _, _, _, parts in results)
