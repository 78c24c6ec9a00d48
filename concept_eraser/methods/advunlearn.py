"""AdvUnlearn: robust concept erasure by adversarial training of the text encoder.

Paper: Zhang, Jia, Chen, Liu, Sun, Liu, Ni, Zhang, Hong, Liu, Wang, Liu, "Defensive Unlearning with
Adversarial Training for Robust Concept Erasure in Diffusion Models", NeurIPS 2024 (official code:
OPTML-Group/AdvUnlearn, train-scripts/AdvUnlearn.py, utils/get_loss.py, utils/attack_util.py).

Only the text encoder TE_θ is trained (its transformer layers and final norm; token and position
embeddings stay frozen); the UNet ε is frozen and shared by teacher and student. Per iteration:

  1. draw a DDIM step k of `rollout_steps`; roll out x_k from noise with the frozen model, CFG
     `guidance` (3), conditioned on c_f (the forget rows) and on c_r (the retain rows);
  2. targets from the frozen UNet with the *frozen* text encoder TE*:
         e_0 = ε(x_k, TE*(∅), t),   e_p = ε(x_k, TE*(c_f), t);
  3. inner attack (after `warmup` iterations, every `attack_every`): k soft token embeddings δ
     inserted after the start token of c_f (the paper's "prefix_k"), optimised for `attack_steps`
     Adam steps (or one signed step, `fast`) to minimise ‖ε(x_k, TE_θ([δ; c_f]), t) − e_p‖²: the
     prompt that makes the *current unlearned* model reproduce the original concept prediction;
  4. outer step on θ (the paper's Eq. 5 with the ESD target, Eq. 6 utility regulariser):
         L = ‖ε(x_k, TE_θ(c̃), t) − (e_0 − η (e_p − e_0))‖²
             + γ ‖ε(x^r_k, TE_θ(c_r), t) − ε(x^r_k, TE*(c_r), t)‖²
     with c̃ = [δ; c_f] (c_f itself during warm-up).

Memory: the reference code loads two full Stable Diffusion copies. Here the UNet is frozen and never
trained, so one copy serves both branches; TE*'s outputs (for c_f, ∅ and every retain prompt) are
computed once, before training, with the original text-encoder tensors swapped in
(`engine.training.Originals`), and cached. No second model exists (bench/advunlearn.py measures it).

Reconstruction points (not fixed by the paper; our choices):
  * batching: `batch` forget roll-outs and `retain_batch` retain roll-outs per step (paper: 1 and 5)
    and one δ shared by the step's forget rows; δ starts at random vocabulary embeddings or at the
    previous round's δ (`attack_init`, the code's "latest");
  * ∅ (the empty prompt) is always a retain row: CFG at sampling time uses TE_θ(∅), so it must not
    drift (our addition; the paper's retain set is COCO-object prompts only);
  * "fast" AT = one signed-gradient step of size `fast_step` from the initial δ;
  * default retain prompts for the shapes demo (when the job gives none): every caption
    "{template}" of a shape, colour and texture that does not name the concept (nor a synonym),
    with the caption templates 1-5 of demo/shapes_data.py, not template 0 that the judged
    evaluation prompts use. Other models need retain prompts (the paper: COCO objects without
    the concept);
  * defaults adapted to the tiny demo (64-d, 3-layer CLIP): lr 1e-3 (paper 1e-5 on SD's 123 M
    encoder), 100 iterations with 20 warm-up (paper 1000 / 200), 10 attack steps at lr 0.01
    (paper 30 at 1e-3; the demo's embeddings have element std ~0.02), roll-out of 20 DDIM steps
    (paper 50), γ = 0.5 (paper README 0.3). Models over 100 M parameters get the paper's values.

The result is a plug-and-play text encoder: `save_text_encoder` writes it alone (safetensors +
config + the job in the metadata) and `apply_text_encoder` loads it into another pipeline of the
same text-encoder architecture.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field

from concept_eraser.spec.events import Event, Log
from concept_eraser.spec.jobspec import JobSpec
from concept_eraser.spec.registry import MethodConfig, MethodInfo, Needs
from concept_eraser.spec.runloop import UserError
from concept_eraser.spec.summary import ModelSummary

from .base import Method

if TYPE_CHECKING:
    from concept_eraser.engine.bundle import ModelBundle
    from concept_eraser.engine.unlearn import UnlearnRun

PAPER = ('Zhang et al., "Defensive Unlearning with Adversarial Training for Robust Concept Erasure in '
         'Diffusion Models", NeurIPS 2024')
Layers = Literal["all", "first", "attention", "mlp"]
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
ADV = {"advanced": True}


class AdvUnlearnConfig(MethodConfig):
    steps: int = Field(100, ge=1, le=100_000, description="Outer iterations (the paper: 1000).")
    lr: float | None = Field(
        None, gt=0, le=1.0, description="Learning rate of the text encoder. None = automatic: 1e-5 (the paper's) "
        "for models over 100 M parameters, 1e-3 for the small demo models.")
    eta: float = Field(1.0, ge=0.0, le=10.0, description="Negative guidance η of the ESD target.")
    retain_weight: float = Field(0.5, ge=0.0, le=100.0, description="γ: weight of the utility term on retain "
                                 "prompts (the paper's README: 0.3).")
    warmup: int | None = Field(None, ge=0, description="Iterations without attack. None = 20% of steps (the "
                               "paper: 200 of 1000).")
    attack_steps: int = Field(10, ge=1, le=1000, description="Adam steps of the inner attack (the paper: 30).")
    attack_lr: float = Field(0.01, gt=0, le=10.0, description="Adam learning rate of the inner attack "
                             "(the paper: 1e-3 on SD's embeddings).")
    adv_tokens: int = Field(1, ge=1, le=16, description="Adversarial soft tokens prepended to the concept (the "
                            "paper: 1).")
    fast: bool = Field(False, description="Fast AT: one signed-gradient attack step instead of attack_steps "
                       "Adam steps (cheaper, less robust).")
    fast_step: float = Field(0.03, gt=0, le=10.0, description="Step size of the fast attack's signed step.",
                             json_schema_extra=ADV)
    attack_every: int = Field(1, ge=1, description="Refresh the adversarial prompt every N iterations.",
                              json_schema_extra=ADV)
    attack_init: Literal["latest", "random"] = Field(
        "latest", description="Start each attack from the previous δ (latest) or random vocabulary embeddings.",
        json_schema_extra=ADV)
    layers: Layers = Field("all", description="Trained text-encoder part: all transformer layers + final norm, "
                           "the first `first_layers` layers, attention only, or MLP only.")
    first_layers: int = Field(1, ge=1, le=64, description="How many layers `layers=first` trains.",
                              json_schema_extra=ADV)
    guidance: float = Field(3.0, ge=1.0, le=20.0, description="Classifier-free guidance of the roll-out.",
                            json_schema_extra=ADV)
    rollout_steps: int | None = Field(
        None, ge=2, le=1000, description="DDIM steps of the roll-out schedule. None = 50 (the paper's) for models "
        "over 100 M parameters, 20 for the small demos.", json_schema_extra=ADV)
    batch: int = Field(2, ge=1, le=256, description="Forget roll-outs per iteration (the paper: 1).")
    retain_batch: int = Field(3, ge=0, le=256, description="Retain prompts per iteration, ∅ included (the "
                              "paper: 5).")
    grad_clip: float | None = Field(1.0, gt=0, description="Max global gradient norm; None = no clipping.",
                                    json_schema_extra=ADV)
    checkpoint_every: int = Field(0, ge=0, description="Write checkpoint.pt every N steps (0 = at the end and "
                                  "when cancelled).", json_schema_extra=ADV)

    @classmethod
    def smoke(cls) -> AdvUnlearnConfig:
        return cls(steps=3, warmup=1, attack_steps=2, batch=1, retain_batch=2, rollout_steps=4)


# ---------------------------------------------------------------- helpers (also used by tests / bench)

def trained_params(bundle: ModelBundle, layers: str = "all", first_layers: int = 1) -> dict[str, torch.nn.Parameter]:
    """The text-encoder tensors AdvUnlearn trains (engine.params 'text-encoder', narrowed by `layers`)."""
    import re

    from concept_eraser.engine.params import select_params

    params = select_params(bundle, "text-encoder")
    if layers == "all":
        return params

    def layer(n: str) -> int | None:
        m = re.search(r"\.layers\.(\d+)\.", n)
        return int(m.group(1)) if m else None

    keep = {
        "first": lambda n: layer(n) is not None and layer(n) < first_layers,
        "attention": lambda n: ".self_attn." in n,
        "mlp": lambda n: ".mlp." in n,
    }[layers]
    out = {n: p for n, p in params.items() if keep(n)}
    if not out:
        raise UserError(f"layers={layers!r} selects no text-encoder tensor in this model")
    return out


@contextmanager
def soft_tokens(text_encoder: torch.nn.Module, delta: torch.Tensor) -> Iterator[None]:
    """While active, token-embedding rows 1..k (right after the start token) of every text-encoder call are
    `delta` (k, D) or (B, k, D): positions, causal mask and end token stay those of a real prompt."""
    emb = text_encoder.get_input_embeddings()
    k = delta.shape[-2]

    def hook(_module, _inputs, out):
        rows = delta.to(out.dtype).expand(out.shape[0], k, out.shape[-1]) if delta.ndim == 2 else delta.to(out.dtype)
        return torch.cat([out[:, :1], rows, out[:, 1 + k:]], dim=1)

    h = emb.register_forward_hook(hook)
    try:
        yield
    finally:
        h.remove()


def adv_token_ids(bundle: ModelBundle, prompts: list[str], k: int) -> torch.Tensor:
    """Token ids with k placeholder slots after the start token (the end token kept last when truncated)."""
    from concept_eraser.engine.denoise import token_ids

    ids = token_ids(bundle, prompts)
    length = ids.shape[1]
    pad = bundle.tokenizer.pad_token_id if bundle.tokenizer.pad_token_id is not None else int(ids[0, -1])
    eos = bundle.tokenizer.eos_token_id
    new = torch.cat([ids[:, :1], torch.full((ids.shape[0], k), pad, dtype=ids.dtype, device=ids.device), ids[:, 1:]],
                    dim=1)[:, :length].clone()
    if eos is not None:
        for row in new:
            if not (row == eos).any():
                row[-1] = eos
    return new


def te_hidden(bundle: ModelBundle, ids: torch.Tensor, delta: torch.Tensor | None = None) -> torch.Tensor:
    """encoder_hidden_states of the bundle's (trainable) text encoder for token ids, δ swapped in when given."""
    te = bundle.text_encoder
    if delta is None:
        return te(ids)[0].to(bundle.dtype)
    with soft_tokens(te, delta):
        return te(ids)[0].to(bundle.dtype)


