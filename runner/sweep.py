"""Sweep files -> planned runs.

A sweep file (TOML, or YAML with the same structure) names a base configuration, the seeds, a
grid of factors and optionally several named *arms* (recipes)::

    name = "bias-correction"          # optional, informational
    seeds = 8                         # 0..7, or a list: [1, 2, 3]
    preset = "mosbach2021"            # optional base recipe (devlin2019, mosbach2021, or a .toml path)

    [config]                          # settings shared by every run (override the preset)
    model = "minilm"
    task = "rte"
    n_train = 1000

    [grid]                            # every combination of these lists is one configuration
    lr = [1e-5, 2e-5]
    bias_correction = [true, false]

    [[arms]]                          # optional: named alternatives, crossed with the grid
    name = "devlin"                   # becomes the `recipe` factor
    preset = "devlin2019"
    [[arms]]
    name = "ours"
    lr = 1e-4

    [factors]                         # your own factors: declare them (name = default value)
    annotator = "alice"               # ...then use them in [config], [grid] or [[arms]]

Layers, later wins: built-in defaults < preset (the arm's, else the file's) < ``[config]`` <
arm keys < grid values < seed. Every key is checked by name and type before anything trains; an
unknown key -- including a typo of a built-in one -- is a :class:`~stabstat.errors.ConfigError`
naming the file and the key (with a suggestion). Extra keys are factors only when declared under
``[factors]``, so a typo can never silently become a new factor.

Each (arm, grid combination, seed) is a :class:`PlannedRun` whose ``run_id`` is
``<task>-<first 10 hex digits of the SHA-256 of the canonical JSON of its full config>``:
the same config and seed always get the same id, which is how a re-run of a sweep resumes:
:meth:`runner.rundirs.RunDirs.pending` (also :func:`pending` here) keeps the runs not yet done.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from stabstat.errors import ConfigError, StabstatError

__all__ = [
    "DEFAULTS",
    "KEYS",
    "OPTIONAL_KEYS",
    "PRESETS",
    "SEED_STREAMS",
    "PlannedRun",
    "load_preset",
    "parse_seeds",
    "pending",
    "plan",
    "read_sweep_file",
    "run_status",
]

PRESETS = ("devlin2019", "mosbach2021")


@dataclass(frozen=True)
class Key:
    """One run-config key: accepted types, default, meaning."""

    types: tuple[type, ...]
    default: Any
    meaning: str
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None


#: Every key a run config may have (besides declared user factors).
KEYS: dict[str, Key] = {
    "model": Key((str,), "minilm", "'minilm' (offline pre-trained default), 'tiny' (random, tests), a folder or a hub name"),
    "task": Key((str,), None, "rte, mrpc, cola, sst2, qnli, synthetic, or any name with train_file/dev_file"),
    "recipe": Key((str,), None, "name of the recipe: the arm's name, else the preset's, else 'custom'", nullable=True),
    "seed": Key((int,), 0, "training seed: the default of init_seed, order_seed and dropout_seed; set by `seeds`"),
    "data_seed": Key((int, str), 0, "seed of the n_train subset; \"seed\" = use the training seed", choices=None),
    "lr": Key((float,), 2e-5, "peak learning rate", minimum=0.0),
    "bias_correction": Key((bool,), True, "Adam's bias correction (false = BERT's BertAdam)"),
    "warmup_ratio": Key((float,), 0.1, "share of the steps with linear warm-up", minimum=0.0, maximum=1.0),
    "epochs": Key((float,), 3.0, "training epochs (ignored and set to null when max_steps is set)", nullable=True, minimum=0.0),
    "max_steps": Key((int,), None, "optimiser steps (overrides epochs)", nullable=True, minimum=1),
    "batch_size": Key((int,), 16, "training batch size", minimum=1),
    "max_length": Key((int,), 128, "maximum sequence length in tokens (longer inputs are truncated)", minimum=4),
    "n_train": Key((int,), None, "training examples subsampled with data_seed (null = all)", nullable=True, minimum=1),
    "weight_decay": Key((float,), 0.0, "decoupled weight decay (not on biases and LayerNorm)", minimum=0.0),
    "max_grad_norm": Key((float,), 1.0, "clip the total gradient norm to this (null = no clipping)", nullable=True, minimum=0.0),
    "adam_eps": Key((float,), 1e-6, "Adam epsilon", minimum=0.0),
    "adam_beta1": Key((float,), 0.9, "Adam beta1", minimum=0.0, maximum=1.0),
    "adam_beta2": Key((float,), 0.999, "Adam beta2", minimum=0.0, maximum=1.0),
    "dropout": Key((float,), None, "dropout probability (hidden and attention); null = the model's", nullable=True, minimum=0.0, maximum=1.0),
    "eval_every": Key((int,), None, "evaluate every this many steps (null = 10 evaluations per run); always at step 0 and the end", nullable=True, minimum=1),
    "log_predictions": Key((bool,), True, "write per-example dev predictions at each evaluation"),
    "train_file": Key((str,), None, "your own task: training CSV/TSV/JSONL", nullable=True),
    "dev_file": Key((str,), None, "your own task: dev CSV/TSV/JSONL", nullable=True),
    "text_column": Key((str,), None, "your own task: text column (default 'text')", nullable=True),
    "text_pair_column": Key((str,), None, "your own task: second text column, if any", nullable=True),
    "label_column": Key((str,), None, "your own task: label column (default 'label')", nullable=True),
    "label_values": Key((list,), None, "your own task: label values in id order (default: sorted)", nullable=True),
    "metrics": Key((list,), None, "your own task: metrics (accuracy, f1, mcc, acc_f1; default accuracy)", nullable=True),
}

#: Keys that are in a run's config only when set (null = unset), unlike those of :data:`KEYS`
#: (always there, with their defaults): adding one changes neither the configs nor the run ids of
#: sweeps that do not use it. The seed streams, each defaulting to ``seed`` (a sweep can cross
#: them: ``[grid] init_seed = [0, 1, 2, 3, 4]``, ``order_seed = [0, 1, 2, 3, 4]``).
OPTIONAL_KEYS: dict[str, Key] = {
    "init_seed": Key((int,), None, "seed of the new weights (classifier head; all of a random model); null = seed",
                     nullable=True, minimum=0),
    "order_seed": Key((int,), None, "seed of the training data order (shuffling); null = seed", nullable=True,
                      minimum=0),
    "dropout_seed": Key((int,), None, "seed of the dropout masks; null = seed", nullable=True, minimum=0),
    "probe": Key((list,), None, "end-of-run probes: [\"forgetting\"] (top-k layers reset to pre-trained, MLM perplexity)",
                 nullable=True),
    "probe_file": Key((str,), None, "forgetting probe: a text file, one text per line (null = the dev texts)",
                      nullable=True),
    "probe_max_texts": Key((int,), None, "forgetting probe: use the first N texts (null = 256)", nullable=True,
                           minimum=1),
    "probe_seed": Key((int,), None, "forgetting probe: seed of the masks, the same for every run (null = 0)",
                      nullable=True, minimum=0),
}

#: Randomness streams that default to ``seed`` (in :data:`OPTIONAL_KEYS`).
SEED_STREAMS = ("init_seed", "order_seed", "dropout_seed")

#: The forgetting probe's keys (in :data:`OPTIONAL_KEYS`; runner.probe, README "The forgetting probe").
PROBE_KEYS = ("probe", "probe_file", "probe_max_texts", "probe_seed")

DEFAULTS: dict[str, Any] = {k: v.default for k, v in KEYS.items() if k not in SEED_STREAMS}

#: ``launcher`` is the cluster table read by :mod:`runner.launchers` (partition, time, gpus ...)
_TOP_KEYS = ("name", "seeds", "preset", "config", "grid", "arms", "factors", "launcher")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its id and full config (JSON-able, picklable)."""

    run_id: str
    config: dict[str, Any] = field(hash=False)
    sweep: str | None = None  #: the sweep file (or "<dict>") it came from

    @property
    def seed(self) -> int:
        return int(self.config["seed"])


