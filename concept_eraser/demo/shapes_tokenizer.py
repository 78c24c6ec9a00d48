"""A real CLIP BPE tokenizer with a tiny vocabulary, written from local vocab.json/merges.txt.

Vocabulary layout follows CLIP's: the 256 byte characters, the same with `</w>`, then one entry
per merge, then <|startoftext|> and <|endoftext|>. Any word still tokenizes (into characters); the
merges make every word of the training captions one token.
"""

from __future__ import annotations

import json
from pathlib import Path

MAX_LENGTH = 20
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word (lowest-ranked pair first, all its occurrences merged)."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = {(a, b) for a, b in zip(parts, parts[1:], strict=False)}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        out, i = [], 0
        while i < len(parts):
            if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                out.append(parts[i] + parts[i + 1])
                i += 2
            else:
                out.append(parts[i])
                i += 1
        parts = out
    return parts


def make_merges(words: list[str]) -> list[tuple[str, str]]:
    """Merges that make each word one token: for each word, merge its current tokens left to right.

    A merge appended later ranks below all earlier ones, so it never changes a word that already
    was one token; the loop therefore ends with every word as one token.
    """
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        while len(parts := _bpe(word, ranks)) > 1:
            pair = (parts[0], parts[1])
            ranks[pair] = len(merges)
            merges.append(pair)
    assert all(len(_bpe(w, ranks)) == 1 for w in words)
    return merges


def write_tokenizer(folder: str | Path, words: list[str], max_length: int = MAX_LENGTH):
    """Write vocab.json, merges.txt and the tokenizer configs into `folder`; return the CLIPTokenizer."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    merges = make_merges(sorted({w.lower() for w in words}))
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length,
                        pad_token=EOS)
    tok.save_pretrained(str(folder))
    return tok
