"""Run folders: load a trained model back with its config and data description.

Everything read from a run folder is checked before use: config.json field by field (types and
ranges, modality names, modality specs), the weights against the checksum manifest
(:mod:`mmvae.train.integrity`), and the dataset rebuilt from the config against the modalities saved
in config.json (an .npz changed after training is named, not met as a shape error inside torch).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch

from .config import Config
from .data.dataset import KINDS, ModalitySpec
from .data.names import name_problem
from .errors import UserError
from .train.checkpoint import BEST, CONFIG, WEIGHTS, load_weights, read_run_config
from .train.integrity import verify

_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,),
          "list": (list,), "None": (type(None),)}
_WORDS = {"str": "text", "int": "a whole number", "float": "a number", "bool": "true or false",
          "dict": "an object {...}", "list": "a list [...]", "None": "null"}
POSITIVE = ("epochs", "batch_size", "latent_dim", "hidden", "grad_accum", "k")


def _allowed(annotation: str) -> list[str] | None:
    """'list[str] | None' -> ['list', 'None']; None when anything goes (Any, or unknown)."""
    out = []
    for part in str(annotation).split("|"):
        base = part.strip().split("[")[0]
        if base not in _TYPES:
            return None
        out.append(base)
    return out


def _type_ok(value, allowed: list[str]) -> bool:
    for t in allowed:
        if isinstance(value, _TYPES[t]) and not (isinstance(value, bool) and t in ("int", "float")):
            return True
    return False


def _bad(where: Path, field: str, want: str, value) -> UserError:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return UserError(f"{where}: field '{field}' should be {want}, got {shown}: fix that field (or train the run again)")


def check_saved_run(saved: dict, path: Path) -> dict:
    """Structural check of a parsed config.json: a wrong type or missing part is one line naming the field."""
    where = Path(path) / CONFIG
    cfg = saved.get("config")
    if not isinstance(cfg, dict):
        raise _bad(where, "config", "an object {...}", cfg)
    for f in fields(Config):
        if f.name not in cfg:
            continue
        value, allowed = cfg[f.name], _allowed(f.type)
        if allowed is not None and not _type_ok(value, allowed):
            raise _bad(where, f"config.{f.name}", " or ".join(_WORDS[t] for t in allowed), value)
        if f.name in POSITIVE and isinstance(value, int) and value < 1:
            raise _bad(where, f"config.{f.name}", "at least 1", value)
    if isinstance(cfg.get("modalities"), list):
        for i, m in enumerate(cfg["modalities"]):
            if name_problem(m):
                raise _bad(where, f"config.modalities[{i}]", "a modality name", m)
    for key in ("data", "likelihood", "scale", "extra", "network"):
        if isinstance(cfg.get(key), dict) and any(not isinstance(k, str) for k in cfg[key]):
            raise _bad(where, f"config.{key}", "an object with text keys", cfg[key])
    mods = saved.get("modalities")
    if not isinstance(mods, list) or not mods:
        raise _bad(where, "modalities", "a non-empty list of modality descriptions", mods)
    seen = set()
    for i, d in enumerate(mods):
        at = f"modalities[{i}]"
        if not isinstance(d, dict):
            raise _bad(where, at, "an object {...}", d)
        if name_problem(d.get("name")) or d["name"] in seen:
            raise _bad(where, f"{at}.name", "a unique modality name", d.get("name"))
        seen.add(d["name"])
        if d.get("kind") not in KINDS:
            raise _bad(where, f"{at}.kind", f"one of {', '.join(KINDS)}", d.get("kind"))
        shape = d.get("shape")
        if not isinstance(shape, list) or not shape or not all(_type_ok(s, ["int"]) and s >= 1 for s in shape):
            raise _bad(where, f"{at}.shape", "a list of whole numbers >= 1", shape)
        if not isinstance(d.get("likelihood"), str):
            raise _bad(where, f"{at}.likelihood", "text", d.get("likelihood"))
        if d.get("num_classes") is not None and not (_type_ok(d["num_classes"], ["int"]) and d["num_classes"] >= 1):
            raise _bad(where, f"{at}.num_classes", "a whole number >= 1 or null", d["num_classes"])
        vocab = d.get("vocab")
        if vocab is not None and not (isinstance(vocab, list) and all(isinstance(w, str) for w in vocab)):
            raise _bad(where, f"{at}.vocab", "a list of words or null", vocab)
        if d.get("network") is not None and not isinstance(d["network"], str):
            raise _bad(where, f"{at}.network", "text or null", d["network"])
    nc = saved.get("num_classes")
    if nc is not None and not (_type_ok(nc, ["int"]) and nc >= 0):
        raise _bad(where, "num_classes", "a whole number or null", nc)
    return saved


def read_run(path: str | Path) -> dict:
    """config.json of a run folder, parsed and checked (UserError naming the problem otherwise), with the
    network of every modality named (``with_recorded_networks``)."""
    return with_recorded_networks(check_saved_run(read_run_config(Path(path)), Path(path)))


def with_recorded_networks(saved: dict) -> dict:
    """Runs record the network of every modality in ``config.network`` (models/registry.build_model). A run
    saved before they did rebuilds with what it was trained with: the data's own network, else the network
    registered under the modality's kind name (fixed aliases in nets/registry.py), whatever today's
    defaults are."""
    cfg = saved["config"]
    chosen = dict(cfg.get("network") or {})
    used = cfg.get("modalities") or [d["name"] for d in saved["modalities"]]
    for d in saved["modalities"]:
        if d["name"] in used and d["name"] not in chosen:
            chosen[d["name"]] = d.get("network") or d["kind"]
    cfg["network"] = chosen
    return saved


def check_data_matches_run(specs: dict[str, ModalitySpec], saved: dict, path: Path, dataset: str) -> None:
    """The data rebuilt from a run's config must have the modalities, kinds and shapes it was trained on."""
    want = {d["name"]: ModalitySpec.from_dict(d) for d in saved["modalities"]}
    missing = [m for m in want if m not in specs]
    if missing:
        raise UserError(f"the data '{dataset}' no longer has modalit{'y' if len(missing) == 1 else 'ies'} "
                        f"{', '.join(missing)} that the run in {path} was trained on: was the file changed after "
                        f"training? Restore it, or train a new run on the new data")
    for m, spec in want.items():
        got = specs[m]
        if (got.kind, tuple(got.shape), got.num_classes) != (spec.kind, tuple(spec.shape), spec.num_classes):
            raise UserError(f"the data '{dataset}' has modality '{m}' as {got.kind} {tuple(got.shape)}"
                            f"{f' ({got.num_classes} classes)' if got.num_classes else ''}, but the run in {path} was "
                            f"trained on {spec.kind} {tuple(spec.shape)}"
                            f"{f' ({spec.num_classes} classes)' if spec.num_classes else ''}: was the file changed "
                            f"after training? Restore it, or train a new run on the new data")


