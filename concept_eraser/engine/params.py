"""Parameter groups a method can train, named the same way for every model kind.

cross-attn      sd: every attn2 (text cross-attention) layer; ddpm-cond: the class-conditioning path
                (class embedding + each resnet's time/class projection), its analogue
kv              sd: attn2.to_k / attn2.to_v only; ddpm-cond: the class embedding only
non-cross-attn  the UNet without the cross-attn group (ESD-u)
full            the whole UNet
text-encoder    the text encoder's transformer layers and final norm (token/position embeddings frozen)
Names are prefixed with the component ("unet.", "text_encoder.") so checkpoints are unambiguous.
"""

from __future__ import annotations

import torch

from concept_eraser.spec.runloop import UserError

from .bundle import ModelBundle

GROUPS = ("cross-attn", "kv", "non-cross-attn", "full", "text-encoder")


def _is_cross(name: str, kind: str) -> bool:
    if kind in ("sd", "sdxl"):
        return ".attn2." in name
    return name.startswith("class_embedding") or ".time_emb_proj." in name


def _is_kv(name: str, kind: str) -> bool:
    if kind in ("sd", "sdxl"):
        return ".attn2.to_k." in name or ".attn2.to_v." in name
    return name.startswith("class_embedding")


def select_params(bundle: ModelBundle, group: str) -> dict[str, torch.nn.Parameter]:
    kind = bundle.summary.kind
    if group not in GROUPS:
        raise UserError(f"unknown parameter group {group!r}; choose one of {', '.join(GROUPS)}")
    if group == "text-encoder":
        if bundle.text_encoder is None:
            raise UserError(f"{kind} models have no text encoder; choose a UNet parameter group")
        return {f"text_encoder.{n}": p for n, p in bundle.text_encoder.named_parameters()
                if "embeddings" not in n}
    if group in ("cross-attn", "kv") and kind == "ddpm":
        raise UserError("unconditional DDPMs have no conditioning path; use 'full' or 'non-cross-attn'")
    pick = {
        "cross-attn": lambda n: _is_cross(n, kind),
        "kv": lambda n: _is_kv(n, kind),
        "non-cross-attn": lambda n: not _is_cross(n, kind),
        "full": lambda n: True,
    }[group]
    out = {f"unet.{n}": p for n, p in bundle.unet.named_parameters() if pick(n)}
    if not out:
        raise UserError(f"parameter group {group!r} selects nothing in this {kind} model")
    return out


def count(params: dict[str, torch.nn.Parameter]) -> int:
    return sum(p.numel() for p in params.values())