# --------------------------------------------------------------------------------------------
# Type checks
# --------------------------------------------------------------------------------------------


def _type_name(types: tuple[type, ...]) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list"}
    return " or ".join(names[t] for t in types)


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Checker:
    """Checks values against :data:`KEYS` plus the sweep's declared factors."""

    def __init__(self, source: str, factors: Mapping[str, Any], *, yaml: bool) -> None:
        self.source = source
        self.factors = dict(factors)
        self.yaml = yaml

    def known(self) -> list[str]:
        return [*KEYS, *OPTIONAL_KEYS, *self.factors]

    def error(self, where: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {msg}")

    def value(self, key: str, value: Any, where: str) -> Any:
        """Return ``value`` normalised (int -> float for numbers) or raise naming ``where``."""
        self.check_key(key, where)
        if key in self.factors:
            return self._factor_value(key, value, where)
        spec = KEYS[key] if key in KEYS else OPTIONAL_KEYS[key]
        if value is None:
            if spec.nullable:
                return None
            raise self.error(where, f"{key} must be {_type_name(spec.types)}, not null")
        v = value
        if float in spec.types and self.yaml and isinstance(v, str):
            # YAML 1.1 reads 2e-5 (no dot) as a string
            with contextlib.suppress(ValueError):
                v = float(v)
        ok = False
        if bool in spec.types:
            ok = isinstance(v, bool)
        elif isinstance(v, bool):
            ok = False  # true is not a number here
        elif float in spec.types and isinstance(v, (int, float)):
            v, ok = float(v), True
        elif int in spec.types and isinstance(v, int):
            ok = True
        if not ok and str in spec.types and isinstance(v, str):
            ok = True
        if not ok and list in spec.types and isinstance(v, list):
            if not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v):
                raise self.error(where, f"{key} must be a list of strings")
            v, ok = [str(x) for x in v], True
        if not ok:
            raise self.error(where, f"{key} must be {_type_name(spec.types)}, got {type(value).__name__} {value!r}")
        if isinstance(v, float) and not math.isfinite(v):
            raise self.error(where, f"{key} must be finite, got {v!r}")
        if key == "data_seed" and isinstance(v, str) and v != "seed":
            raise self.error(where, f"data_seed must be an integer or \"seed\", got {v!r}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if spec.minimum is not None and v < spec.minimum:
                raise self.error(where, f"{key} = {v!r} is below the minimum {spec.minimum:g}")
            if spec.maximum is not None and v > spec.maximum:
                raise self.error(where, f"{key} = {v!r} is above the maximum {spec.maximum:g}")
        return v

    def check_key(self, key: str, where: str) -> None:
        """Raise for a key that is neither built in nor declared under [factors]."""
        if key == "seed":
            raise self.error(where, "set seeds with the top-level `seeds` (a count or a list), not `seed`")
        if key not in KEYS and key not in OPTIONAL_KEYS and key not in self.factors:
            raise self.error(
                where,
                f"unknown key {key!r}{_suggest(key, self.known())}; declare your own factors under [factors] "
                f"(name = default value); known keys: {', '.join([*KEYS, *OPTIONAL_KEYS])}",
            )

    def _factor_value(self, key: str, value: Any, where: str) -> Any:
        default = self.factors[key]
        if value is None:
            return None
        if isinstance(default, bool) or isinstance(value, bool):
            ok = isinstance(value, bool) and isinstance(default, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float))
            value = float(value) if ok else value
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise self.error(
                where, f"factor {key} was declared as {type(default).__name__} ({default!r}) in [factors], "
                f"got {type(value).__name__} {value!r}"
            )
        return value

    def table(self, table: Any, where: str, *, allow: Sequence[str] = ()) -> dict[str, Any]:
        if not isinstance(table, Mapping):
            raise self.error(where, f"must be a table of key = value, got {type(table).__name__}")
        out = {}
        for k, v in table.items():
            if k in allow:
                continue
            out[k] = self.value(k, v, f"{where}.{k}")
        return out


