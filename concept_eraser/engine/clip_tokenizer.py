"""The CLIP BPE tokenizer of Stable Diffusion, built offline from the vocabulary open_clip_torch ships.

open_clip's `bpe_simple_vocab_16e6.txt.gz` holds the merge list of OpenAI's CLIP tokenizer. The
vocabulary follows from it: the 256 byte symbols, the same with the end-of-word marker `</w>`,
one token per merge, then `<|startoftext|>` and `<|endoftext|>` (49408 tokens). vocab.json and
merges.txt in the Hugging Face layout are derived once and cached under
`$CONCEPT_ERASER_CACHE/clip-bpe/` (default `~/.cache/concept_eraser`), written atomically.

The releases differ only in the pad token: SD 1.x and SDXL's first tokenizer pad with
`<|endoftext|>`, SD 2.x and SDXL's second tokenizer (OpenCLIP) with `!` (id 0).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from pathlib import Path

from concept_eraser.spec.files import atomic_write_text
from concept_eraser.spec.runloop import UserError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # the slice OpenAI's SimpleTokenizer uses
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
PAD_EOS, PAD_BANG = EOS, "!"


def cache_dir() -> Path:
    env = os.environ.get("CONCEPT_ERASER_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "concept_eraser"
    return base / "clip-bpe"


def _bpe_source() -> Path:
    spec = importlib.util.find_spec("open_clip")  # locates the package without importing it (no torch import)
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / BPE_FILE).is_file():
            return Path(loc) / BPE_FILE
    raise UserError(f"the CLIP vocabulary ({BPE_FILE}) was not found: install open_clip_torch "
                    f"(pip install open_clip_torch), which ships it")


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable character table, in vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in printable] + [table[b] for b in range(256) if b not in printable]


def build_vocab(bpe_gz: Path) -> tuple[dict[str, int], list[str]]:
    lines = gzip.open(bpe_gz, "rt", encoding="utf-8").read().split("\n")
    merges = lines[1 : N_MERGES + 1]  # the first line is a version header
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != 49408:
        raise UserError(f"{bpe_gz} is not the CLIP vocabulary ({len(vocab)} tokens instead of 49408); reinstall "
                        f"open_clip_torch")
    return vocab, merges


def vocab_files() -> tuple[Path, Path]:
    """(vocab.json, merges.txt), derived from open_clip's file on first use and cached."""
    folder = cache_dir()
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    if not (vocab_file.is_file() and merges_file.is_file()):
        vocab, merges = build_vocab(_bpe_source())
        atomic_write_text(merges_file, "#version: 0.2\n" + "\n".join(merges) + "\n")
        atomic_write_text(vocab_file, json.dumps(vocab, ensure_ascii=False))
    return vocab_file, merges_file


def load_clip_tokenizer(pad_token: str = PAD_EOS, max_length: int = 77):
    """transformers' CLIPTokenizer over the real CLIP vocabulary, without downloads."""
    from transformers import CLIPTokenizer

    vocab_file, merges_file = vocab_files()
    return CLIPTokenizer(str(vocab_file), str(merges_file), pad_token=pad_token, model_max_length=max_length)
