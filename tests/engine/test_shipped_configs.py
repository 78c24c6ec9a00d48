"""The shipped component configs of the real releases, the offline CLIP tokenizer, and which folder a file gets."""

import json
import types
from pathlib import Path

import pytest

from concept_eraser.engine.clip_tokenizer import load_clip_tokenizer, vocab_files
from concept_eraser.engine.single_file import (
    assemble_config,
    detect_architecture,
    sd2_variant,
    shipped_config_name,
)
from concept_eraser.resources import configs_dir

ARCHES = ("sd1", "sd2-512", "sd2-768-v", "sdxl")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONCEPT_ERASER_CACHE", str(tmp_path / "cache"))


def _cfg(arch, rel):
    return json.loads((configs_dir() / arch / rel).read_text())


def test_canonical_numbers():
    for arch in ARCHES:
        index = _cfg(arch, "model_index.json")
        for part, value in index.items():
            if isinstance(value, list) and value[0] is not None:
                sub = configs_dir() / arch / part
                assert any(sub.glob("*config.json")), f"{arch}/{part} has no config"
        assert _cfg(arch, "unet/config.json")["layers_per_block"] == 2
        assert _cfg(arch, "scheduler/scheduler_config.json")["num_train_timesteps"] == 1000
        assert _cfg(arch, "vae/config.json")["block_out_channels"] == [128, 256, 512, 512]
    sd1 = _cfg("sd1", "unet/config.json")
    assert (sd1["cross_attention_dim"], sd1["attention_head_dim"], sd1["sample_size"]) == (768, 8, 64)
    assert _cfg("sd1", "text_encoder/config.json")["hidden_act"] == "quick_gelu"
    for arch, size, pred in (("sd2-512", 64, "epsilon"), ("sd2-768-v", 96, "v_prediction")):
        unet = _cfg(arch, "unet/config.json")
        assert unet["cross_attention_dim"] == 1024 and unet["attention_head_dim"] == [5, 10, 20, 20]
        assert unet["use_linear_projection"] and unet["sample_size"] == size
        assert _cfg(arch, "scheduler/scheduler_config.json")["prediction_type"] == pred
        text = _cfg(arch, "text_encoder/config.json")
        assert (text["hidden_size"], text["num_hidden_layers"], text["hidden_act"]) == (1024, 23, "gelu")
        assert _cfg(arch, "tokenizer/tokenizer_config.json")["pad_token"] == "!"
    xl = _cfg("sdxl", "unet/config.json")
    assert (xl["cross_attention_dim"], xl["addition_embed_type"], xl["transformer_layers_per_block"]) == (
        2048, "text_time", [1, 2, 10])
    assert xl["projection_class_embeddings_input_dim"] == 1280 + 6 * 256
    assert _cfg("sdxl", "text_encoder_2/config.json")["hidden_size"] == 1280
    assert _cfg("sdxl", "vae/config.json")["scaling_factor"] == 0.13025
    assert _cfg("sdxl", "tokenizer/tokenizer_config.json")["pad_token"] == "<|endoftext|>"
    assert _cfg("sdxl", "tokenizer_2/tokenizer_config.json")["pad_token"] == "!"


