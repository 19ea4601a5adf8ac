"""Build the PyTorch reference networks by registry name, and give them realistic random weights.

``build_reference("iresnet100")`` returns the project's PyTorch definition that matches
``keras_fr.applications.IResNet100`` key for key. ``randomize_(net, input_size)`` replaces the
default initialization with weights that exercise every tensor of a conversion: random convolution
and dense weights, random BatchNorm affine parameters and statistics, random PReLU slopes, with the
last BatchNorm of every residual branch scaled down so activations stay of order 1 through 100+
blocks (a residual network with unit-scale branches grows with depth, and a parity tolerance on
huge outputs means nothing).

Example:

>>> net = build_reference("msconv_resnet26")
>>> randomize_(net, input_size=64, seed=0)
>>> out = net(torch.zeros(2, 3, 64, 64))
"""

import importlib
import inspect
import math

import torch
from torch import nn

from keras_fr.applications import registry


def build_reference(model_name, embedding_size=None, num_heads=4, fusion="quality", dropout=0.0):
    """The PyTorch reference network for a keras_fr registry name, in eval mode.

    The model registry names the builder (its family's ``reference``) and the block counts; each
    option is passed only to a reference network that has it (``reference_options``).

    Args:
        model_name: a registry or builder name, e.g. "msconv_resnet50", "iresnet100", "LGAFResNet100".
        embedding_size: output dimension (default: the model's, from the registry).
        num_heads: LGAF local heads.
        fusion: LGAF fusion mode.
        dropout: IResNet/LGAF dropout before ``fc``.

    Returns:
        A ``torch.nn.Module`` in eval mode.

    Raises:
        ValueError: for an unknown name, or a model whose family has no PyTorch reference.
    """
    record = registry.get_record(model_name)
    fam = registry.family(record.family)
    if fam.reference is None:
        raise ValueError(f"`model_name`: {record.name} ({fam.display}) has no PyTorch reference network.")
    module_name, function = fam.reference.split(":")
    builder = getattr(importlib.import_module(module_name), function)
    if embedding_size is None:
        embedding_size = record.embedding_size
    given = {"embedding_size": embedding_size, "num_heads": num_heads, "fusion": fusion, "dropout": dropout}
    options = {k: v for k, v in given.items() if k in fam.reference_options}
    accepted = inspect.signature(builder).parameters
    unknown = [k for k in options if k not in accepted]
    if unknown or "blocks" not in accepted:
        raise ValueError(f"{fam.reference} does not take {unknown or ['blocks']} (family {fam.name}'s "
                         "reference_options say it does).")
    return builder(blocks=record.blocks, **options).eval()


def _residual_last_bns(net):
    """A reference network names the BatchNorm layers closing its residual branches itself."""
    method = getattr(net, "residual_branch_last_bns", None)
    return list(method()) if method is not None else []


@torch.no_grad()
def randomize_(net, input_size=112, seed=0, branch_scale=0.2, calibration_batch=8):
    """Give ``net`` random weights, BatchNorm statistics and PReLU slopes, in place; returns ``net``
    in eval mode.

    The BatchNorm statistics come from one calibration pass in training mode on random images
    (so each normalization sees inputs of the scale it expects), then are perturbed at random (so a
    converter that swapped mean and variance, or dropped one, is caught). The last BatchNorm of each
    residual branch gets ``branch_scale`` times smaller weights. The LGAF fusion statistics are set
    around the observed feature norms so the quality weights differ between samples.

    Args:
        net: a reference network from ``build_reference``.
        input_size: spatial size of the calibration images (112 for IResNet/LGAF heads).
        seed: random seed (the global torch RNG is left untouched).
        branch_scale: factor on the last BatchNorm weight of every residual branch.
        calibration_batch: images in the calibration pass.
    """
    gen = torch.Generator().manual_seed(seed)

    def randn(shape):
        return torch.randn(shape, generator=gen)

    def uniform(shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=gen)

    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            module.weight.copy_(randn(module.weight.shape) * math.sqrt(2.0 / fan_in))
            if module.bias is not None:
                module.bias.copy_(randn(module.bias.shape) * 0.1)
        elif isinstance(module, nn.PReLU):
            module.weight.copy_(uniform(module.weight.shape, 0.05, 0.5))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module is getattr(net, "features", None):
                module.weight.fill_(1.0)  # frozen at 1 in the reference
            else:
                module.weight.copy_(uniform(module.weight.shape, 0.5, 1.5))
            module.bias.copy_(randn(module.bias.shape) * 0.2)
    for bn in _residual_last_bns(net):
        bn.weight.mul_(branch_scale)

    # Calibration pass: cumulative batch statistics (momentum=None) in training mode.
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    images = torch.clamp(randn((calibration_batch, 3, input_size, input_size)) * 0.5, -1, 1)
    net.train()
    if hasattr(net, "forward_head") and input_size != 112:
        # IResNet/LGAF heads flatten a 7x7 map (112x112 input); at other sizes only the backbone
        # is calibrated and the head's BatchNorms keep their reset statistics (then perturbed).
        net.forward_features(images)
    else:
        net(images)
    net.eval()
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
        bn.running_var.mul_(uniform(bn.running_var.shape, 0.7, 1.4)).add_(1e-3)
        bn.running_mean.add_(randn(bn.running_mean.shape) * 0.1 * bn.running_var.sqrt())
        bn.num_batches_tracked.fill_(int(torch.randint(1, 10000, (1,), generator=gen)))

    fusion = getattr(net, "fusion", None)
    if fusion is not None and input_size == 112:
        # Fresh images: the calibration batch itself is normalized exactly, unlike any other input.
        fresh = torch.clamp(randn(images.shape) * 0.5, -1, 1)
        feature_map = net.forward_features(fresh)
        norms = torch.stack(
            [net.local_branch(feature_map).norm(dim=1), net.forward_head(feature_map).norm(dim=1)],
            dim=1,
        )
        fusion.norm_mean.copy_(norms.mean(dim=0) * uniform((2,), 0.9, 1.1))
        fusion.norm_std.copy_(norms.std(dim=0, unbiased=False) * uniform((2,), 0.6, 1.2) + 0.05)
    return net