def inner_attack(bundle: ModelBundle, ids: torch.Tensor, x: torch.Tensor, t: torch.Tensor, e_p: torch.Tensor,
                 delta: torch.Tensor, steps: int, lr: float, fast: bool = False,
                 fast_step: float = 0.03) -> tuple[torch.Tensor, list[float]]:
    """Optimise δ (k, D) so that ε(x, TE_θ([δ; c_f]), t) reproduces e_p; returns (δ, losses before each step).

    Gradients go to δ only (torch.autograd.grad), never into the text encoder's .grad."""
    from concept_eraser.engine.denoise import Cond, predict

    delta = delta.detach().clone().float().requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=lr) if not fast else None
    losses: list[float] = []
    for _ in range(1 if fast else steps):
        out = predict(bundle, x, t, Cond(hidden=te_hidden(bundle, ids, delta)))
        loss = torch.nn.functional.mse_loss(out.float(), e_p.float())
        (grad,) = torch.autograd.grad(loss, [delta])
        losses.append(loss.item())
        with torch.no_grad():
            if fast:
                delta -= fast_step * grad.sign()
            else:
                delta.grad = grad
                opt.step()
                delta.grad = None
    return delta.detach(), losses


def shapes_retain_prompts(concepts: list[str]) -> list[str]:
    """Default retain prompts for the shapes demo: captions (templates 1-5) naming none of the concepts."""
    import re

    from concept_eraser.demo.shapes_data import (
        COLOURS,
        SHAPES,
        SYNONYMS,
        TEMPLATES,
        TEXTURE_PHRASES,
        TEXTURES,
    )

    banned = set()
    for c in concepts:
        for w in re.findall(r"[a-z]+", c.lower()):
            base = next((b for b, syns in SYNONYMS.items() if w in syns), w)
            banned |= {base, *SYNONYMS.get(base, ())}
    out = []
    i = 0
    for s in SHAPES:
        for c in COLOURS:
            for tx in TEXTURES:
                if {s, c, tx} & banned:
                    continue
                template = 1 + i % (len(TEMPLATES) - 1)
                i += 1
                out.append(TEMPLATES[template].format(c=c, t=tx, s=s, tp=TEXTURE_PHRASES[tx].format(t=tx)))
    return out


