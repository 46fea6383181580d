"""ROME-style causal tracing (Meng et al., 2022): where does the model recall a fact about a subject?

1. Clean run: P(target's first token) at the prompt's last position; every block output (hidden state) and
   every MLP / attention output-projection output is kept.
2. Corrupted run: Gaussian noise (seeded, `samples` draws) is added to the input embeddings of the subject's
   tokens, read at the output of `model.get_input_embeddings()` (so Gemma's scaled embedding is covered).
3. Restoration: for each layer and each token position, the clean value of one site (block output `hidden`,
   MLP output `mlp`, attention output `attn`) is written back into the corrupted run at that one
   (layer, position), and P(target) is read again. The indirect effect is restored - corrupted.

Each layer costs one batched forward per kind, with one row per (position, noise sample): row r restores
position r // samples under noise draw r % samples. Only the final-norm hidden state at the last position goes
through the unembedding. Unlike the reference implementation, `mlp`/`attn` restore a single layer, not a
window of layers around it.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel

from suture.editor.errors import InvalidInputError
from suture.editor.handle import ModelHandle
from suture.editor.kv.capture import capture_output, edit_output, hooks
from suture.editor.kv.readout import final_hidden, logits_at
from suture.editor.kv.tokens import answer_token_ids, build_batch
from suture.editor.progress import check_cancelled
from suture.editor.prompt_template import normalize_subject, normalize_template, parse_template

KINDS = ("hidden", "mlp", "attn")


class TraceResult(BaseModel):
    prompt: str
    subject: str
    target: str
    target_token: int
    tokens: list[str]
    subject_first: int  # first and last (inclusive) token of the subject: the corrupted positions
    subject_last: int
    noise: float
    samples: int
    clean_prob: float
    corrupted_prob: float
    layers: list[int]
    scores: dict[str, list[list[float]]]  # kind -> [len(layers) x len(tokens)] restored P(target)

    def matrix(self, kind: str = "hidden") -> torch.Tensor:
        """Restored probabilities [layers x positions]."""
        if kind not in self.scores:
            raise InvalidInputError(f"kind {kind!r} was not traced (have {sorted(self.scores)})")
        return torch.tensor(self.scores[kind], dtype=torch.float64)

    def effect(self, kind: str = "hidden") -> torch.Tensor:
        """Indirect effect [layers x positions]: restored - corrupted probability."""
        return self.matrix(kind) - self.corrupted_prob

    def best_layer(self, kind: str = "mlp") -> int:
        """Layer (model index) whose restoration at the subject's last token helps most."""
        return self.layers[int(self.effect(kind)[:, self.subject_last].argmax())]


def subject_span(tokenizer, text: str, start: int, end: int, last: int) -> int:
    """Index of the first token overlapping text[start:end] (the subject); `last` is its last token."""
    if getattr(tokenizer, "is_fast", False):
        offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        hits = [i for i, (a, b) in enumerate(offsets) if b > a and b > start and a < end]
        if hits:
            return min(hits[0], last)
    return min(len(tokenizer(text[:start])["input_ids"]), last)  # slow tokenizers: tokens before the subject


@torch.no_grad()
def embedding_std(handle: ModelHandle, max_tokens: int = 4096) -> float:
    """Std of the input-embedding module's output over (up to `max_tokens` evenly spaced) vocabulary ids."""
    embed = handle.model.get_input_embeddings()
    vocab = embed.weight.shape[0]
    ids = torch.linspace(0, vocab - 1, min(vocab, max_tokens)).long().to(handle.device)
    return float(embed(ids[None]).float().std())


def _prob(handle: ModelHandle, ids: torch.Tensor, mask: torch.Tensor, target: int) -> torch.Tensor:
    """P(target) at the last position of each (unpadded, equal-length) row."""
    normed = final_hidden(handle, ids, mask)
    rows = torch.arange(ids.shape[0], device=ids.device)
    cols = torch.full_like(rows, ids.shape[1] - 1)
    return logits_at(handle, normed, rows, cols).softmax(-1)[:, target].double()


