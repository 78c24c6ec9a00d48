"""Real-size single files through the shipped configs, offline, with random weights (no downloads).

For each architecture: the tensor names and shapes of the real release come from its shipped config
(models built on the meta device, named by our exporter), a random fp16 .safetensors with those
tensors is written, loaded with load_model(file) WITHOUT --config-dir, sampled for one step,
exported again and compared tensor by tensor with the input. Prints a table.

    .venv/bin/python bench/single_file_real_size.py [sd1 sd2-512 sd2-768-v sdxl]
SDXL is loaded in float16 and not sampled, to stay near 8 GB of RAM (SD 1.5/2.x: ~8 GB). Not run in CI.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FILE_NAMES = {"sd1": "v1-5-random.safetensors", "sd2-512": "v2-1_512-random.safetensors",
              "sd2-768-v": "v2-1_768-random.safetensors", "sdxl": "sd_xl_base_1.0-random.safetensors"}


def ldm_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from concept_eraser.engine.ldm_convert import diffusers_to_ldm
    from concept_eraser.resources import configs_dir

    d = configs_dir() / arch
    with init_empty_weights():
        parts = types.SimpleNamespace(
            unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(d / "unet")),
            vae=AutoencoderKL.from_config(AutoencoderKL.load_config(d / "vae")),
            text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(d / "text_encoder")),
            text_encoder_2=(CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(d / "text_encoder_2"))
                            if (d / "text_encoder_2").is_dir() else None))
    return {k: tuple(v.shape) for k, v in diffusers_to_ldm(parts).items()}


def run(arch: str, tmp: Path) -> dict:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from concept_eraser.engine.ldm_convert import save_single_file
    from concept_eraser.engine.loading import load_model
    from concept_eraser.engine.sampling import sample_grid
    from concept_eraser.spec import JobContext, SamplingSpec, run_blocking

    shapes = ldm_shapes(arch)
    g = torch.Generator().manual_seed(0)
    src = tmp / FILE_NAMES[arch]
    save_file({k: (torch.randn(s, generator=g) * 0.02).half() for k, s in shapes.items()}, str(src))
    t = time.perf_counter()
    bundle = load_model(str(src), dtype=torch.float16 if arch == "sdxl" else torch.float32)
    load_s = time.perf_counter() - t
    spec = SamplingSpec(rows=[{"prompt": "a photo of a cat"}], seeds=[0], steps=1, height=64, width=64)
    t = time.perf_counter()
    shape = "-" if arch == "sdxl" else "x".join(map(str, run_blocking(sample_grid(bundle, spec, JobContext())).images.shape))
    sample_s = time.perf_counter() - t
    out = save_single_file(bundle, tmp / "export.safetensors", dtype=torch.float16)
    same = 0
    with safe_open(str(src), "pt") as a, safe_open(str(out), "pt") as b:
        extra = set(b.keys()) ^ set(a.keys())
        for k in a.keys():
            same += k in b.keys() and torch.equal(a.get_tensor(k), b.get_tensor(k))
    s = bundle.summary
    row = {"arch": arch, "tensors": len(shapes), "params": f"{s.parameters / 1e6:.0f}M", "pred": s.prediction_type,
           "px": s.resolution, "load_s": f"{load_s:.1f}", "1-step 64px s": f"{sample_s:.1f}",
           "grid": shape, "re-export identical": f"{same}/{len(shapes)}",
           "name diff": len(extra)}
    src.unlink()
    out.unlink()
    return row


def main(argv: list[str]) -> None:
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in argv or ["sd1", "sd2-768-v"]:
            rows.append(run(arch, Path(tmp)))
            print(rows[-1], flush=True)
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
