"""The `Editor` face: load a model, apply edits with any registered method, revert, save."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from suture.editor.adapters import export_lora
from suture.editor.bias_params import stock_layout
from suture.editor.checkpoint import write_checkpoint
from suture.editor.conflicts import refuse_clashes
from suture.editor.consolidate import ConsolidationReport, consolidate_ledger
from suture.editor.context import EditContext, Progress
from suture.editor.deltas import WeightBook
from suture.editor.errors import GateFailedError, NothingToRevertError
from suture.editor.gate import Gate
from suture.editor.generation import refuse_unusable_prompts, without_cut_character
from suture.editor.handle import ModelHandle, load_model
from suture.editor.ledger import EditResult, InProgressEntry, LedgerEntry
from suture.editor.lengths import context_length, refuse_overlong
from suture.editor.noop import split_noops
from suture.editor.progress import generation_stoppers
from suture.editor.refresh import LapsedWhen, RefreshReport, refresh_lapsed
from suture.editor.registry import get_method
from suture.editor.requests import EditRequest, InvalidRequestError, parse_requests
from suture.editor.session import read_session, write_session
from suture.editor.verdicts import settle_verdicts


class Editor:
    """A model under edit, with the ordered ledger of what was done to it."""

    def __init__(self, handle: ModelHandle):
        self.handle = handle
        self.weights = WeightBook(handle.model)
        self.ledger: list[LedgerEntry] = []
        self._in_progress: InProgressEntry | None = None
        self._refresh_next = 0  # where the next refresh's window starts among its candidates
        self.context = EditContext(handle, self.weights, history=self._history)

    def _history(self) -> Sequence[LedgerEntry | InProgressEntry]:
        """The ledger, and while an edit is applied in several calls, what its earlier calls kept."""
        return self.ledger if self._in_progress is None else [*self.ledger, self._in_progress]

    @classmethod
    def load(cls, ref: str | Path, device: str | None = None, dtype: str | torch.dtype | None = None) -> Editor:
        """A zoo name (e.g. "smollm2-135m"), a local Hugging Face directory, or a .gguf file."""
        return cls(load_model(ref, device=device, dtype=dtype))

    @classmethod
    def from_model(cls, model, tokenizer, ref: str = "in-memory") -> Editor:
        """Wrap a loaded transformers model. Edits change `model`'s weights in place (that is the point);
        the caller's `tokenizer` and `model.config` are left as they are: `Editor.tokenizer` is a copy
        with the pad token and padding side suture needs."""
        return cls(ModelHandle(model=model, tokenizer=tokenizer, ref=ref))

    @property
    def model(self):
        return self.handle.model

    @property
    def tokenizer(self):
        return self.handle.tokenizer

    def apply(self, requests: EditRequest | dict | list | None = None, method: str = "rome",
              progress: Progress | None = None, force: bool = False, *, verify: bool = True,
              keep_failed: bool | None = None, **hparams: Any) -> EditResult:
        """Apply one edit (one ledger entry) made of `requests`, computed by `method`. Methods that take no
        requests (head interventions: `takes_requests = False`) are called with `requests=None`.

        Requests whose target the model already gives (greedy; `editor/noop.py`) are left out and listed
        in `details["noop"]`; when every request is one, nothing is written and no ledger entry is made.
        `force=True` applies them anyway.

        With `verify` (default), each applied request then gets a verdict (editor/verdicts.py: the whole
        target is the greedy answer on its rewrite prompt, token by token, and the greedy answer names it).
        If any fails, the edit is rolled back and `EditRequestsFailedError` names each failed request with
        what was measured; with `keep_failed=True` the edit is kept and the result says "partial"."""
        impl = get_method(method)
        if impl.takes_requests:
            requests = parse_requests(requests)
            refuse_clashes(requests)  # same subject and prompt twice: conflicting targets or a duplicate
            refuse_overlong(self.handle, requests)  # longer than the model's context
        elif requests:
            raise InvalidRequestError(f"requests: method {method!r} takes no edit requests, only hyperparameters; "
                                      "call apply(method=..., **hparams) without requests")
        else:
            requests = []
        resolved = impl.resolve_hparams(self.handle, hparams)
        started = time.perf_counter()
        asked = requests
        requests, noops = split_noops(self.handle, requests, force or not impl.takes_requests)
        if noops and not requests:  # nothing to change: no weights written, no ledger entry
            return EditResult(id=uuid.uuid4().hex[:12], method=method, hparams=resolved.model_dump(mode="json"),
                              requests=[], deltas=[], seconds=time.perf_counter() - started, details={"noop": noops})
        entry_id = uuid.uuid4().hex[:12]
        applied = []
        details: dict[str, Any] = {}
        artifacts: dict[str, Any] = {}
        hints: dict[int, str] = {}
        try:
            # The method says how its compute calls split the requests (one-at-a-time methods: one call per
            # key, editor/kv/shared_keys.py); each call sees the weights and artifacts the earlier ones left.
            groups = impl.request_groups(requests, resolved)
            for i, positions in enumerate(groups):
                self.context.progress = _share_of(progress, i, groups, len(requests))
                out = impl.compute(self.context, [requests[p] for p in positions], resolved)
                self.weights.apply(out.deltas)
                applied += out.deltas
                hints.update({positions[j]: text for j, text in out.hints.items()})
                details = _merge_details(details, out.details, i)
                # which requests each call covered: a later refresh releases one request's kept keys
                artifacts = _merge_details(artifacts, {**out.artifacts, "request_positions": positions}, i)
                self._in_progress = InProgressEntry(entry_id, artifacts)
        except BaseException:
            self._rebuild()  # never leave half an edit in the weights
            raise
        finally:
            self.context.progress = None
            self._in_progress = None
        if noops:
            details["noop"] = noops
        try:  # may roll back and raise
            verdicts, broken = settle_verdicts(self, requests, verify, keep_failed, hints,
                                               noops=[asked[n["request"]] for n in noops])
        except BaseException:
            self._rebuild()  # a check that could not run leaves no unchecked edit in the weights
            raise
        if broken:  # kept with keep_failed: the result is partial and says which no-op broke
            details["noop_broken"] = [v.model_dump(mode="json") for v in broken]
        entry = LedgerEntry(method=method, hparams=resolved.model_dump(mode="json"), requests=requests,
                            deltas=applied, seconds=time.perf_counter() - started, details=details,
                            artifacts=artifacts, verdicts=verdicts, id=entry_id)
        self.ledger.append(entry)
        return EditResult.from_entry(entry)

    def refresh(self, window: int = 8, keep_failed: bool = False,
                lapsed_when: LapsedWhen = "not_greedy") -> RefreshReport:
        """Check the next `window` earlier requests (round robin over the ledger) and write again, each as
        a new edit with its entry's method and hyperparameters, those that were written when made and that
        later edits undid (editor/refresh.py). A rewrite that fails its verdict is rolled back and listed in
        the report's `failed` (kept, as a partial edit, with `keep_failed=True`). `lapsed_when="old_preferred"`
        writes again only requests whose old answer the model prefers again (editor/refresh.py, `LapsedWhen`).
        InvalidInputError for a window below 1 or an unknown `lapsed_when`."""
        report, self._refresh_next = refresh_lapsed(self, window, self._refresh_next, keep_failed, lapsed_when)
        return report

    def consolidate(self, max_lapsed: float = 0.01, step: float = 0.02, min_scale: float = 0.5,
                    lapsed_when: LapsedWhen = "old_preferred") -> ConsolidationReport:
        """Shrink the summed update of every fact edit so far to the least scale (1, 1 - step, ..., at least
        `min_scale`) at which at most `max_lapsed` (a share) more of the ledger's facts have lapsed than
        before, written as one ledger entry (editor/consolidate.py). InvalidInputError for a setting out of
        range."""
        return consolidate_ledger(self, max_lapsed, step, min_scale, lapsed_when)

    def revert(self, n: int = 1) -> list[EditResult]:
        """Undo the last `n` edits; the touched weights come back bit for bit."""
        if n < 1 or n > len(self.ledger):
            raise NothingToRevertError(f"cannot revert {n} edit(s): the ledger holds {len(self.ledger)}")
        undone = self.ledger[-n:]
        del self.ledger[-n:]
        self._rebuild()
        return [EditResult.from_entry(e) for e in reversed(undone)]

    def reset(self) -> None:
        """Back to the loaded weights bit for bit: every edit reverted, and any change that is in the
        weights but not in the ledger (an edit stopped by an error) undone as well."""
        self.ledger.clear()
        self._refresh_next = 0
        self._rebuild()

    def save_session(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the ledger with every delta to `path` (editor/session.py), atomically, so that a long run
        of edits can continue later with `restore_session`; `extra` travels with it."""
        return write_session(self.ledger, self.handle.base_fingerprint, path, extra,
                             editor_state={"refresh_next": self._refresh_next})

    def restore_session(self, path: str | Path) -> dict[str, Any]:
        """Replace the ledger with the one saved at `path` and write its deltas into the weights (the edits
        made here so far are dropped). Returns the saved `extra`. Raises SutureError for a file that is not
        a session or was saved on another base model."""
        entries, extra, state = read_session(path, self.handle.base_fingerprint)
        self.ledger[:] = entries
        self._refresh_next = int(state.get("refresh_next", 0))
        self._rebuild()
        return extra

    def _rebuild(self) -> None:
        self.weights.rebuild(d for entry in self.ledger for d in entry.deltas)

    def ledger_json(self) -> dict[str, Any]:
        return {"base_fingerprint_sha256": self.handle.base_fingerprint, "edits": [
            {"id": e.id, "method": e.method, "hparams": e.hparams,
             "requests": [r.model_dump() for r in e.requests],
             "deltas": [{"module": d.module, "param": d.param, "rank": d.rank, "norm": d.norm(), "create": d.create}
                        for d in e.deltas],
             "seconds": e.seconds, "created": e.created, "details": e.details,
             "verdicts": [v.model_dump(mode="json") for v in e.verdicts]}
            for e in self.ledger]}

    def save(self, path: str | Path, gate: Gate | None = None) -> Path:
        """Write the edited model (save_pretrained layout + suture.json). With a gate, write nothing
        unless it passes, and raise GateFailedError naming the failed thresholds."""
        decision = None
        if gate is not None:
            stock_layout(self.model, self.handle.sites, self.weights.created)  # refuse before the gate's work
            decision = gate.decide(self)
            if not decision.passed:
                raise GateFailedError(decision.failures)
        return write_checkpoint(self, Path(path), decision)

    def export_adapter(self, path: str | Path, entries: list[str] | None = None) -> Path:
        """Write the edits with ids `entries` (default: all) as a PEFT LoRA adapter (see `export_lora`)."""
        return export_lora(self, path, entries)

    @torch.no_grad()
    def generate(self, prompts: list[str], max_new_tokens: int = 8) -> list[str]:
        """Greedy continuations of `prompts` (batched); InvalidInputError for a blank prompt or a budget under
        one token or over the model's context."""
        refuse_unusable_prompts(prompts, max_new_tokens, context_length(self.model.config))
        if not prompts:
            return []
        tok = self.tokenizer
        enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left").to(self.handle.device)
        out = self.model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                  pad_token_id=tok.pad_token_id, stopping_criteria=generation_stoppers() or None)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return [without_cut_character(text) for text in texts]


def _share_of(progress: Progress | None, index: int, groups: list[list[int]], total: int) -> Progress | None:
    """Progress of compute call `index` (on the requests at `groups[index]`), reported as its requests' share
    of the whole edit, the stage naming the call ("value (request 3/10)"; "value (group 2/32)" when calls hold
    several requests)."""
    if progress is None or len(groups) == 1:
        return progress
    start, size = sum(len(group) for group in groups[:index]), len(groups[index])
    unit = "request" if len(groups) == total else "group"
    where = f"{unit} {index + 1}/{len(groups)}"
    return lambda stage, fraction: progress(f"{stage} ({where})", (start + fraction * size) / total)


def _merge_details(acc: dict[str, Any], new: dict[str, Any], index: int) -> dict[str, Any]:
    """Per-request details of one-at-a-time methods are kept as lists."""
    if index == 0:
        return {k: [v] for k, v in new.items()}
    for k, v in new.items():
        acc.setdefault(k, []).append(v)
    return acc
