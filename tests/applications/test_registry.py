"""The model registry: one record per network, and a family added by one module.

The toy family below is what a contributor writes to add a family: a Keras builder, a PyTorch twin,
and the registration. Everything else (``get_model`` by either name, ``keras-fr info`` and
``--model``, checkpoint recognition, conversion in both directions with strict accounting, the
reference network, export) must then work without touching any other file of the package.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import keras  # noqa: E402

from keras_fr import cli  # noqa: E402
from keras_fr.applications import common, get_model, registry, specs  # noqa: E402
from keras_fr.conversion import convert_checkpoint, export_state_dict, infer_architecture  # noqa: E402
from keras_fr.conversion.readers import CheckpointError  # noqa: E402

TOY_SIZE = 32
TOY_EMBEDDING = 16
WIDTHS = (8, 16)


# -- the toy family: Keras side ------------------------------------------------------------------
def _bn(name):
    return keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name)


def ToyNet(blocks, model_name="toy_net", *, include_top=True, weights=None, input_tensor=None,
           input_shape=None, pooling=None, embedding_size=TOY_EMBEDDING, name=None):
    common.check_builder_args(include_top, weights, pooling, embedding_size)
    img_input, model_inputs = common.obtain_input(input_tensor, input_shape or (TOY_SIZE, TOY_SIZE, 3))
    x = keras.layers.ZeroPadding2D(1)(img_input)
    x = keras.layers.Conv2D(WIDTHS[0], 3, strides=2, use_bias=False, name="stem_0")(x)
    x = _bn("stem_1")(x)
    for stage, count in enumerate(blocks, start=1):
        for block in range(count):
            prefix = f"stage{stage}_{block}"
            stride = 2 if block == 0 and stage > 1 else 1
            if stride == 2:
                x = keras.layers.ZeroPadding2D(1)(x)
            x = keras.layers.Conv2D(WIDTHS[stage - 1], 3, strides=stride, use_bias=False,
                                    padding="same" if stride == 1 else "valid", name=f"{prefix}_conv")(x)
            x = _bn(f"{prefix}_norm_layer")(x)  # an underscore inside a module name, declared below
            x = keras.layers.PReLU(shared_axes=[1, 2], name=f"{prefix}_act")(x)

    def head(x):
        x = common.global_pooling(x, "avg")
        return keras.layers.Dense(embedding_size, name="embed_fc")(x)

    return common.finish_model(model_inputs, x, head=head if include_top else None, pooling=pooling,
                               name=name, model_name=model_name, weights=weights,
                               full_model=lambda: ToyNet(blocks, model_name, embedding_size=embedding_size))


def ToyNet2(*, include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
            embedding_size=TOY_EMBEDDING, name=None):
    return ToyNet((1, 1), "toy_net2", **locals())


def ToyNet3(*, include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
            embedding_size=TOY_EMBEDDING, name=None):
    return ToyNet((2, 1), "toy_net3", **locals())


# -- the toy family: PyTorch side ----------------------------------------------------------------
class ToyBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm_layer = nn.BatchNorm2d(cout)
        self.act = nn.PReLU(cout)

    def forward(self, x):
        return self.act(self.norm_layer(self.conv(x)))


class ToyTorchNet(nn.Module):
    def __init__(self, *, blocks, embedding_size=TOY_EMBEDDING):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, WIDTHS[0], 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(WIDTHS[0]))
        cin = WIDTHS[0]
        for stage, count in enumerate(blocks, start=1):
            units = []
            for block in range(count):
                units.append(ToyBlock(cin, WIDTHS[stage - 1], 2 if block == 0 and stage > 1 else 1))
                cin = WIDTHS[stage - 1]
            setattr(self, f"stage{stage}", nn.Sequential(*units))
        self.embed_fc = nn.Linear(cin, embedding_size)
        self.num_stages = len(blocks)

    def forward(self, x):
        x = self.stem(x)
        for stage in range(1, self.num_stages + 1):
            x = getattr(self, f"stage{stage}")(x)
        return self.embed_fc(x.mean(dim=(2, 3)))


def _is_toy_checkpoint(state_dict):
    return "stem.0.weight" in state_dict and "embed_fc.weight" in state_dict


TOY_FAMILY = registry.Family(
    name="toy_net",
    display="Toy (test family)",
    module=__name__,
    builder="ToyNet",
    torch_modules=("stem.{}", "stage{}.{}.conv", "stage{}.{}.norm_layer", "stage{}.{}.act", "embed_fc"),
    checkpoint=registry.CheckpointLayout(
        recognize=_is_toy_checkpoint,
        # Two stages only: the stage-3/4 patterns find no keys and count 0 blocks.
        block_key=r"^stage{stage}\.(\d+)\.",
        embedding_key="embed_fc.weight",
        head_modules=("embed_fc",),
        description="a toy network (stem.*, stage1..2.*, embed_fc)",
    ),
    reference=f"{__name__}:ToyTorchNet",
    reference_options=("embedding_size",),
)
TOY_SPEC = specs.InputSpec(size=TOY_SIZE, alignment="arcface", preprocess="keras_fr.applications.common:preprocess_input",
                           embedding_size=TOY_EMBEDDING, description="32x32 RGB (test family)")


def _record(name, builder, blocks):
    return registry.ModelRecord(name=name, builder=builder, family="toy_net", blocks=blocks + (0, 0),
                                input_spec=TOY_SPEC, embedding_size=TOY_EMBEDDING, parameters=None)


@pytest.fixture()
def toy_family():
    registry.register_family(TOY_FAMILY)
    registry.register_model(_record("toy_net2", "ToyNet2", (1, 1)))
    registry.register_model(_record("toy_net3", "ToyNet3", (2, 1)))
    yield
    registry.unregister_family("toy_net")


def _torch_net(blocks, seed=0):
    torch.manual_seed(seed)
    net = ToyTorchNet(blocks=blocks)
    with torch.no_grad():  # non-trivial BatchNorm statistics and PReLU slopes
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, nn.PReLU):
                m.weight.uniform_(0.05, 0.4)
    return net.eval()


def _images(n=3, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (n, TOY_SIZE, TOY_SIZE, 3)).astype("float32")


def _torch_out(net, images):
    with torch.no_grad():
        return net(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()


# -- tests ---------------------------------------------------------------------------------------
def test_builtin_records_are_complete():
    names = [r.name for r in registry.records()]
    assert {"msconv_resnet50", "iresnet100", "lgaf_resnet100", "dlib_resnet"} <= set(names)
    for record in registry.records():
        fam = registry.family(record.family)
        assert record.parameters > 0 and record.embedding_size > 0, record.name
        assert record.input_spec.size in (112, 150), record.name
        assert callable(registry.get_builder(record.name)), record.name
        assert fam.name == record.family
    assert registry.get_record("MSConvResNet50").blocks == (3, 4, 6, 3)
    assert registry.get_record("lgaf_resnet100").blocks == registry.get_record("iresnet100").blocks
    assert specs.input_spec("dlib_resnet") is specs.DLIB_CHIP_150


def test_registering_a_clashing_name_is_refused(toy_family):
    with pytest.raises(ValueError, match="already registered"):
        registry.register_family(registry.Family(name="toy_net", display="x", module="m", builder="B"))
    with pytest.raises(ValueError, match="already used by 'toy_net2'"):
        registry.register_model(_record("toy_net9", "ToyNet2", (3, 3)))
    with pytest.raises(ValueError, match="register its family"):
        registry.register_model(registry.ModelRecord("other1", "Other1", "nope", (), TOY_SPEC, 4, 1))
    # The same record again is harmless (a module imported twice).
    registry.register_model(_record("toy_net2", "ToyNet2", (1, 1)))


def test_a_new_family_is_reachable_by_both_names(toy_family):
    import keras_fr.applications as applications

    a = get_model("toy_net2", weights=None)
    b = get_model("ToyNet2", weights=None)
    assert a.name == b.name == "toy_net2"
    assert a.output_shape == (None, TOY_EMBEDDING)
    assert applications.ToyNet3 is ToyNet3 and "ToyNet3" in applications.__all__
    assert specs.input_spec("toy_net3").size == TOY_SIZE
    headless = get_model("toy_net3", weights=None, include_top=False, pooling="avg")
    assert headless.output_shape == (None, WIDTHS[1])


def test_a_new_family_is_listed_by_info(toy_family, capsys):
    assert cli.main(["info", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["models"]}
    assert rows["toy_net3"]["family"] == "Toy (test family)"
    assert rows["toy_net3"]["input_size"] == [TOY_SIZE, TOY_SIZE, 3]
    assert cli.main(["info", "--model", "ToyNet3", "--json"]) == 0
    details = json.loads(capsys.readouterr().out)["model"]
    assert details["parameters"] == sum(p.numel() for p in ToyTorchNet(blocks=(2, 1)).parameters())


def test_a_new_family_converts_both_ways_strictly(toy_family, tmp_path):
    from keras_fr.torch_reference import build_reference

    net = _torch_net((2, 1))
    path = tmp_path / "toy.pt"
    torch.save(net.state_dict(), path)
    spec = infer_architecture({k: v.numpy() for k, v in net.state_dict().items()})
    assert (spec.family, spec.model_name, spec.embedding_size) == ("toy_net", "toy_net3", TOY_EMBEDDING)

    model, report = convert_checkpoint(path, return_report=True)
    assert model.name == "toy_net3" and not report.missing and not report.unexpected
    images = _images()
    expected = _torch_out(net, images)
    got = np.asarray(model(images, training=False))
    np.testing.assert_allclose(got, expected, atol=2e-5 * np.abs(expected).max())

    # Keras -> PyTorch: every key produced by the same rule, loaded strictly into a fresh twin.
    exported = export_state_dict(model)
    fresh = build_reference("toy_net3")
    fresh.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in exported.items()}, strict=True)
    np.testing.assert_allclose(_torch_out(fresh.eval(), images), expected, atol=2e-5 * np.abs(expected).max())
    assert "stage1.1.norm_layer.running_var" in exported  # the underscore stays inside the module name


def test_a_new_family_checkpoint_of_unknown_blocks_names_the_family(toy_family):
    state = {k: v.numpy() for k, v in _torch_net((3, 1)).state_dict().items()}
    with pytest.raises(CheckpointError, match=r"a toy network .* blocks per stage \(3, 1, 0, 0\).*toy_net2"):
        infer_architecture(state)


def test_an_undeclared_module_name_fails_instead_of_mapping_wrongly(toy_family):
    from keras_fr.conversion.mapping import NameRuleError

    # `stage1_0_norm_layer` is declared; a module the family did not declare, with two words in a
    # row, has no unambiguous reading and must be refused, naming the layer.
    inputs = keras.Input((TOY_SIZE, TOY_SIZE, 3))
    x = keras.layers.Conv2D(4, 3, name="stage1_0_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stage1_0_extra_norm")(x)
    with pytest.raises(NameRuleError, match="stage1_0_extra_norm"):
        export_state_dict(keras.Model(inputs, x))


def test_a_new_family_exports(toy_family, tmp_path):
    from keras_fr.export import to_onnx, to_tflite

    model = get_model("toy_net2", weights=None)
    tflite = to_tflite(model, tmp_path / "toy.tflite")
    onnx = to_onnx(model, tmp_path / "toy.onnx")
    assert (tmp_path / "toy.tflite").stat().st_size > 0 and (tmp_path / "toy.onnx").stat().st_size > 0
    assert tflite.verified and onnx.verified


def test_unregistering_leaves_the_builtin_families():
    before = [r.name for r in registry.records()]
    registry.register_family(TOY_FAMILY)
    registry.register_model(_record("toy_net2", "ToyNet2", (1, 1)))
    registry.unregister_family("toy_net")
    assert [r.name for r in registry.records()] == before
    with pytest.raises(ValueError, match="Unknown model 'toy_net2'"):
        get_model("toy_net2")