@dataclass
class Run:
    """A trained run: its folder, resolved config, modality specs and the model (in eval mode)."""

    path: Path
    config: Config
    specs: dict[str, ModalitySpec]
    model: torch.nn.Module
    info: dict

    def dataset(self):
        """The run's dataset splits, rebuilt from its config (same seed, same options) and checked
        against the modalities the run was trained on."""
        from .data.registry import load_dataset
        from .data.select import select_modalities

        splits = load_dataset(self.config.dataset, seed=self.config.seed, **self.config.data)
        check_data_matches_run(splits.specs, self.info, self.path, self.config.dataset)
        splits = select_modalities(splits, self.config.modalities or list(self.specs))
        if len(splits.test) == 0:
            raise UserError(f"the test split of '{self.config.dataset}' is empty (every test row misses a modality?): "
                            f"nothing to draw or evaluate; give the data complete test rows")
        return splits


def load_run(path: str | Path, which: str = "last", device: str = "cpu") -> Run:
    """Load a run folder written by ``mmvae train``: ``which`` is ``last`` or ``best`` (validation).

    The weights file is verified against the run's checksum manifest first (a damaged file is a
    UserError naming it)."""
    path = Path(path)
    saved = read_run(path)
    cfg = Config.from_dict(saved["config"])
    specs = {d["name"]: ModalitySpec.from_dict(d) for d in saved["modalities"]}
    model = build_model_for(specs, cfg, path)
    weights = path / (BEST if which == "best" and (path / BEST).exists() else WEIGHTS)
    verify(weights)
    load_weights(model, weights)
    model.to(device).eval()
    return Run(path, cfg, specs, model, saved)


def build_model_for(specs: dict, cfg: Config, path: Path):
    """The run's model; a config.json value the model builders reject is named as a config problem."""
    from .models.registry import build_model

    try:
        return build_model(specs, cfg)
    except UserError as e:
        raise UserError(f"{Path(path) / CONFIG} describes a model that cannot be built: {e}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise UserError(f"{Path(path) / CONFIG} describes a model that cannot be built "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}): fix the file "
                        f"or train the run again") from None
