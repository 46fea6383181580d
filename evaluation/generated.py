"""Generation-based evaluation: what the edited model says, judged as a user reads it.

Reported beside the teacher-forced CounterFact scores (evaluation/counterfact.py), never mixed with them.
Every answer is a greedy continuation with a KV cache, batched, cut at its natural end
(editor/generation.py), and judged by `editor.judge.judge`: does it name the new target before any mention
of the old one? (Yang et al. 2025, "The Mirage of Model Editing", arXiv 2502.11177; EasyEdit's WILD.)

- efficacy: the rewrite prompt's answer names target_new;
- paraphrase: the same on each paraphrase prompt (mean within a case, then over cases);
- chat: for models with a chat template, the fact asked in a user turn (`chat_prompt`), judged on the
  assistant's reply up to its end of turn or the token budget;
- generation_prompts: CounterFact's free-generation prompts about the subject, share whose text names
  target_new (informative: many of them ask about the subject's traits, not the fact itself);
- locality: neighbor prompts whose generated answer is the same (normalized) as the base model's;
- fluency: weighted bi/tri-gram entropy (ROME's measure) and trigram repetition of longer generations
  (the generation prompts, else the rewrite prompt) and of the chat replies, on the edited and the base
  weights;
- portability: zsRE portability questions whose answer names the portability answer;
- subject_kept: of the chat replies and generation-prompt answers in which the base model restates the
  subject, the share in which the edited model restates it too (word for word, normalized).
"""

from __future__ import annotations

import time
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

from suture.editor import Editor, EditRequest
from suture.editor.generation import generate_greedy
from suture.editor.judge import find_mention, judge, normalize

CHAT_INSTRUCTION = "Complete the sentence: {}"


class GenerationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer_tokens: int = Field(24, ge=1, le=4096, description="budget of a rewrite/paraphrase answer (sentence stop)")
    neighbor_tokens: int = Field(12, ge=1, le=4096, description="budget of a neighbor answer (sentence stop)")
    chat: bool = Field(True, description="ask the fact through the chat template, if the model has one")
    chat_instruction: str = Field(CHAT_INSTRUCTION, description="user turn; '{}' is the rewrite prompt")
    chat_tokens: int = Field(32, ge=1, le=4096, description="budget of a chat reply (stops at end of turn)")
    generation_prompts: int = Field(3, ge=0, description="distinct CounterFact generation prompts per case")
    fluency_tokens: int = Field(48, ge=1, le=4096)
    batch_size: int = Field(32, ge=1)


class GeneratedAnswer(BaseModel):
    prompt: str
    text: str
    judged: str  # "new", "old", "neither" (for neighbors: "same" / "changed"; base answer in `base`)
    base: str | None = None


class GeneratedMetrics(BaseModel):
    """Fractions of generated answers judged right, per prompt kind (None where a case has no such prompt)."""

    efficacy: float
    paraphrase: float | None
    chat: float | None
    generation_prompts: float | None
    locality: float | None
    portability: float | None
    # Of the longer answers (chat reply, generation prompts) in which the base model restates the subject,
    # the share in which the edited model restates it too: an edit can garble the name it was keyed on
    # ("Maria Altmann" -> "Marla Alt Text"), and a garbled name can even contain the new target by accident.
    subject_kept: float | None = None


class GeneratedCase(GeneratedMetrics):
    id: str | None
    answers: list[GeneratedAnswer]


class GeneratedFluency(BaseModel):
    """Weighted bi/tri-gram entropy (higher = more varied) and share of repeated trigrams (lower = better)."""

    base_entropy: float
    edited_entropy: float
    base_repetition: float
    edited_repetition: float
    chat_base_entropy: float | None = None
    chat_edited_entropy: float | None = None

    @property
    def ratio(self) -> float:
        """Edited over base entropy (1.0 = as fluent as the base model)."""
        return self.edited_entropy / self.base_entropy if self.base_entropy > 0 else 1.0

    @property
    def chat_ratio(self) -> float | None:
        if self.chat_base_entropy is None or self.chat_edited_entropy is None:
            return None
        return self.chat_edited_entropy / self.chat_base_entropy if self.chat_base_entropy > 0 else 1.0


