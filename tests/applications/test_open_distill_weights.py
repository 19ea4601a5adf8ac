"""keras_fr's own published MSConvResNet50 weights (``msconv_resnet50`` / ``open_distill``, issue 14).

- the file ships with the package and loads by tag with nothing else configured (no
  ``$KERAS_FR_WEIGHTS_DIR``, no download source), checked against the manifest's sha256;
- LFW View 2, all 6,000 pairs, 10 folds, measured with ``keras_fr.evaluation`` on the network that
  ``MSConvResNet50(weights="open_distill")`` builds: at least the publishing bar (90%), and the figure
  the manifest (and README) state, to within a few pairs (the manifest's figure was measured through
  ``FaceRecognizer``, whose runtime may be the verified TFLite file rather than Keras);
- the int8 TFLite file of these trained weights passes the exporter's own check (cosine >= 0.98 to
  Keras on face images): random weights did not catch an int8 formulation that failed on these.

LFW is never committed: those tests skip when ../shared/data is absent.
"""

import json
import pathlib

import numpy as np
import pytest

import keras_fr
from keras_fr.applications import weights as registry

pytestmark = pytest.mark.large

ROOT = pathlib.Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "weights" / "msconv_resnet50_open_distill.json"
CALIBRATION_FACES = ROOT.parent / "shared" / "data" / "faces_distill" / "images" / "utkface"


@pytest.fixture(scope="module")
def manifest():
    return json.loads(MANIFEST.read_text())


@pytest.fixture(scope="module")
def model():
    return keras_fr.applications.MSConvResNet50(weights="open_distill")


def test_the_file_ships_and_matches_its_hash(manifest, monkeypatch):
    monkeypatch.delenv(registry.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.delenv(registry.WEIGHTS_URL_ENV, raising=False)
    assert manifest["published"] is True and "status" not in manifest
    path = registry.get_weights_file("msconv_resnet50", "open_distill")
    assert pathlib.Path(path).name == manifest["file"]
    assert registry.file_sha256(path) == manifest["sha256"]
    assert pathlib.Path(path).stat().st_size <= 70e6  # the size limit


def test_lfw_accuracy_is_the_published_figure(model, manifest, lfw_dir):
    from keras_fr.evaluation import evaluate_pairs

    result = evaluate_pairs(model, lfw_dir, batch_size=64, flip=False, verbose=0)
    accuracy = 100 * result.accuracy
    assert result.n_pairs == 6000 and result.nfolds == 10
    assert accuracy >= 90.0, f"LFW {accuracy:.2f}% is below the publishing bar"
    stated = manifest["metrics"]["measured_here"]["lfw"]["accuracy"]
    assert abs(accuracy - stated) <= 0.1, f"measured {accuracy:.2f}%, the manifest says {stated}%"


def test_int8_tflite_of_the_trained_weights_passes_the_export_check(model, tmp_path):
    if not CALIBRATION_FACES.is_dir():
        pytest.skip(f"calibration faces not found at {CALIBRATION_FACES} (never committed)")
    from keras_fr import export

    path = tmp_path / "open_distill_int8.tflite"
    report = export.to_tflite(model, path, quantize="int8", representative_data=str(CALIBRATION_FACES))
    assert path.is_file() and report.min_cosine >= 0.98
    assert np.isfinite(report.min_cosine)
