"""Every registered method states its memory next to its time estimate (MethodCard.memory)."""

from __future__ import annotations

from concept_eraser.methods import cards


def test_every_registered_method_has_a_memory_estimate():
    demo_of_kind = {"ddpm-cond": "digits", "sd": "shapes"}
    for card in cards():
        mem = card.memory
        assert mem.text() and mem.full_size and mem.measured, card.info.key
        for kind in card.info.model_kinds & demo_of_kind.keys():  # a figure for every demo model it fits
            demo = demo_of_kind[kind]
            assert 0 < mem.demo_peak_mib[demo] and 0 < mem.demo_added_mib[demo] <= mem.demo_peak_mib[demo], \
                (card.info.key, demo)
        assert set(mem.demo_peak_mib) <= {demo_of_kind[k] for k in card.info.model_kinds if k in demo_of_kind}
