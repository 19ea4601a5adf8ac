"""LGAF networks: Local and Global Feature Attention Fusion on an IResNet backbone (the LGAF paper; docs/reference.md section 3).

The graph (docs/reference.md section 3):

- backbone: the IResNet body up to ``bn2``, C(x) = (N, 7, 7, 512), built by
  :func:`keras_fr.applications.iresnet.iresnet_backbone` (the same layer names as IResNet);
- GFE, the global branch: IResNet's embedding head (dropout -> flatten -> ``fc`` -> ``features``),
  so the backbone and global branch take an ArcFace IResNet checkpoint unchanged;
- MHMS, the local branch: ``local_branch`` (:class:`keras_fr.layers.MultiHeadLocal`) on C(x);
- LGF with FQA: ``fusion`` (:class:`keras_fr.layers.FeatureQualityFusion`), kappa =
  gamma_local * local + gamma_global * global.

Both branches exist in every fusion mode (one checkpoint layout); the mode changes only the fusion.
The embedding layers (global head, fusion) run in float32 under mixed precision.
"""

import re

from keras import layers

from keras_fr.applications import common
from keras_fr.applications import iresnet
from keras_fr.applications import registry
from keras_fr.applications import specs
from keras_fr.layers.lgaf import FUSION_MODES
from keras_fr.layers.lgaf import FeatureQualityFusion
from keras_fr.layers.lgaf import MultiHeadLocal

#: Output names with ``return_branches=True``, in order.
BRANCH_OUTPUT_NAMES = ("fused", "local", "global", "gamma_local", "gamma_global")


#: The PyTorch module path of every top-level layer that owns weights (IResNet's and the LGAF top), ``{}``
#: standing for an index; the Keras layer name is the path with "." -> "_".
#: keras_fr.conversion.mapping derives each weight's PyTorch key from these paths (both
#: directions) and refuses a layer name that starts like one of them but matches none: a new
#: module is declared here.
TORCH_MODULES = iresnet.TORCH_MODULES + ("local_branch", "fusion")


def _check_lgaf_args(num_heads, fusion, return_branches, embedding_size):
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"`num_heads` must be a positive integer; got {num_heads!r}.")
    if embedding_size % num_heads:
        raise ValueError(
            f"`num_heads` must divide `embedding_size` ({embedding_size}) so every head gets an "
            f"equal share of the local feature; got num_heads={num_heads}."
        )
    if fusion not in FUSION_MODES:
        raise ValueError(f"`fusion` must be one of {FUSION_MODES}; got {fusion!r}.")
    if not isinstance(return_branches, bool):
        raise ValueError(f"`return_branches` must be True or False; got {return_branches!r}.")


def LGAFResNet(blocks, model_name="lgaf_resnet", *, include_top=True, weights=None, input_tensor=None,
               input_shape=None, pooling=None, embedding_size=512, name=None, dropout=0.0, num_heads=4,
               fusion="quality", return_branches=False):
    """Builds an LGAF network on an IResNet backbone of any depth (the variants choose ``blocks``).

    Args:
        blocks: four IBasicBlock counts of the backbone, e.g. ``(3, 13, 30, 3)`` for LGAF-R100.
        model_name: registry name used to resolve preset weight tags (``"lgaf_resnet100"``).
        include_top, weights, input_tensor, input_shape, pooling, embedding_size, name, dropout,
        num_heads, fusion, return_branches: as for `LGAFResNet100`.

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: on an invalid argument (see `LGAFResNet100`).

    Example:
        >>> model = LGAFResNet((1, 1, 1, 1), embedding_size=128, num_heads=2)
        >>> model.output_shape
        (None, 128)
    """
    common.check_builder_args(include_top, weights, pooling, embedding_size)
    iresnet.check_dropout(dropout)
    _check_lgaf_args(num_heads, fusion, return_branches, embedding_size)
    if return_branches and not include_top:
        raise ValueError("`return_branches=True` needs include_top=True (the branches are the top).")
    common.check_blocks(blocks)
    img_input, model_inputs = common.obtain_input(
        input_tensor, input_shape, fixed_size=iresnet.TOP_INPUT_SIZE if include_top else None
    )

    def head(feature_map):  # C(x) -> the fused embedding (or the named branches)
        # GFE (global feature): exactly the ArcFace IResNet head.
        global_feature = iresnet.iresnet_embedding_head(feature_map, embedding_size, dropout)
        # MHMS (local feature), Eq. 12-14.
        local_feature = MultiHeadLocal(
            num_heads=num_heads, embedding_size=embedding_size, name="local_branch"
        )(feature_map)
        # LGF with FQA, Eq. 4-10; float32 like the rest of the embedding head.
        fused = FeatureQualityFusion(
            mode=fusion, return_gammas=return_branches, name="fusion", dtype="float32"
        )([local_feature, global_feature])
        if not return_branches:
            return fused
        # Named float32 outputs: model.output_names == BRANCH_OUTPUT_NAMES.
        fused, gamma_local, gamma_global = fused
        tensors = {
            "fused": fused, "local": local_feature, "global": global_feature,
            "gamma_local": gamma_local, "gamma_global": gamma_global,
        }
        return [layers.Identity(name=out_name, dtype="float32")(tensors[out_name])
                for out_name in BRANCH_OUTPUT_NAMES]

    return common.finish_model(
        model_inputs, iresnet.iresnet_backbone(img_input, blocks), head=head if include_top else None,
        pooling=pooling, name=name, model_name=model_name, weights=weights,
        full_model=lambda: LGAFResNet(blocks, model_name, embedding_size=embedding_size, dropout=dropout,
                                      num_heads=num_heads, fusion=fusion),
    )


