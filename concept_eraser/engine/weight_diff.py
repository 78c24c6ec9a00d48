"""What an edit changed: delta tensors and LoRA factors (SVD), with kohya key names, and applying them.

Tensors are addressed as "<component>.<diffusers name>" (component: unet, text_encoder, text_encoder_2).

Delta: the edited values of exactly the tensors that differ from the base (applying it is exact).

LoRA: per edited weight, the difference dW = W_edit - W_base is factored by SVD at rank r:
dW ~= up @ down with up = U_r sqrt(S_r), down = sqrt(S_r) V_r^T, alpha = r (so scale alpha/r = 1).
Linear layers and 1x1 convolutions are matrices; k x k convolutions are LoCon-style (down is a
k x k conv to r channels, up a 1x1 conv). Biases and norm weights cannot be low-rank factors: they
are left out and counted as skipped energy. Key names follow kohya's sd-scripts, which A1111/Forge,
ComfyUI and diffusers' load_lora_weights read: SD 1.x/2.x use diffusers UNet module names
(`lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k`), SDXL the SGM names
(`lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k`); text encoders `lora_te_` (SD 1/2) or
`lora_te1_` / `lora_te2_` (SDXL) + transformers names (`text_model_encoder_layers_0_self_attn_k_proj`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from concept_eraser.spec.runloop import UserError

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


def flat_state(bundle) -> dict[str, torch.Tensor]:
    """'<component>.<name>' -> tensor for the model's trainable components (UNet and text encoders)."""
    out = {}
    for comp in COMPONENTS:
        module = getattr(bundle, comp, None)
        if module is not None:
            out.update({f"{comp}.{k}": v for k, v in module.state_dict().items()})
    return out


def changed_tensors(base: dict[str, torch.Tensor], edited: dict[str, torch.Tensor]) -> list[str]:
    """Names whose values differ (bitwise); a structural mismatch is a one-line error."""
    if set(base) != set(edited):
        extra = sorted(set(base) ^ set(edited))[:3]
        raise UserError(f"the edited model and the base model have different tensors (e.g. {', '.join(extra)}); "
                        f"they are not the same architecture")
    changed = []
    for k, v in edited.items():
        b = base[k]
        if b.shape != v.shape:
            raise UserError(f"tensor {k} has shape {tuple(v.shape)} in the edit but {tuple(b.shape)} in the base")
        if not torch.equal(b, v):
            changed.append(k)
    return changed


def apply_delta(bundle, tensors: dict[str, torch.Tensor]) -> int:
    """Copy delta tensors into the loaded model in place; returns how many were set."""
    state = flat_state(bundle)
    for k, v in tensors.items():
        if k not in state:
            raise UserError(f"the delta holds {k}, which this model does not have; it was made for another model")
        if state[k].shape != v.shape:
            raise UserError(f"delta tensor {k} has shape {tuple(v.shape)}, the model {tuple(state[k].shape)}")
    with torch.no_grad():
        for k, v in tensors.items():
            state[k].copy_(v.to(state[k].dtype))
    return len(tensors)


# ---------------------------------------------------------------------------------------------- kohya names


def kohya_names(bundle) -> dict[str, str]:
    """'<component>.<module path>' -> kohya LoRA module name, for every weight of the UNet and text encoders."""
    from .ldm_convert import UNET, family, unet_to_ldm

    fam = family(bundle)
    names: dict[str, str] = {}
    unet_keys = list(bundle.unet.state_dict())
    if fam == "sdxl":
        ldm_keys = list(unet_to_ldm(bundle.unet))  # same order as the state dict
        pairs = zip(unet_keys, (k.removeprefix(UNET) for k in ldm_keys), strict=True)
    else:
        pairs = ((k, k) for k in unet_keys)
    for key, named in pairs:
        if key.endswith(".weight"):
            names["unet." + key.removesuffix(".weight")] = "lora_unet_" + named.removesuffix(".weight").replace(".", "_")
    te_prefix = {"text_encoder": "lora_te1_" if fam == "sdxl" else "lora_te_", "text_encoder_2": "lora_te2_"}
    for comp, prefix in te_prefix.items():
        module = getattr(bundle, comp, None)
        if module is None:
            continue
        for key in module.state_dict():
            if key.endswith(".weight"):
                full = key if key.startswith(("text_model.", "text_projection.")) else "text_model." + key
                names[f"{comp}.{key.removesuffix('.weight')}"] = prefix + full.removesuffix(".weight").replace(".", "_")
    return names


# ---------------------------------------------------------------------------------------------- LoRA


@dataclass
class LoraLayer:
    name: str  # '<component>.<module path>'
    kohya: str
    shape: tuple[int, ...]
    rank: int
    energy: float  # ||dW||_F^2
    kept: float  # share of that energy the rank keeps (0..1)


