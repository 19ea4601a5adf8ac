"""The MSConv network (``MSNet``) in plain PyTorch, written from docs/reference.md section 1.

A test and verification tool: its ``state_dict`` layout (module names, parameter shapes) is the one
of the MSConv authors' public repository, so checkpoints trained there load here with
``strict=True``, and ``keras_fr.conversion`` is checked against it numerically. keras_fr never
imports this module at run time (only ``keras-fr convert --verify`` and the tests do).

Example:

>>> from keras_fr.torch_reference.msconv_torch import MSNet
>>> net = MSNet(depth=50).eval()
>>> net(torch.zeros(1, 3, 112, 112)).shape
torch.Size([1, 512])
"""

import torch
from torch import nn

from keras_fr.applications import registry

# Blocks per stage come from the model registry (keras_fr.applications.msconv_resnet records them).
# The depth is read from a checkpoint's keys, never from a model name: the reference's own factory
# maps its names to depths inconsistently (docs/reference.md section 1).
#: (in, mid, out) channels and first-block stride per stage.
MSNET_STAGES = ((64, 128, 256, 1), (256, 256, 512, 2), (512, 512, 1024, 2), (1024, 1024, 2048, 2))


def _conv_bn_prelu(in_channels, out_channels, kernel_size=1, stride=1, padding=0, dilation=1, groups=1):
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.PReLU(),
    )


class MSConv(nn.Module):
    """Multi-scale convolution (MSConv paper Sec. 3): two 3x3 branches (dilation 1 and 2), a
    multiplication (MO), a subtraction-based selection (SO) and a 1x1 fusion conv.

    Args:
        channels: input and output channels C.
        stride: stride of both 3x3 branches.
        groups: groups of the 3x3 convolutions (32).
        reduction: r in d = max(C // r, L) (16).
        min_dim: L (32).
    """

    def __init__(self, channels, stride=1, groups=32, reduction=16, min_dim=32):
        super().__init__()
        d = max(channels // reduction, min_dim)
        self.convs = nn.ModuleList(
            [
                _conv_bn_prelu(channels, channels, 3, stride, padding=1, dilation=1, groups=groups),
                _conv_bn_prelu(channels, channels, 3, stride, padding=2, dilation=2, groups=groups),
            ]
        )
        self.fc = _conv_bn_prelu(channels, d)
        self.fcs = nn.ModuleList([_conv_bn_prelu(d, channels) for _ in range(2)])
        self.fc_d = _conv_bn_prelu(channels, channels)

    def forward(self, x):
        u1 = self.convs[0](x)
        u2 = self.convs[1](x)
        s = (u1 * u2).mean(dim=(2, 3), keepdim=True)  # MO, then global average pooling
        z = self.fc(s)
        c = torch.sigmoid(self.fcs[0](z) - self.fcs[1](z) + 1e-6)  # SO
        return self.fc_d((u1 - u2) * c + u2)


class MSUnit(nn.Module):
    """Bottleneck residual unit with an MSConv in the middle.

    Args:
        in_channels, mid_channels, out_channels: channel counts.
        stride: stride of the MSConv and of the projection shortcut.
    """

    def __init__(self, in_channels, mid_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = _conv_bn_prelu(in_channels, mid_channels)
        self.conv2_msconv = MSConv(mid_channels, stride)
        self.conv3 = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
        if in_channels == out_channels:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.prelu = nn.PReLU()

    def forward(self, x):
        return self.prelu(self.conv3(self.conv2_msconv(self.conv1(x))) + self.shortcut(x))


class MSNet(nn.Module):
    """The MSConv face recognition network (``MSNet``).

    Args:
        depth: 26, 50 or 101 (the registry's ``msconv_resnet<depth>``; ignored with ``blocks``).
        embedding_size: output dimension of ``classifier`` (512).
        blocks: blocks per stage (keyword only), instead of ``depth``.

    Raises:
        ValueError: for an unknown depth.
    """

    def __init__(self, depth=50, embedding_size=512, *, blocks=None):
        super().__init__()
        if blocks is None:
            blocks = registry.blocks_for_depth("msconv_resnet", depth)
        self.depth, self.blocks = depth, tuple(blocks)
        self.basic_conv = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64), nn.PReLU()
        )
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        for index, (blocks, (cin, mid, cout, stride)) in enumerate(
            zip(self.blocks, MSNET_STAGES), start=1
        ):
            units = [MSUnit(cin, mid, cout, stride)]
            units += [MSUnit(cout, mid, cout, 1) for _ in range(blocks - 1)]
            setattr(self, f"stage_{index}", nn.Sequential(*units))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.0)  # exists in the reference, not used in forward
        self.classifier = nn.Linear(2048, embedding_size)

    def forward_features(self, x):
        """The stage_4 feature map (N, 2048, H/32, W/32)."""
        x = self.maxpool(self.basic_conv(x))
        for index in range(1, 5):
            x = getattr(self, f"stage_{index}")(x)
        return x

    def residual_branch_last_bns(self):
        """The BatchNorm layers that close the residual branches (``randomize_`` scales them down)."""
        return residual_branch_last_bns(self)

    def forward(self, x):
        return self.classifier(torch.flatten(self.gap(self.forward_features(x)), 1))


def residual_branch_last_bns(model):
    """The BatchNorm closing each MSUnit's residual branch (``conv3.1``)."""
    return [m.conv3[1] for m in model.modules() if isinstance(m, MSUnit)]
