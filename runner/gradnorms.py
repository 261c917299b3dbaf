"""Per-layer gradient L2 norms for torch models, with one host synchronisation per step.

:class:`LayerGradNorms` groups a model's parameters into stable layer names (the same names for
BERT, RoBERTa, ALBERT, DistilBERT, ...), and after ``loss.backward()`` computes each layer's
gradient norm and the total norm **before clipping**, using ``torch._foreach_norm`` (one batched
kernel call over all gradients) and a single ``.tolist()``.

Layer names and depths (``N`` = number of encoder layers):

=========================  =========  ===============================================
name                       depth      parameters
=========================  =========  ===============================================
``embeddings``             0          ``<base>.embeddings.*`` (and ALBERT's
                                      ``encoder.embedding_hidden_mapping_in``)
``encoder.layer.<i>``      i + 1      ``<base>.encoder.layer.<i>.*``,
                                      ``<base>.transformer.layer.<i>.*`` (DistilBERT),
                                      ``<base>.encoder.albert_layer_groups.<i>.*``,
                                      ``<...>.layers.<i>`` / ``h.<i>`` / ``blocks.<i>``
``pooler``                 N + 1      ``<base>.pooler.*``
``classifier``             N + 2      ``classifier.*``
any other top-level name   N + 3, ... e.g. ``pre_classifier``, in order of first appearance
=========================  =========  ===============================================

``<base>`` is the Hugging Face base-model prefix (``bert``, ``roberta``, ``albert``,
``distilbert``, ... from ``model.base_model_prefix``) or, for other models, a top-level child
that has an ``embeddings`` sub-module. Other parameters of the base model are named by their
first component under it (``encoder.<name>`` inside the encoder).

Example
-------
>>> grad_norms = LayerGradNorms(model)  # doctest: +SKIP
>>> loss.backward()  # doctest: +SKIP
>>> layers, depths, norms, total = grad_norms.compute()  # before clipping  # doctest: +SKIP
>>> log.log_step(step, loss=loss.item(), grad_norm=total)  # doctest: +SKIP
>>> log.log_layer_grads(step, layers, depths, norms)  # doctest: +SKIP
"""

from __future__ import annotations

import re
from typing import NamedTuple

import torch

__all__ = ["GradNorms", "LayerGradNorms", "layer_of"]

_BLOCK_CONTAINERS = {"layer", "layers", "h", "blocks", "block", "albert_layer_groups"}
_DIGITS = re.compile(r"^\d+$")


class GradNorms(NamedTuple):
    """Result of :meth:`LayerGradNorms.compute`; unpacks as ``layers, depths, norms, total``."""

    layers: list[str]  #: layer names, in depth order; only layers with at least one gradient
    depths: list[int]  #: depth index of each layer
    norms: list[float]  #: L2 norm of each layer's gradients (sqrt of the sum of squares)
    total: float  #: L2 norm of all gradients, before clipping (NaN/inf if any gradient is)


def _base_prefix(model: torch.nn.Module) -> str | None:
    """The name of the base-model child whose parameters are the 'body' (e.g. ``bert``)."""
    children = dict(model.named_children())
    prefix = getattr(model, "base_model_prefix", None)
    if isinstance(prefix, str) and prefix in children:
        return prefix
    for name, child in children.items():
        if "embeddings" in dict(child.named_children()):
            return name
    return None


def layer_of(name: str, base: str | None) -> str:
    """The stable layer name of parameter ``name`` (see the module docstring)."""
    parts = name.split(".")
    if base is not None and parts[0] == base and len(parts) > 1:
        parts = parts[1:]
        in_base = True
    else:
        in_base = base is None
    if not in_base:
        return parts[0]  # a head outside the base model: classifier, pre_classifier, ...
    head = parts[0]
    if head == "embeddings" or (head == "encoder" and len(parts) > 1 and parts[1] == "embedding_hidden_mapping_in"):
        return "embeddings"
    if head == "pooler":
        return "pooler"
    for k in range(1, len(parts) - 1):
        if _DIGITS.match(parts[k]) and parts[k - 1] in _BLOCK_CONTAINERS:
            return f"encoder.layer.{int(parts[k])}"
    if head == "encoder" and len(parts) > 2:
        return f"encoder.{parts[1]}"
    return head


