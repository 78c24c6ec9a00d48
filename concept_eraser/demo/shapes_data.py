"""Procedural, captioned shapes for the `shapes` demo (a small UnlearnCanvas): shape x colour x texture.

Everything is deterministic from a seed (numpy's Generator). Images are drawn at 32x32 with
anti-aliased edges: one shape of random size, position and rotation on a light,
slightly tinted background. Textures are coarse so that they survive a x4 VAE: solid fill, wide
stripes at a random angle, and an outline (hollow shape).

Captions come from varied templates; a fraction of training captions use synonyms (crimson = red,
stripy = striped, ...). The vocabulary below is plain data that the evaluation code uses to build
base and paraphrased prompts (`caption`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 32

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = ("red", "green", "blue", "yellow")
TEXTURES = ("solid", "striped", "outlined")
HEADS = {"shape": SHAPES, "colour": COLOURS, "texture": TEXTURES}

# Base RGB of each colour; each drawing jitters it a little.
RGB = {"red": (215, 35, 35), "green": (30, 160, 55), "blue": (35, 70, 215), "yellow": (235, 190, 0)}

# Synonyms (paraphrases) per base word. Training captions use one in a fraction of cases.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("crimson", "scarlet"),
    "green": ("emerald",),
    "blue": ("azure", "navy"),
    "yellow": ("golden",),
    "circle": ("disk",),
    "square": ("box",),
    "striped": ("stripy", "banded"),
    "outlined": ("hollow",),
    "solid": ("filled",),
}

# Caption templates: {c} colour, {t} texture adjective, {s} shape, {tp} texture phrase.
TEMPLATES = (
    "a {c} {t} {s}",
    "a {t} {c} {s}",
    "a drawing of a {c} {t} {s}",
    "a {s}, {c}, {tp}",
    "{c} {s} {tp}",
    "a picture of a {t} {s} in {c}",
)
# Texture phrases (after the shape): {t} is the (possibly synonymous) adjective.
TEXTURE_PHRASES = {"solid": "{t}", "striped": "with stripes", "outlined": "{t}"}

SYNONYM_RATE = 0.25  # share of training captions that replace each replaceable word by a synonym


@dataclass(frozen=True)
class ShapeAttrs:
    shape: int
    colour: int
    texture: int

    @property
    def names(self) -> tuple[str, str, str]:
        return SHAPES[self.shape], COLOURS[self.colour], TEXTURES[self.texture]


def vocabulary() -> dict:
    """The attribute vocabulary as JSON-able data (stored in the model's concept_eraser.json)."""
    return {"shapes": list(SHAPES), "colours": list(COLOURS), "textures": list(TEXTURES),
            "synonyms": {k: list(v) for k, v in SYNONYMS.items()}, "templates": list(TEMPLATES),
            "texture_phrases": dict(TEXTURE_PHRASES)}


def caption(shape: str, colour: str, texture: str, template: int = 0, words: dict[str, str] | None = None) -> str:
    """Caption for attribute names; `words` maps a base word to the word used (e.g. {"red": "crimson"})."""
    words = words or {}
    c, s, t = words.get(colour, colour), words.get(shape, shape), words.get(texture, texture)
    tp = TEXTURE_PHRASES[texture].format(t=t)
    return TEMPLATES[template].format(c=c, t=t, s=s, tp=tp)


def random_caption(attrs: ShapeAttrs, rng: np.random.Generator, synonym_rate: float = SYNONYM_RATE) -> str:
    words = {}
    for w in attrs.names:
        if w in SYNONYMS and rng.random() < synonym_rate:
            words[w] = SYNONYMS[w][rng.integers(len(SYNONYMS[w]))]
    return caption(*attrs.names, template=int(rng.integers(len(TEMPLATES))), words=words)


def all_words() -> list[str]:
    """Every word that appears in some training caption (the tokenizer makes each one token)."""
    words: set[str] = set()
    for s in SHAPES:
        for c in COLOURS:
            for t in TEXTURES:
                for variant in ({}, {w: syn for w in (s, c, t) for syn in SYNONYMS.get(w, ())[:1]},
                                {w: SYNONYMS[w][-1] for w in (s, c, t) if w in SYNONYMS}):
                    for k in range(len(TEMPLATES)):
                        words.update(caption(s, c, t, k, variant).replace(",", " ").split())
    return sorted(words)


# ---------------------------------------------------------------- drawing

def _star(n: int = 5, inner: float = 0.45) -> np.ndarray:
    a = np.pi / 2 + np.arange(2 * n) * np.pi / n
    r = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), -r * np.sin(a)], 1)


_POLYS = {
    "square": np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * 0.8,
    "triangle": np.array([[0, -1.0], [0.95, 0.7], [-0.95, 0.7]]) * 1.05,
    "star": _star(),
}


