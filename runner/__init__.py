"""stabstat's training side: fine-tune many seeds x factors and write run logs.

``runner.logwriter.RunLogger`` needs only pyarrow; the trainer needs the ``[runner]``
extra (torch, transformers, datasets). Nothing here is imported by ``stabstat``.
"""

from __future__ import annotations

__all__ = ["RunLogger"]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    if name == "RunLogger":
        from runner.logwriter import RunLogger

        return RunLogger
    raise AttributeError(name)
