"""twotower's nets in PyTorch, and load_twotower_weights() to get twotower's weights into
them. Each preset is written here from its source (the paper, torchvision's alexnet, the
Fashion-MNIST tutorial; paper_notes.md), not from twotower's C table (src/tower/net.c),
so that the agreement check (compare.py) and the parameter counts hold two independent
descriptions of every net against each other. Two towers are laid out as one grouped net
(the layout Caffe's bvlc_alexnet uses on one GPU); the tensor mapping lives in mapping.py.

    import sys; sys.path.insert(0, "tools/reference")
    from twotower_torch import load_twotower_weights
    net = load_twotower_weights("alexnet.safetensors")   # eval mode, any preset
    probs = net(images).softmax(dim=1)                    # images (B, in_ch, 224, 224)
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

import mapping
import safetensors_np

PAPER_WIDTHS = (48, 128, 192, 192, 128, 2048, 2048)
PAPER_LRN = dict(n=5, k=2.0, alpha=1e-4, beta=0.75)  # section 3.3: alpha on the raw sum


def _conv(name, out, k, stride, pad, own, lrn, pool):
    return dict(name=name, out=out, k=k, stride=stride, pad=pad, own=own, lrn=lrn,
                pool=(3, 2) if pool else None)


def _paper_convs(widths, lrn=True, grouped=True):
    """Figure 2: conv1 11/4 pad 2, conv2 5 pad 2, conv3-5 3 pad 1; LRN after conv1 and
    conv2's ReLU; overlapping 3:2 pooling after conv1, conv2 and conv5. With grouped, conv2,
    conv4 and conv5 read their own tower (groups = towers)."""
    w1, w2, w3, w4, w5 = widths
    return [_conv("conv1", w1, 11, 4, 2, False, lrn, True),
            _conv("conv2", w2, 5, 1, 2, grouped, lrn, True),
            _conv("conv3", w3, 3, 1, 1, False, False, False),
            _conv("conv4", w4, 3, 1, 1, grouped, False, False),
            _conv("conv5", w5, 3, 1, 1, grouped, False, True)]


def _paper(towers, widths, fcs):
    return dict(towers=towers, in_ch=3, in_size=224, classes=1000,
                convs=_paper_convs(widths), fcs=list(fcs), act="relu",
                # section 4.2: dropout on fc6 and fc7's outputs, test-time x (1 - p)
                dropout=dict(p=0.5, after=["fc6", "fc7"], scale="paper"), init="paper")


# name -> the net as its source gives it (per tower for two towers)
PRESETS = {
    "alexnet2012": _paper(2, (48, 128, 192, 192, 128), (2048, 2048)),
    # section 3.2 and its footnote: one GPU, half the kernels, but conv5 and the fc
    # layers as in the two-GPU net
    "alexnet2012-1gpu": _paper(1, (48, 128, 192, 192, 256), (4096, 4096)),
    # one of the two towers, alone
    "half": _paper(1, (48, 128, 192, 192, 128), (2048, 2048)),
    # both towers as one column, no groups
    "merged": dict(_paper(1, (96, 256, 384, 384, 256), (4096, 4096)),
                   convs=_paper_convs((96, 256, 384, 384, 256), grouped=False)),
    # "One weird trick" (2014): 64/192/384/384/256
    "alexnet2014": dict(_paper(1, (64, 192, 384, 384, 256), (4096, 4096)),
                        convs=_paper_convs((64, 192, 384, 384, 256), grouped=False)),
    # torchvision.models.alexnet: no LRN, nn.Dropout before classifier.1 and .4
    "torchvision": dict(towers=1, in_ch=3, in_size=224, classes=1000,
                        convs=_paper_convs((64, 192, 384, 256, 256), lrn=False, grouped=False),
                        fcs=[4096, 4096], act="relu",
                        dropout=dict(p=0.5, after=["conv5", "fc6"], scale="inverted"),
                        init="torch"),
    # the tutorial: 1 channel, conv1 11/4 padding 1, no LRN, 6400 -> 4096 -> 4096 -> 10,
    # nn.Dropout after fc6 and fc7's ReLU
    "fmnist": dict(towers=1, in_ch=1, in_size=224, classes=10,
                   convs=[dict(c, pad=1) if c["name"] == "conv1" else c
                          for c in _paper_convs((96, 256, 384, 384, 256), lrn=False,
                                                grouped=False)],
                   fcs=[4096, 4096], act="relu",
                   dropout=dict(p=0.5, after=["fc6", "fc7"], scale="inverted"), init="torch"),
}


def apply_switches(spec, lrn=None, pool=None, act=None, dropout=None):
    """A copy of spec with twotower's switches (tower.h tower_net_switches): lrn True/False
    (True: LRN after conv1 and conv2 with the paper's constants), pool (k, s) for every
    pooling layer, act 'relu'/'tanh' for every hidden layer, dropout p for every dropout
    (0: none)."""
    s = copy.deepcopy(spec)
    if lrn is not None:
        for i, c in enumerate(s["convs"]):
            c["lrn"] = bool(lrn) and i < 2
    if pool is not None:
        for c in s["convs"]:
            if c["pool"]:
                c["pool"] = tuple(pool)
    if act is not None:
        s["act"] = act
    if dropout is not None:
        s["dropout"]["p"] = dropout
        if dropout == 0:
            s["dropout"]["after"] = []
    return s


def spec_from_meta(meta):
    """The preset and switches a twotower file's metadata names (export or dump)."""
    spec = PRESETS[meta.get("net", "alexnet2012" if meta.get("towers") == "2" else "half")]
    lrn = {"0": False, "1": True}.get(meta.get("switch.lrn", "-1"))
    pool = meta.get("switch.pool") or None
    pool = tuple(int(v) for v in pool.split(":")) if pool else None
    act = meta.get("switch.act") or None
    drop = meta.get("switch.dropout") or None
    return apply_switches(spec, lrn, pool, act, float(drop) if drop else None)


class PaperDropout(nn.Module):
    """Dropout as the paper does it (scale 'paper': training multiplies by a 0/1 mask with
    no 1/(1-p) rescale, evaluation by 1-p) or as nn.Dropout does (scale 'inverted':
    mask / (1-p) in training, identity in evaluation). `mask`, when set, is the training
    mask (the one twotower drew); otherwise one is drawn here."""

    def __init__(self, p=0.5, scale="paper"):
        super().__init__()
        self.p, self.scale = p, scale
        self.mask = None

    def forward(self, x):
        inv = self.scale == "inverted"
        if not self.training:
            return x if inv else x * (1.0 - self.p)
        m = self.mask
        m = (torch.rand_like(x) >= self.p).to(x.dtype) if m is None else \
            m.to(dtype=x.dtype, device=x.device).reshape(x.shape)
        return x * m * (1.0 / (1.0 - self.p)) if inv else x * m


class TowerLRN(nn.Module):
    """LRN within each tower's channels. Each tower normalises over its own maps only
    (the paper's towers live on different GPUs), so in the concatenated (B, T*C, H, W)
    tensor the window must not cross from tower 0's last map into tower 1's first:
    one nn.LocalResponseNorm over all T*C channels would (a 2% difference at the
    boundary maps). PyTorch divides alpha by size, so alpha=5e-4 with size 5 is the
    paper's 1e-4 on the raw sum of squares."""

    def __init__(self, towers, n=5, k=2.0, alpha=1e-4, beta=0.75):
        super().__init__()
        self.towers = towers
        self.lrn = nn.LocalResponseNorm(n, alpha=alpha * n, beta=beta, k=k)

    def forward(self, x):
        if self.towers == 1:
            return self.lrn(x)
        return torch.cat([self.lrn(part) for part in x.chunk(self.towers, dim=1)], dim=1)


def conv_side(n, k, stride, pad):
    return (n + 2 * pad - k) // stride + 1


class AlexNetRef(nn.Module):
    """One of twotower's nets from a spec (PRESETS, apply_switches): every layer has
    towers * width outputs (the classes in the last); a conv that reads its own tower is
    grouped (groups = towers); LRN is per tower (TowerLRN). Parameters conv1 ... fc8 as
    attributes, so the state dict is conv1.weight ... fc8.bias."""

    def __init__(self, spec, width_div=1, classes=None, in_size=None, in_ch=None):
        super().__init__()
        T = spec["towers"]
        self.spec, self.towers = spec, T
        self.classes = classes or spec["classes"]
        side = in_size or spec["in_size"]
        ch = in_ch or spec["in_ch"]
        self.act = torch.tanh if spec["act"] == "tanh" else F.relu
        self.convs, self.fcs = [], []
        d = spec["dropout"]
        self.drops = nn.ModuleDict({name: PaperDropout(d["p"], d["scale"])
                                    for name in d["after"] if d["p"] > 0})
        for c in spec["convs"]:
            out = T * (c["out"] // width_div)
            groups = T if c["own"] and T > 1 else 1
            setattr(self, c["name"], nn.Conv2d(ch, out, c["k"], c["stride"], c["pad"],
                                               groups=groups))
            side = conv_side(side, c["k"], c["stride"], c["pad"])
            if c["pool"]:
                side = (side - c["pool"][0]) // c["pool"][1] + 1
            if side < 1:
                raise ValueError(f"{c['name']}: the input is too small")
            self.convs.append(c)
            ch = out
        feats = ch * side * side
        widths = [T * (w // width_div) for w in spec["fcs"]] + [self.classes]
        for i, w in enumerate(widths):
            name = f"fc{len(spec['convs']) + 1 + i}"
            setattr(self, name, nn.Linear(feats, w))
            self.fcs.append(name)
            feats = w
        self.lrn = TowerLRN(T, **PAPER_LRN)
        self.pools = {c["name"]: nn.MaxPool2d(*c["pool"]) for c in self.convs if c["pool"]}

    def set_masks(self, masks):
        """Training masks {layer: (B, towers*width[, H, W])} for the dropout after each
        layer (mapping.mask_for gathers twotower's per-tower ones), or None to draw here."""
        for name, drop in self.drops.items():
            drop.mask = None if masks is None else masks.get(name)

    def _drop(self, name, x):
        return self.drops[name](x) if name in self.drops else x

    def forward(self, x):
        for c in self.convs:
            x = self.act(getattr(self, c["name"])(x))
            if c["lrn"]:
                x = self.lrn(x)
            if c["pool"]:
                x = self.pools[c["name"]](x)
            x = self._drop(c["name"], x)
        # (B, T*C, H, W) channel-major = [tower 0's maps, tower 1's maps]: the order
        # twotower's gathered fc6 input has
        x = torch.flatten(x, 1)
        for i, name in enumerate(self.fcs):
            x = getattr(self, name)(x)
            if i + 1 < len(self.fcs):
                x = self._drop(name, self.act(x))
        return x


class TwoTowerAlexNet(AlexNetRef):
    """The paper's net (towers 2) or `half` (towers 1) with the given widths per tower
    (conv1-conv5, fc6, fc7): what --width-div builds. pool_side is checked against the
    widths' net at in_size = 224 unless in_size is given."""

    def __init__(self, towers=2, classes=1000, widths=PAPER_WIDTHS, pool_side=None, in_ch=3,
                 in_size=None):
        spec = copy.deepcopy(PRESETS["alexnet2012" if towers == 2 else "half"])
        for c, w in zip(spec["convs"], widths[:5]):
            c["out"] = w
        spec["fcs"] = list(widths[5:7])
        if in_size is None:  # the side that gives pool_side after conv5
            in_size = next(s for s in range(16, 1024) if _pooled_side(spec, s) == pool_side)
        super().__init__(spec, 1, classes, in_size, in_ch)

    def set_masks(self, fc6=None, fc7=None):
        super().set_masks(None if fc6 is None and fc7 is None else {"fc6": fc6, "fc7": fc7})


def _pooled_side(spec, side):
    for c in spec["convs"]:
        side = conv_side(side, c["k"], c["stride"], c["pad"])
        if c["pool"]:
            side = (side - c["pool"][0]) // c["pool"][1] + 1
    return side


def param_count(spec, width_div=1, classes=None, in_size=None):
    """Parameters of the PyTorch model of spec: the figure `twotower nets` must match."""
    net = AlexNetRef(spec, width_div, classes, in_size)
    return sum(p.numel() for p in net.parameters())


def net_from_tensors(tensors, prefix="", dtype=torch.float32, device="cpu", meta=None):
    """An AlexNetRef shaped like the twotower tensors (numpy dict) and their metadata (the
    net and its switches, the size and width divisor), weights loaded (strict). Without
    the net's metadata (files from before presets): the paper's net or half, by towers."""
    meta = meta or {}
    T = mapping.count_towers(tensors, prefix)
    if "net" in meta:
        spec = spec_from_meta(meta)
        net = AlexNetRef(spec, int(meta.get("width_div", "1")), int(meta["classes"]),
                         int(meta["size"]), int(meta.get("in_ch", spec["in_ch"])))
    else:
        _, widths, classes, side = mapping.net_shape(tensors, prefix)
        w1 = tensors[mapping.tt_name(0, "conv1", "weight", prefix)]
        in_ch = w1.shape[1] if w1.ndim == 4 else w1.shape[1] // (mapping.KSIZE["conv1"] ** 2)
        net = TwoTowerAlexNet(T, classes, widths, side, in_ch)
    # convert before loading: loading float64 weights into float32 parameters would
    # round them
    net = net.to(dtype=dtype)
    state = {k: torch.from_numpy(v) for k, v in mapping.to_torch(tensors, prefix).items()}
    net.load_state_dict(state, strict=True)
    return net.to(device=device)


def load_twotower_weights(path, device="cpu", dtype=torch.float32):
    """nn.Module (eval mode) with the weights of a twotower safetensors file: an export
    (`twotower export`) or a dump (`twotower dump`), of any preset."""
    tensors, meta = safetensors_np.load(path)
    return net_from_tensors(tensors, "", dtype, device, meta).eval()


def save_twotower_weights(net, path, metadata=None):
    """The reverse: a TwoTowerAlexNet's (or AlexNetRef's) weights as a twotower export."""
    tensors = mapping.from_torch(net.state_dict(), net.towers)
    meta = {"format": "twotower-weights", "towers": str(net.towers),
            "classes": str(net.classes)}
    meta.update(metadata or {})
    safetensors_np.save(path, {k: v.astype("<f4") for k, v in tensors.items()}, meta)
