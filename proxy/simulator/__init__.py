"""An LM Studio simulator speaking LM Studio's websocket protocol (for tests and --simulate)."""

from __future__ import annotations

from proxy.simulator.controls import Faults, Settings
from proxy.simulator.models import DEFAULT_MODELS, ModelSpec, load_model_file
from proxy.simulator.server import Simulator, build_app

__all__ = ["DEFAULT_MODELS", "Faults", "ModelSpec", "Settings", "Simulator", "build_app", "load_model_file"]