# ---------------------------------------------------------------- plug-and-play text encoder

def save_text_encoder(bundle_or_encoder: Any, path: str | Path, metadata: dict | None = None) -> Path:
    """Write the (unlearned) text encoder alone to folder `path`: model.safetensors (string metadata: the
    JobSpec as JSON under "job" and anything else given) and config.json (the transformers config)."""
    from safetensors.torch import save_file

    from concept_eraser.spec.files import atomic_write, atomic_write_text

    te = getattr(bundle_or_encoder, "text_encoder", bundle_or_encoder)
    if te is None:
        raise UserError("this model has no text encoder to export")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    meta = {"format": "concept_eraser.text_encoder", "method": "advunlearn"}
    for k, v in (metadata or {}).items():
        if isinstance(v, JobSpec):
            v = v.to_json()
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    state = {k: v.detach().cpu().contiguous() for k, v in te.state_dict().items()}
    atomic_write(path / WEIGHTS, lambda p: save_file(state, str(p), metadata=meta))
    atomic_write_text(path / CONFIG, te.config.to_json_string())
    return path


def read_text_encoder_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(Path(path) / WEIGHTS), framework="pt") as f:
        return dict(f.metadata() or {})


def apply_text_encoder(pipe_or_bundle: Any, path: str | Path) -> dict[str, str]:
    """Load an exported text encoder into a diffusers pipeline or ModelBundle whose text encoder has the same
    architecture (checked against config.json and every tensor's shape); returns the file's metadata."""
    from safetensors.torch import load_file

    path = Path(path)
    te = getattr(pipe_or_bundle, "text_encoder", None)
    if te is None:
        raise UserError("the target has no text encoder")
    if not (path / WEIGHTS).is_file():
        raise UserError(f"{path} holds no {WEIGHTS}; export a text encoder with save_text_encoder first")
    cfg = json.loads((path / CONFIG).read_text(encoding="utf-8")) if (path / CONFIG).is_file() else {}
    mine = te.config.to_dict()
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
                "max_position_embeddings"):
        if key in cfg and cfg[key] != mine.get(key):
            raise UserError(f"the exported text encoder has {key}={cfg[key]}, the target's has {mine.get(key)}: "
                            f"not the same architecture")
    state = load_file(str(path / WEIGHTS))
    own = te.state_dict()
    missing, extra = set(own) - set(state), set(state) - set(own)
    if missing or extra:
        raise UserError(f"tensor names differ from the target's text encoder (missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(extra)[:3]})")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise UserError(f"tensor {k} has shape {tuple(v.shape)}, the target's {tuple(own[k].shape)}")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k].to(v.device, v.dtype))
    return read_text_encoder_metadata(path)


