"""The one place that says how twotower's tensors map onto the PyTorch grouped net,
used in both directions (twotower -> PyTorch to load weights, PyTorch -> twotower to
compare gradients). docs/WEIGHTS.md describes the same mapping in words.

twotower: per tower t, `tower{t}.{layer}.weight` / `.bias`, in the tower's arena
layout: conv w (out_ch, sources*in_ch, k, k) row-major (the arena's
(out_ch, sources*in_ch*k*k)), fc w (out, sources*in). Layers reading both towers
(conv3, fc6, fc7, fc8) have input columns [source tower 0 block, source tower 1 block].
PyTorch: every layer's weight and bias is cat([tower0, tower1], dim=0): tower t owns
output rows [t*out, (t+1)*out) of every layer, fc8's classes [t*V/T, (t+1)*V/T)
included. conv2, conv4, conv5 read their own tower only: groups=T in PyTorch, which
is exactly a block-diagonal weight whose diagonal blocks are the towers' weights."""
import re

import numpy as np

# name, kind, k, stride, pad, groups_by_tower, relu, lrn, pool, dropout
# (the same table as tower_alexnet2012 in src/tower/net.c)
LAYERS = (
    ("conv1", "conv", 11, 4, 2, False, True, True, True, False),
    ("conv2", "conv", 5, 1, 2, True, True, True, True, False),
    ("conv3", "conv", 3, 1, 1, False, True, False, False, False),
    ("conv4", "conv", 3, 1, 1, True, True, False, False, False),
    ("conv5", "conv", 3, 1, 1, True, True, False, True, False),
    ("fc6", "fc", 1, 1, 0, False, True, False, False, True),
    ("fc7", "fc", 1, 1, 0, False, True, False, False, True),
    ("fc8", "fc", 1, 1, 0, False, False, False, False, False),
)
LAYER_NAMES = tuple(row[0] for row in LAYERS)
KIND = {row[0]: row[1] for row in LAYERS}
KSIZE = {row[0]: row[2] for row in LAYERS}
DROPOUT_LAYERS = tuple(row[0] for row in LAYERS if row[9])

_TT = re.compile(r"^tower(\d+)\.(conv[1-5]|fc[678])\.(weight|bias)$")


def tt_name(tower, layer, what, prefix=""):
    """twotower tensor name, e.g. tt_name(1, 'fc6', 'weight', 'grad.')."""
    return f"{prefix}tower{tower}.{layer}.{what}"


def torch_name(layer, what):
    return f"{layer}.{what}"


def count_towers(tensors, prefix=""):
    """Number of towers whose weights are in `tensors` (1 or 2), checked complete."""
    towers = set()
    for name in tensors:
        if name.startswith(prefix):
            m = _TT.match(name[len(prefix):])
            if m:
                towers.add(int(m.group(1)))
    if towers not in ({0}, {0, 1}):
        raise ValueError(f"expected tensors of towers 0 (and 1) named {prefix}towerT.LAYER.*, "
                         f"found towers {sorted(towers)}")
    T = len(towers)
    missing = [tt_name(t, l, w, prefix) for t in range(T) for l in LAYER_NAMES
               for w in ("weight", "bias") if tt_name(t, l, w, prefix) not in tensors]
    if missing:
        raise ValueError(f"missing tensors: {', '.join(missing[:4])}"
                         f"{' ...' if len(missing) > 4 else ''}")
    return T


def to_torch(tensors, prefix=""):
    """twotower tensors (numpy) -> PyTorch state dict of numpy arrays ('conv1.weight', ...).
    A conv weight may come as 2-D (the arena's (out, sources*in*k*k)) or 4-D."""
    T = count_towers(tensors, prefix)
    out = {}
    for layer in LAYER_NAMES:
        for what in ("weight", "bias"):
            parts = [np.asarray(tensors[tt_name(t, layer, what, prefix)]) for t in range(T)]
            if what == "weight" and KIND[layer] == "conv":
                k = KSIZE[layer]
                parts = [p.reshape(p.shape[0], -1, k, k) for p in parts]
            elif what == "weight":
                parts = [p.reshape(p.shape[0], -1) for p in parts]
            out[torch_name(layer, what)] = np.concatenate(parts, axis=0)
    return out


def from_torch(state, towers, prefix=""):
    """PyTorch state dict (tensors or arrays) -> twotower tensors (numpy): tower t gets
    rows [t*n/T, (t+1)*n/T) of every weight and bias. Conv weights stay 4-D."""
    out = {}
    for layer in LAYER_NAMES:
        for what in ("weight", "bias"):
            a = state[torch_name(layer, what)]
            a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
            if a.shape[0] % towers:
                raise ValueError(f"{layer}.{what}: {a.shape[0]} rows do not split into "
                                 f"{towers} towers")
            for t, part in enumerate(np.split(a, towers, axis=0)):
                out[tt_name(t, layer, what, prefix)] = np.ascontiguousarray(part)
    return out


def net_shape(tensors, prefix=""):
    """(towers, widths per tower for conv1..fc7, classes, side of conv5's pooled output)
    from the weights' shapes, so nets built with a width divisor load too."""
    T = count_towers(tensors, prefix)
    w = {l: np.shape(tensors[tt_name(0, l, "weight", prefix)]) for l in LAYER_NAMES}
    widths = tuple(int(w[l][0]) for l in LAYER_NAMES[:-1])
    classes = T * int(w["fc8"][0])
    fc6_in = int(np.prod(w["fc6"][1:]))
    per_pos = T * widths[4]
    side = int(round((fc6_in / per_pos) ** 0.5))
    if side < 1 or side * side * per_pos != fc6_in:
        raise ValueError(f"fc6 reads {fc6_in} inputs, not {T} towers x {widths[4]} maps x "
                         "a square")
    return T, widths, classes, side
