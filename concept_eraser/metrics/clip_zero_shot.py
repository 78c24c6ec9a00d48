"""CLIP zero-shot concept score, for any model, from a local CLIP folder (never downloaded).

Each image is scored by a CLIP model the user points to (a transformers CLIPModel folder with its
tokenizer): softmax over the image's similarity to the concept text and to each anchor text, each
wrapped in the prompt templates and averaged. Reported: the mean probability of the concept and the
share of images where the concept wins. transformers' CLIPModel is called directly: torchmetrics'
CLIPScore takes only hub names (and its callable path breaks on transformers 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from concept_eraser.spec.runloop import UserError

# OpenAI CLIP's input normalisation.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
TEMPLATES = ("{}", "a picture of {}", "an image showing {}")


@dataclass(frozen=True)
class ClipZeroShot:
    concept: str
    anchors: tuple[str, ...]
    mean_prob: float  # mean probability of the concept over the images
    win_rate: float  # share of images where the concept has the highest probability
    per_image: np.ndarray  # (N,) probability of the concept
    description: str


def load_clip(folder: str | Path):
    """CLIPModel + tokenizer from a local folder; a one-line error names what is missing."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise UserError(f"CLIP folder {folder} has no config.json: give a local transformers CLIPModel folder "
                        f"(config.json, model.safetensors, tokenizer files)")
    from transformers import AutoTokenizer, CLIPModel

    try:
        model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"CLIP folder {folder} could not be loaded ({str(exc).splitlines()[0]}); it needs "
                        f"model weights and tokenizer files") from exc
    return model, tokenizer


def _pixels(images: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


@torch.no_grad()
def clip_zero_shot(folder_or_model, images: np.ndarray, concept: str, anchors: list[str] | tuple[str, ...],
                   templates: tuple[str, ...] = TEMPLATES, batch: int = 64) -> ClipZeroShot:
    """images: uint8 (N, H, W, 3). anchors: the alternatives the concept competes with (at least one)."""
    if not anchors:
        raise UserError("CLIP zero-shot needs at least one anchor text to compare the concept with")
    model, tokenizer = load_clip(folder_or_model) if isinstance(folder_or_model, str | Path) else folder_or_model
    labels = [concept, *anchors]
    texts = [t.format(label) for label in labels for t in templates]
    ids = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    size = int(model.config.vision_config.image_size)
    probs = []
    for i in range(0, len(images), batch):
        out = model(input_ids=ids.input_ids, attention_mask=ids.attention_mask,
                    pixel_values=_pixels(images[i : i + batch], size))
        logits = out.logits_per_image.view(-1, len(labels), len(templates)).mean(-1)  # average the templates
        probs.append(logits.softmax(-1))
    all_probs = torch.cat(probs)
    per_image = all_probs[:, 0].numpy()
    win = float((all_probs.argmax(-1) == 0).float().mean())  # the concept beats every anchor
    desc = (f"CLIP zero-shot ({model.config.vision_config.image_size} px, {len(templates)} templates): probability "
            f"of {concept!r} against {', '.join(repr(a) for a in anchors)} over {len(images)} images")
    return ClipZeroShot(concept, tuple(anchors), float(per_image.mean()), win, per_image, desc)
