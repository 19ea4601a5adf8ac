"""The LGAF network in plain PyTorch, written from docs/reference.md section 3 (the
project's LGAF layout): an IResNet backbone and global branch, a multi-head multi-scale local
branch (MHMS) and the feature-quality fusion (FQA + LGF).

No public implementation exists; this definition is the project's, and the Keras layers in
``keras_fr.layers.lgaf`` follow the same layout, key for key. The backbone and global branch carry
exactly the IResNet keys, so an ArcFace IResNet checkpoint fills them. A test and verification tool
for ``keras_fr.conversion``; keras_fr never imports it at run time.

Example:

>>> from keras_fr.torch_reference.lgaf_torch import LGAFNet
>>> net = LGAFNet(depth=100, num_heads=4, fusion="quality").eval()
>>> net(torch.zeros(1, 3, 112, 112)).shape
torch.Size([1, 512])
"""

import torch
from torch import nn

from .iresnet_torch import IResNet

FUSION_MODES = ("quality", "add", "local", "global")
#: (kernel, dilation) per scale: 1x1, 3x3, and a dilated 3x3 equivalent to 5x5.
DEFAULT_SCALES = ((1, 1), (3, 1), (3, 2))


class LANet(nn.Module):
    """Spatial attention (LS-CNN's LANet, LGAF Eq. 11 without the GAP): 1x1 conv to C/r, ReLU,
    1x1 conv to one channel, sigmoid; the input is multiplied by the (N, 1, H, W) map."""

    def __init__(self, channels, reduction=16):
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // reduction, 1, bias=True)
        self.expand = nn.Conv2d(channels // reduction, 1, 1, bias=True)

    def forward(self, x):
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(x))))


class SqueezeExcite(nn.Module):
    """Channel attention (SE): GAP, 1x1 conv to C/r, ReLU, 1x1 conv to C, sigmoid, multiply."""

    def __init__(self, channels, reduction=16):
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // reduction, 1, bias=True)
        self.expand = nn.Conv2d(channels // reduction, channels, 1, bias=True)

    def forward(self, x):
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(s))))


class MultiScaleLocalHead(nn.Module):
    """One MHMS head (the paper's "MSNet"): per-scale conv + BN + PReLU(C) and LANet, concatenation,
    SE, then flatten -> ``proj_fc`` -> ``proj_bn`` (LGAF Sec. 3.3, Eqs. 11-13)."""

    def __init__(self, in_channels=512, out_features=128, branch_channels=128, scales=DEFAULT_SCALES,
                 spatial=7 * 7, reduction=16):
        super().__init__()
        self.scales = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(in_channels, branch_channels, kernel, stride=1,
                              padding=dilation * (kernel - 1) // 2, dilation=dilation, bias=False),
                    nn.BatchNorm2d(branch_channels, eps=1e-5),
                    nn.PReLU(branch_channels),
                )
                for kernel, dilation in scales
            ]
        )
        self.lanets = nn.ModuleList([LANet(branch_channels, reduction) for _ in scales])
        concat = branch_channels * len(scales)
        self.se = SqueezeExcite(concat, reduction)
        self.proj_fc = nn.Linear(concat * spatial, out_features, bias=True)
        self.proj_bn = nn.BatchNorm1d(out_features, eps=1e-5)

    def forward(self, feature_map):
        maps = [lanet(scale(feature_map)) for scale, lanet in zip(self.scales, self.lanets)]
        x = self.se(torch.cat(maps, dim=1))
        return self.proj_bn(self.proj_fc(torch.flatten(x, 1)))


class MultiHeadLocal(nn.Module):
    """MHMS: ``num_heads`` heads whose outputs are concatenated (the local feature, Eq. 14)."""

    def __init__(self, num_heads=4, in_channels=512, embedding_size=512, **head_kwargs):
        super().__init__()
        if embedding_size % num_heads:
            raise ValueError(
                f"`embedding_size` ({embedding_size}) must be divisible by `num_heads` ({num_heads})."
            )
        self.heads = nn.ModuleList(
            [MultiScaleLocalHead(in_channels, embedding_size // num_heads, **head_kwargs)
             for _ in range(num_heads)]
        )

    def forward(self, feature_map):
        return torch.cat([head(feature_map) for head in self.heads], dim=1)


class FeatureQualityFusion(nn.Module):
    """FQA + LGF: per-sample feature norms, normalized by EMA statistics (buffers ``norm_mean``,
    ``norm_std``; index 0 = local, 1 = global), give the quality weights (LGAF Eqs. 6-10).

    Args:
        mode: "quality" (default), "add", "local" or "global".
        h: the scale of the normalized norm (0.333).
        momentum: EMA rate of the statistics in training (0.01).
    """

    def __init__(self, mode="quality", h=0.333, momentum=0.01, eps=1e-3):
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"`fusion` must be one of {FUSION_MODES}; got {mode!r}.")
        self.mode = mode
        self.h = h
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("norm_mean", torch.full((2,), 20.0))
        self.register_buffer("norm_std", torch.full((2,), 100.0))

    def gammas(self, local, global_):
        norms = torch.stack([local.norm(dim=1), global_.norm(dim=1)], dim=1).detach()  # (N, 2)
        if self.training:
            with torch.no_grad():
                self.norm_mean.mul_(1 - self.momentum).add_(self.momentum * norms.mean(dim=0))
                self.norm_std.mul_(1 - self.momentum).add_(
                    self.momentum * norms.std(dim=0, unbiased=False)
                )
        z = torch.clamp(self.h * (norms - self.norm_mean) / (self.norm_std + self.eps), -1, 1) + 1
        gamma = z / (z.sum(dim=1, keepdim=True) + 1e-6)
        return gamma[:, :1], gamma[:, 1:]

    def forward(self, local, global_):
        gamma_local, gamma_global = self.gammas(local, global_)
        if self.mode == "quality":
            fused = gamma_local * local + gamma_global * global_
        elif self.mode == "add":
            fused = local + global_
        elif self.mode == "local":
            fused = local
        else:
            fused = global_
        return fused, gamma_local, gamma_global


class LGAFNet(IResNet):
    """LGAF: IResNet backbone (+ its head as the global branch), MHMS local branch, fusion.

    Args:
        depth: 50 or 100 (the registry's ``lgaf_resnet<depth>``; ignored with ``blocks``).
        embedding_size: 512.
        num_heads: heads of the local branch (4).
        fusion: "quality", "add", "local" or "global".
        dropout: dropout before the global ``fc``.
        return_branches: if True, ``forward`` returns (fused, local, global, gamma_local,
            gamma_global).
        blocks: blocks per stage (keyword only), instead of ``depth``.
    """

    def __init__(self, depth=100, embedding_size=512, num_heads=4, fusion="quality", dropout=0.0,
                 return_branches=False, *, blocks=None):
        super().__init__(depth=depth, embedding_size=embedding_size, dropout=dropout, blocks=blocks,
                         family="lgaf_resnet")
        self.local_branch = MultiHeadLocal(num_heads, 512, embedding_size)
        self.fusion = FeatureQualityFusion(fusion)
        self.return_branches = return_branches

    def forward(self, x):
        feature_map = self.forward_features(x)
        global_ = self.forward_head(feature_map)
        local = self.local_branch(feature_map)
        fused, gamma_local, gamma_global = self.fusion(local, global_)
        if self.return_branches:
            return fused, local, global_, gamma_local, gamma_global
        return fused