def _polygon_sd(p: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance of points p (N, 2) to a closed polygon v (K, 2): negative inside (even-odd)."""
    a, b = v, np.roll(v, -1, axis=0)
    e = b - a  # (K, 2)
    w = p[:, None, :] - a[None]  # (N, K, 2)
    t = np.clip((w * e).sum(-1) / (e * e).sum(-1), 0, 1)
    d = np.sqrt(((w - t[..., None] * e) ** 2).sum(-1)).min(1)
    py = p[:, 1:2]
    cond = (a[None, :, 1] > py) != (b[None, :, 1] > py)
    xint = a[None, :, 0] + (py - a[None, :, 1]) * e[None, :, 0] / np.where(e[:, 1] == 0, 1e-9, e[:, 1])[None]
    inside = (cond & (p[:, 0:1] < xint)).sum(1) % 2 == 1
    return np.where(inside, -d, d)


_GRID = None


def _grid() -> np.ndarray:
    """Pixel centres (SIZE*SIZE, 2) as (x, y)."""
    global _GRID
    if _GRID is None:
        c = np.arange(SIZE) + 0.5
        yy, xx = np.meshgrid(c, c, indexing="ij")
        _GRID = np.stack([xx.ravel(), yy.ravel()], 1)
    return _GRID


def _cover(d: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a pixel whose centre is at signed distance d (pixels; > 0 inside)."""
    return np.clip(0.5 + d, 0.0, 1.0)


def draw(attrs: ShapeAttrs, rng: np.random.Generator) -> np.ndarray:
    """One (SIZE, SIZE, 3) uint8 image of `attrs` with random placement, size, rotation and tints.

    Edges are anti-aliased analytically from signed distances (coverage = clip(0.5 + distance)).
    """
    shape, colour, texture = attrs.names
    p = _grid()
    radius = rng.uniform(10.0, 14.0)  # pixels (the circumscribed radius)
    margin = radius * 0.9 + 1
    cx, cy = rng.uniform(margin, SIZE - margin, 2)
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    q = (p - [cx, cy]) @ rot / radius  # unit shape coordinates
    if shape == "circle":
        sd = (np.sqrt((q**2).sum(1)) - 0.85) * radius
    else:
        sd = _polygon_sd(q, _POLYS[shape]) * radius
    inside = _cover(-sd)
    if texture == "solid":
        alpha = inside
    elif texture == "outlined":
        alpha = inside * _cover(sd + rng.uniform(2.2, 2.8))
    else:  # striped: a thin outline (keeps the silhouette) and bands of period ~7 px at a random angle
        period = rng.uniform(6.5, 7.5)
        theta = rng.uniform(0, np.pi)
        u = (p - [cx, cy]) @ np.array([np.cos(theta), np.sin(theta)]) + rng.uniform(0, period)
        band = np.abs(u % period - period / 2) - period / 4
        alpha = inside * np.maximum(_cover(band), _cover(sd + 1.3))
    alpha = alpha.reshape(SIZE, SIZE, 1)
    bg = np.clip(rng.uniform(228, 250) + rng.uniform(-8, 8, 3), 0, 255)
    fg = np.clip(np.array(RGB[colour], float) + rng.uniform(-15, 15) + rng.uniform(-8, 8, 3), 0, 255)
    img = bg * (1 - alpha) + fg * alpha
    img = img + rng.normal(0, 1.5, img.shape)  # faint paper grain
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def random_attrs(rng: np.random.Generator) -> ShapeAttrs:
    return ShapeAttrs(int(rng.integers(len(SHAPES))), int(rng.integers(len(COLOURS))), int(rng.integers(len(TEXTURES))))


def make_dataset(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, SIZE, SIZE, 3) uint8 and their labels (n, 3) [shape, colour, texture].

    Attributes cycle through all combinations (balanced); placement and tints come from the seed.
    """
    rng = np.random.default_rng(seed)
    combos = len(SHAPES) * len(COLOURS) * len(TEXTURES)
    order = np.concatenate([rng.permutation(combos) for _ in range(-(-n // combos))])[:n]
    labels = np.stack([order // (len(COLOURS) * len(TEXTURES)), (order // len(TEXTURES)) % len(COLOURS),
                       order % len(TEXTURES)], 1).astype(np.int64)
    images = np.stack([draw(ShapeAttrs(*map(int, lab)), rng) for lab in labels])
    return images, labels


def captions_for(labels: np.ndarray, rng: np.random.Generator, synonym_rate: float = SYNONYM_RATE) -> list[str]:
    return [random_caption(ShapeAttrs(*map(int, lab)), rng, synonym_rate) for lab in labels]
