"""Export: diffusers components -> one single file with the original (LDM / SGM) tensor names.

The inverse of what diffusers' from_single_file reads, for SD 1.x, SD 2.x and SDXL:

  model.diffusion_model.*                  UNet (input_blocks / middle_block / output_blocks)
  first_stage_model.*                      VAE (encoder.down.N / decoder.up.N, mid attention as 1x1 convs)
  cond_stage_model.transformer.*           SD 1.x CLIP ViT-L text encoder (transformers names)
  cond_stage_model.model.*                 SD 2.x OpenCLIP text encoder (fused in_proj q/k/v)
  conditioner.embedders.0.transformer.*    SDXL CLIP ViT-L
  conditioner.embedders.1.model.*          SDXL OpenCLIP bigG, with text_projection

SD 2.x note: diffusers keeps only the 23 OpenCLIP layers that SD 2 uses (it conditions on the
penultimate layer), so an export holds 23 resblocks and no text_projection; diffusers, ComfyUI and
A1111 load such files (the unused last layer is not needed for the output).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from concept_eraser.spec.files import atomic_write
from concept_eraser.spec.runloop import UserError

UNET, VAE = "model.diffusion_model.", "first_stage_model."
CLIP_PREFIX = {"sd1": "cond_stage_model.transformer.", "sdxl": "conditioner.embedders.0.transformer."}
OPENCLIP_PREFIX = {"sd2": "cond_stage_model.model.", "sdxl": "conditioner.embedders.1.model."}
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
           "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
               "self_attn.out_proj": "attn.out_proj"}


def _parts(obj):
    """(unet, vae, text_encoder, text_encoder_2, scheduler) of a ModelBundle or a diffusers pipeline."""
    return tuple(getattr(obj, n, None) for n in ("unet", "vae", "text_encoder", "text_encoder_2", "scheduler"))


def family(obj) -> str:
    """'sd1', 'sd2' or 'sdxl': SDXL has a second text encoder; SD 2.x's OpenCLIP uses gelu, CLIP ViT-L quick_gelu."""
    unet, _, text, text2, _ = _parts(obj)
    if text2 is not None or getattr(unet.config, "addition_embed_type", None) == "text_time":
        return "sdxl"
    if text is None:
        raise UserError("this model has no text encoder; only Stable Diffusion 1.x/2.x/SDXL export to a single file")
    return "sd2" if text.config.hidden_act == "gelu" else "sd1"


