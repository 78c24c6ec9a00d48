"""The bundled demo models, as the CLI and the GUI list them."""

from __future__ import annotations

from concept_eraser.demo import DEMOS
from concept_eraser.resources import judges_dir, models_dir
from concept_eraser.spec.summary import DemoModel


def retain_presets(name: str) -> dict[str, list[str]]:
    """Ready-made retain sets for the Keep step (GUI): an empty list on a class model = all classes not forgotten."""
    if name == "digits":
        return {"All other digits": [], "A few digits (1, 5, 7, 8)": ["1", "5", "7", "8"], "Round digits (0, 6, 8, 9)":
                ["0", "6", "8", "9"]}
    if name == "shapes":
        from concept_eraser.demo.shapes_data import caption

        return {
            "Other shapes": [caption(s, "red", "solid") for s in ("square", "triangle", "star")],
            "Other colours": [caption("circle", c, "solid") for c in ("green", "blue", "yellow")],
            "Other textures": [caption("square", "blue", t) for t in ("striped", "outlined")],
        }
    return {}


def demo_models() -> list[DemoModel]:
    out = []
    for r in DEMOS.values():
        path = judges_dir() / f"{r.name}.safetensors" if r.kind == "judge" else models_dir() / r.name
        available = path.is_file() if r.kind == "judge" else (path / "model_index.json").is_file()
        out.append(DemoModel(name=r.name, title=r.title, kind=r.kind, path=str(path), available=available,
                             description=r.description, judge=r.judge,
                             extra={"retain_presets": retain_presets(r.name)} if r.kind != "judge" else {}))
    return out
