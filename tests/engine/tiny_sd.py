"""Tiny random Stable Diffusion 1.x / 2.x / SDXL saved as diffusers folders (diffusers' dummy-components pattern).

Each mirrors its real release in the ways the single-file layout depends on: SD 2.x has an OpenCLIP-style
text encoder (gelu), linear transformer projections and v-prediction; SDXL has two text encoders of
different widths (the second with a projection), text_time embeddings and several transformer layers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ["a", "red", "blue", "green", "circle", "square", "cat", "dog", "photo", "of"]


def write_tokenizer(folder: Path) -> None:
    """A real CLIP BPE tokenizer over a tiny vocabulary: characters plus whole-word merges."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = sorted({c for w in WORDS for c in w})
    vocab = {}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    merges = []
    for w in WORDS:
        pieces = list(w[:-1]) + [w[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            vocab.setdefault(pieces[0], len(vocab))
    vocab.setdefault("!", len(vocab))  # SD 2.x / SDXL's OpenCLIP tokenizer pads with "!"
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")


def _tokenizer(folder: Path, pad_token: str = "<|endoftext|>"):
    from transformers import CLIPTokenizer

    write_tokenizer(folder / "_tok")
    return CLIPTokenizer(str(folder / "_tok" / "vocab.json"), str(folder / "_tok" / "merges.txt"),
                         model_max_length=12, pad_token=pad_token)


def _text_config(tokenizer, hidden: int, act: str = "quick_gelu", **kw):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                          num_attention_heads=2, num_hidden_layers=2, max_position_embeddings=12, hidden_act=act,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id, **kw)


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=4, sample_size=16)


def make_tiny_sd2(folder: Path) -> Path:
    """SD 2.x-like: OpenCLIP-style text encoder (gelu), linear projections, v-prediction, pad token "!"."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(1)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24, attention_head_dim=(2, 4), norm_num_groups=4, use_linear_projection=True,
        upcast_attention=True,
    )
    tokenizer = _tokenizer(folder, pad_token="!")
    text = CLIPTextModel(_text_config(tokenizer, 24, act="gelu"))
    scheduler = DDIMScheduler(num_train_timesteps=100, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, prediction_type="v_prediction", clip_sample=False, steps_offset=1,
                              set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(unet=unet, vae=_vae(), text_encoder=text, tokenizer=tokenizer, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder / "model", safe_serialization=True)
    return folder / "model"


def make_tiny_sdxl(folder: Path) -> Path:
    """SDXL-like: CLIP-L-style encoder (16 wide) + OpenCLIP-style encoder with projection (24 wide), text_time."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(2)
    tokenizer = _tokenizer(folder)
    tokenizer_2 = _tokenizer(folder, pad_token="!")
    text = CLIPTextModel(_text_config(tokenizer, 16))
    text_2 = CLIPTextModelWithProjection(_text_config(tokenizer_2, 24, act="gelu", projection_dim=20))
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=2, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16 + 24, attention_head_dim=(2, 4), transformer_layers_per_block=(1, 2),
        norm_num_groups=4, use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=20 + 6 * 8,
    )
    scheduler = EulerDiscreteScheduler(num_train_timesteps=100, beta_schedule="scaled_linear", beta_start=0.00085,
                                       beta_end=0.012, steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(unet=unet, vae=_vae(), text_encoder=text, text_encoder_2=text_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=scheduler,
                                     force_zeros_for_empty_prompt=True)
    pipe.save_pretrained(folder / "model", safe_serialization=True)
    return folder / "model"


def make_tiny_sd(folder: Path, prediction_type: str = "epsilon") -> Path:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4,
    )
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, sample_size=16)
    write_tokenizer(folder / "_tok")
    tokenizer = CLIPTokenizer(str(folder / "_tok" / "vocab.json"), str(folder / "_tok" / "merges.txt"),
                              model_max_length=12)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                        num_attention_heads=2, num_hidden_layers=2, max_position_embeddings=12,
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(num_train_timesteps=100, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, prediction_type=prediction_type, clip_sample=False)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder / "model", safe_serialization=True)
    return folder / "model"