def _rename(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    lpb = unet.config.layers_per_block
    if not isinstance(lpb, int):
        raise UserError("UNets with a different number of layers per block are not exportable to a single file")
    state = unet.state_dict()
    up_attn = {int(k.split(".")[1]) for k in state if re.match(r"up_blocks\.\d+\.attentions\.", k)}
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    out = {}
    for key, value in state.items():
        name = _rename(key, fixed)
        if name == key:
            name = _unet_block_key(key, lpb, up_attn)
        out[UNET + name] = value
    return out


def _unet_block_key(key: str, lpb: int, up_attn: set[int]) -> str:
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        n = 1 + b * (lpb + 1) + j
        return f"input_blocks.{n}.0.{_rename(rest, _RESNET)}" if kind == "resnets" else f"input_blocks.{n}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{1 + int(m[1]) * (lpb + 1) + lpb}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.([01])\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_rename(m[2], _RESNET)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        n = b * (lpb + 1) + j
        return f"output_blocks.{n}.0.{_rename(rest, _RESNET)}" if kind == "resnets" else f"output_blocks.{n}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        b = int(m[1])
        return f"output_blocks.{b * (lpb + 1) + lpb}.{2 if b in up_attn else 1}.conv.{m[2]}"
    raise UserError(f"UNet tensor {key} has no single-file name; this UNet variant is not exportable")


def vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    n_up = len(vae.config.up_block_types)
    out = {}
    for key, value in vae.state_dict().items():
        name = key
        if m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(.+)", key):
            name = f"{m[1]}.norm_out.{m[2]}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            name = f"encoder.down.{m[1]}.block.{m[2]}.{_rename(m[3], {'conv_shortcut': 'nin_shortcut'})}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            name = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            up = n_up - 1 - int(m[1])
            name = f"decoder.up.{up}.block.{m[2]}.{_rename(m[3], {'conv_shortcut': 'nin_shortcut'})}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            name = f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            name = f"{m[1]}.mid.block_{int(m[2]) + 1}.{_rename(m[3], {'conv_shortcut': 'nin_shortcut'})}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
            name = f"{m[1]}.mid.attn_1.{_rename(m[2], _VAE_ATTN)}"
            if value.ndim == 2:  # LDM's attention projections are 1x1 convolutions
                value = value[:, :, None, None]
        elif not re.fullmatch(r"(encoder\.|decoder\.)?(conv_in|conv_out|quant_conv|post_quant_conv)\.(weight|bias)",
                              key):
            raise UserError(f"VAE tensor {key} has no single-file name; this VAE variant is not exportable")
        out[VAE + name] = value
    return out


def _text_state(text) -> dict[str, torch.Tensor]:
    """Text-encoder tensors with transformers' `text_model.` prefix (newer CLIPTextModel drops it)."""
    out = {}
    for k, v in text.state_dict().items():
        out[k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k] = v
    return out


def clip_to_ldm(text, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in _text_state(text).items() if not k.startswith("text_projection.")}


def openclip_to_ldm(text, prefix: str) -> dict[str, torch.Tensor]:
    state = _text_state(text)
    out = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        k = key.removeprefix("text_model.")
        if k == "embeddings.token_embedding.weight":
            out[prefix + "token_embedding.weight"] = value
        elif k == "embeddings.position_embedding.weight":
            out[prefix + "positional_embedding"] = value
        elif k.startswith("final_layer_norm."):
            out[prefix + "ln_final." + k.split(".")[-1]] = value
        elif k == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()  # OpenCLIP multiplies x @ P
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", k):
            qkv.setdefault((m[1], m[3]), {})[m[2]] = value
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", k):
            renamed = _rename(m[2], _CLIP_LAYER)
            if renamed == m[2]:
                raise UserError(f"text encoder tensor {key} has no OpenCLIP name; not exportable")
            out[f"{prefix}transformer.resblocks.{m[1]}.{renamed}"] = value
        else:
            raise UserError(f"text encoder tensor {key} has no OpenCLIP name; not exportable")
    for (layer, kind), parts in qkv.items():
        out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def diffusers_to_ldm(pipe_or_bundle) -> dict[str, torch.Tensor]:
    """All weights of an SD 1.x / 2.x / SDXL pipeline (or ModelBundle) under their single-file names."""
    unet, vae, text, text2, _ = _parts(pipe_or_bundle)
    if unet is None or vae is None or text is None:
        raise UserError("only Stable Diffusion models (UNet, VAE and text encoder) export to a single file")
    fam = family(pipe_or_bundle)
    out = {**unet_to_ldm(unet), **vae_to_ldm(vae)}
    if fam == "sd2":
        out.update(openclip_to_ldm(text, OPENCLIP_PREFIX["sd2"]))
    else:
        out.update(clip_to_ldm(text, CLIP_PREFIX[fam]))
    if fam == "sdxl":
        if text2 is None:
            raise UserError("this SDXL model has no second text encoder; it cannot be exported")
        out.update(openclip_to_ldm(text2, OPENCLIP_PREFIX["sdxl"]))
    return out


def modelspec(pipe_or_bundle, title: str) -> dict[str, str]:
    """ModelSpec metadata (as kohya's sd-scripts write it) that tells loaders the variant, e.g. SD 2 eps vs v."""
    unet, vae, _, _, scheduler = _parts(pipe_or_bundle)
    fam = family(pipe_or_bundle)
    v = scheduler is not None and scheduler.config.get("prediction_type") == "v_prediction"
    sample = unet.config.sample_size
    px = (sample if isinstance(sample, int) else sample[0]) * 2 ** (len(vae.config.block_out_channels) - 1)
    arch = {"sd1": "stable-diffusion-v1", "sdxl": "stable-diffusion-xl-v1-base",
            "sd2": "stable-diffusion-v2-768-v" if v else "stable-diffusion-v2-512"}[fam]
    return {"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": arch,
            "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
            "modelspec.title": title, "modelspec.resolution": f"{px}x{px}",
            "modelspec.prediction_type": "v" if v else "epsilon"}


def save_single_file(bundle, path: str | Path, metadata: dict[str, str] | None = None,
                     dtype: torch.dtype | None = None) -> Path:
    """Write the model as one .safetensors with LDM names, atomically (temporary file beside `path`, then rename).

    Refuses to write into the folder the model was loaded from, or over the file it was loaded from.
    `metadata` (str -> str) is stored in the header over the ModelSpec defaults.
    """
    from safetensors.torch import save_file

    path = Path(path).expanduser()
    if path.suffix.lower() != ".safetensors":
        raise UserError(f"{path.name}: single-file exports are .safetensors; choose a name ending in .safetensors")
    summary = getattr(bundle, "summary", None)
    if summary is not None and summary.source:
        src = Path(summary.source).expanduser().resolve()
        target = path.resolve()
        if target == src or (src.is_dir() and target.is_relative_to(src)):
            raise UserError(f"{path} is inside the source model {src}; the original stays untouched: write the "
                            f"export somewhere else")
    meta = modelspec(bundle, path.stem)
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise UserError(f"single-file metadata must map text to text; {k!r} -> {type(v).__name__}")
        meta[k] = v
    tensors = {}
    for k, v in diffusers_to_ldm(bundle).items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
