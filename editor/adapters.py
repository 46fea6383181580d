"""Export ledger entries as a PEFT LoRA adapter: the edits travel without the model they were made on.

Each touched projection's accumulated delta (the sum of the selected entries' `WeightDelta`s on its weight)
is factored exactly at its numerical rank: the low-rank factors are stacked, reduced by two thin QRs and a
small SVD of the core, so one ROME edit gives rank 1 and n edits of one module give at most rank n, without
ever materializing the full matrix (dense deltas are factored by an SVD of the full delta, truncated at the
noise floor of their storage dtype). `lora_alpha`
equals the rank of every module, so PEFT's scaling is 1 and `base + B @ A` is the edited weight.

The adapter is written directly (adapter_config.json + adapter_model.safetensors, PEFT's own layout) beside a
`suture-adapter.json` naming the base weights and the exported edits; the live model is never wrapped.

Subsets are plain sums: an adapter of the second edit alone carries the delta that was computed on top of
the first, so loading it without the first does not give "the model edited only by the second".
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from suture.editor.atomic import atomic_directory, refuse_non_empty
from suture.editor.checkpoint import _versions
from suture.editor.deltas import WeightDelta
from suture.editor.errors import SutureError
from suture.editor.ledger import LedgerEntry

if TYPE_CHECKING:
    from suture.editor.editor import Editor

ADAPTER_MANIFEST = "suture-adapter.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_CANNOT = ("LoRA carries weight deltas of Linear/Conv1D layers only; {what} cannot be exported as an adapter; "
           "save a full checkpoint instead (Editor.save)")


class AdapterExportError(SutureError):
    """The selected edits cannot be written as a LoRA adapter (nothing was written)."""


@dataclass
class LoraFactors:
    module: str
    rank: int
    lora_B: torch.Tensor  # [out, r]
    lora_A: torch.Tensor  # [r, in]
    conv1d: bool  # the base layer is a Conv1D (weight stored (in, out)): PEFT needs fan_in_fan_out=True


def export_lora(editor: Editor, path: str | Path, entries: list[str] | None = None) -> Path:
    """Write the ledger entries with ids `entries` (default: all) as a PEFT LoRA adapter directory at `path`.

    Raises AdapterExportError (nothing written) for unknown ids, or a delta LoRA cannot carry (a bias, a
    parameter that is not the weight of a Linear/Conv1D layer, a weight tied to another module), and
    FileExistsError if `path` is a file or a non-empty directory.
    """
    path = Path(path)
    refuse_non_empty(path)  # before any work
    selected = _select(editor.ledger, entries)
    factors = lora_factors(editor.model, [d for e in selected for d in e.deltas])
    if not factors:
        raise AdapterExportError(f"nothing to export: the selected edits ({', '.join(e.id for e in selected)}) "
                                 "leave every weight unchanged")
    config = _lora_config(factors, base_ref=editor.handle.ref)
    tensors = {}
    for f in factors:
        tensors[f"base_model.model.{f.module}.lora_A.weight"] = f.lora_A.contiguous()
        tensors[f"base_model.model.{f.module}.lora_B.weight"] = f.lora_B.contiguous()
    manifest = _manifest(editor, selected, factors)

    from safetensors.torch import save_file

    with atomic_directory(path) as staging:
        config.save_pretrained(str(staging))
        save_file(tensors, str(staging / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (staging / ADAPTER_MANIFEST).write_text(json.dumps(manifest, indent=2))
    return path


def _select(ledger: list[LedgerEntry], ids: list[str] | None) -> list[LedgerEntry]:
    """The chosen entries in ledger order (the delta sum does not depend on the order)."""
    if ids is None:
        if not ledger:
            raise AdapterExportError("nothing to export: the ledger is empty")
        return list(ledger)
    if isinstance(ids, str):
        ids = [ids]
    if not ids:
        raise AdapterExportError("nothing to export: no entry ids given")
    known = [e.id for e in ledger]
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise AdapterExportError(f"unknown ledger entry id(s) {', '.join(map(repr, unknown))}; "
                                 f"the ledger holds {', '.join(map(repr, known)) or 'nothing'}")
    if len(set(ids)) != len(ids):
        raise AdapterExportError(f"duplicate ledger entry ids in {ids}: each edit can be exported once")
    wanted = set(ids)
    return [e for e in ledger if e.id in wanted]


def lora_factors(model: nn.Module, deltas: list[WeightDelta]) -> list[LoraFactors]:
    """Per module (first-touched order), the exact rank-r factors of the sum of `deltas` on its weight.

    Checks every delta before factoring any, so an unexportable one fails fast. Modules whose deltas sum to
    zero are left out.
    """
    from transformers.pytorch_utils import Conv1D

    by_module: dict[str, list[WeightDelta]] = {}
    kinds: dict[str, bool] = {}
    owners: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(name)
    for delta in deltas:
        try:
            module = model.get_submodule(delta.module)
        except AttributeError:
            raise AdapterExportError(f"{delta.key}: the model has no module {delta.module!r}") from None
        if delta.param != "weight":
            if delta.param == "bias" and getattr(module, "bias", None) is None:
                what = f"a bias added to the bias-free projection {delta.module} (e.g. head biases)"
            elif delta.param == "bias":
                what = f"a change of the bias of {delta.module}"
            else:
                what = f"a change of parameter {delta.param!r} of {delta.module}"
            raise AdapterExportError(f"{delta.key}: " + _CANNOT.format(what=what))
        if not isinstance(module, nn.Linear | Conv1D):
            what = f"a change of {delta.module}, a {type(module).__name__} rather than a Linear/Conv1D layer,"
            raise AdapterExportError(f"{delta.key}: " + _CANNOT.format(what=what))
        tied = [n for n in owners.get(id(module.weight), []) if n != delta.key]
        if tied:
            what = (f"a change of {delta.key}, which is tied to {', '.join(tied)} (an adapter on "
                    f"{delta.module} alone would leave the tied copy unchanged),")
            raise AdapterExportError(f"{delta.key}: " + _CANNOT.format(what=what))
        shape = tuple(delta.dense.shape) if delta.dense is not None else (delta.left.shape[0], delta.right.shape[1])
        if shape != tuple(module.weight.shape):
            raise AdapterExportError(f"{delta.key}: delta of shape {shape} does not fit the weight of shape "
                                     f"{tuple(module.weight.shape)}")
        by_module.setdefault(delta.module, []).append(delta)
        kinds[delta.module] = isinstance(module, Conv1D)

    out = []
    for name, group in by_module.items():
        weight = model.get_submodule(name).weight
        dtype = torch.promote_types(weight.dtype, torch.float32) if weight.dtype.is_floating_point else torch.float32
        lora_B, lora_A = factor_out_in(group, transposed=kinds[name])
        if lora_B.shape[1] == 0:
            continue
        out.append(LoraFactors(module=name, rank=lora_B.shape[1], lora_B=lora_B.to(dtype), lora_A=lora_A.to(dtype),
                               conv1d=kinds[name]))
    return out


@torch.no_grad()
def factor_out_in(deltas: list[WeightDelta], transposed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(B [out, r], A [r, in]) in float64 with B @ A = the sum of `deltas` viewed as (out, in), r its
    numerical rank. `transposed`: the deltas are stored (in, out), as Conv1D weights are."""
    f64 = {"device": "cpu", "dtype": torch.float64}
    if all(d.dense is None for d in deltas):
        lefts, rights = [], []
        for d in deltas:
            # (out, in) orientation: a stored (in, out) delta L @ R is (R^T)(L^T).
            left, right = (d.right.T, d.left.T) if transposed else (d.left, d.right)
            left, right = left.to(**f64), right.to(**f64)
            # Balance the factors (equal norms) so the stacked norms bound the round-off of the factoring.
            ln, rn = float(left.norm()), float(right.norm())
            if ln > 0 and rn > 0:
                left, right = left * (rn / ln) ** 0.5, right * (ln / rn) ** 0.5
            lefts.append(left)
            rights.append(right)
        left, right = torch.cat(lefts, dim=1), torch.cat(rights, dim=0)  # [out, K], [K, in]
        q_left, r_left = torch.linalg.qr(left)  # [out, k1], [k1, K]
        q_right, r_right = torch.linalg.qr(right.T)  # [in, k2], [k2, K]
        u, s, vh = torch.linalg.svd(r_left @ r_right.T, full_matrices=False)  # core [k1, k2]
        u, vh = q_left @ u, vh @ q_right.T
        shape, eps = (left.shape[0], right.shape[1]), torch.finfo(torch.float64).eps
        scale = float(left.norm()) * float(right.norm())  # = sum of the deltas' norm products, >= |sum|
    else:
        parts = [_out_in(d.materialize().to(**f64), transposed) for d in deltas]
        total = sum(parts)
        u, s, vh = torch.linalg.svd(total, full_matrices=False)
        shape = tuple(total.shape)
        eps = max(torch.finfo(d.materialize().dtype).eps for d in deltas)
        scale = sum(float(p.norm()) for p in parts)
    rank = _numerical_rank(s, shape, eps, scale)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


