"""IResNet (the ArcFace backbone) in plain PyTorch, written from docs/reference.md section 2.

Its ``state_dict`` layout is the one of insightface's ``arcface_torch`` IResNet, so the public
ArcFace checkpoints (ms1mv3 / glint360k / webface r50 and r100) load here with ``strict=True``. A
test and verification tool for ``keras_fr.conversion``; keras_fr never imports it at run time.

Example:

>>> from keras_fr.torch_reference.iresnet_torch import IResNet
>>> net = IResNet(depth=50).eval()
>>> net(torch.zeros(1, 3, 112, 112)).shape
torch.Size([1, 512])
"""

import torch
from torch import nn

from keras_fr.applications import registry

# Blocks per layer come from the model registry (keras_fr.applications.iresnet records them).
#: The head flattens the 7x7 map left from a 112x112 input.
FC_SPATIAL = 7 * 7


def _conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU(planes) -> conv3x3(stride) -> BN, plus the (projected) input."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    """The ArcFace IResNet.

    Args:
        depth: 18, 34, 50, 100 or 200 (the registry's ``iresnet<depth>``; ignored with ``blocks``).
        embedding_size: output dimension of ``fc`` / ``features`` (512).
        dropout: dropout rate before ``fc`` (inactive in eval mode).
        blocks: blocks per stage (keyword only), instead of ``depth``.
        family: the registry family whose ``<family><depth>`` model gives the blocks.

    Raises:
        ValueError: for an unknown depth.
    """

    def __init__(self, depth=50, embedding_size=512, dropout=0.0, *, blocks=None, family="iresnet"):
        super().__init__()
        if blocks is None:
            blocks = registry.blocks_for_depth(family, depth)
        self.depth = depth
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        blocks = tuple(blocks)
        self.layer1 = self._make_layer(64, blocks[0], stride=2)
        self.layer2 = self._make_layer(128, blocks[1], stride=2)
        self.layer3 = self._make_layer(256, blocks[2], stride=2)
        self.layer4 = self._make_layer(512, blocks[3], stride=2)
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(512 * FC_SPATIAL, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def _make_layer(self, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes, eps=1e-5),
            )
        layers = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x):
        """C(x): the feature map after ``bn2``, (N, 512, H/16, W/16)."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.bn2(x)

    def forward_head(self, feature_map):
        """The global embedding head: flatten (C, H, W) -> dropout -> fc -> features."""
        return self.features(self.fc(self.dropout(torch.flatten(feature_map, 1))))

    def residual_branch_last_bns(self):
        """The BatchNorm layers that close the residual branches (``randomize_`` scales them down)."""
        return residual_branch_last_bns(self)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def residual_branch_last_bns(model):
    """The BatchNorm closing each IBasicBlock's residual branch (``bn3``)."""
    return [m.bn3 for m in model.modules() if isinstance(m, IBasicBlock)]
