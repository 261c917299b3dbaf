"""stabstat's training side: fine-tune many seeds x factors and write run logs.

``runner.logwriter.RunLogger`` needs only pyarrow; the trainer needs the ``[runner]``
extra (torch, transformers, datasets). Nothing here is imported by ``stabstat``; from stabstat
the runner uses only ``stabstat.errors`` and ``stabstat.remote`` (``is_remote``, ``filesystem``).

Modules, each importing only the ones below it::

    cli          stabstat-run: options, dry run, input checks
    launchers    local | slurm (submitit) | ray; the [launcher] table
    pool         local process pool, progress display, end-of-sweep summary
    train        train one run (run_planned: idempotent, via rundirs)
    hf_callback  the same run directory from a Hugging Face Trainer
    sweep        sweep files -> planned runs, run ids, presets
    probe        the end-of-run forgetting probe (MLM perplexity with the top k layers reset)
    rundirs      local or object-store run directories: status, pending, one attempt
    storage      object store: the mirroring logger, remote statuses
    tasks/       TaskData, task loaders, the synthetic task, metrics
    models, optim, gradnorms
    logwriter    RunLogger (durable: atomic file writes; rowbuffer: contract-checked rows)
"""

from __future__ import annotations

__all__ = ["RunLogger"]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    if name == "RunLogger":
        from runner.logwriter import RunLogger

        return RunLogger
    raise AttributeError(name)
