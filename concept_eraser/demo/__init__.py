"""Recipes that train the bundled demo models and their judges (each rebuilt by one command)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class DemoRecipe:
    name: str
    title: str
    kind: str  # "ddpm-cond", "sd", or "judge"
    description: str
    module: str  # imported lazily: torch is heavy
    build: str  # generator function: build(out, seed=..., ctx=...) -> results dict
    judge: str | None = None

    def builder(self) -> Callable:
        import importlib

        return getattr(importlib.import_module(self.module), self.build)


DEMOS: dict[str, DemoRecipe] = {
    r.name: r
    for r in (
        DemoRecipe("digits", "Digits (class-conditional DDPM)", "ddpm-cond",
                   "16x16 digits 0-9 with classifier-free guidance; forget a digit by label or by examples.",
                   "concept_eraser.demo.digits", "build_digits", judge="digits-judge"),
        DemoRecipe("digits-judge", "Digits judge", "judge", "CNN classifier of real digits.",
                   "concept_eraser.demo.digits_judge", "build_digits_judge"),
        DemoRecipe("digits-onestep", "Digits one-step (SFD stage 1)", "ddpm-cond",
                   "The digits model distilled into a one-step generator (no forgetting); SFD runs start here.",
                   "concept_eraser.demo.digits_onestep", "build_digits_onestep", judge="digits-judge"),
        DemoRecipe("shapes", "Shapes (tiny Stable Diffusion)", "sd",
                   "32x32 captioned shapes: forget a shape, a colour or a texture by prompt.",
                   "concept_eraser.demo.shapes", "build_shapes", judge="shapes-judge"),
        DemoRecipe("shapes-onestep", "Shapes one-step (SFD stage 1)", "sd",
                   "The shapes model distilled into a one-step generator (no forgetting); SFD runs start here.",
                   "concept_eraser.demo.digits_onestep", "build_shapes_onestep", judge="shapes-judge"),
        DemoRecipe("shapes-judge", "Shapes judge", "judge", "Multi-head CNN: shape, colour, texture.",
                   "concept_eraser.demo.shapes_judge", "build_shapes_judge"),
    )
}