# ---------------------------------------------------------------- the method

class AdvUnlearn(Method):
    Config: ClassVar[type[MethodConfig]] = AdvUnlearnConfig
    estimate = "about 2-4 min on a 2-core CPU for the shapes demo"
    info = MethodInfo(
        key="advunlearn", title="AdvUnlearn (robust, text encoder)", paper=PAPER,
        summary="Adversarial training of the text encoder with the ESD target: erasure that resists adversarial "
                "prompts; the result is a plug-and-play text encoder. Needs retain prompts (the shapes demo has "
                "defaults).",
        model_kinds=frozenset({"sd"}), needs=Needs(concept=True), edits=("text_encoder",))

    def check(self, summary: ModelSummary, spec: JobSpec, config: MethodConfig) -> None:
        super().check(summary, spec, config)
        if not spec.retain and summary.name != "shapes" and config.retain_weight > 0:
            raise UserError("advunlearn needs retain prompts that do not show the concept (the paper: COCO object "
                            "prompts): give --retain ... or set retain_weight=0")

    def run(self, run: UnlearnRun, config: AdvUnlearnConfig) -> Generator[Event, None, dict[str, float]]:
        from concept_eraser.engine import denoise
        from concept_eraser.engine.params import count
        from concept_eraser.engine.training import Originals, TrainSettings

        bundle = run.bundle
        params = trained_params(bundle, config.layers, config.first_layers)
        n_params = count(params)
        big = bundle.summary.parameters > 100e6
        lr = config.lr if config.lr is not None else (1e-5 if big else 1e-3)
        n_roll = config.rollout_steps or (50 if big else 20)
        warmup = config.warmup if config.warmup is not None else config.steps // 5
        forget = [str(i) for i in run.inputs.forget_items]
        retain = [str(i) for i in run.inputs.retain_items if i is not None]
        if not retain and bundle.summary.name == "shapes":
            retain = shapes_retain_prompts(forget)
            yield Log("info", f"advunlearn: {len(retain)} default shapes retain prompts (no --retain given)")
        retain = [None, *retain]  # ∅ drives CFG: keep TE(∅) too
        gamma = config.retain_weight if config.retain_batch > 0 else 0.0
        yield Log("info", f"advunlearn: training {len(params)} text-encoder tensors ({n_params:,} values, layers "
                          f"{config.layers}), lr {lr:g}, eta {config.eta}, gamma {gamma:g}, warm-up {warmup}, "
                          f"attack {'fast' if config.fast else f'{config.attack_steps} Adam steps'}")
        originals = Originals(params)
        with originals.active(), torch.no_grad():  # TE*: the frozen encoder's outputs, cached once
            cond_f = denoise.encode(bundle, forget).detach()
            null = denoise.encode(bundle, [None]).detach()
            cond_r = denoise.encode(bundle, retain).detach() if gamma > 0 else None
        ids_f_plain = denoise.token_ids(bundle, forget)
        ids_f_adv = adv_token_ids(bundle, forget, config.adv_tokens)
        ids_r = denoise.token_ids(bundle, ["" if r is None else r for r in retain])
        table = bundle.text_encoder.get_input_embeddings().weight
        B, R = config.batch, config.retain_batch if gamma > 0 else 0
        state: dict[str, Any] = {"delta": None, "attack_first": float("nan"), "attack_last": float("nan")}

        def loss_fn(step: int, g: torch.Generator):
            k = int(torch.randint(0, n_roll, (1,), generator=g))
            fi = torch.randint(0, len(forget), (B,), generator=g).to(bundle.device)
            ri = torch.randint(0, len(retain), (R,), generator=g).to(bundle.device)
            cf = cond_f._map(lambda v: v.index_select(0, fi))
            rows = denoise.Cond.cat([cf, cond_r._map(lambda v: v.index_select(0, ri))]) if R else cf
            n = len(rows)
            with torch.no_grad():  # teacher: frozen UNet, TE* encodings (the UNet is never trained)
                x, t = denoise.rollout(bundle, rows, config.guidance, k, n_roll, g, batch=n, uncond=null.expand(n))
                e = denoise.predict(bundle, torch.cat([x[:B], x[:B]]), torch.cat([t[:B], t[:B]]),
                                    denoise.Cond.cat([cf, null.expand(B)]))
                e_p, e_0 = e.chunk(2)
                tgt = e_0 - config.eta * (e_p - e_0)
                e_r = denoise.predict(bundle, x[B:], t[B:], rows._map(lambda v: v[B:])) if R else None
            attacked = step >= warmup
            scalars: dict[str, float] = {}
            if attacked:
                if (step - warmup) % config.attack_every == 0 or state["delta"] is None:
                    init = state["delta"]
                    if init is None or config.attack_init == "random":
                        tok = torch.randint(0, table.shape[0], (config.adv_tokens,), generator=g).to(table.device)
                        init = table[tok].detach().float()
                    state["delta"], losses = inner_attack(
                        bundle, ids_f_adv.index_select(0, fi), x[:B], t[:B], e_p, init, config.attack_steps,
                        config.attack_lr, config.fast, config.fast_step)
                    state["attack_first"], state["attack_last"] = losses[0], losses[-1]
                    scalars["attack_start"], scalars["attack_end"] = losses[0], losses[-1]
                hidden_f = te_hidden(bundle, ids_f_adv.index_select(0, fi), state["delta"])
            else:
                hidden_f = te_hidden(bundle, ids_f_plain.index_select(0, fi))
            hidden = torch.cat([hidden_f, te_hidden(bundle, ids_r.index_select(0, ri))]) if R else hidden_f
            out = denoise.predict(bundle, x, t, denoise.Cond(hidden=hidden))
            erase = torch.nn.functional.mse_loss(out[:B].float(), tgt.float())
            loss = erase
            scalars["erase"] = erase.item()
            if e_r is not None:
                keep = torch.nn.functional.mse_loss(out[B:].float(), e_r.float())
                scalars["retain"] = keep.item()
                loss = loss + gamma * keep
            scalars["loss"] = loss.item()
            return loss, scalars

        settings = TrainSettings(steps=config.steps, lr=lr, optimizer="adam", grad_clip=config.grad_clip,
                                 checkpoint_every=config.checkpoint_every, seed=run.spec.seed,
                                 mixed_precision=_mixed_precision(bundle))
        stats = yield from run.train(params, loss_fn, settings, extra={"layers": config.layers})
        return {**stats, "trained_values": float(n_params), "lr": lr, "retain_weight": gamma,
                "warmup": float(warmup)}


def _mixed_precision(bundle) -> str:
    if bundle.device.type != "cuda" or bundle.dtype == torch.float32:
        return "no"
    return "bf16" if bundle.dtype == torch.bfloat16 else "fp16"