class LayerGradNorms:
    """Collect per-layer gradient norms of ``model`` after each backward pass.

    The grouping of parameters into layers is fixed at construction (call it after the model
    is built and moved to its device). Parameters whose ``.grad`` is None at :meth:`compute`
    time (frozen, or unused in the step) are skipped; a layer with no gradient is left out.

    Attributes
    ----------
    layers : list[str]
        All layer names, sorted by depth.
    depths : list[int]
        Their depth indices.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        base = _base_prefix(model)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("LayerGradNorms: the model has no trainable parameters")
        layer_names = [layer_of(n, base) for n, _ in named]

        n_layers = 0
        for la in layer_names:
            if la.startswith("encoder.layer."):
                n_layers = max(n_layers, int(la.rsplit(".", 1)[1]) + 1)
        fixed = {"embeddings": 0, "pooler": n_layers + 1, "classifier": n_layers + 2}
        depth_of: dict[str, int] = {}
        next_other = n_layers + 3
        for la in layer_names:
            if la in depth_of:
                continue
            if la in fixed:
                depth_of[la] = fixed[la]
            elif la.startswith("encoder.layer."):
                depth_of[la] = int(la.rsplit(".", 1)[1]) + 1
            else:
                depth_of[la] = next_other
                next_other += 1

        order = sorted(depth_of, key=lambda la: depth_of[la])
        index = {la: i for i, la in enumerate(order)}
        self.layers: list[str] = order
        self.depths: list[int] = [depth_of[la] for la in order]
        self.base_prefix = base
        self.param_names = [n for n, _ in named]
        self._params = [p for _, p in named]
        self._param_layer = [index[la] for la in layer_names]
        self._index_cache: dict[tuple[str, tuple[int, ...] | None], torch.Tensor] = {}

    def param_layers(self) -> dict[str, str]:
        """Parameter name -> layer name (to check or document the grouping)."""
        return {n: self.layers[i] for n, i in zip(self.param_names, self._param_layer, strict=True)}

    def _index(self, device: torch.device, present: tuple[int, ...] | None) -> torch.Tensor:
        key = (str(device), present)
        idx = self._index_cache.get(key)
        if idx is None:
            ids = self._param_layer if present is None else [self._param_layer[i] for i in present]
            idx = torch.tensor(ids, dtype=torch.long, device=device)
            if len(self._index_cache) > 64:  # the set of params with grads rarely varies
                self._index_cache.clear()
            self._index_cache[key] = idx
        return idx

    @torch.no_grad()
    def compute(self, *, max_norm: float | None = None) -> GradNorms:
        """Per-layer and total gradient L2 norms of the current ``.grad`` tensors.

        Call after ``backward()`` and before clipping. With ``max_norm`` the gradients are also
        clipped in place exactly like ``torch.nn.utils.clip_grad_norm_(params, max_norm)``
        (scaled by ``min(1, max_norm / (total + 1e-6))``), reusing the norms computed here, so a
        training loop need not compute them twice. The returned norms are those before clipping.

        One host synchronisation: a single ``.tolist()`` of all layer norms plus the total.
        """
        grads: list[torch.Tensor] = []
        present: list[int] = []
        for i, p in enumerate(self._params):
            g = p.grad
            if g is not None:
                grads.append(g)
                present.append(i)
        if not grads:
            return GradNorms([], [], [], 0.0)
        all_present = len(present) == len(self._params)
        norms = list(torch._foreach_norm(grads, 2.0))
        device = norms[0].device
        if any(n.device != device for n in norms):  # model split over devices
            norms = [n.to(device) for n in norms]
        # float64 on CPU keeps small layer norms exact; float32 elsewhere (no fp64 on some GPUs).
        acc_dtype = torch.float64 if device.type == "cpu" else torch.float32
        sq = torch.stack(norms).to(acc_dtype).square()
        idx = self._index(device, None if all_present else tuple(present))
        sums = torch.zeros(len(self.layers), dtype=acc_dtype, device=device).index_add_(0, idx, sq)
        total_sq = sq.sum()
        if max_norm is not None:
            coef = (float(max_norm) / (total_sq.sqrt() + 1e-6)).clamp(max=1.0)
            if all(g.device == device for g in grads):
                torch._foreach_mul_(grads, coef.to(grads[0].dtype))
            else:
                for g in grads:
                    g.mul_(coef.to(device=g.device, dtype=g.dtype))
        values = torch.cat([sums.sqrt(), total_sq.sqrt().reshape(1)]).tolist()  # the one host sync
        if all_present:
            return GradNorms(list(self.layers), list(self.depths), values[:-1], values[-1])
        # Which layers had a gradient is known on the host: no extra sync to filter them.
        has = {self._param_layer[i] for i in present}
        keep = [j for j in range(len(self.layers)) if j in has]
        return GradNorms(
            [self.layers[j] for j in keep], [self.depths[j] for j in keep], [values[j] for j in keep], values[-1]
        )
