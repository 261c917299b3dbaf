"""Train one planned run and write its run directory.

:func:`run_planned` is the one function a launcher (local process pool, Slurm, Ray) calls per
run. It is idempotent: a run already ``completed``, ``diverged`` or ``stopped`` (:data:`schemas.DONE_STATUSES`)
in ``out_dir`` is left alone; anything else there (a killed, interrupted or failed attempt) is
deleted and the run starts from scratch, so a run directory always holds exactly one attempt.
``out_dir`` may be a local folder or an object-store URL: where and how the attempt is written
is :mod:`runner.rundirs`.

The training loop (plain PyTorch, no Trainer):

* Determinism: everything random derives from the run's seed streams (:func:`seed_streams`):
  ``init_seed`` the new weights (classification head; all of the tiny model), ``order_seed`` the
  batch order (its own ``torch.Generator``), ``dropout_seed`` the dropout masks, ``data_seed`` the
  ``n_train`` subset; the first three default to ``seed``. Initialisation and dropout use torch's
  global generator inside ``torch.random.fork_rng()`` so nothing leaks into or out of the run.
  Without ``init_seed`` / ``dropout_seed`` in the config, dropout continues the initialisation's
  stream exactly as before these keys existed (old runs reproduce bit for bit); with either, the
  global generator is re-seeded with ``dropout_seed`` after the model is built, so crossing
  ``init_seed`` x ``dropout_seed`` varies one stream at a time. On CPU with the same number of
  threads the same config gives identical logs (wall times aside).
* Schedule: with T steps and W = ceil(warmup_ratio * T) warm-up steps, step s (1-based) uses
  ``lr * s / W`` for s <= W, then ``lr * (T - s + 1) / (T - W)``: linear decay that would reach 0
  one step after the last, so no step is wasted at lr 0.
* Each step logs the batch's mean loss, the lr, the total gradient norm before clipping and the
  per-layer gradient norms (:class:`runner.gradnorms.LayerGradNorms`), clips the gradients to
  ``max_grad_norm`` (same formula as ``torch.nn.utils.clip_grad_norm_``) and steps
  :class:`runner.optim.AdamW`. Weight decay is not applied to 1-D parameters (biases, LayerNorm),
  as in BERT.
* Evaluation at step 0, every ``eval_every`` steps (default: T // 10) and at the last step: every
  task metric plus the dev loss, and per-example predictions.
* A non-finite training loss is logged, no update is made, the model is evaluated once more and
  the run ends with status ``diverged``.
* With ``stop_doomed`` (``stabstat-run --stop-doomed``): at the rule's check step a run the rule
  judges doomed is evaluated once more and ends ``stopped`` (:mod:`runner.stop_doomed`).
* With ``probe = ["forgetting"]``, after the last evaluation of a run that did not diverge: the
  forgetting probe (:mod:`runner.probe`), logged as evaluations of split ``probe.k<k>``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from runner.rundirs import RunDirs
from schemas import DONE_STATUSES

if TYPE_CHECKING:
    from runner.sweep import PlannedRun

__all__ = ["StepCallback", "lr_at", "run_planned", "seed_streams", "train_run"]

#: ``on_step(run_id, step, total_steps, loss)``: called after every optimiser step.
StepCallback = Callable[[str, int, int, float], None]

EVAL_BATCH_SIZE = 64


def lr_at(step: int, *, lr: float, total_steps: int, warmup_steps: int) -> float:
    """Learning rate of optimiser step ``step`` (1-based): linear warm-up, then linear decay."""
    if warmup_steps > 0 and step <= warmup_steps:
        return lr * step / warmup_steps
    return lr * (total_steps - step + 1) / max(1, total_steps - warmup_steps)


def seed_streams(config: Mapping[str, Any]) -> dict[str, int]:
    """The run's independent seeds: ``init_seed``, ``order_seed``, ``dropout_seed`` (each
    ``seed`` when absent or null) and ``data_seed`` (``seed`` when ``"seed"``, else its value,
    default 0 as before the streams existed)."""
    seed = int(config["seed"])
    out = {k: seed if config.get(k) is None else int(config[k]) for k in ("init_seed", "order_seed", "dropout_seed")}
    out["data_seed"] = seed if config.get("data_seed") == "seed" else int(config.get("data_seed") or 0)
    return out


class _Encoded:
    """A split tokenised once and padded to its longest example; batches are trimmed to their own."""

    def __init__(self, tokenizer: Any, a: list[str], b: list[str] | None, labels: np.ndarray,
                 max_length: int) -> None:
        import torch

        enc = tokenizer(a, b, truncation=True, max_length=max_length, padding="longest",
                        return_tensors="pt")
        self.input_ids = enc["input_ids"]
        self.attention_mask = enc["attention_mask"]
        self.token_type_ids = enc.get("token_type_ids")
        self.lengths = self.attention_mask.sum(dim=1)
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, idx: Any, device: Any) -> tuple[dict[str, Any], Any]:
        width = int(self.lengths[idx].max())
        inputs = {
            "input_ids": self.input_ids[idx, :width].to(device),
            "attention_mask": self.attention_mask[idx, :width].to(device),
        }
        if self.token_type_ids is not None:
            inputs["token_type_ids"] = self.token_type_ids[idx, :width].to(device)
        return inputs, self.labels[idx].to(device)


def _evaluate(model: Any, dev: _Encoded, metrics: tuple[str, ...], device: Any) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Metrics (+ ``loss``), predictions and probability of the prediction on the dev split."""
    import torch

    from runner.tasks.metrics import compute_metrics

    was_training = model.training
    model.eval()
    logits = []
    with torch.no_grad():
        for start in range(0, len(dev), EVAL_BATCH_SIZE):
            idx = torch.arange(start, min(start + EVAL_BATCH_SIZE, len(dev)))
            inputs, _ = dev.batch(idx, device)
            logits.append(model(**inputs).logits.double().cpu())
    model.train(was_training)
    z = torch.cat(logits)
    labels = dev.labels
    loss = float(torch.nn.functional.cross_entropy(z, labels))
    probs = torch.softmax(z, dim=-1)
    preds = z.argmax(dim=-1)
    values: dict[str, float] = compute_metrics(metrics, labels.numpy(), preds.numpy())
    values["loss"] = loss
    return values, preds.numpy(), probs.gather(1, preds[:, None])[:, 0].numpy()


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _device(device: str | None) -> Any:
    import torch

    if device is None:
        device = os.environ.get("STABSTAT_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _train(config: Mapping[str, Any], logger: Any, *, data_dir: str | None, device: Any,
           on_step: StepCallback | None, stop_doomed: str | None = None) -> None:
    import torch

    from runner.gradnorms import LayerGradNorms
    from runner.models import load_model, load_tokenizer
    from runner.optim import AdamW
    from runner.tasks import load_task, subsample

    seeds = seed_streams(config)
    torch.manual_seed(seeds["init_seed"])  # inside fork_rng (see train_run): the new weights
    tokenizer = load_tokenizer(config["model"])
    data = load_task(config, data_dir=data_dir, tokenizer=tokenizer)
    data = subsample(data, config.get("n_train"), data_seed=seeds["data_seed"])
    logger.set_task(data.info())

    max_length = int(config["max_length"])
    train = _Encoded(tokenizer, data.train_a, data.train_b, data.train_labels, max_length)
    dev = _Encoded(tokenizer, data.dev_a, data.dev_b, data.dev_labels, max_length)

    model = load_model(config["model"], num_labels=data.num_labels, dropout=config.get("dropout"))
    if config.get("init_seed") is not None or config.get("dropout_seed") is not None:
        # A stream of its own for dropout; without either key the masks continue the init
        # stream, as before the keys existed, so old runs reproduce exactly.
        torch.manual_seed(seeds["dropout_seed"])
    model.to(device)
    model.train()
    grads = LayerGradNorms(model)
    opt = AdamW(
        _param_groups(model, float(config["weight_decay"])),
        lr=float(config["lr"]),
        betas=(float(config["adam_beta1"]), float(config["adam_beta2"])),
        eps=float(config["adam_eps"]),
        bias_correction=bool(config["bias_correction"]),
    )

    n = len(train)
    batch_size = int(config["batch_size"])
    steps_per_epoch = math.ceil(n / batch_size)
    if config.get("max_steps") is not None:
        total = int(config["max_steps"])
    else:
        total = max(1, math.ceil(float(config["epochs"]) * steps_per_epoch))
    warmup = math.ceil(float(config["warmup_ratio"]) * total)
    eval_every = int(config.get("eval_every") or max(1, total // 10))
    clip = config.get("max_grad_norm")
    peak_lr = float(config["lr"])
    log_predictions = bool(config.get("log_predictions", True))
    example_ids = np.arange(len(dev), dtype=np.int64)
    watch = None
    if stop_doomed:  # --stop-doomed (runner.stop_doomed): judged once, at the rule's check step
        from runner.stop_doomed import DoomWatch
        from schemas.stop_rule import parse

        watch = DoomWatch(parse(stop_doomed), data.info(), total)

    def evaluate(step: int) -> None:
        values, preds, prob = _evaluate(model, dev, data.metrics, device)
        logger.log_eval(step, "dev", values)
        if watch is not None:
            watch.evaluated(step, values)
        if log_predictions:
            logger.log_predictions(step, "dev", example_ids, dev.labels.numpy(), preds, prob)

    evaluate(0)
    order_gen = torch.Generator().manual_seed(seeds["order_seed"])
    order = torch.randperm(n, generator=order_gen)
    pos = 0
    last_eval = 0
    step = 0
    for step in range(1, total + 1):
        if pos >= n:  # next epoch: a fresh permutation from the run's own generator
            order = torch.randperm(n, generator=order_gen)
            pos = 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        inputs, labels = train.batch(idx, device)
        logits = model(**inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        # norms before clipping; clips in place like clip_grad_norm_, reusing the norms
        layers, depths, norms, total_norm = grads.compute(max_norm=clip if clip else None)
        loss_value = float(loss.detach())
        lr = lr_at(step, lr=peak_lr, total_steps=total, warmup_steps=warmup)
        if math.isfinite(loss_value):
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
        opt.zero_grad(set_to_none=True)
        logger.log_step(step, loss=loss_value, lr=lr, grad_norm=total_norm, epoch=step / steps_per_epoch)
        logger.log_layer_grads(step, layers, depths, norms)
        if on_step is not None:
            on_step(logger.run_id, step, total, loss_value)
        if logger.diverged:
            break
        if step % eval_every == 0 or step == total:
            evaluate(step)
            last_eval = step
        if watch is not None:
            watch.step(step, loss_value, norms)
            reason = watch.verdict(step)
            if reason is not None:  # doomed: stop here; run.json records step, reason and rule
                logger.mark_stopped(step, total, reason, watch.rule.text())
                break
    if step != last_eval:  # diverged or stopped: one more evaluation, so the run has a final dev score
        evaluate(step)
    if config.get("probe") and not logger.diverged and not logger.stopped:  # opt-in, after the last evaluation (runner.probe)
        from runner.probe import DEFAULT_MAX_TEXTS, probe_texts_of, run_probes

        opt.state.clear()  # Adam's moments (two model copies) are done: the probe's one copy fits there
        run_probes(config["probe"], model=model, pretrained=config["model"], tokenizer=tokenizer,
                   texts=probe_texts_of(config, data.dev_a, data.dev_b), logger=logger, step=step,
                   max_length=max_length, seed=int(config.get("probe_seed") or 0),
                   max_texts=int(config.get("probe_max_texts") or DEFAULT_MAX_TEXTS), device=device)


def train_run(
    config: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    run_id: str,
    data_dir: str | None = None,
    device: str | None = None,
    on_step: StepCallback | None = None,
    flush_every_s: float = 30.0,
    logger_cls: Callable[..., Any] | None = None,
    stop_doomed: str | None = None,
) -> str:
    """Train ``config`` into ``out_dir/run_id`` (which must not exist); return the final status.

    ``logger_cls`` replaces :class:`runner.logwriter.RunLogger` (same signature), e.g. the
    mirroring logger of :mod:`runner.storage` that copies each file to object storage.

    An exception inside training is recorded (status ``failed`` with the message) and not
    re-raised, so a sweep goes on; KeyboardInterrupt and SIGTERM mark the run ``interrupted`` and
    propagate. ``stop_doomed``: a :mod:`schemas.stop_rule` rule; a run it judges doomed at its
    check step ends ``stopped`` (:mod:`runner.stop_doomed`).
    """
    import datasets  # noqa: F401  (imported before the logger so that it records the versions)
    import torch
    import transformers  # noqa: F401

    from runner.logwriter import RunLogger

    dev = _device(device)
    environment = {
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "runner": "stabstat-run",
    }
    logger = (logger_cls or RunLogger)(out_dir, run_id, config, environment=environment,
                                       flush_every_s=flush_every_s)
    try:
        with logger, torch.random.fork_rng(devices=[] if dev.type == "cpu" else None):
            _train(config, logger, data_dir=data_dir, device=dev, on_step=on_step, stop_doomed=stop_doomed)
    except Exception:  # recorded by the logger as "failed"
        pass
    return logger.status


def run_planned(
    planned: PlannedRun,
    out_dir: str | os.PathLike[str],
    *,
    data_dir: str | None = None,
    threads: int | None = None,
    device: str | None = None,
    on_step: StepCallback | None = None,
    stop_doomed: str | None = None,
) -> str:
    """Run one planned run unless it is already done; return its final status.

    ``threads`` sets ``torch.set_num_threads`` for this process (a launcher running N runs at
    once on C cores passes ``max(1, C // N)``). A leftover directory of an earlier attempt that
    did not complete (killed, interrupted, failed) is deleted first. For ``out_dir`` =
    ``s3://bucket/prefix`` the run trains in a local staging folder mirrored file by file to
    ``<out_dir>/<run_id>/``; it ends ``failed`` if the last upload did not go through.
    ``stop_doomed`` (default ``$STABSTAT_STOP_DOOMED``, set by ``stabstat-run --stop-doomed``
    so pool workers and launchers inherit it): the early-stopping rule; a ``stopped`` run is
    done (:data:`schemas.DONE_STATUSES`), so a resumed sweep does not restart it.
    """
    dirs = RunDirs.for_out(out_dir)
    status = dirs.status(planned.run_id)
    if status in DONE_STATUSES:
        return status  # type: ignore[return-value]
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    with dirs.attempt(planned.run_id) as attempt:
        if stop_doomed is None:
            stop_doomed = os.environ.get("STABSTAT_STOP_DOOMED") or None
        status = train_run(planned.config, attempt.out_dir, run_id=planned.run_id, data_dir=data_dir,
                           device=device, on_step=on_step, logger_cls=attempt.logger_factory,
                           stop_doomed=stop_doomed)
    return attempt.result(status)