# --------------------------------------------------------------------------------------------
# Files and presets
# --------------------------------------------------------------------------------------------


def read_sweep_file(path: Path) -> tuple[dict[str, Any], bool]:
    """The raw top-level mapping of a TOML or YAML sweep file, and whether it was YAML."""
    if not path.is_file():
        raise ConfigError(f"{path}: sweep file not found")
    suffix = path.suffix.lower()
    text = path.read_text("utf-8")
    if suffix == ".toml":
        import tomllib

        try:
            return tomllib.loads(text), False
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover
            raise ConfigError(f"{path}: reading YAML needs pyyaml: pip install pyyaml") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        return data, True
    raise ConfigError(f"{path}: unknown sweep file type {suffix!r}; use .toml, .yaml or .yml")


def load_preset(name: str, *, base_dir: Path | None = None) -> dict[str, Any]:
    """The raw keys of a preset: a built-in name (devlin2019, mosbach2021) or a .toml path."""
    import tomllib

    if name in PRESETS:
        text = resources.files("runner").joinpath("presets", f"{name}.toml").read_text("utf-8")
        return tomllib.loads(text)
    p = Path(name).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    if p.suffix.lower() == ".toml" and p.is_file():
        return tomllib.loads(p.read_text("utf-8"))
    raise ConfigError(f"preset {name!r}: unknown (built in: {', '.join(PRESETS)}; or a path to a .toml file)")


