"""What the space families share: the choice/freeze mixin of spaces whose constructor reads choices."""
from __future__ import annotations

from typing import Any

__all__ = ["TopLevelChoices"]


class TopLevelChoices:
    """Mixin for a ``ModelSpace`` whose constructor reads choices that shape every layer (widths, depths).

    :meth:`choose` registers the choice only while the space itself is built (so ``simplify()`` lists it and the
    dry run uses the first candidate); under ``model_context(sample)`` it returns the sample's value and registers
    nothing, so the frozen network has no mutables. :meth:`freeze` rebuilds the space in that context.
    """

    def choose(self, label: str, values: list[Any]) -> Any:
        """The value of choice ``label`` over ``values`` for this build."""
        import nni
        from nni.mutable import ensure_frozen
        from nni.nas.space import current_model

        choice = nni.choice(label, list(values))
        if current_model() is None:
            self.add_mutable(choice)  # type: ignore[attr-defined]  (a ModelSpace method)
        return ensure_frozen(choice)

    def freeze(self, sample: dict[str, Any]) -> Any:
        """Rebuild the space for ``sample`` (fresh weights); the result is a fixed network."""
        from nni.nas.space import model_context

        with model_context(sample):
            return self.__class__(*self.trace_args, **self.trace_kwargs)  # type: ignore[attr-defined]
