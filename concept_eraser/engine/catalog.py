"""The bundled demo models, as the CLI and the GUI list them."""

from __future__ import annotations

from concept_eraser.demo import DEMOS
from concept_eraser.resources import judges_dir, models_dir
from concept_eraser.spec.summary import DemoModel


def demo_models() -> list[DemoModel]:
    out = []
    for r in DEMOS.values():
        path = judges_dir() / f"{r.name}.safetensors" if r.kind == "judge" else models_dir() / r.name
        available = path.is_file() if r.kind == "judge" else (path / "model_index.json").is_file()
        out.append(DemoModel(name=r.name, title=r.title, kind=r.kind, path=str(path), available=available,
                             description=r.description, judge=r.judge))
    return out
