"""The papers' configs shipped in configs/ are valid `keras-fr train` configs.

They point at data that is not here (MS1MV2, MS1MV3, WebFace4M as insightface RecordIO), so each is
checked in a copy of configs/ beside empty stand-ins for the files it names: every field goes through
`keras_fr.training.config.load_config`, the same check `keras-fr train` runs before training.
"""

import pathlib
import runpy
import shutil

import pytest

from keras_fr.training.config import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"
PAPER_CONFIGS = ["msconv_r50_ms1mv3.py", "lgaf_r100_ms1mv2.py", "lgaf_r100_webface4m.py"]


@pytest.fixture
def stand_in(tmp_path):
    """configs/ copied to tmp_path/configs, with empty files where each paper config wants data."""
    shutil.copytree(CONFIGS, tmp_path / "configs")
    for name in PAPER_CONFIGS:
        raw = runpy.run_path(str(tmp_path / "configs" / name))["config"]
        data = (tmp_path / "configs" / raw["data"]["path"]).resolve()
        data.mkdir(parents=True, exist_ok=True)
        for part in ("train.rec", "train.idx"):
            (data / part).touch()
        for entry in raw.get("evaluation") or []:
            (tmp_path / "configs" / entry).resolve().touch()
    return tmp_path / "configs"


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_pass_the_check(stand_in, name):
    cfg = load_config(stand_in / name)
    assert cfg.batch_size == 512 if name.startswith("lgaf") else cfg.batch_size > 0
    assert cfg.data["type"] == "recordio" and len(cfg.evaluation) == 3


def test_webface4m_is_the_ms1mv2_run_on_other_data(stand_in):
    ms1mv2 = load_config(stand_in / "lgaf_r100_ms1mv2.py")
    webface = load_config(stand_in / "lgaf_r100_webface4m.py")
    differ = {f for f in vars(ms1mv2) if getattr(ms1mv2, f) != getattr(webface, f)}
    assert differ == {"data", "evaluation", "output", "source"}
    assert webface.data["path"].endswith("webface4m") and webface.output.endswith("lgaf_r100_webface4m")
    assert webface.model["name"] == "lgaf_resnet100" and webface.loss == {"type": "arcface", "scale": 64.0, "margin": 0.4}
