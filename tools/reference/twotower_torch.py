"""The 2012 two-tower AlexNet in PyTorch, laid out as one grouped net (the layout
Caffe's bvlc_alexnet uses on one GPU), and load_twotower_weights() to get twotower's
weights into it. The tensor mapping itself lives in mapping.py.

    import sys; sys.path.insert(0, "tools/reference")
    from twotower_torch import load_twotower_weights
    net = load_twotower_weights("alexnet.safetensors")   # eval mode
    probs = net(images).softmax(dim=1)                    # images (B, 3, 224, 224)
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import mapping
import safetensors_np

PAPER_WIDTHS = (48, 128, 192, 192, 128, 2048, 2048)


class PaperDropout(nn.Module):
    """Dropout as the paper (and twotower) does it: training multiplies by a 0/1 mask
    (no 1/(1-p) rescale); evaluation multiplies by 1-p. `mask`, when set, is used as
    the training mask (the exact masks twotower drew); otherwise one is drawn here."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = p
        self.mask = None

    def forward(self, x):
        if not self.training:
            return x * (1.0 - self.p)
        if self.mask is not None:
            return x * self.mask.to(dtype=x.dtype, device=x.device)
        return x * (torch.rand_like(x) >= self.p).to(x.dtype)


class TowerLRN(nn.Module):
    """LRN within each tower's channels. Each tower normalises over its own maps only
    (the paper's towers live on different GPUs), so in the concatenated (B, T*C, H, W)
    tensor the window must not cross from tower 0's last map into tower 1's first:
    one nn.LocalResponseNorm over all T*C channels would (a 2% difference at the
    boundary maps). PyTorch divides alpha by size, so alpha=5e-4 with size 5 is the
    paper's 1e-4 on the raw sum of squares."""

    def __init__(self, towers):
        super().__init__()
        self.towers = towers
        self.lrn = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)

    def forward(self, x):
        if self.towers == 1:
            return self.lrn(x)
        return torch.cat([self.lrn(part) for part in x.chunk(self.towers, dim=1)], dim=1)


class TwoTowerAlexNet(nn.Module):
    """Towers T (1 or 2): every layer has T*width outputs; conv2, conv4 and conv5 are
    grouped by tower (groups=T); conv1, conv3, fc6, fc7 and fc8 see all inputs; LRN
    (after conv1 and conv2) is per tower as well (TowerLRN)."""

    def __init__(self, towers=2, classes=1000, widths=PAPER_WIDTHS, pool_side=6, in_ch=3):
        super().__init__()
        T = towers
        self.towers, self.classes = T, classes
        c1, c2, c3, c4, c5, f6, f7 = (T * w for w in widths)
        cfg = {row[0]: row for row in mapping.LAYERS}

        def conv(name, cin, cout):
            _, _, k, stride, pad, grouped = cfg[name][:6]
            return nn.Conv2d(cin, cout, k, stride, pad, groups=T if grouped else 1)

        self.conv1 = conv("conv1", in_ch, c1)
        self.conv2 = conv("conv2", c1, c2)
        self.conv3 = conv("conv3", c2, c3)
        self.conv4 = conv("conv4", c3, c4)
        self.conv5 = conv("conv5", c4, c5)
        self.fc6 = nn.Linear(c5 * pool_side * pool_side, f6)
        self.fc7 = nn.Linear(f6, f7)
        self.fc8 = nn.Linear(f7, classes)
        self.lrn = TowerLRN(T)
        self.pool = nn.MaxPool2d(3, 2)
        self.drop6 = PaperDropout(0.5)
        self.drop7 = PaperDropout(0.5)

    def set_masks(self, fc6=None, fc7=None):
        """Training masks (B, T*width) for fc6 and fc7, or None to draw them here."""
        self.drop6.mask, self.drop7.mask = fc6, fc7

    def forward(self, x):
        x = self.pool(self.lrn(F.relu(self.conv1(x))))
        x = self.pool(self.lrn(F.relu(self.conv2(x))))
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        x = self.pool(F.relu(self.conv5(x)))
        # (B, T*128, 6, 6) channel-major = [tower 0's maps, tower 1's maps]: the order
        # twotower's gathered fc6 input has
        x = torch.flatten(x, 1)
        x = self.drop6(F.relu(self.fc6(x)))
        x = self.drop7(F.relu(self.fc7(x)))
        return self.fc8(x)


def net_from_tensors(tensors, prefix="", dtype=torch.float32, device="cpu"):
    """A TwoTowerAlexNet shaped like the twotower tensors (numpy dict), weights loaded."""
    T, widths, classes, side = mapping.net_shape(tensors, prefix)
    w1 = tensors[mapping.tt_name(0, "conv1", "weight", prefix)]
    in_ch = w1.shape[1] if w1.ndim == 4 else w1.shape[1] // (mapping.KSIZE["conv1"] ** 2)
    # convert before loading: loading float64 weights into float32 parameters would
    # round them
    net = TwoTowerAlexNet(T, classes, widths, side, in_ch).to(dtype=dtype)
    state = {k: torch.from_numpy(v) for k, v in mapping.to_torch(tensors, prefix).items()}
    net.load_state_dict(state, strict=True)
    return net.to(device=device)


def load_twotower_weights(path, device="cpu", dtype=torch.float32):
    """nn.Module (eval mode) with the weights of a twotower safetensors file: an export
    (`twotower export`) or a dump (`twotower dump`)."""
    tensors, _ = safetensors_np.load(path)
    return net_from_tensors(tensors, "", dtype, device).eval()


def save_twotower_weights(net, path, metadata=None):
    """The reverse: a TwoTowerAlexNet's weights as a twotower export file."""
    tensors = mapping.from_torch(net.state_dict(), net.towers)
    meta = {"format": "twotower-weights", "towers": str(net.towers),
            "classes": str(net.classes)}
    meta.update(metadata or {})
    safetensors_np.save(path, {k: v.astype("<f4") for k, v in tensors.items()}, meta)
