"""How much memory each registered method needs: measured on the demo models, estimated for full-size ones.

One table for every method (MethodCard.memory, shown on the GUI's Method page and by
`concept-eraser methods -v`), kept apart from the method files so that re-measuring touches one file.

Demo figures: bench/method_memory.py, 2026-11-24, on commit f929d9d (the base of branch memest), one
process per (method, demo model), CPU, float32, `--steps 5`. Peak memory does not grow with the step
count (`--steps 0` = the defaults, digits; peak MiB with 5 steps → with the default): esd-x 1009 → 1003
(150 steps), saddle 1061 → 1063 (100), vdu 1097 → 1102 (100), sfd 1224 → 1229 (40); a repeat of the same
short run differed by up to ~20 MiB (esd-x digits: 1022, 1009). See the bench's docstring for the phases.
MiB of resident memory:

| method | model | loaded model | peak of the whole run | method over the loaded model |
|---|---|---|---|---|
| esd-x | digits | 849 | 1009 | +153 |
| esd-x | shapes | 869 | 985 | +116 |
| esd-u | digits | 850 | 1031 | +167 |
| esd-u | shapes | 869 | 1007 | +138 |
| esd-full | digits | 849 | 1025 | +164 |
| esd-full | shapes | 869 | 1008 | +139 |
| uce | shapes | 869 | 906 | +15 |
| ovw | digits | 850 | 1026 | +177 |
| ovw | shapes | 869 | 1001 | +132 |
| saddle | digits | 849 | 1061 | +212 |
| saddle | shapes | 869 | 1029 | +160 |
| vdu | digits | 872 | 1097 | +225 |
| vdu | shapes | 870 | 949 | +79 |
| advunlearn | shapes | 827 | 910 | +82 (measured with the MLP-only default) |
| sfd | digits | 849 | 1224 | +375 |
| sfd | shapes | 869 | 1180 | +311 (measured on 95c0ac5, after SFD gained sd) |

Python with torch and the engine imported is ~555 MiB and ~850-870 MiB once a demo model is loaded (the
demo models have 0.7-1.5 M parameters, a few MB: the rest is the libraries), so on the demos the methods
add activations, sample pools and library code, not parameter copies. The GUI adds Qt on top.

Full-size figures are ESTIMATES from parameter counts, not measurements: the counts come from the shipped
SD 1.5 / SDXL configs (resources configs_dir(), built on the meta device): SD 1.5 UNet 859.5 M (cross-
attention attn2 44.0 M, the rest 815.6 M), text encoder 123.1 M (85.1 M without the embeddings), VAE 83.7 M,
1.07 G in all; SDXL 3.47 G in all (UNet 2567.5 M). On a GPU the engine loads half precision (2 bytes a
parameter); a trained tensor then adds its gradient and Adam's two moments in the same dtype, and a
method that keeps the frozen original for its teacher (engine.training.Originals) one more copy. Before a
run the session keeps a CPU copy of every component the method edits, to undo the run (engine.session).
Activations grow with the batch and the resolution and are not estimated.
"""

from __future__ import annotations

from concept_eraser.spec.registry import MemoryEstimate

MEASURED = ("2026-11-24, commit f929d9d, bench/method_memory.py --steps 5 (CPU, float32; one process per run)")

_SD_TAIL = (", plus activations (grow with batch and resolution; not estimated); the CPU keeps a 1.7 GB copy of "
            "the UNet to undo the run. In float32 double every figure.")


def _demo(**peaks: tuple[int, int]) -> dict[str, dict[str, int]]:
    return {"demo_peak_mib": {k: v[0] for k, v in peaks.items()}, "demo_added_mib": {k: v[1] for k, v in peaks.items()}}


