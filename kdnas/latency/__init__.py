"""kdnas.latency: trustworthy latency on the target hardware — backends, isolated workers, cache, predictor.

Light to import (no torch until something is measured); see docs/latency.md.
"""

from __future__ import annotations

from kdnas.latency.api import (
    SideBySide,
    load_teacher_config,
    measure,
    measure_arch,
    measure_archs,
    measure_many,
    measure_model_dir,
    measure_side_by_side,
    measure_teacher,
)
from kdnas.latency.backends import LatencyBackend, get_backend, known_backends, register_backend
from kdnas.latency.cache import LatencyCache
from kdnas.latency.calibrate import Calibration, calibrate, load_predictor
from kdnas.latency.config import TargetConfig
from kdnas.latency.fingerprint import Fingerprint, fingerprint
from kdnas.latency.predictor import Accuracy, LatencyPredictor
from kdnas.latency.result import LatencyResult, Shape
from kdnas.latency.spec import ModelSpec
from kdnas.latency.stats import TimingSettings

__all__ = [
    "Accuracy",
    "Calibration",
    "Fingerprint",
    "LatencyBackend",
    "LatencyCache",
    "LatencyPredictor",
    "LatencyResult",
    "ModelSpec",
    "Shape",
    "SideBySide",
    "TargetConfig",
    "TimingSettings",
    "calibrate",
    "fingerprint",
    "get_backend",
    "known_backends",
    "load_predictor",
    "load_teacher_config",
    "measure",
    "measure_arch",
    "measure_archs",
    "measure_many",
    "measure_model_dir",
    "measure_side_by_side",
    "measure_teacher",
    "register_backend",
]
