"""Forward passes and rows through a pipeline's text encoders, counted by hooks."""

from __future__ import annotations

from typing import Any


class Passes:
    """Forward passes and rows through each text encoder of a pipeline, counted by hooks."""

    def __init__(self, pipe: Any) -> None:
        names = ("text_encoder", "text_encoder_2", "text_encoder_3")
        self.models = [getattr(pipe, n) for n in names if getattr(pipe, n, None) is not None]
        self.counts = [[0, 0] for _ in self.models]
        self.handles = [
            getattr(m, "text_model", m).register_forward_pre_hook(self._hook(i), with_kwargs=True)
            for i, m in enumerate(self.models)
        ]

    def _hook(self, i: int) -> Any:
        def count(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            self.counts[i][0] += 1
            self.counts[i][1] += int(ids.shape[0])

        return count

    def take(self) -> list[tuple[int, int]]:
        """(passes, rows) per text encoder since the last call."""
        out = [(calls, rows) for calls, rows in self.counts]
        self.counts = [[0, 0] for _ in self.models]
        return out

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
