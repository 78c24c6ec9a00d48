"""Session: owns the loaded model between jobs, and can put back what a method edited.

Before a method runs, `snapshot(components)` keeps a CPU copy of the components the method declares
it edits (MethodInfo.edits); a failed or cancelled run is `restore`d from it, a finished one stays
loaded (the user can sample or export it) until `revert()` or the next unlearn run, which starts again
from the original weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from .bundle import ModelBundle


@dataclass
class Snapshot:
    states: dict[str, dict[str, torch.Tensor]]  # component -> state_dict on the CPU
    meta: dict = field(default_factory=dict)  # bundle.meta (SFD marks its result "one_step" there)

    @classmethod
    def take(cls, bundle: ModelBundle, components: tuple[str, ...] | list[str]) -> Snapshot:
        mods = bundle.components()
        states = {}
        for name in components:
            if name not in mods:
                continue
            states[name] = {k: v.detach().to("cpu", copy=True) for k, v in mods[name].state_dict().items()}
        return cls(states, copy.deepcopy(bundle.meta or {}))

    def restore(self, bundle: ModelBundle) -> None:
        from .training import forget_masters

        forget_masters()  # the trained float32 values no longer describe the model
        bundle.meta = copy.deepcopy(self.meta)
        mods = bundle.components()
        with torch.no_grad():
            for name, state in self.states.items():
                for k, v in mods[name].state_dict().items():
                    v.copy_(state[k].to(v.device, v.dtype))
                mods[name].requires_grad_(False)
                for p in mods[name].parameters():
                    p.grad = None


@dataclass
class Session:
    bundle: ModelBundle | None = None
    original: Snapshot | None = None  # set while the loaded model holds a finished run's edits
    edited_by: str | None = None  # the run folder whose edits are loaded
    _pending: Snapshot | None = field(default=None, repr=False)

    def set_bundle(self, bundle: ModelBundle) -> None:
        self.bundle, self.original, self.edited_by, self._pending = bundle, None, None, None

    def revert(self) -> None:
        """Put the original weights back after a finished run (no-op when nothing is edited)."""
        if self.bundle is not None and self.original is not None:
            self.original.restore(self.bundle)
        self.original, self.edited_by = None, None

    def begin(self, components: tuple[str, ...] | list[str]) -> None:
        """Start a run from the original weights and remember them."""
        self.revert()
        assert self.bundle is not None
        self._pending = Snapshot.take(self.bundle, components)

    def fail(self) -> None:
        """The run failed or was cancelled: the loaded model becomes the original again."""
        if self._pending is not None and self.bundle is not None:
            self._pending.restore(self.bundle)
        self._pending = None

    def finish(self, run_dir: str) -> None:
        self.original, self.edited_by, self._pending = self._pending, run_dir, None
