"""``FaceRecognizer``: from a photo to an identity (detect -> align -> embed -> decide).

The one object a user needs::

    fr = keras_fr.FaceRecognizer()                 # the best real pretrained model on this machine
    result = fr.verify("a.jpg", "b.jpg")          # score, threshold, decision, the FAR it stands for
    fr.enroll("alice", ["alice1.jpg", "alice2.jpg"]); fr.identify("who.jpg")

- **Weights.** ``weights=None`` means "the model's best preset available here"
  (``keras_fr.applications.weights.default_preset``); a model with none is an error unless
  ``random_weights=True`` says so explicitly. A random model is never used silently, and its
  decisions carry ``weights="random"``.
- **Input.** A photo (a path or an RGB/gray/RGBA uint8 array) is searched for faces
  (``keras_fr.detection``) and aligned the way the model expects (its ``InputSpec``: ArcFace 112x112 or
  dlib's 150x150 chip); ``aligned=True`` says the inputs are already ArcFace-aligned 112x112 crops
  (the layout of LFW/insightface sets), which are re-cropped for models with another alignment.
- **Runtime.** ``runtime="auto"`` (default) computes embeddings in the faster of a float32 TFLite
  file (XNNPACK) and an ONNX Runtime file of the model, both built once, checked against Keras
  (cosine >= 0.9999), timed at batch 1 and cached per model and weights-file hash
  (``keras_fr.recognition.runtime``); Keras when Keras was timed faster. ``"keras"``, ``"tflite"`` and
  ``"onnx"`` choose one. Keras stays the reference, and weights without a file (random) use it under
  ``"auto"``.
- **Scores** are cosine similarities of L2-normalized embeddings; "same person" means
  ``score >= threshold``. The threshold comes from the preset's calibration at the requested FAR
  (``far``, default 1e-3) unless ``threshold=`` is given; without either, verify/identify refuse to
  decide.
"""

import dataclasses
import os

import numpy as np

from keras_fr.applications import canonical_name, get_model
from keras_fr.applications.specs import input_spec
from keras_fr.applications.weights import choose_weights, get_manifest
from keras_fr.evaluation.calibration import parse_far_key
from keras_fr.preprocessing import align_face, as_rgb_image, dlib_face_chip, load_image
from keras_fr.recognition import runtime as _runtime
from keras_fr.recognition.gallery import Gallery

#: FAR of the default decision threshold.
DEFAULT_FAR = 1e-3
MULTI_FACE_POLICIES = ("largest", "central", "error")


class NoFaceError(ValueError):
    """No face was found in a photo."""


class ManyFacesError(ValueError):
    """Several faces were found and the policy says to refuse."""


@dataclasses.dataclass(frozen=True)
class Verification:
    """The answer of :meth:`FaceRecognizer.verify`.

    Attributes:
        score: cosine similarity of the two faces.
        threshold: the decision threshold (cosine).
        same: ``score >= threshold``.
        far: the false-accept rate the threshold stands for (None for a user-given threshold).
        calibrated_on: where the threshold was measured ("user threshold" when given by hand).
        weights: the weights used (preset tag, file, or "random").
    """

    score: float
    threshold: float
    same: bool
    far: float
    calibrated_on: str
    weights: str

    def __str__(self):
        verdict = "same person" if self.same else "different people"
        relation = ">=" if self.same else "<"
        origin = (
            f"FAR {self.far:.0e}, calibrated on {self.calibrated_on}" if self.far else self.calibrated_on
        )
        return f"{verdict}: score {self.score:.4f} {relation} {self.threshold:.4f} ({origin})"


@dataclasses.dataclass(frozen=True)
class Identification:
    """The answer of :meth:`FaceRecognizer.identify`.

    Attributes:
        name: the best match's name, or None ("unknown") when its score is below the threshold.
        score: the best match's cosine score.
        threshold: the open-set threshold used.
        candidates: ``[(name, score), ...]``, best first (top_k).
    """

    name: object
    score: float
    threshold: float
    candidates: list

    @property
    def known(self):
        return self.name is not None


