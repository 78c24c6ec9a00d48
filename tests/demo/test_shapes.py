"""The shapes demo: procedural data, tokenizer, the shipped judge and the shipped tiny SD (fast checks).

The full quality table: concept-eraser demo quality shapes.
"""

import json

import numpy as np
import pytest

from concept_eraser.demo.shapes_data import (
    COLOURS,
    HEADS,
    SHAPES,
    SYNONYMS,
    TEMPLATES,
    TEXTURES,
    ShapeAttrs,
    all_words,
    caption,
    make_dataset,
    random_attrs,
    random_caption,
    vocabulary,
)
from concept_eraser.resources import judges_dir, models_dir

SHAPES_DIR = models_dir() / "shapes"


def test_data_is_deterministic_and_balanced():
    a, la = make_dataset(48, seed=3)
    b, lb = make_dataset(48, seed=3)
    c, _ = make_dataset(48, seed=4)
    assert a.dtype == np.uint8 and a.shape == (48, 32, 32, 3)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)
    # 48 images = every shape x colour x texture combination once
    assert len({tuple(x) for x in la}) == len(SHAPES) * len(COLOURS) * len(TEXTURES) == 48


def test_images_show_their_colour():
    images, labels = make_dataset(96, seed=5)
    for img, (_, colour, _) in zip(images, labels, strict=True):
        px = img.reshape(-1, 3).astype(int)
        ink = px[np.abs(px - px.mean(0)).sum(1).argsort()[-20:]]  # the pixels furthest from the background
        r, g, b = ink.mean(0)
        expected = COLOURS[colour]
        got = {"red": r > g + 60 and r > b + 60, "green": g > r + 40 and g > b + 40,
               "blue": b > r + 60 and b > g + 60, "yellow": r > b + 80 and g > b + 80}
        assert got[expected], (expected, ink.mean(0))


def test_captions_name_the_attributes():
    rng = np.random.default_rng(0)
    seen_synonym = 0
    for _ in range(300):
        attrs = random_attrs(rng)
        text = random_caption(attrs, rng)
        words = set(text.replace(",", " ").split())
        for name in attrs.names:
            options = {name, *SYNONYMS.get(name, ())}
            if name == "striped":
                options.add("stripes")
            assert words & options, (text, name)
            seen_synonym += bool(words & set(SYNONYMS.get(name, ())))
    assert 30 < seen_synonym < 300
    assert caption("circle", "red", "striped") == "a red striped circle"
    assert caption("circle", "red", "striped", words={"red": "crimson"}) == "a crimson striped circle"
    assert caption("star", "blue", "outlined", template=3) == "a star, blue, outlined"
    assert ShapeAttrs(0, 1, 2).names == ("circle", "green", "outlined")


def test_vocabulary_is_data():
    v = json.loads(json.dumps(vocabulary()))
    assert v["shapes"] == list(SHAPES) and v["colours"] == list(COLOURS) and v["textures"] == list(TEXTURES)
    assert len(v["templates"]) == len(TEMPLATES) >= 4
    every = {w for values in HEADS.values() for w in values}
    assert set(v["synonyms"]) <= every
    assert len(SHAPES) >= 4 and len(COLOURS) >= 4 and len(TEXTURES) >= 3


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(SHAPES_DIR / "tokenizer", local_files_only=True)


def test_tokenizer_words_and_characters(tokenizer):
    for word in all_words():
        assert tokenizer.tokenize(word) == [word + "</w>"], word
    assert tokenizer.tokenize("zqxv") == ["z", "q", "x", "v</w>"]
    assert tokenizer.tokenize("a crimson star, hollow") == ["a</w>", "crimson</w>", "star</w>", ",</w>", "hollow</w>"]
    ids = tokenizer("a red striped circle", padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[5] == tokenizer.eos_token_id
    assert len(ids) == tokenizer.model_max_length <= 24


def test_shipped_judge_scores_fresh_images():
    from concept_eraser.demo.shapes_judge import load_shapes_judge

    judge = load_shapes_judge(judges_dir() / "shapes-judge.safetensors")
    assert judge.class_names == {k: tuple(v) for k, v in HEADS.items()}
    images, labels = make_dataset(384, seed=987654)
    pred = judge.predict(images)
    for h, head in enumerate(HEADS):
        acc = (pred[head] == labels[:, h]).mean()
        assert acc >= 0.97, (head, acc)


def test_shipped_model_loads_offline():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(SHAPES_DIR, local_files_only=True)
    meta = json.loads((SHAPES_DIR / "concept_eraser.json").read_text())
    assert meta["kind"] == "sd" and meta["demo"] == "shapes"
    assert meta["vocabulary"]["shapes"] == list(SHAPES)
    assert pipe.unet.config.sample_size * 4 == 32 and pipe.vae.config.scaling_factor != 0.18215
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size


def test_shipped_model_draws_what_it_is_asked():
    from concept_eraser.demo.shapes_judge import load_shapes_judge
    from concept_eraser.engine.loading import load_model
    from concept_eraser.engine.sampling import sample_grid
    from concept_eraser.spec import JobContext, SampleRow, SamplingSpec, run_blocking

    bundle = load_model("shapes")
    judge = load_shapes_judge()
    asks = [("circle", "red", "striped"), ("square", "blue", "outlined"), ("star", "yellow", "solid")]
    spec = SamplingSpec(rows=[SampleRow(prompt=caption(*a)) for a in asks], seeds=list(range(500, 516)), steps=15,
                        batch_size=48)
    grid = run_blocking(sample_grid(bundle, spec, JobContext()))
    for head_i, head in enumerate(("shape", "colour", "texture")):
        hits = [(judge.predict(grid.images[r])[head] == HEADS[head].index(a[head_i])).mean() for r, a in enumerate(asks)]
        assert np.mean(hits) >= 0.7, (head, hits)