def parse_seeds(value: Any, *, where: str = "seeds") -> list[int]:
    """``8`` -> 0..7; ``[1, 5]`` -> [1, 5]; ``"0-3"`` -> 0..3; ``"1,4,9"`` -> [1, 4, 9]."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a count, a list of integers or a range like 0-7, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"{where}: the number of seeds must be >= 1, got {value}")
        return list(range(value))
    if isinstance(value, str):
        s = value.strip()
        if re.fullmatch(r"\d+", s):
            return parse_seeds(int(s), where=where)
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", s)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ConfigError(f"{where}: empty range {s!r}")
            return list(range(lo, hi + 1))
        if re.fullmatch(r"\d+(\s*,\s*\d+)+", s):
            return [int(x) for x in s.split(",")]
        raise ConfigError(f"{where}: cannot read {value!r}; use a count (8), a range (0-7) or a list (1,2,3)")
    if isinstance(value, list) and value and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        if len(set(value)) != len(value):
            raise ConfigError(f"{where}: repeated seed in {value}")
        return list(value)
    raise ConfigError(f"{where}: expected a count, a non-empty list of integers or a range like 0-7, got {value!r}")


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------


def canonical_json(config: Mapping[str, Any]) -> str:
    """Key-sorted compact JSON: the text whose hash is the run_id."""
    return json.dumps(dict(config), sort_keys=True, separators=(",", ":"), allow_nan=False)


def make_run_id(config: Mapping[str, Any]) -> str:
    """``<task>-<10 hex of sha256(canonical JSON)>``, e.g. ``rte-3f9c0a1b2d``."""
    digest = hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()[:10]
    task = re.sub(r"[^A-Za-z0-9_.]+", "_", str(config.get("task") or "run")).strip("._") or "run"
    return f"{task}-{digest}"


def _check_probe(cfg: dict[str, Any], where: str, source: str) -> None:
    """Drop unset probe keys (null, or ``probe = []``) and check the set ones."""
    if not cfg.get("probe"):
        cfg.pop("probe", None)
    for k in PROBE_KEYS:
        if k in cfg and cfg[k] is None:
            del cfg[k]
    if "probe" not in cfg:
        extra = [k for k in PROBE_KEYS if k in cfg]
        if extra:
            raise ConfigError(f"{source}: {where}: {extra[0]} is set but no probe is asked for; "
                              "add probe = [\"forgetting\"]")
        return
    from runner.probe import PROBES, check_probe_file

    for name in cfg["probe"]:
        if name not in PROBES:
            raise ConfigError(f"{source}: {where}: probe {name!r} is unknown{_suggest(name, PROBES)}; "
                              f"known probes: {', '.join(PROBES)}")
    if "probe_file" in cfg:
        try:
            check_probe_file(cfg["probe_file"])
        except StabstatError as exc:
            raise ConfigError(f"{source}: {where}: {exc}") from None


def _finalise(cfg: dict[str, Any], where: str, source: str) -> dict[str, Any]:
    for k in SEED_STREAMS:
        if k in cfg and cfg[k] is None:
            del cfg[k]  # null = the default (seed): the same config, hence the same run_id, as unset
    _check_probe(cfg, where, source)
    if cfg.get("task") in (None, ""):
        raise ConfigError(f"{source}: {where}: no task; set task under [config] (e.g. task = \"rte\")")
    if cfg.get("max_steps") is not None:
        cfg["epochs"] = None  # max_steps decides the length; keep one source of truth in the logs
    elif cfg.get("epochs") in (None, 0.0):
        raise ConfigError(f"{source}: {where}: set epochs (> 0) or max_steps")
    return cfg


def plan(
    sweep: str | Path | Mapping[str, Any],
    *,
    seeds: Any = None,
) -> list[PlannedRun]:
    """Expand a sweep file (path) or an already-parsed mapping into planned runs.

    ``seeds`` (a count, list, or text such as ``"0-7"``) replaces the file's ``seeds``.
    Runs are ordered seed-major (every configuration of seed 0, then seed 1 ...), so a sweep cut
    short still holds comparable groups.

    Raises
    ------
    ConfigError
        Naming the file and key, for any unknown key, wrong type, impossible value, unknown
        preset, missing task, or two arms that give identical runs.
    """
    if isinstance(sweep, Mapping):
        data, is_yaml, source, base_dir = dict(sweep), False, "<dict>", None
    else:
        path = Path(sweep)
        data, is_yaml = read_sweep_file(path)
        source, base_dir = str(path), path.parent

    for k in data:
        if k not in _TOP_KEYS:
            hint = ""
            if k in KEYS:
                hint = f"; run settings go under [config] (or [grid] for lists), e.g. [config] {k} = ..."
            else:
                hint = _suggest(k, _TOP_KEYS)
            raise ConfigError(f"{source}: unknown top-level key {k!r}{hint} (top-level keys: {', '.join(_TOP_KEYS)})")
    if "name" in data and not isinstance(data["name"], str):
        raise ConfigError(f"{source}: name must be a string")

    factors_raw = data.get("factors", {})
    if not isinstance(factors_raw, Mapping):
        raise ConfigError(f"{source}: [factors] must be a table of name = default value")
    for k, v in factors_raw.items():
        if k in KEYS or k in OPTIONAL_KEYS or k in _TOP_KEYS or k in ("preset", "name"):
            raise ConfigError(f"{source}: [factors].{k}: {k!r} is a built-in key; factors are your own extra keys")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise ConfigError(f"{source}: [factors].{k}: a factor name must be an identifier (letters, digits, _)")
        if v is None or not isinstance(v, (str, int, float, bool)):
            raise ConfigError(f"{source}: [factors].{k}: the default must be a string, number or boolean, got {v!r}")
    chk = _Checker(source, factors_raw, yaml=is_yaml)

    seed_list = parse_seeds(seeds if seeds is not None else data.get("seeds", 1),
                            where="--seeds" if seeds is not None else f"{source}: seeds")

    def preset_keys(name: Any, where: str) -> dict[str, Any]:
        if not isinstance(name, str):
            raise ConfigError(f"{source}: {where}: preset must be a string, got {name!r}")
        try:
            raw = load_preset(name, base_dir=base_dir)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {where}: {exc}") from None
        return chk.table(raw, f"{where} (preset {name})")

    top_preset = data.get("preset")
    config = chk.table(data.get("config", {}), "[config]")

    grid_raw = data.get("grid", {})
    if not isinstance(grid_raw, Mapping):
        raise ConfigError(f"{source}: [grid] must be a table of key = [values]")
    grid: dict[str, list[Any]] = {}
    for k, vals in grid_raw.items():
        chk.check_key(k, f"[grid].{k}")
        if not isinstance(vals, list) or not vals:
            raise ConfigError(f"{source}: [grid].{k}: must be a non-empty list of values, got {vals!r}")
        grid[k] = [chk.value(k, v, f"[grid].{k}[{i}]") for i, v in enumerate(vals)]

    arms_raw = data.get("arms")
    if arms_raw is None:
        arms: list[tuple[str | None, Any, dict[str, Any]]] = [(None, top_preset, {})]
    else:
        if not isinstance(arms_raw, list) or not arms_raw:
            raise ConfigError(f"{source}: arms must be a non-empty list of tables ([[arms]])")
        arms = []
        for i, arm in enumerate(arms_raw, start=1):
            where = f"[[arms]] #{i}"
            if not isinstance(arm, Mapping):
                raise ConfigError(f"{source}: {where}: must be a table")
            name = arm.get("name")
            if name is not None and not isinstance(name, str):
                raise ConfigError(f"{source}: {where}.name: must be a string")
            keys = chk.table(arm, where, allow=("name", "preset"))
            arms.append((name, arm.get("preset", top_preset), keys))

    base = {**DEFAULTS, **{k: v for k, v in factors_raw.items()}}
    for k, v in list(base.items()):
        if isinstance(v, int) and not isinstance(v, bool) and k in KEYS and float in KEYS[k].types:
            base[k] = float(v)

    runs: list[PlannedRun] = []
    seen: dict[str, str] = {}
    combos = list(itertools.product(*grid.values())) if grid else [()]
    for seed in seed_list:
        for i, (arm_name, preset, arm_keys) in enumerate(arms, start=1):
            where = f"[[arms]] #{i}" if arms_raw is not None else "[config]"
            pre_where = f"{where}.preset" if arms_raw is not None else "preset"
            pre = preset_keys(preset, pre_where) if preset is not None else {}
            for combo in combos:
                cfg = {**base, **pre, **config, **arm_keys, **dict(zip(grid, combo, strict=True))}
                cfg["seed"] = int(seed)
                if cfg.get("recipe") is None:
                    cfg["recipe"] = arm_name or (Path(preset).stem if isinstance(preset, str) else "custom")
                cfg = _finalise(cfg, where, source)
                run_id = make_run_id(cfg)
                label = f"{where} {dict(zip(grid, combo, strict=True))} seed {seed}"
                if run_id in seen:
                    raise ConfigError(
                        f"{source}: {label} gives the same run as {seen[run_id]} (identical config); "
                        "make the arms differ or drop one"
                    )
                seen[run_id] = label
                runs.append(PlannedRun(run_id=run_id, config=cfg, sweep=source))
    return runs


# --------------------------------------------------------------------------------------------
# Resume (kept here for callers of the sweep API; the rule is runner.rundirs.RunDirs)
# --------------------------------------------------------------------------------------------


def run_status(out_dir: str | os.PathLike[str], run_id: str) -> str | None:
    """The status in ``out_dir/run_id/run.json``; None when absent or unreadable.
    ``out_dir`` may be a URL such as ``s3://bucket/prefix``: ``RunDirs.for_out(out_dir).status``."""
    from runner.rundirs import RunDirs

    return RunDirs.for_out(out_dir).status(run_id)


def pending(planned: Sequence[PlannedRun], out_dir: str | os.PathLike[str]) -> list[PlannedRun]:
    """The planned runs that still need running: those not ``completed`` or ``diverged`` in
    ``out_dir`` (absent, running/killed, interrupted, failed); ``RunDirs.for_out(out_dir).pending``.
    :func:`runner.train.run_planned` deletes such a leftover directory and starts the run from
    scratch."""
    from runner.rundirs import RunDirs

    return RunDirs.for_out(out_dir).pending(planned)
