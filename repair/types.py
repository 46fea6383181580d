"""The minimal-repair search's data: the repairs it can propose (one typed plan per strategy), a measured
point of the search, and its result. Plans turn into ordinary head-method edits, so a chosen repair joins
the ledger, reverts exactly and saves as a stock-loadable checkpoint."""

from __future__ import annotations

from abc import abstractmethod
from collections import defaultdict
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from suture.editor.kv import CorpusSpec

Head = tuple[int, int]  # (layer, query head)


def head_key(layer: int, head: int) -> str:
    """'layer.head', the key of per-head dictionaries in plans (JSON objects need string keys)."""
    return f"{layer}.{head}"


def _names(heads: list[Head]) -> str:
    return ", ".join(f"L{layer}H{head}" for layer, head in heads)


def _by_layer(heads: list[Head]) -> list[tuple[int, list[int]]]:
    """Heads grouped by layer in depth order (a later layer's edit is fit on what the earlier ones produce)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for layer, head in heads:
        groups[layer].append(head)
    return sorted(groups.items())


class _Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    heads: list[Head] = Field(description="(layer, head), in the order the search added them")

    @abstractmethod
    def edits(self) -> list[tuple[str, dict]]:
        """(method name, hyperparameters) of the head edits realizing the plan, in the order to apply them."""

    @abstractmethod
    def describe(self) -> str:
        """The heads and the change, for people: 'L3H1, L5H0 steered with alpha 2'."""

    def prefix(self, size: int) -> _Plan:
        """The same repair on the first `size` heads only (for curves over the set size)."""
        return self.model_copy(update={"heads": self.heads[:size]})


class SteerPlan(_Plan):
    """Add alpha * d_h to each chosen head's output (head-steer, exact biases of the output projection)."""

    kind: Literal["steer"] = "steer"
    alpha: float = Field(description="steering strength α, the multiple of each direction added")
    directions: dict[str, list[float]] = Field(description="'layer.head' -> d_h, mean twin minus failing output")

    def describe(self) -> str:
        return f"{_names(self.heads)} steered with alpha {self.alpha:g}"

    def edits(self) -> list[tuple[str, dict]]:
        return [("head-steer", {"layer": layer, "heads": heads, "alpha": self.alpha,
                                "directions": [self.directions[head_key(layer, h)] for h in heads]})
                for layer, heads in _by_layer(self.heads)]


class ScalePlan(_Plan):
    """Multiply each chosen head's output by its own factor (head-scale; 0 ablates)."""

    kind: Literal["scale"] = "scale"
    factors: dict[str, float] = Field(description="'layer.head' -> the factor its output is multiplied by")

    def describe(self) -> str:
        return ", ".join(f"L{layer}H{head}x{self.factors[head_key(layer, head)]:g}" for layer, head in self.heads) + \
            " scaled"

    def edits(self) -> list[tuple[str, dict]]:
        groups: dict[tuple[int, float], list[int]] = defaultdict(list)
        for layer, head in self.heads:
            groups[(layer, self.factors[head_key(layer, head)])].append(head)
        return [("head-scale", {"layer": layer, "heads": heads, "factor": factor})
                for (layer, factor), heads in sorted(groups.items())]


class RemapPlan(_Plan):
    """A least-squares map of each chosen head's output (head-remap) fit to send its outputs on the failing
    prompts to those on their twins while keeping its outputs on ordinary text."""

    kind: Literal["remap"] = "remap"
    preservation: float = Field(gt=0, description="ρ, the weight of keeping ordinary text against the repair")
    gain: float = Field(1.0, gt=0, description="g: failing outputs are sent to U + g (D - U) (1: to the twins')")
    undesired: list[str] = Field(description="the failing prompts the map is fit on")
    desired: list[str] = Field(description="their working twins, in the same order")
    corpus: CorpusSpec | None = Field(None, description="ordinary text to keep (None: head-remap's default)")
    keep: list[str] = Field(default_factory=list, description="prompts whose head outputs must not change")

    def describe(self) -> str:
        gain = "" if self.gain == 1.0 else f" and gain {self.gain:g}"
        return f"{_names(self.heads)} remapped with preservation {self.preservation:g}{gain}"

    def edits(self) -> list[tuple[str, dict]]:
        corpus = {} if self.corpus is None else {"corpus": self.corpus.model_dump()}
        return [("head-remap", {"layer": layer, "heads": heads, "preservation": self.preservation,
                                "gain": self.gain, "undesired": self.undesired, "desired": self.desired,
                                "keep": self.keep, **corpus})
                for layer, heads in _by_layer(self.heads)]


