"""Package-level behaviour: what `import keras_fr` promises."""

import os
import subprocess
import sys
import textwrap

import pytest


def _run(code, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_keras_fr_is_enough_to_load_saved_models(tmp_path):
    """A fresh process that only does `import keras_fr` can load .keras files of every family."""
    save = _run(
        f"""
        import keras
        from keras_fr.applications import MSConvResNet26, LGAFResNet
        MSConvResNet26(input_shape=(32, 32, 3)).save({str(tmp_path / 'ms.keras')!r})
        LGAFResNet(blocks=(1, 1, 1, 1)).save({str(tmp_path / 'lgaf.keras')!r})
        """,
        tmp_path,
    )
    assert save.returncode == 0, save.stderr[-2000:]
    load = _run(
        f"""
        import keras, keras_fr
        for name in ("ms.keras", "lgaf.keras"):
            model = keras.saving.load_model({str(tmp_path)!r} + "/" + name, safe_mode=True)
            print(name, model.name)
        """,
        tmp_path,
    )
    assert load.returncode == 0, load.stderr[-2000:]
    assert "ms.keras" in load.stdout and "lgaf.keras" in load.stdout


def test_registry_names_build_and_unknown_name_is_clear():
    from keras_fr import applications

    assert set(applications.MODELS) >= {"msconv_resnet50", "iresnet100", "lgaf_resnet100"}
    for name in applications.MODELS:
        assert callable(applications.get_builder(name)), name
    with pytest.raises(ValueError, match="known models: .*iresnet50"):
        applications.get_builder("resnet50")


def test_count_parameters_excludes_buffers_only():
    import keras

    from keras_fr.applications import count_parameters

    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(2, 1, use_bias=False)(inputs)  # 6 parameters
    x = keras.layers.BatchNormalization()(x)  # 4 parameters + 4 buffers
    model = keras.Model(inputs, x)
    model.layers[-1].gamma.trainable = False  # frozen parameters still count
    assert count_parameters(model) == 10
    assert model.count_params() == 14


def test_documents_the_code_cites_are_in_the_repository():
    """Every Markdown document (``*.md``) the code and tests cite must exist in the repository:
    a citation of a document that only lives outside it (a brief, a shared folder) cannot be read by
    whoever carries the code on."""
    import pathlib
    import re

    repo = pathlib.Path(__file__).resolve().parents[1]
    cited = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")
    missing = []
    for folder in ("keras_fr", "torch_reference", "tests", "scripts", "benchmarks", "examples"):
        for path in (repo / folder).rglob("*.py"):
            for name in cited.findall(path.read_text(encoding="utf-8")):
                if name.startswith(("../", "shared/")) or (repo / name).exists():
                    continue
                if not list(repo.glob(f"**/{name}")):
                    missing.append(f"{path.relative_to(repo)}: {name}")
    assert not missing, missing
