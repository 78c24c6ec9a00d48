"""MemoryEstimate: the memory figures a MethodCard carries beside its time estimate."""

from __future__ import annotations

from concept_eraser.spec.registry import MemoryEstimate


def test_memory_estimate_text():
    m = MemoryEstimate({"digits": 1010, "shapes": 1536}, {"digits": 160}, "weights + 12 bytes per trained parameter",
                       "2026-11-24")
    assert m.demo_text() == ("peak RAM of a whole run (CPU, float32, measured): 1010 MiB on the digits demo (the "
                             "method adds 160 MiB), 1536 MiB on the shapes demo")
    assert m.text() == m.demo_text() + ("; full-size models, estimated from parameter counts: weights + 12 bytes per "
                                        "trained parameter")
    assert not MemoryEstimate() and MemoryEstimate().text() == ""
