"""concept_eraser: make a local diffusion model forget, and measure it."""

__version__ = "0.1.0"
