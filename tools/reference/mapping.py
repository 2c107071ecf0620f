"""The one place that says how twotower's tensors map onto the PyTorch nets, used in both
directions (twotower -> PyTorch to load weights, PyTorch -> twotower to compare
gradients), and onto torchvision.models.alexnet's names for the `torchvision` preset.
docs/WEIGHTS.md describes the same mapping in words.

twotower: per tower t, `tower{t}.{layer}.weight` / `.bias` (layers conv1 ... fc8), in the
tower's arena layout: conv w (out_ch, sources*in_ch, k, k) row-major (the arena's
(out_ch, sources*in_ch*k*k)), fc w (out, sources*in). Layers reading both towers (conv3,
fc6, fc7, fc8 in the paper's net) have input columns [source tower 0 block, source tower 1
block]. PyTorch: every layer's weight and bias is cat([tower0, tower1], dim=0): tower t
owns output rows [t*out, (t+1)*out) of every layer, the last layer's classes
[t*V/T, (t+1)*V/T) included. A layer reading its own tower only is groups=T in PyTorch,
which is exactly a block-diagonal weight whose diagonal blocks are the towers' weights."""
import re

import numpy as np

# the paper's kernels, for conv weights given in the arena's 2-D form (older files)
KSIZE = {"conv1": 11, "conv2": 5, "conv3": 3, "conv4": 3, "conv5": 3}
# torchvision.models.alexnet's module of each twotower layer
TORCHVISION = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6",
               "conv4": "features.8", "conv5": "features.10", "fc6": "classifier.1",
               "fc7": "classifier.4", "fc8": "classifier.6"}

_TT = re.compile(r"^tower(\d+)\.((?:conv|fc)\d+)\.(weight|bias)$")


def tt_name(tower, layer, what, prefix=""):
    """twotower tensor name, e.g. tt_name(1, 'fc6', 'weight', 'grad.')."""
    return f"{prefix}tower{tower}.{layer}.{what}"


def torch_name(layer, what):
    return f"{layer}.{what}"


def _order(layer):
    """conv layers first, then fc, each by number: conv1 ... conv5, fc6 ... fc8."""
    m = re.match(r"(conv|fc)(\d+)$", layer)
    return (0 if m.group(1) == "conv" else 1, int(m.group(2)))


def layer_names(tensors, prefix=""):
    """The layers of tower 0 in `tensors`, in net order."""
    names = {m.group(2) for n in tensors if n.startswith(prefix)
             for m in [_TT.match(n[len(prefix):])] if m and m.group(1) == "0"}
    return tuple(sorted(names, key=_order))


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
    layers = layer_names(tensors, prefix)
    missing = [tt_name(t, l, w, prefix) for t in range(T) for l in layers
               for w in ("weight", "bias") if tt_name(t, l, w, prefix) not in tensors]
    if missing or not layers:
        raise ValueError(f"missing tensors: {', '.join(missing[:4]) or 'every layer'}"
                         f"{' ...' if len(missing) > 4 else ''}")
    return T


def to_torch(tensors, prefix=""):
    """twotower tensors (numpy) -> PyTorch state dict of numpy arrays ('conv1.weight', ...).
    A conv weight may come as 2-D (the arena's (out, sources*in*k*k)) or 4-D."""
    T = count_towers(tensors, prefix)
    out = {}
    for layer in layer_names(tensors, prefix):
        for what in ("weight", "bias"):
            parts = [np.asarray(tensors[tt_name(t, layer, what, prefix)]) for t in range(T)]
            if what == "weight" and layer.startswith("conv"):
                if parts[0].ndim == 2:
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
    layers = sorted({k.split(".")[0] for k in state if re.match(r"(conv|fc)\d+\.", k)},
                    key=_order)
    for layer in layers:
        for what in ("weight", "bias"):
            a = state[torch_name(layer, what)]
            a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
            if a.shape[0] % towers:
                raise ValueError(f"{layer}.{what}: {a.shape[0]} rows do not split into "
                                 f"{towers} towers")
            for t, part in enumerate(np.split(a, towers, axis=0)):
                out[tt_name(t, layer, what, prefix)] = np.ascontiguousarray(part)
    return out


def to_torchvision(tensors, prefix=""):
    """A one-tower export of the `torchvision` preset -> torchvision.models.alexnet's
    state dict (numpy): features.0 ... classifier.6. Its AdaptiveAvgPool2d((6, 6)) is the
    identity where conv5's pooled output is already 6x6 (a 224 input), and only there do
    the shapes (fc6: 9216 inputs) fit."""
    if count_towers(tensors, prefix) != 1:
        raise ValueError("torchvision's alexnet is one tower")
    state = to_torch(tensors, prefix)
    return {f"{TORCHVISION[k.split('.')[0]]}.{k.split('.')[1]}": v for k, v in state.items()}


def from_torchvision(state):
    """torchvision.models.alexnet's state dict -> twotower tensors of one tower."""
    back = {v: k for k, v in TORCHVISION.items()}
    ours = {}
    for k, v in state.items():
        mod, what = k.rsplit(".", 1)
        ours[f"{back[mod]}.{what}"] = v
    return from_torch(ours, 1)


def mask_for(tensors, layer, towers):
    """twotower's dropout mask after `layer`, every tower's gathered along the channels
    (dim 1), as the grouped PyTorch net's activations are laid out."""
    return np.concatenate([tensors[f"mask.tower{t}.{layer}"] for t in range(towers)], axis=1)


def mask_layers(tensors):
    """The layers whose outputs a dump's dropout masks belong to."""
    names = {m.group(1) for n in tensors for m in [re.match(r"mask\.tower0\.(\w+)$", n)] if m}
    return tuple(sorted(names, key=_order))


def net_shape(tensors, prefix=""):
    """(towers, widths per tower for conv1..fc7, classes, side of conv5's pooled output)
    from the weights' shapes of the paper's layout (files without the net's metadata)."""
    T = count_towers(tensors, prefix)
    layers = layer_names(tensors, prefix)
    w = {l: np.shape(tensors[tt_name(0, l, "weight", prefix)]) for l in layers}
    widths = tuple(int(w[l][0]) for l in layers[:-1])
    classes = T * int(w[layers[-1]][0])
    fc6_in = int(np.prod(w["fc6"][1:]))
    per_pos = T * widths[4]
    side = int(round((fc6_in / per_pos) ** 0.5))
    if side < 1 or side * side * per_pos != fc6_in:
        raise ValueError(f"fc6 reads {fc6_in} inputs, not {T} towers x {widths[4]} maps x "
                         "a square")
    return T, widths, classes, side
