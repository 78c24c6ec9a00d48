"""Unlearning methods, registered by an explicit import list (never by scanning folders).

Each module defines Method subclasses; METHOD_CLASSES lists them in the order the GUI shows them.
"""

from __future__ import annotations

from concept_eraser.spec.registry import MethodCard
from concept_eraser.spec.runloop import UserError

from .base import Method

METHOD_CLASSES: tuple[type[Method], ...] = ()  # filled from the explicit imports below


def _collect() -> tuple[type[Method], ...]:
    classes: list[type[Method]] = []
    # Add one line per method module, in display order.
    from . import advunlearn, esd, ovw, saddle, sfd, uce, vdu

    classes += [esd.EsdX, esd.EsdU, esd.EsdFull]
    classes += [uce.UCE]
    classes += [ovw.OVW, saddle.Saddle]
    classes += [vdu.VDU]
    classes += [advunlearn.AdvUnlearn]
    classes += [sfd.SFD]
    return tuple(classes)


METHOD_CLASSES = _collect()


def registry() -> dict[str, type[Method]]:
    return {cls.info.key: cls for cls in METHOD_CLASSES}


def get_method(key: str) -> Method:
    reg = registry()
    if key not in reg:
        raise UserError(f"unknown method {key!r}; choose one of: {', '.join(reg) or '(none registered)'}")
    return reg[key]()


def cards() -> list[MethodCard]:
    return [cls.card() for cls in METHOD_CLASSES]