@pytest.mark.parametrize("arch", ["sd1", "sd2-768-v", "sdxl"])
def test_shipped_shapes_round_trip_through_diffusers_converters(arch):
    """Real-size models on the meta device (no memory): our LDM names convert back to every diffusers tensor."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from concept_eraser.engine.ldm_convert import diffusers_to_ldm

    d = configs_dir() / arch
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(d / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(d / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(d / "text_encoder"))
        text2 = (CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(d / "text_encoder_2"))
                 if (d / "text_encoder_2").is_dir() else None)
    ldm = diffusers_to_ldm(types.SimpleNamespace(unet=unet, vae=vae, text_encoder=text, text_encoder_2=text2))
    assert sfu.infer_diffusers_model_type(ldm) == {"sd1": "v1", "sd2-768-v": "v2", "sdxl": "xl_base"}[arch]
    for module, back in ((unet, sfu.convert_ldm_unet_checkpoint(ldm, dict(unet.config))),
                         (vae, sfu.convert_ldm_vae_checkpoint(ldm, dict(vae.config)))):
        state = module.state_dict()
        assert back.keys() == state.keys()
        assert all(back[k].shape == state[k].shape for k in state)
    n_unet = sum(k.startswith("model.diffusion_model.") for k in ldm)
    assert n_unet == {"sd1": 686, "sd2-768-v": 686, "sdxl": 1680}[arch]


def test_tokenizer_from_open_clip_vocabulary(tmp_path):
    tok = load_clip_tokenizer()
    assert len(tok) == 49408
    ids = tok("a photo of a cat", padding="max_length", max_length=tok.model_max_length).input_ids
    assert ids[:7] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(ids) == 77 and set(ids[7:]) == {49407}
    ids = load_clip_tokenizer(pad_token="!")("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert ids[:7] == [49406, 320, 1125, 539, 320, 2368, 49407] and set(ids[7:]) == {0}
    vocab, merges = vocab_files()
    assert vocab.parent == tmp_path / "cache" / "clip-bpe"
    stamp = vocab.stat().st_mtime_ns
    assert vocab_files()[0].stat().st_mtime_ns == stamp, "built once, then read from the cache"
    assert not [p for p in vocab.parent.iterdir() if p.name.startswith(".")], "no temporary files left"


def test_assembled_folder_loads_offline(tmp_path):
    from transformers import CLIPTokenizer

    folder = assemble_config("sdxl", tmp_path / "sdxl")
    for sub, pad in (("tokenizer", 49407), ("tokenizer_2", 0)):
        tok = CLIPTokenizer.from_pretrained(str(folder / sub), local_files_only=True)
        assert tok("a photo of a cat", padding="max_length", max_length=77).input_ids[-1] == pad
    assert (configs_dir() / "sdxl" / "tokenizer" / "tokenizer_config.json").is_file()
    assert not (configs_dir() / "sdxl" / "tokenizer" / "vocab.json").exists(), "the shipped folder stays configs only"


def test_architecture_picks_the_shipped_folder():
    unet = ["model.diffusion_model.out.2.weight"]
    arch = detect_architecture(unet + ["cond_stage_model.transformer.text_model.x"])
    assert shipped_config_name(arch, Path("any.safetensors"), {}) == "sd1"
    arch = detect_architecture(unet + ["conditioner.embedders.1.model.positional_embedding"])
    assert shipped_config_name(arch, Path("any.safetensors"), {}) == "sdxl"
    arch = detect_architecture(unet + ["cond_stage_model.model.token_embedding.weight"])
    assert shipped_config_name(arch, Path("model.safetensors"), {}) == "sd2-768-v", "diffusers' default for SD 2"
    for name, want in (("v2-1_512-ema-pruned.safetensors", "sd2-512"), ("512-base-ema.ckpt", "sd2-512"),
                       ("v2-1_768-ema-pruned.safetensors", "sd2-768-v"), ("my-vpred-mix.safetensors", "sd2-768-v")):
        assert sd2_variant(Path(name), {}) == want, name
    assert sd2_variant(Path("x-512.safetensors"), {"modelspec.architecture": "stable-diffusion-v2-768-v"}) == "sd2-768-v"
    assert sd2_variant(Path("x.safetensors"), {"modelspec.architecture": "stable-diffusion-v2-512"}) == "sd2-512"
    assert sd2_variant(Path("x-768.safetensors"), {"modelspec.prediction_type": "epsilon"}) == "sd2-512"
    assert sd2_variant(Path("x.safetensors"), {"prediction_type": "v_prediction"}) == "sd2-768-v"
    import torch

    g = torch.Generator().manual_seed(0)
    wide, narrow = torch.randn(1280, generator=g) * 0.2, torch.randn(1280, generator=g) * 0.02
    assert sd2_variant(Path("finetune.safetensors"), {}, wide) == "sd2-768-v", "ComfyUI's spread test"
    assert sd2_variant(Path("finetune.safetensors"), {}, narrow) == "sd2-512"
    assert sd2_variant(Path("finetune-768.safetensors"), {}, narrow) == "sd2-768-v", "the name is the user's override"