class FaceRecognizer:
    """Detect, align, embed, verify and identify faces with one pretrained model.

    Args:
        model: registry or builder name (default ``"dlib_resnet"``, the real pretrained recognizer
            shipped with keras_fr), or a built ``keras.Model`` together with ``model_name``.
        weights: a preset tag or a ``.weights.h5`` / ``.keras`` file; ``None`` = the best preset
            available on this machine.
        random_weights: allow a model without real weights (random initialization), explicitly.
        far: FAR of the decision threshold taken from the preset's calibration (1e-2, 1e-3, 1e-4).
        threshold: a cosine threshold that overrides the calibrated one.
        detector: ``"auto"``, ``"hog"`` or ``"cnn"`` (see ``keras_fr.detection.detect_faces``).
        multi_face: which face to use when a photo holds several: ``"largest"``, ``"central"``, or
            ``"error"`` (raise :class:`ManyFacesError`).
        batch_size: embedding batch size.
        runtime: where embeddings are computed: ``"auto"`` (default: the faster of a verified, cached
            TFLite and ONNX file when the weights have a file, else Keras), ``"keras"``, ``"tflite"`` or ``"onnx"`` (see
            :mod:`keras_fr.recognition.runtime`).
        cache_dir: folder of the runtime files (default ``$KERAS_FR_CACHE/runtime``, else
            ``~/.cache/keras_fr/runtime``).

    Attributes:
        model: the Keras model (the reference).
        runtime: the :class:`keras_fr.recognition.runtime.InferenceRuntime` that computes embeddings
            (``runtime.name`` says which).

    Raises:
        ValueError: unknown model, no real weights without ``random_weights=True``, bad arguments
            (``runtime`` not one of the four, a runtime that cannot run here).
        RuntimeError: an explicit ``"tflite"``/``"onnx"`` file could not be built or does not
            reproduce the Keras model.
    """

    def __init__(
        self,
        model="dlib_resnet",
        weights=None,
        *,
        random_weights=False,
        far=DEFAULT_FAR,
        threshold=None,
        detector="auto",
        multi_face="largest",
        batch_size=32,
        model_name=None,
        runtime="auto",
        cache_dir=None,
    ):
        _runtime.check_runtime(runtime)
        if multi_face not in MULTI_FACE_POLICIES:
            raise ValueError(f"`multi_face` must be one of {MULTI_FACE_POLICIES}; got {multi_face!r}.")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}.")
        if threshold is not None and not -1.0 <= float(threshold) <= 1.0:
            raise ValueError(f"`threshold` is a cosine similarity in [-1, 1]; got {threshold!r}.")
        if isinstance(model, str):
            self.model_name = canonical_name(model)
            self.weights = self._resolve_weights(weights, random_weights)
            self.model = get_model(
                self.model_name, weights=None if self.weights == "random" else self.weights
            )
        else:
            if model_name is None:
                raise ValueError("a built `model` needs `model_name` (its registry name).")
            if weights is None and not random_weights:
                raise ValueError(
                    "a built `model` needs `weights` (what it was loaded with) or random_weights=True."
                )
            self.model_name = canonical_name(model_name)
            self.model = model
            self.weights = "random" if weights is None else os.fspath(weights)
        self.spec = input_spec(self.model_name)
        self.embedding_size = int(self.model.output.shape[-1])
        self._preprocess = self.spec.preprocess_fn()
        self.detector = detector
        self.multi_face = multi_face
        self.batch_size = int(batch_size)
        self.calibration = self._preset_calibration()
        self.far = float(far) if far is not None else None
        self.threshold_override = None if threshold is None else float(threshold)
        self.gallery = Gallery(self.embedding_size, model=self.model_name, weights=self.weights)
        self.runtime = _runtime.prepare_runtime(
            self.model,
            self.model_name,
            None if runtime == "keras" else _runtime.weights_sha256(self.model_name, self._weights_file()),
            runtime,
            cache_dir=cache_dir,
            input_size=self.spec.size,
            preprocess=self._preprocess,
        )

    # -- set-up ------------------------------------------------------------------------------------
    def _resolve_weights(self, weights, random_weights):
        return choose_weights(self.model_name, weights, random_weights)[1]

    def _weights_file(self):
        """What the weights were loaded from (a file or a preset tag), or None for random weights."""
        return None if self.weights == "random" else self.weights

    def _preset_calibration(self):
        """The ``calibration`` block of the preset's manifest, or None."""
        if self.weights == "random" or os.path.exists(self.weights) or self.weights.endswith(
            (".h5", ".keras")
        ):
            return None
        try:
            return get_manifest(self.model_name, self.weights).get("calibration")
        except ValueError:
            return None

    def threshold_for(self, far=None):
        """``(threshold, far, source)``: the decision threshold and where it comes from.

        Raises:
            ValueError: no threshold is known for these weights (pass ``threshold=``), or the preset
                was not calibrated at ``far``.
        """
        if self.threshold_override is not None:
            return self.threshold_override, None, "user threshold"
        far = self.far if far is None else float(far)
        if not self.calibration:
            raise ValueError(
                f"weights {self.weights!r} of {self.model_name} carry no calibrated threshold; pass "
                "threshold= (calibrate one on your own pairs with `keras-fr calibrate`)."
            )
        table = {parse_far_key(k): v for k, v in self.calibration["thresholds"].items()}
        if far not in table:
            known = ", ".join(f"{f:g}" for f in sorted(table))
            raise ValueError(f"`far` {far:g} is not calibrated for this preset; calibrated FARs: {known}.")
        return float(table[far]), far, self.calibration.get("set", "the preset's calibration set")

    # -- detection and alignment -------------------------------------------------------------------
    @staticmethod
    def _photo_array(photo):
        """(RGB uint8 array, how to name it in errors) from a path or a gray/RGB/RGBA uint8 array."""
        if isinstance(photo, (str, os.PathLike)):
            return load_image(photo), os.fspath(photo)
        return as_rgb_image(photo, "photo"), "the image"

    def detect(self, photo):
        """Every face in ``photo`` (``keras_fr.detection.DetectedFace`` list)."""
        from keras_fr.detection import detect_faces  # dlib is an optional extra: imported on use

        image, _ = self._photo_array(photo)
        return detect_faces(image, detector=self.detector)

    def _choose_face(self, faces, image, where):
        from keras_fr.detection import select_face  # dlib: see above

        if not faces:
            raise NoFaceError(f"no face found in {where}.")
        if len(faces) > 1 and self.multi_face == "error":
            raise ManyFacesError(
                f"{len(faces)} faces found in {where}; choose one with multi_face='largest' or 'central' "
                "(--face largest|central)."
            )
        if len(faces) == 1:
            return faces[0]
        policy = "largest" if self.multi_face == "error" else self.multi_face
        return select_face(faces, image.shape, policy=policy)

    def align(self, photo, face=None):
        """The crop of one face of ``photo`` that this model expects (uint8, size x size x 3)."""
        image, where = self._photo_array(photo)
        if face is None:
            from keras_fr.detection import detect_faces  # dlib: see above

            face = self._choose_face(detect_faces(image, detector=self.detector), image, where)
        if self.spec.alignment == "dlib_chip":
            points = face.shape68 if getattr(face, "shape68", None) is not None else face.landmarks
            return dlib_face_chip(image, points, size=self.spec.size)
        return align_face(image, face.landmarks, image_size=self.spec.size)

    def _from_aligned(self, crop, where):
        crop = np.asarray(crop)
        if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
            raise ValueError(
                f"{where}: an aligned face must be an RGB uint8 array (H, W, 3); got {crop.dtype} {crop.shape}."
            )
        if crop.shape[0] != crop.shape[1]:
            raise ValueError(f"{where}: an aligned face must be square (ArcFace 112x112); got {crop.shape}.")
        return self.spec.crops_from_arcface(crop[None])[0]

    def _crops(self, images, aligned):
        if isinstance(images, (str, os.PathLike)) or (
            isinstance(images, np.ndarray) and images.ndim in (2, 3)
        ):
            images = [images]
        crops = []
        for item in images:
            if aligned:
                array, where = self._photo_array(item)
                crops.append(self._from_aligned(array, where))
            else:
                crops.append(self.align(item))
        if not crops:
            raise ValueError("no images given.")
        return np.stack(crops)

    # -- embedding and decisions -------------------------------------------------------------------
    def embed_crops(self, crops):
        """L2-normalized embeddings of crops already in this model's input geometry (N, size, size, 3)."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (self.spec.size, self.spec.size, 3):
            raise ValueError(
                f"crops must have shape (N, {self.spec.size}, {self.spec.size}, 3); got {crops.shape}."
            )
        out = []
        for start in range(0, len(crops), self.batch_size):
            batch = self._preprocess(crops[start : start + self.batch_size].astype(np.float32))
            out.append(np.asarray(self.runtime(batch), dtype=np.float32))
        emb = np.concatenate(out)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return emb / np.maximum(norms, 1e-12)

    def embed(self, images, aligned=False):
        """Embeddings (N, D), L2-normalized, of photos (detected and aligned here) or aligned crops.

        Args:
            images: one photo/crop or a list of them (paths or uint8 arrays).
            aligned: True when the inputs are ArcFace-aligned 112x112 crops.
        """
        return self.embed_crops(self._crops(images, aligned))

    def verify(self, a, b, aligned=False, far=None):
        """Are ``a`` and ``b`` the same person? Returns a :class:`Verification`."""
        threshold, far_used, source = self.threshold_for(far)
        emb = self.embed([a, b], aligned=aligned)
        score = float(np.dot(emb[0], emb[1]))
        return Verification(score, threshold, score >= threshold, far_used, source, self.weights)

    def enroll(self, name, photos, aligned=False):
        """Add the faces in ``photos`` to the gallery under ``name``; returns how many were added."""
        emb = self.embed(photos, aligned=aligned)
        self.gallery.add(name, emb)
        return int(emb.shape[0])

    def load_gallery(self, path):
        """Replace the gallery with the one in ``path`` (it must come from this model)."""
        self.gallery = Gallery.load(path, model=self.model_name, embedding_size=self.embedding_size)
        return self.gallery

    def identify(self, photo, top_k=5, aligned=False, far=None):
        """Who is in ``photo``? Open-set: below the threshold the answer is "unknown" (``name=None``)."""
        threshold, _, _ = self.threshold_for(far)
        emb = self.embed(photo, aligned=aligned)
        candidates = self.gallery.search(emb, top_k=top_k)[0]
        best_name, best_score = candidates[0]
        name = best_name if best_score >= threshold else None
        return Identification(name, best_score, threshold, candidates)
