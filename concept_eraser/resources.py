"""Where bundled resources live (demo models, judges, component configs, prompt lists). Torch-free."""

from __future__ import annotations

import os
from pathlib import Path

_REPO_RESOURCES = Path(__file__).resolve().parents[1] / "resources"


def resources_dir() -> Path:
    """CONCEPT_ERASER_RESOURCES overrides; otherwise the checkout's resources/ folder."""
    env = os.environ.get("CONCEPT_ERASER_RESOURCES")
    return Path(env) if env else _REPO_RESOURCES


def models_dir() -> Path:
    return resources_dir() / "models"


def judges_dir() -> Path:
    return resources_dir() / "judges"


def configs_dir() -> Path:
    return resources_dir() / "configs"
