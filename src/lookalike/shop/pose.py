"""Person keypoints from a photo, behind a small interface so another detector can replace MediaPipe.

    detector = get_detector()                 # "mediapipe" (needs the [shop] extra)
    people = detector.detect(pil_rgb_image)   # list[Person], most prominent first

A :class:`Person` holds 33 keypoints in the BlazePose order (``LANDMARKS``) as pixel coordinates
plus a visibility in [0, 1], and optionally a person-segmentation mask of the image's size. Any
detector that fills those fields works with :mod:`lookalike.shop.regions` and :mod:`lookalike.shop.pipeline`
(COCO-17 detectors: put their points at the matching names and leave the rest at visibility 0).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
from PIL import Image

LANDMARKS = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
    "left_foot_index", "right_foot_index",
)
INDEX = {name: i for i, name in enumerate(LANDMARKS)}

# The legacy solution's pose model runs on a 256-px crop; bigger inputs only cost time, so photos
# are downscaled to this long side before detection and the keypoints scaled back.
DETECT_LONG_SIDE = 1024
MEDIAPIPE_INSTALL = ('pip install "lookalike[shop]" && pip install --no-deps mediapipe==0.10.21')


class DetectorUnavailable(RuntimeError):
    """The pose detector's package is not installed (message says how to install it)."""


@dataclass
class Person:
    """One detected person: ``keypoints`` is (33, 3) = x px, y px, visibility; ``mask`` (H, W) in [0, 1]."""

    keypoints: np.ndarray
    mask: np.ndarray | None = None
    score: float = 1.0
    extra: dict = field(default_factory=dict)

    def point(self, name: str) -> tuple[float, float, float]:
        x, y, v = self.keypoints[INDEX[name]]
        return float(x), float(y), float(v)

    def box(self, min_visibility: float = 0.5) -> tuple[float, float, float, float] | None:
        """Bounds of the visible keypoints (x0, y0, x1, y1), or None when none is visible."""
        seen = self.keypoints[self.keypoints[:, 2] >= min_visibility]
        if len(seen) == 0:
            return None
        return float(seen[:, 0].min()), float(seen[:, 1].min()), float(seen[:, 0].max()), float(seen[:, 1].max())


def mediapipe_installed() -> bool:
    """Whether the MediaPipe detector can load (its package is importable); imports nothing."""
    return importlib.util.find_spec("mediapipe") is not None


class PoseDetector(Protocol):
    """What the shop-the-look pipeline needs from a detector."""

    name: str

    def detect(self, image: Image.Image, max_people: int = 1) -> list[Person]:
        """People in an RGB image, most prominent first, at most ``max_people``."""
        ...


class MediaPipePose:
    """BlazePose (``mediapipe==0.10.21`` legacy ``solutions.pose``, model_complexity=1: the only
    variant whose weights ship inside the wheel, so it runs offline).

    The legacy solution finds ONE person per call. For ``max_people > 1`` we run it again after
    painting out every person already found (their mask, or their keypoint box), until it finds no
    one new — a few calls, each ~0.3–1 s on a 2-core CPU.
    """

    name = "mediapipe"

    def __init__(self, segmentation: bool = True, min_detection_confidence: float = 0.5, quiet: bool = True):
        self.segmentation = segmentation
        self.quiet = quiet
        self.min_detection_confidence = min_detection_confidence
        self._pose = None
        self._lock = threading.Lock()  # one MediaPipe graph: calls from API threads take turns

    def _model(self):
        if self._pose is None:
            os.environ.setdefault("GLOG_minloglevel", "2")  # quieten the C++ logging
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            try:
                from mediapipe.python.solutions import pose as mp_pose
            except ImportError as exc:
                raise DetectorUnavailable(f"the pose model needs mediapipe 0.10.21 ({exc}); install it with: "
                                          f"{MEDIAPIPE_INSTALL}") from None
            with _quiet_stderr(self.quiet):
                self._pose = mp_pose.Pose(static_image_mode=True, model_complexity=1,
                                          enable_segmentation=self.segmentation,
                                          min_detection_confidence=self.min_detection_confidence)
        return self._pose

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._pose = None

    def detect(self, image: Image.Image, max_people: int = 1) -> list[Person]:
        scale = min(1.0, DETECT_LONG_SIDE / max(image.size))
        small = image if scale == 1.0 else image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
        pixels = np.array(small.convert("RGB"), dtype=np.uint8)
        people: list[Person] = []
        with self._lock:
            for _ in range(max(1, max_people)):
                person = self._detect_one(pixels)
                if person is None or _overlaps_known(person, people):
                    break
                people.append(person)
                _paint_out(pixels, person)
        return [_rescale(p, 1.0 / scale, image.size) for p in people]

    def _detect_one(self, pixels: np.ndarray) -> Person | None:
        model = self._model()
        with _quiet_stderr(self.quiet):
            result = model.process(pixels)
        if result.pose_landmarks is None:
            return None
        h, w = pixels.shape[:2]
        points = np.array([(lm.x * w, lm.y * h, lm.visibility) for lm in result.pose_landmarks.landmark],
                          dtype=np.float32)
        mask = None
        if getattr(result, "segmentation_mask", None) is not None:
            mask = np.asarray(result.segmentation_mask, dtype=np.float32).copy()
        return Person(keypoints=points, mask=mask, score=float(np.mean(points[:, 2])))


@contextlib.contextmanager
def _quiet_stderr(enabled: bool = True):
    """Silence the C++ (glog/TFLite) lines MediaPipe writes straight to file descriptor 2."""
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _overlaps_known(person: Person, people: list[Person]) -> bool:
    """A repeat detection of someone already painted out (the model sometimes still sees them)."""
    box = person.box()
    return box is None or any(box_iou(box, p.box() or (0, 0, 0, 0)) > 0.3 for p in people)


def _paint_out(pixels: np.ndarray, person: Person) -> None:
    """Hide a found person (mask > 0.3, else keypoint box) under the image's mean colour."""
    fill = pixels.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    if person.mask is not None and (person.mask > 0.3).any():
        pixels[person.mask > 0.3] = fill
        return
    box = person.box()
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        pad = max(x1 - x0, y1 - y0) // 5
        pixels[max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad] = fill


def _rescale(person: Person, factor: float, size: tuple[int, int]) -> Person:
    if factor == 1.0:
        return person
    points = person.keypoints.copy()
    points[:, :2] *= factor
    mask = person.mask
    if mask is not None:
        mask = np.asarray(Image.fromarray(mask, "F").resize(size, Image.BILINEAR), dtype=np.float32)
    return Person(keypoints=points, mask=mask, score=person.score, extra=person.extra)


def box_iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


_DETECTORS: dict[str, Callable[..., PoseDetector]] = {"mediapipe": MediaPipePose}
_CACHE: dict[tuple, PoseDetector] = {}


def register_detector(name: str, factory: Callable[..., PoseDetector]) -> None:
    """Make another detector available by name (e.g. an ONNX keypoint model)."""
    _DETECTORS[name] = factory


def get_detector(name: str = "mediapipe", **options) -> PoseDetector:
    """A shared detector instance (model loading is the slow part, so reuse it across photos)."""
    if name not in _DETECTORS:
        raise ValueError(f"unknown pose detector {name!r}; known: {', '.join(sorted(_DETECTORS))}")
    key = (name, tuple(sorted(options.items())))
    if key not in _CACHE:
        _CACHE[key] = _DETECTORS[name](**options)
    return _CACHE[key]


def mediapipe_available() -> bool:
    try:
        from mediapipe.python.solutions import pose  # noqa: F401
    except Exception:
        return False
    return True