@dataclass
class LoraResult:
    tensors: dict[str, torch.Tensor]
    layers: list[LoraLayer]
    skipped: dict[str, float] = field(default_factory=dict)  # tensor -> ||d||^2 (biases, norms, embeddings)
    notes: list[str] = field(default_factory=list)

    @property
    def energy_kept(self) -> float:
        """Share of the whole difference's Frobenius energy the LoRA keeps (skipped tensors count as lost)."""
        total = sum(layer.energy for layer in self.layers) + sum(self.skipped.values())
        kept = sum(layer.energy * layer.kept for layer in self.layers)
        return kept / total if total > 0 else 1.0


def extract_lora(base: dict[str, torch.Tensor], edited: dict[str, torch.Tensor], names: dict[str, str],
                 rank: int, check=lambda: None) -> LoraResult:
    """Factor every changed weight difference at `rank` (capped by the layer's size)."""
    if rank < 1:
        raise UserError(f"--rank must be at least 1, got {rank}")
    result = LoraResult({}, [])
    for key in changed_tensors(base, edited):
        check()
        d = (edited[key].double() - base[key].double())
        module = key.removesuffix(".weight")
        if not key.endswith(".weight") or module not in names or d.ndim not in (2, 4):
            result.skipped[key] = float(d.pow(2).sum())
            continue
        if d.ndim == 2 and "embedding" in module:
            result.skipped[key] = float(d.pow(2).sum())
            continue
        matrix = d.reshape(d.shape[0], -1)
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        r = min(rank, s.numel())
        root = s[:r].sqrt()
        up = u[:, :r] * root
        down = root[:, None] * vh[:r]
        if d.ndim == 4:
            down = down.reshape(r, *d.shape[1:])
            up = up.reshape(d.shape[0], r, 1, 1)
        energy = float(s.pow(2).sum())
        kept = float(s[:r].pow(2).sum() / energy) if energy > 0 else 1.0
        kohya = names[module]
        dtype = edited[key].dtype
        result.tensors[f"{kohya}.lora_down.weight"] = down.to(dtype).contiguous()
        result.tensors[f"{kohya}.lora_up.weight"] = up.to(dtype).contiguous()
        result.tensors[f"{kohya}.alpha"] = torch.tensor(float(r), dtype=dtype)
        result.layers.append(LoraLayer(module, kohya, tuple(d.shape), r, energy, kept))
    if result.skipped:
        result.notes.append(f"{len(result.skipped)} changed tensors are not weights of linear/conv layers "
                            f"(biases, norms, embeddings) and are not in the LoRA: "
                            f"{', '.join(sorted(result.skipped)[:4])}{' ...' if len(result.skipped) > 4 else ''}")
    return result


def lora_modules(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """kohya module name -> {'down', 'up', 'alpha'}; refuses files that are not kohya LoRAs."""
    mods: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        for suffix, part in ((".lora_down.weight", "down"), (".lora_up.weight", "up"), (".alpha", "alpha")):
            if k.endswith(suffix):
                mods.setdefault(k.removesuffix(suffix), {})[part] = v
                break
        else:
            raise UserError(f"{k} is not a kohya LoRA tensor (.lora_down.weight / .lora_up.weight / .alpha); "
                            f"only LoRA (LoCon) files are supported")
    return mods


def apply_lora(bundle, tensors: dict[str, torch.Tensor], scale: float = 1.0) -> int:
    """W += scale * alpha/rank * up @ down for every module of a kohya LoRA; returns the module count."""
    by_kohya = {v: k for k, v in kohya_names(bundle).items()}
    state = flat_state(bundle)
    mods = lora_modules(tensors)
    unknown = [m for m in mods if m not in by_kohya]
    if unknown:
        raise UserError(f"the LoRA has {len(unknown)} modules this model lacks (e.g. {unknown[0]}); it was made for "
                        f"another architecture")
    with torch.no_grad():
        for name, parts in mods.items():
            if "down" not in parts or "up" not in parts:
                raise UserError(f"LoRA module {name} lacks its lora_down or lora_up weight")
            weight = state[by_kohya[name] + ".weight"]
            down, up = parts["down"].double(), parts["up"].double()
            r = down.shape[0]
            alpha = float(parts["alpha"]) if "alpha" in parts else float(r)
            d = up.reshape(up.shape[0], r) @ down.reshape(r, -1)
            if d.numel() != weight.numel():
                raise UserError(f"LoRA module {name} does not fit its layer ({tuple(weight.shape)})")
            weight.copy_((weight.double() + scale * alpha / r * d.reshape(weight.shape)).to(weight.dtype))
    return len(mods)
