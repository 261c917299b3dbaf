"""A Hugging Face ``TrainerCallback`` that writes a stabstat run directory from any ``Trainer``.

    from runner.hf_callback import StabstatCallback

    trainer = Trainer(model=model, args=TrainingArguments(..., logging_steps=1), ...,
                      callbacks=[StabstatCallback("runs", config={"recipe": "mine", "task": "rte"})])
    trainer.train()

What it records (the same run-log contract as ``stabstat-run``):

* ``steps``: one row per optimiser step: lr (the scheduler's, for that step), the total gradient
  norm **before clipping**, epoch, wall time, and the training loss *as the Trainer logs it* --
  the mean over the logging window, so only at logging steps (null elsewhere). Use
  ``logging_steps=1`` for a per-step loss.
* ``layer_grads``: per-layer gradient norms **before clipping**, every step.
* ``evals``: every ``trainer.evaluate()`` during training, ``eval_<metric>`` -> ``<metric>`` (split
  ``dev`` unless you pass ``split=``); runtime/throughput entries are dropped.
* ``run.json``: the config derived from ``TrainingArguments`` (lr, seed, warm-up, epochs or
  max_steps, batch size, weight decay, clipping, Adam betas/eps, ``optim``), overridden by your
  ``config=`` mapping; ``task`` facts if you pass ``task=`` (give ``majority`` to make failure
  analysis possible).

Gradient clipping and the pre-clip norms. The Trainer clips the gradients *before* calling
``on_pre_optimizer_step`` and does not pass the pre-clip norm to callbacks, so per-layer norms
read there would be clipped ones. Therefore, when the Trainer clips in plain PyTorch (no fp16
GradScaler, DeepSpeed or FSDP), the callback takes over the clipping: it sets
``args.max_grad_norm = 0`` for the duration of ``train()`` and, in ``on_pre_optimizer_step``,
computes the per-layer norms and clips in place with the same formula as
``torch.nn.utils.clip_grad_norm_`` (scale by ``min(1, max_norm / (total + 1e-6))``). Training is
unchanged (the tests compare the weights with and without the callback) and the Trainer still
logs the same pre-clip ``grad_norm``. With fp16, DeepSpeed or FSDP it leaves clipping alone,
records the norms it sees (after clipping) and sets ``config["layer_grads_after_clipping"] = true``
in ``run.json`` so the analysis can tell.

The forgetting probe (Mosbach et al. 2021, section 4; :mod:`runner.probe`) runs at
``on_train_end`` when asked: ``StabstatCallback(..., probe=["forgetting"], probe_texts=texts_or_file)``.
It resets the top k layers of the trained model to the pre-trained checkpoint
(``probe_pretrained``, default the model's ``_name_or_path``) for k = 0..L and logs the MLM loss,
perplexity and accuracy on the masked texts as evaluations of split ``probe.k<k>`` at the last
step. A model without a pre-trained MLM head gets one line on stderr and the run completes as usual.

Per-example predictions (``predictions.parquet``, for ``stabstat compare --resample
seeds,examples``) on request. The Trainer hands evaluation predictions to ``compute_metrics``
only, never to callbacks, so the supported way is to let the callback wrap it::

    cb = StabstatCallback("runs", write_predictions=True)
    trainer = Trainer(..., compute_metrics=cb.wrap_compute_metrics(my_metrics), callbacks=[cb])

(``my_metrics`` may be None.) At each evaluation during training the wrapper keeps the
predictions (argmax of the logits, the first output when the model returns a tuple), the
labels and the softmax probability of the predicted label; ``on_evaluate`` writes them at that
step, ``example_id`` = row of the eval dataset (the Trainer evaluates in order). With
``write_predictions=True`` and no wrapper, one line on stderr says how to fix it.

Stopping doomed runs: ``StabstatCallback(..., stop_doomed=RULE)`` (a rule printed by ``stabstat
early``, or ``"default"``; :mod:`schemas.stop_rule`) checks the run at the first logging step at
or after the rule's check step and, when the rule holds, sets ``control.should_training_stop``:
the run ends ``stopped`` with the step, the reason and the rule in ``run.json``. Give ``task=``
with ``majority`` and ``num_labels`` for the features that need the class balance.

Not recorded: an evaluation run before ``train()``. If training raises, the run stays ``running`` and reads as
``interrupted`` once its heartbeat is stale.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import TrainerCallback

__all__ = ["StabstatCallback"]

_DROP_EVAL = ("runtime", "samples_per_second", "steps_per_second", "epoch", "jit_compilation_time")


def _config_from_args(args: Any, model: Any) -> dict[str, Any]:
    world = max(1, int(getattr(args, "world_size", 1) or 1))
    max_steps = int(args.max_steps) if args.max_steps and args.max_steps > 0 else None
    optim = str(getattr(args.optim, "value", args.optim))
    warmup_ratio = getattr(args, "warmup_ratio", None)
    warmup_steps = getattr(args, "warmup_steps", None)
    return {
        "model": str(getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__),
        "seed": int(args.seed),
        "lr": float(args.learning_rate),
        # torch's and HF's AdamW always apply Adam's bias correction
        "bias_correction": True if "adam" in optim.lower() else None,
        "optim": optim,
        "warmup_ratio": None if warmup_ratio is None else float(warmup_ratio),
        "warmup_steps": None if warmup_steps is None else float(warmup_steps),
        "epochs": None if max_steps else float(args.num_train_epochs),
        "max_steps": max_steps,
        "batch_size": int(args.per_device_train_batch_size) * int(args.gradient_accumulation_steps) * world,
        "weight_decay": float(args.weight_decay),
        "max_grad_norm": float(args.max_grad_norm) if args.max_grad_norm else None,
        "adam_eps": float(args.adam_epsilon),
        "adam_beta1": float(args.adam_beta1),
        "adam_beta2": float(args.adam_beta2),
        "lr_scheduler": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
    }


def _predictions_of(eval_pred: Any) -> tuple[Any, Any, Any] | None:
    """(labels (N,) int64, predicted label (N,) int64, its softmax probability (N,)) of an
    ``EvalPrediction`` of a classifier; None without labels or for other output shapes."""
    import numpy as np

    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    if labels is None or isinstance(labels, (tuple, list)):
        return None
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.size:
        return None
    z = np.exp(logits - logits.max(axis=1, keepdims=True))  # stable softmax
    prob = z / z.sum(axis=1, keepdims=True)
    pred = prob.argmax(axis=1)
    return labels.astype(np.int64), pred.astype(np.int64), prob[np.arange(pred.size), pred]


class StabstatCallback(TrainerCallback):
    """Write ``out_dir/<run_id>/`` (run-log contract v1) from a Hugging Face ``Trainer``.

    Parameters
    ----------
    out_dir
        Parent folder of the run directory.
    run_id
        Directory name; default: derived from the config like ``stabstat-run`` does
        (``<task>-<10 hex of its SHA-256>``).
    config
        Extra or overriding config entries (factors), e.g. ``{"task": "rte", "recipe": "ours"}``.
    task
        Task facts for ``run.json`` (name, num_labels, n_train, n_dev, metrics, majority,
        higher_is_better); ``runner.tasks.TaskData.info()`` gives them for the built-in tasks.
    split
        Name of the split ``trainer.evaluate()`` scores (default ``dev``).
    overwrite
        Replace an existing run directory of the same id.
    probe
        End-of-training probes, e.g. ``["forgetting"]`` (see the module docstring).
    probe_texts
        The probe's texts: a list of strings or a text file (one text per line); required with ``probe``.
    probe_pretrained
        The pre-trained ``*ForMaskedLM`` checkpoint (folder or hub name); default the model's
        ``config._name_or_path``.
    probe_max_length, probe_max_texts, probe_seed
        Tokens per text, number of texts (the first ones) and the masks' seed.
    write_predictions
        Write per-example predictions at each evaluation; needs ``compute_metrics=``
        :meth:`wrap_compute_metrics` (see the module docstring).
    stop_doomed
        An early-stopping rule (:mod:`schemas.stop_rule`, e.g. printed by ``stabstat early``, or
        ``"default"``): a run it judges doomed stops (``control.should_training_stop``) and ends
        ``stopped``.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        run_id: str | None = None,
        config: Mapping[str, Any] | None = None,
        task: Mapping[str, Any] | None = None,
        split: str = "dev",
        overwrite: bool = False,
        flush_every_s: float = 30.0,
        probe: Sequence[str] = (),
        probe_texts: Sequence[str] | str | os.PathLike[str] | None = None,
        probe_pretrained: str | None = None,
        probe_max_length: int = 128,
        probe_max_texts: int | None = None,
        probe_seed: int = 0,
        write_predictions: bool = False,
        stop_doomed: str | None = None,
    ) -> None:
        from runner.probe import DEFAULT_MAX_TEXTS, PROBES, read_probe_file
        from stabstat.errors import ConfigError

        unknown = [p for p in probe if p not in PROBES]
        if unknown:
            raise ConfigError(f"StabstatCallback(probe=...): unknown probe {unknown[0]!r}; known: {', '.join(PROBES)}")
        if probe and probe_texts is None:
            raise ConfigError("StabstatCallback(probe=...): give probe_texts= (a list of texts or a text file, "
                              "one text per line)")
        if isinstance(probe_texts, (str, os.PathLike)):
            probe_texts = read_probe_file(probe_texts)
        self.probe = tuple(probe)
        self.probe_texts = list(probe_texts or ())
        self.probe_pretrained = probe_pretrained
        self.probe_max_length = int(probe_max_length)
        self.probe_max_texts = int(probe_max_texts or DEFAULT_MAX_TEXTS)
        self.probe_seed = int(probe_seed)
        self.out_dir = out_dir
        self.run_id = run_id
        self.user_config = dict(config or {})
        self.task = dict(task) if task is not None else None
        self.split = split
        self.overwrite = overwrite
        self.flush_every_s = flush_every_s
        self.logger: Any = None
        self._grads: Any = None
        self._clip: float | None = None  # max_grad_norm we apply ourselves (taken over)
        self._pending: dict[str, Any] | None = None
        self.write_predictions = bool(write_predictions)
        self._eval_pred: tuple[Any, Any, Any] | None = None  # (labels, predictions, probability)
        self._warned_no_predictions = False
        self.stop_rule: Any = None
        if stop_doomed:
            from schemas.stop_rule import parse

            try:
                self.stop_rule = parse(stop_doomed)
            except ValueError as exc:
                raise ConfigError(f"StabstatCallback(stop_doomed=...): {exc}") from None
        self._watch: Any = None

    def wrap_compute_metrics(self, fn: Any = None) -> Any:
        """A ``compute_metrics`` for the Trainer that keeps the evaluation's predictions for
        :meth:`on_evaluate` and returns ``fn(eval_pred)`` (``{}`` when ``fn`` is None)."""

        def compute_metrics(eval_pred: Any) -> dict[str, Any]:
            if self.write_predictions:
                self._eval_pred = _predictions_of(eval_pred)
            return dict(fn(eval_pred)) if fn is not None else {}

        return compute_metrics

    # -- helpers -------------------------------------------------------------------------------

    def _flush_pending(self) -> None:
        if self._pending is not None and self.logger is not None:
            p, self._pending = self._pending, None
            self.logger.log_step(p["step"], loss=p.get("loss"), lr=p.get("lr"), grad_norm=p["grad_norm"],
                                 epoch=p.get("epoch"), wall_time=p.get("wall_time"))
            self.logger.log_layer_grads(p["step"], p["layers"], p["depths"], p["norms"])
            if self._watch is not None:
                self._watch.step(p["step"], p.get("loss"), p["norms"])

    def _judge(self, step: int, control: Any) -> None:
        """--stop-doomed: at the first logged step >= the rule's check step, stop a doomed run."""
        if self._watch is None or self.logger is None or self.logger.finished:
            return
        reason = self._watch.verdict(step)
        if reason is not None:
            self.logger.mark_stopped(step, self._watch.total_steps, reason, self._watch.rule.text())
            control.should_training_stop = True

    # -- events --------------------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        from runner.gradnorms import LayerGradNorms
        from runner.logwriter import RunLogger
        from runner.sweep import make_run_id

        config = _config_from_args(args, model)
        # Clipping is ours to do only where the gradients are plain and unscaled at this point.
        takes_over = bool(args.max_grad_norm) and args.max_grad_norm > 0 and not (
            getattr(args, "fp16", False) or getattr(args, "deepspeed", None) or getattr(args, "fsdp", None)
        )
        if args.max_grad_norm and not takes_over:
            config["layer_grads_after_clipping"] = True
        if self.probe:
            config["probe"] = list(self.probe)
        config.update(self.user_config)
        run_id = self.run_id or make_run_id(config)
        self.logger = RunLogger(self.out_dir, run_id, config, task=self.task, overwrite=self.overwrite,
                                flush_every_s=self.flush_every_s,
                                environment={"runner": "runner.hf_callback.StabstatCallback"})
        self.run_id = run_id
        self._grads = LayerGradNorms(model)
        if self.stop_rule is not None and int(getattr(state, "max_steps", 0) or 0) > 0:
            from runner.stop_doomed import DoomWatch

            self._watch = DoomWatch(self.stop_rule, self.task or {}, int(state.max_steps))
        if takes_over:
            self._clip = float(args.max_grad_norm)
            args.max_grad_norm = 0.0  # restored in on_train_end

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flush_pending()

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, lr_scheduler: Any = None,
                              **kwargs: Any) -> None:
        if self._grads is None:
            return
        layers, depths, norms, total = self._grads.compute(max_norm=self._clip)
        lr = None
        if lr_scheduler is not None:
            try:
                lr = float(lr_scheduler.get_last_lr()[0])
            except Exception:  # some schedulers (ReduceLROnPlateau) have no get_last_lr
                lr = None
        self._pending = {"step": state.global_step + 1, "grad_norm": total, "lr": lr,
                         "layers": layers, "depths": depths, "norms": norms}

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._pending is not None:
            self._pending["epoch"] = None if state.epoch is None else float(state.epoch)

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None,
               **kwargs: Any) -> None:
        if not logs or self._pending is None or "loss" not in logs:
            return
        if self._pending["step"] == state.global_step:
            self._pending["loss"] = float(logs["loss"])
            if not math.isfinite(self._pending["loss"]):
                control.should_training_stop = True  # the run is diverged; the log marks it
            self._flush_pending()
            self._judge(int(state.global_step), control)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None,
                    **kwargs: Any) -> None:
        if self.logger is None or not metrics:
            return
        self._flush_pending()
        values: dict[str, float | None] = {}
        for k, v in metrics.items():
            name = k[5:] if k.startswith("eval_") else k
            if name in _DROP_EVAL or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            values[name] = float(v)
        self.logger.log_eval(int(state.global_step), self.split, values)
        if self._watch is not None:
            self._watch.evaluated(int(state.global_step), {k: v for k, v in values.items() if v is not None})
        if self.write_predictions:
            self._log_predictions(int(state.global_step))

    def _log_predictions(self, step: int) -> None:
        """Write the predictions the wrapped ``compute_metrics`` kept (or say once how to get them)."""
        import sys

        import numpy as np

        got, self._eval_pred = self._eval_pred, None
        if got is None:
            if not self._warned_no_predictions:
                self._warned_no_predictions = True
                print("stabstat: StabstatCallback(write_predictions=True) saw no predictions; pass "
                      "compute_metrics=callback.wrap_compute_metrics(your_fn) to the Trainer", file=sys.stderr)
            return
        labels, preds, prob = got
        self.logger.log_predictions(step, self.split, np.arange(labels.size), labels, preds, prob)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._clip is not None:
            args.max_grad_norm = self._clip
            self._clip = None
        if self.logger is None or self.logger.finished:
            return
        self._flush_pending()
        if self.probe and not self.logger.diverged and not self.logger.stopped:
            self._run_probe(state, kwargs.get("model"), kwargs.get("processing_class") or kwargs.get("tokenizer"))
        self.logger.finish("diverged" if self.logger.diverged else "stopped" if self.logger.stopped else "completed")

    def _run_probe(self, state: Any, model: Any, tokenizer: Any) -> None:
        """The probes of :mod:`runner.probe` on the trained model, logged at the last step."""
        from runner.probe import run_probes

        pretrained = self.probe_pretrained or str(getattr(model.config, "_name_or_path", "") or "")
        if tokenizer is None or not hasattr(tokenizer, "mask_token_id"):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(pretrained)
        run_probes(self.probe, model=model, pretrained=pretrained, tokenizer=tokenizer,
                   texts=(self.probe_texts, None), logger=self.logger, step=int(state.global_step),
                   max_length=self.probe_max_length, seed=self.probe_seed, max_texts=self.probe_max_texts,
                   device=next(model.parameters()).device)