class TunePlan(_Plan):
    """Maps of each chosen head's output fit jointly by gradient on the expected answers (head-tune), keeping
    the unedited model's next-token distribution on the keep prompts and the heads' outputs on ordinary text."""

    kind: Literal["tune"] = "tune"
    preservation: float = Field(ge=0, description="ρ, the weight of the maps' change on ordinary text")
    kl_weight: float = Field(ge=0, description="weight of KL(unedited || edited) on the keep prompts")
    steps: int = Field(ge=1, description="Adam steps of the fit")
    lr: float = Field(gt=0, description="Adam learning rate of the fit")
    failing: list[str] = Field(description="the failing prompts the maps are fit on")
    answers: list[str] = Field(description="their expected answers, in the same order")
    keep: list[str] = Field(default_factory=list, description="prompts whose next-token distribution is kept")
    corpus: CorpusSpec | None = Field(None, description="ordinary text to keep (None: head-tune's default)")

    def describe(self) -> str:
        return f"{_names(self.heads)} tuned with preservation {self.preservation:g}"

    def edits(self) -> list[tuple[str, dict]]:
        corpus = {} if self.corpus is None else {"corpus": self.corpus.model_dump()}
        return [("head-tune", {"heads": [list(h) for h in self.heads], "preservation": self.preservation,
                               "kl_weight": self.kl_weight, "steps": self.steps, "lr": self.lr,
                               "failing": self.failing, "answers": self.answers, "keep": self.keep, **corpus})]


RepairPlan = Annotated[SteerPlan | ScalePlan | RemapPlan | TunePlan, Field(discriminator="kind")]
_PLAN = TypeAdapter(RepairPlan)


def parse_plan(text: str) -> SteerPlan | ScalePlan | RemapPlan | TunePlan:
    """A plan from its JSON (as `plan.model_dump_json()` wrote it); the `kind` field picks the type."""
    return _PLAN.validate_json(text)


class RepairPoint(BaseModel):
    """One measured trial: a set size with the strategy's setting, on the search's prompts. Exactly one of
    `alpha`, `factor` and `preservation` is set: the knob of the strategy that ran the search."""

    n_heads: int
    alpha: float | None = Field(None, description="steer: the strength α")
    factor: float | None = Field(None, description="scale: the factor of the head added last")
    preservation: float | None = Field(None, description="remap, tune: the preservation weight ρ")
    gain: float | None = Field(None, description="remap: the gain g of the map's target")
    fixed: float = Field(description="fraction of failing prompts whose top-1 is now the expected answer")
    unchanged: float = Field(description="fraction of locality prompts whose top-1 did not change")
    mean_kl: float = Field(description="mean KL(unrepaired || repaired) of next-token distributions, nats")

    @property
    def setting(self) -> float:
        """The strategy's knob at this point, whichever it is."""
        return next(v for v in (self.alpha, self.factor, self.preservation) if v is not None)


class RepairResult(BaseModel):
    curve: list[RepairPoint] = Field(description="the best setting at each set size")
    trials: list[RepairPoint] = Field(description="every (size, setting) whose locality was measured")
    chosen: RepairPlan | None = None
    chosen_point: RepairPoint | None = None
    reached_target: bool = False