class _Tracer:
    """Clean run, noise draws and batched corrupted runs for one prompt."""

    def __init__(self, handle: ModelHandle, prompt_template: str, subject: str, target: str, noise: float,
                 samples: int, kinds: tuple[str, ...], layers: list[int], seed: int):
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise InvalidInputError(f"kinds: unknown kinds {sorted(unknown)}; choose from {KINDS}")
        if samples < 1:
            raise InvalidInputError("samples: samples must be >= 1")
        self.handle, self.samples = handle, samples
        model, tok, sites, device = handle.model, handle.tokenizer, handle.sites, handle.device
        try:
            template = parse_template(normalize_template(prompt_template))
        except ValueError as exc:
            raise InvalidInputError(f"prompt_template: {exc}") from None
        subject = normalize_subject(subject)
        if not subject:
            raise InvalidInputError("subject: must not be blank")
        batch = build_batch(tok, [template], [subject]).to(device)
        self.ids, self.mask, self.length = batch.input_ids, batch.attention_mask, int(batch.lengths[0])
        filled = template.fill(subject)
        self.text = filled.text
        self.last = int(batch.subject_last[0])
        self.first = subject_span(tok, self.text, filled.subject_start, filled.subject_end, self.last)
        self.target_id = answer_token_ids(tok, [self.text], [target])[0]

        blocks = sites.layer_modules(model)
        self.site = {"hidden": lambda i: blocks[i],
                     "mlp": lambda i: model.get_submodule(sites.mlp_out_path(i)),
                     "attn": lambda i: model.get_submodule(sites.attn_out_path(i))}
        sinks: dict[tuple[str, int], list[torch.Tensor]] = {(k, i): [] for k in kinds for i in layers}
        with hooks(*(capture_output(self.site[k](i), sink) for (k, i), sink in sinks.items())):
            self.clean_prob = float(_prob(handle, self.ids, self.mask, self.target_id)[0])
        self.clean = {key: sink[0][0] for key, sink in sinks.items()}  # [length, d] per (kind, layer)

        d = model.get_input_embeddings().weight.shape[1]
        generator = torch.Generator().manual_seed(seed)
        self.draws = torch.randn(samples, self.last - self.first + 1, d, generator=generator,
                                 dtype=torch.float64) * noise

    def run(self, sample_of_row: torch.Tensor, kind: str | None = None, layer: int | None = None,
            restore: torch.Tensor | None = None) -> torch.Tensor:
        """P(target) per row: row r is corrupted with draw sample_of_row[r] and, if given, has the clean
        `kind` output of `layer` written back at the positions where restore[r] ([rows, length] bool) is set."""
        model, rows = self.handle.model, sample_of_row.shape[0]
        delta = self.draws[sample_of_row.cpu()].to(self.handle.device)
        first, last = self.first, self.last

        def corrupt(embeds: torch.Tensor) -> torch.Tensor:
            out = embeds.clone()
            out[:, first:last + 1] += delta.to(out.dtype)
            return out

        extra = []
        if kind is not None:
            value = self.clean[(kind, layer)]

            def put_back(out: torch.Tensor) -> torch.Tensor:
                return torch.where(restore[..., None], value.to(out.dtype), out)

            extra.append(edit_output(self.site[kind](layer), put_back))
        with hooks(edit_output(model.get_input_embeddings(), corrupt), *extra):
            return _prob(self.handle, self.ids.expand(rows, -1), self.mask.expand(rows, -1), self.target_id)


def _layers(handle: ModelHandle, layers) -> list[int]:
    return list(range(handle.n_layers)) if layers is None else [int(x) for x in layers]


@torch.no_grad()
def trace(handle: ModelHandle, prompt_template: str, subject: str, target: str, noise: float | None = None,
          samples: int = 10, kinds: tuple[str, ...] = ("hidden", "mlp"), layers: list[int] | None = None,
          seed: int = 0, max_rows: int = 256) -> TraceResult:
    """Causal trace of `target` (its first token after a space) for the template's `{}` filled with `subject`.

    noise: std of the Gaussian noise on the subject embeddings; None -> 3 x `embedding_std(handle)`.
    max_rows: rows per batched forward (a layer's positions x samples are split into chunks of this size).
    """
    layers = _layers(handle, layers)
    noise = 3 * embedding_std(handle) if noise is None else float(noise)
    tracer = _Tracer(handle, prompt_template, subject, target, noise, samples, tuple(kinds), layers, seed)
    device, length = handle.device, tracer.length
    corrupted_prob = float(tracer.run(torch.arange(samples, device=device)).mean())

    # Row r of a layer's batch restores position r // samples under noise draw r % samples.
    total = length * samples
    row_pos = torch.arange(total, device=device) // samples
    row_sample = torch.arange(total, device=device) % samples
    one_hot = row_pos[:, None] == torch.arange(length, device=device)[None]
    scores: dict[str, list[list[float]]] = {}
    for kind in kinds:
        matrix = []
        for layer in layers:
            check_cancelled()
            probs = torch.cat([tracer.run(row_sample[lo:lo + max_rows], kind, layer, one_hot[lo:lo + max_rows])
                               for lo in range(0, total, max_rows)])
            matrix.append(probs.view(length, samples).mean(1).tolist())
        scores[kind] = matrix

    tok = handle.tokenizer
    return TraceResult(prompt=tracer.text, subject=subject, target=target, target_token=tracer.target_id,
                       tokens=[tok.decode([t]) for t in tracer.ids[0].tolist()], subject_first=tracer.first,
                       subject_last=tracer.last, noise=noise, samples=samples, clean_prob=tracer.clean_prob,
                       corrupted_prob=corrupted_prob, layers=layers, scores=scores)


@torch.no_grad()
def restored_prob(handle: ModelHandle, prompt_template: str, subject: str, target: str, layer: int,
                  positions: list[int] | None = None, kind: str = "hidden", noise: float | None = None,
                  samples: int = 10, seed: int = 0) -> float:
    """Mean P(target) of the corrupted run (same noise draws as `trace` with the same arguments) with the clean
    `kind` output of `layer` restored at all `positions` at once (None: every position)."""
    noise = 3 * embedding_std(handle) if noise is None else float(noise)
    tracer = _Tracer(handle, prompt_template, subject, target, noise, samples, (kind,), [layer], seed)
    restore = torch.zeros(samples, tracer.length, dtype=torch.bool, device=handle.device)
    restore[:, list(range(tracer.length)) if positions is None else positions] = True
    return float(tracer.run(torch.arange(samples, device=handle.device), kind, layer, restore).mean())