MEMORY: dict[str, MemoryEstimate] = {
    "esd-x": MemoryEstimate(
        **_demo(digits=(1009, 153), shapes=(985, 116)), measured=MEASURED,
        full_size="SD 1.5 on a GPU (fp16): 2.1 GB of weights + 44 M trained cross-attention parameters × 4 "
                  "copies (gradient, Adam's two moments, the frozen originals) × 2 B ≈ 0.35 GB" + _SD_TAIL),
    "esd-u": MemoryEstimate(
        **_demo(digits=(1031, 167), shapes=(1007, 138)), measured=MEASURED,
        full_size="SD 1.5 on a GPU (fp16): 2.1 GB of weights + 816 M trained parameters (all but cross-"
                  "attention) × 4 copies (gradient, Adam's two moments, the frozen originals) × 2 B ≈ 6.5 GB"
                  + _SD_TAIL),
    "esd-full": MemoryEstimate(
        **_demo(digits=(1025, 164), shapes=(1008, 139)), measured=MEASURED,
        full_size="SD 1.5 on a GPU (fp16): 2.1 GB of weights + 860 M trained parameters (the whole UNet) × 4 "
                  "copies (gradient, Adam's two moments, the frozen originals) × 2 B ≈ 6.9 GB" + _SD_TAIL),
    "uce": MemoryEstimate(
        **_demo(shapes=(906, 15)), measured=MEASURED,
        full_size="no training state: the weights (SD 1.5: 2.1 GB in fp16 on a GPU, 4.3 GB in float32; "
                  "SDXL: 6.9 GB in fp16) and one small float64 solve per layer (text width × text width); "
                  "the CPU keeps a copy of the UNet to undo the run (SD 1.5: 1.7 GB, SDXL: 5.1 GB in fp16)."),
    "ovw": MemoryEstimate(
        **_demo(digits=(1026, 177), shapes=(1001, 132)), measured=MEASURED,
        full_size="SD 1.5 on a GPU (fp16): 2.1 GB of weights + 44 M cross-attention parameters (the default "
                  "group) × 4 copies (gradient, Adam's two moments, the frozen originals) × 2 B ≈ 0.35 GB "
                  "(param_group full: ≈ 6.9 GB) + the generated sample pools (latents, a few MB)" + _SD_TAIL),
    "saddle": MemoryEstimate(
        **_demo(digits=(1061, 212), shapes=(1029, 160)), measured=MEASURED,
        full_size="SD 1.5 on a GPU (fp16): 2.1 GB of weights + 44 M cross-attention parameters (the default "
                  "group) × 4 copies (gradient, Adam's two moments, the frozen originals) × 2 B ≈ 0.35 GB "
                  "(param_group full: ≈ 6.9 GB) + the generated sample pools (latents, a few MB)" + _SD_TAIL),
    "vdu": MemoryEstimate(
        **_demo(digits=(1097, 225), shapes=(949, 79)), measured=MEASURED,
        full_size="SD 1.5 on a GPU (fp16; cross-attention trained by default): 2.1 GB of weights + 44 M "
                  "trained parameters × 5 copies (gradient, Adam's two moments, θ*, the precision) × 2 B "
                  "≈ 0.44 GB; DDPMs train the whole UNet: 5 × its parameters × the dtype's bytes" + _SD_TAIL),
    "advunlearn": MemoryEstimate(
        **_demo(shapes=(910, 82)), measured=MEASURED,
        full_size="SD 1.5 on a GPU (fp16): 2.1 GB of weights (one copy; the reference code loads two) + 57 M "
                  "trained text-encoder parameters (the MLP blocks; 85 M with layers=all) × 4 copies (gradient, "
                  "Adam's two moments, the frozen originals) × 2 B ≈ 0.45 GB (0.68 GB), plus activations through the frozen UNet (not estimated); the "
                  "CPU keeps a 0.25 GB copy of the text encoder to undo the run. In float32 double every figure."),
    "sfd": MemoryEstimate(
        **_demo(digits=(1224, 375), shapes=(1180, 311)), measured=MEASURED,
        full_size="the teacher + two trained copies (generator, fake score), each with a gradient and Adam's two "
                  "moments, + the generator's EMA and its final copy ≈ 11 × the UNet's weights on the device and "
                  "one more on the CPU to undo the run (SD 1.5 in fp16: ≈ 19 GB + 0.4 GB for the text encoder and "
                  "VAE; a 100 M-parameter DDPM UNet in float32: ≈ 4.4 GB), plus activations (the score gradient "
                  "flows through both networks; not estimated)."),
}


def memory_of(key: str) -> MemoryEstimate:
    return MEMORY.get(key, MemoryEstimate())