def LGAFResNet50(*, include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                 embedding_size=512, name=None, dropout=0.0, num_heads=4, fusion="quality",
                 return_branches=False):
    return LGAFResNet(iresnet.IRESNET_BLOCKS[50], "lgaf_resnet50", **locals())


def LGAFResNet100(*, include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                  embedding_size=512, name=None, dropout=0.0, num_heads=4, fusion="quality",
                  return_branches=False):
    return LGAFResNet(iresnet.IRESNET_BLOCKS[100], "lgaf_resnet100", **locals())


_DOC_EXTRA = """    dropout: dropout rate of the global branch before its `fc` layer (default 0.0).
    num_heads: number of local heads b of the MHMS module (default 4, the paper's best); must
        divide `embedding_size`.
    fusion: how the local and global features are fused: `"quality"` (default, the paper's
        feature-quality weighting), `"add"` (plain sum), `"local"` (local feature only) or
        `"global"` (global feature only, i.e. the ArcFace IResNet output).
    return_branches: with `include_top=True`, return the list `[fused, local, global,
        gamma_local, gamma_global]` (gammas of shape (N, 1)) instead of the fused embedding.
"""

_DOC_TAIL = """
Raises:
    ValueError: an input other than 112x112x3 with `include_top=True`, an input smaller than
        32x32, `pooling` not in (None, 'avg', 'max') or given with `include_top=True`, a
        non-positive `embedding_size`, `num_heads` not dividing it, an unknown `fusion`,
        `return_branches=True` without the top, `dropout` outside [0, 1), or a missing
        weights file.

Example:

>>> model = keras_fr.applications.{name}()
>>> model.output_shape
(None, 512)
>>> fused, local, global_, g_local, g_global = keras_fr.applications.{name}(
...     return_branches=True).outputs
"""


for _depth, _fn in ((50, LGAFResNet50), (100, LGAFResNet100)):
    _fn.__doc__ = common.BASE_DOCSTRING.format(
        name=_fn.__name__,
        reference=(
            "Local and Global Feature Attention Fusion Network for Face Recognition (LGAF); "
            f"IResNet-{_depth} backbone (insightface `arcface_torch` layout), MHMS local branch, "
            "ArcFace global branch and feature-quality fusion as described in docs/architecture.md "
            "(no public code exists)."
        ),
        input_shape_note=(
            "        With `include_top=True` it must be 112x112 (both branches flatten the 7x7x512\n"
            "        map); with `include_top=False` any size of at least 32x32 works."
        ),
        extra_args=_DOC_EXTRA,
    ) + _DOC_TAIL.format(name=_fn.__name__)


_HEAD_KEY = re.compile(r"^local_branch\.heads\.(\d+)\.")


def _local_heads(state_dict):
    return {int(m.group(1)) for k in state_dict for m in [_HEAD_KEY.match(k)] if m}


def _is_lgaf_checkpoint(state_dict):
    """IResNet keys plus the local branch's heads or the fusion's statistics."""
    return iresnet.is_iresnet_checkpoint(state_dict) and (
        bool(_local_heads(state_dict)) or any(k.startswith("fusion.") for k in state_dict))


def _lgaf_checkpoint_options(state_dict):
    heads = _local_heads(state_dict)
    if not heads or heads != set(range(max(heads) + 1)):
        raise ValueError(f"an LGAF checkpoint whose local heads are {sorted(heads)} (expected "
                         "local_branch.heads.0 .. heads.{b-1}).")
    return {"num_heads": len(heads)}


registry.register_family(registry.Family(
    name="lgaf_resnet",
    display="LGAF",
    module=__name__,
    builder="LGAFResNet",
    torch_modules=TORCH_MODULES,
    flatten_inputs={"fc": "bn2.weight", "proj_fc": "se.expand.weight"},
    checkpoint=registry.CheckpointLayout(
        recognize=_is_lgaf_checkpoint,
        block_key=r"^layer{stage}\.(\d+)\.",
        embedding_key="fc.weight",
        head_modules=("fc", "features", "local_branch", "fusion"),
        description="an LGAF network (IResNet keys + local_branch.heads.* + fusion.*)",
        options=_lgaf_checkpoint_options,
        priority=1,  # its keys contain an IResNet's: tried first
        filled_from={"iresnet": ("local_branch.", "fusion.")},
    ),
    reference="keras_fr.torch_reference.lgaf_torch:LGAFNet",
    reference_options=("embedding_size", "num_heads", "fusion", "dropout"),
))
# depth: (blocks, parameters as PyTorch counts them, (arrays, values) of the default .weights.h5).
registry.register_depths("lgaf_resnet", "LGAFResNet", {
    50: (iresnet.IRESNET_BLOCKS[50], 58299372, (558, 58341616)),
    100: (iresnet.IRESNET_BLOCKS[100], 79864684, (933, 79938416)),
}, specs.ARCFACE_112)