def _out_in(weight: torch.Tensor, transposed: bool) -> torch.Tensor:
    return weight.T if transposed else weight


def _numerical_rank(s: torch.Tensor, shape: tuple[int, int], eps: float, scale: float) -> int:
    """Singular values above max(shape) * eps * scale (`torch.linalg.matrix_rank`'s tolerance, taken relative to
    the size of the summed deltas rather than of the sum, so deltas that cancel give rank 0).

    Low-rank factors are exact numbers and their product is formed in float64, so eps is float64's: only
    round-off of the factoring is dropped and r is the true rank. A dense delta carries the round-off of its
    own storage dtype (a rank-3 product rounded to float32 is full-rank in float64), so its eps is that dtype's:
    what is dropped lies below the precision the delta was stored at.
    """
    if s.numel() == 0 or scale == 0.0:
        return 0
    tol = scale * max(shape) * eps
    return int((s > tol).sum())


def _lora_config(factors: list[LoraFactors], base_ref: str):
    from peft import LoraConfig

    ranks = {f.module: f.rank for f in factors}
    top = max(ranks.values())
    pattern = {m: r for m, r in ranks.items() if r != top}  # full module names; PEFT matches them as suffixes
    return LoraConfig(
        r=top, lora_alpha=top, rank_pattern=pattern, alpha_pattern=dict(pattern),
        target_modules=list(ranks), lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
        fan_in_fan_out=any(f.conv1d for f in factors), base_model_name_or_path=base_ref, inference_mode=True,
    )


def _manifest(editor: Editor, selected: list[LedgerEntry], factors: list[LoraFactors]) -> dict[str, Any]:
    index = {e.id: i for i, e in enumerate(editor.ledger)}
    return {
        "format": "suture-adapter/1",
        "base_model": {"ref": editor.handle.ref, "fingerprint_sha256": editor.handle.base_fingerprint,
                       "model_type": editor.model.config.model_type},
        "adapter": {"type": "peft-lora", "scaling": 1.0, "modules": {f.module: f.rank for f in factors}},
        "edits": [{"id": e.id, "method": e.method, "ledger_index": index[e.id],
                   "requests": [r.model_dump() for r in e.requests]} for e in selected],
        "ledger_ids": [e.id for e in editor.ledger],  # the edits each exported delta was computed on top of
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