class GeneratedScores(GeneratedMetrics):
    """Scores of generated answers (labelled "generated" wherever shown; teacher-forced ones are apart)."""

    kind: str = "generated"
    fluency: GeneratedFluency | None
    cases: list[GeneratedCase]
    generations: int  # greedy generations run (edited and base)
    seconds: float

    @property
    def seconds_per_case(self) -> float:
        return self.seconds / max(1, len(self.cases))


def repetition(text: str, n: int = 3) -> float:
    """Share of word n-grams in `text` that repeat an earlier one (0 = none repeated)."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1 - len(Counter(grams)) / len(grams)


def chat_prompt(tokenizer, request: EditRequest, instruction: str = CHAT_INSTRUCTION) -> str | None:
    """The fact asked through the tokenizer's chat template (a user turn with `instruction` around the
    rewrite prompt, then the assistant turn's header), or None without a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": instruction.replace("{}", request.text)}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def subject_restated(pairs: list[tuple[str, str]], subject: str) -> list[float]:
    """For each (base, edited) answer pair whose base answer names `subject` (a whole-word match after
    `normalize`), 1.0 if the edited answer names it too, else 0.0; pairs whose base answer does not are
    left out."""
    return [float(find_mention(edited, subject) is not None) for base, edited in pairs
            if find_mention(base, subject) is not None]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def evaluate_generated(editor: Editor, cases: list[EditRequest], options: GenerationOptions | None = None,
                       base_cache: dict[tuple[str, int, str], str] | None = None) -> GeneratedScores:
    """Generate and judge on the editor's current weights (and its base weights for locality and
    fluency). `cases` need `target_true` only for the "before the old target" rule; without it any
    mention of target_new counts. `base_cache` (a dict the caller keeps) remembers the base model's
    generations across calls on the same base model (benchmarks editing one case at a time)."""
    from suture.evaluation.fluency import ngram_entropy  # fluency imports the report, which imports this

    options = options or GenerationOptions()
    started = time.perf_counter()
    handle, tok = editor.handle, editor.tokenizer
    count = 0

    def run(prompts: list[str], tokens: int, stop: str, chat: bool = False) -> list[str]:
        nonlocal count
        if not prompts:
            return []
        count += len(prompts)
        return [g.text for g in generate_greedy(handle, prompts, max_new_tokens=tokens, stop=stop,
                                                 batch_size=options.batch_size, add_special_tokens=not chat)]

    def run_base(prompts: list[str], tokens: int, stop: str, chat: bool = False) -> list[str]:
        if base_cache is None:
            return run(prompts, tokens, stop, chat)
        missing = list(dict.fromkeys(p for p in prompts if (p, tokens, stop) not in base_cache))
        for prompt, text in zip(missing, run(missing, tokens, stop, chat)):
            base_cache[(prompt, tokens, stop)] = text
        return [base_cache[(p, tokens, stop)] for p in prompts]

    rewrite = [c.text for c in cases]
    para = [p for c in cases for p in c.paraphrases]
    neighbors = [p for c in cases for p in c.neighbors]
    port = [p for c in cases for p in c.portability_prompts]
    gen_prompts = [list(dict.fromkeys(c.generation_prompts))[: options.generation_prompts] for c in cases]
    chats = [chat_prompt(tok, c, options.chat_instruction) if options.chat else None for c in cases]
    has_chat = all(p is not None for p in chats) and bool(chats)
    fluency_prompts = [p for c, g in zip(cases, gen_prompts) for p in (g or [c.text])]

    edited = {
        "rewrite": run(rewrite, options.answer_tokens, "sentence"),
        "para": run(para, options.answer_tokens, "sentence"),
        "neighbor": run(neighbors, options.neighbor_tokens, "sentence"),
        "port": run(port, options.answer_tokens, "sentence"),
        "fluency": run(fluency_prompts, options.fluency_tokens, "budget"),
        "chat": run(chats, options.chat_tokens, "budget", chat=True) if has_chat else [],
    }
    with editor.weights.base_weights():
        base = {
            "neighbor": run_base(neighbors, options.neighbor_tokens, "sentence"),
            "fluency": run_base(fluency_prompts, options.fluency_tokens, "budget"),
            "chat": run_base(chats, options.chat_tokens, "budget", chat=True) if has_chat else [],
        }

    results = []
    cursor = {"para": 0, "neighbor": 0, "port": 0, "fluency": 0}
    for i, case in enumerate(cases):
        answers = []

        def take(kind: str, k: int) -> list[str]:
            start = cursor[kind]
            cursor[kind] += k
            return edited[kind][start: start + k]

        verdict = judge(edited["rewrite"][i], case.target_new, case.target_true)
        answers.append(GeneratedAnswer(prompt=case.text, text=edited["rewrite"][i], judged=verdict))
        para_hits = []
        for prompt, text in zip(case.paraphrases, take("para", len(case.paraphrases))):
            v = judge(text, case.target_new, case.target_true)
            para_hits.append(float(v == "new"))
            answers.append(GeneratedAnswer(prompt=prompt, text=text, judged=v))
        start = cursor["neighbor"]
        local = []
        for prompt, text, before in zip(case.neighbors, take("neighbor", len(case.neighbors)),
                                        base["neighbor"][start: start + len(case.neighbors)]):
            same = normalize(text) == normalize(before)
            local.append(float(same))
            answers.append(GeneratedAnswer(prompt=prompt, text=text, base=before, judged="same" if same else "changed"))
        port_hits = []
        for prompt, answer, text in zip(case.portability_prompts, case.portability_answers,
                                        take("port", len(case.portability_prompts))):
            v = judge(text, answer)
            port_hits.append(float(v == "new"))
            answers.append(GeneratedAnswer(prompt=prompt, text=text, judged=v))
        gen_hits = []
        start = cursor["fluency"]
        flu = take("fluency", len(gen_prompts[i] or [case.text]))
        restated = list(zip(base["fluency"][start: start + len(flu)], flu))
        for prompt, text in zip(gen_prompts[i], flu):
            v = judge(text, case.target_new, case.target_true)
            gen_hits.append(float(v == "new"))
            answers.append(GeneratedAnswer(prompt=prompt, text=text, judged=v))
        chat_hit = None
        if has_chat:
            text = edited["chat"][i]
            v = judge(text, case.target_new, case.target_true)
            chat_hit = float(v == "new")
            answers.append(GeneratedAnswer(prompt=chats[i] or "", text=text, judged=v, base=base["chat"][i]))
            restated.append((base["chat"][i], text))
        kept = subject_restated(restated, case.subject)
        results.append(GeneratedCase(
            id=case.id, efficacy=float(verdict == "new"), paraphrase=_mean(para_hits), chat=chat_hit,
            generation_prompts=_mean(gen_hits), locality=_mean(local), portability=_mean(port_hits),
            subject_kept=_mean(kept), answers=answers))

    def mean_of(texts: list[str], prompts: list[str], measure) -> float:
        return sum(measure(p + t) for p, t in zip(prompts, texts)) / max(1, len(texts))

    fluency = GeneratedFluency(
        base_entropy=mean_of(base["fluency"], fluency_prompts, ngram_entropy),
        edited_entropy=mean_of(edited["fluency"], fluency_prompts, ngram_entropy),
        base_repetition=mean_of(base["fluency"], fluency_prompts, repetition),
        edited_repetition=mean_of(edited["fluency"], fluency_prompts, repetition),
        chat_base_entropy=mean_of(base["chat"], [""] * len(base["chat"]), ngram_entropy) if has_chat else None,
        chat_edited_entropy=mean_of(edited["chat"], [""] * len(edited["chat"]), ngram_entropy) if has_chat else None,
    ) if fluency_prompts else None

    def over(key: str) -> float | None:
        return _mean([getattr(c, key) for c in results if getattr(c, key) is not None])

    return GeneratedScores(
        efficacy=over("efficacy") or 0.0, paraphrase=over("paraphrase"), chat=over("chat"),
        generation_prompts=over("generation_prompts"), locality=over("locality"),
        portability=over("portability"), subject_kept=over("subject_kept"), fluency=fluency, cases=results,
        generations=count,
        seconds=time.perf_counter() - started)
