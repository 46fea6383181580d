"""Refresh (editor/refresh.py): earlier requests that later edits undid, found round robin and written again,
their own kept keys released while they are."""

import pytest
import torch
from test_memit import BASE, OBJECTIVE, REQUESTS
from tiny import tiny_model

from suture.editor import Editor, EditRequest, InvalidInputError, LedgerEntry, RequestVerdict
from suture.editor import refresh as refresh_module
from suture.editor.refresh import refresh_candidates
from suture.methods.shared.preserved_keys import earlier_keys_gram

HPARAMS = {"layers": [1, 2], "preserve_earlier": 1.0, "objective": OBJECTIVE, **BASE}


def _verdict(written: bool) -> RequestVerdict:
    return RequestVerdict(request="r", passed=written, reason="", target_tokens=["a", "b"], token_probs=[0.9, 0.9],
                          token_greedy=[True, written], min_token_prob=0.9, generated="", judged="new")


def _entry(requests, written, verified=True) -> LedgerEntry:
    return LedgerEntry(method="memit", hparams={}, requests=requests, deltas=[], seconds=0.0,
                       verdicts=[_verdict(w) for w in written] if verified else [])


def test_candidates_are_the_latest_word_on_each_key_written_when_made():
    a, b, c = REQUESTS
    b_again = EditRequest(prompt=b.prompt, subject=b.subject, target_new="French")  # the user changed their mind
    d = EditRequest(prompt="{} is a", subject="Paris", target_new="city")
    ledger = [_entry([a, b], [True, True]), _entry([c], [False]), _entry([b_again], [True]),
              _entry([d], [True], verified=False)]
    found = refresh_candidates(ledger)
    # a from the first entry; b only as its latest target (third entry); c never took; d was never verified
    assert [(ledger.index(e), p) for e, p in found] == [(0, 0), (2, 0)]
    assert found[1][0].requests[0].target_new == "French"


def _editor_with(requests):
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    for request in requests:
        editor.apply([request], method="memit", **HPARAMS)
    for entry in editor.ledger:  # tiny models cannot learn an edit: say each was written when made
        entry.verdicts = [v.model_copy(update={"token_greedy": [True] * len(v.token_greedy)})
                          for v in entry.verdicts]
    return editor


def _tokens_say(monkeypatch, lapsed: set[str], checked: list):
    def fake(handle, requests, *args, **kwargs):
        checked.append([r.subject for r in requests])
        return [[0.5] for _ in requests], [[r.subject not in lapsed] for r in requests]

    monkeypatch.setattr(refresh_module, "target_token_checks", fake)


def test_windows_go_round_robin_and_wrap(monkeypatch):
    editor = _editor_with(REQUESTS)
    checked = []
    _tokens_say(monkeypatch, set(), checked)
    assert editor.refresh(2).checked == [REQUESTS[0].label, REQUESTS[1].label]
    editor.refresh(2)
    editor.refresh(5)  # a window larger than the ledger checks each request once
    assert checked == [["Italy", "Danielle Darrieux"], ["Toko Yasuda", "Italy"],
                       ["Danielle Darrieux", "Toko Yasuda", "Italy"]]
    assert len(editor.ledger) == 3  # nothing lapsed, nothing written


def test_a_lapsed_request_is_written_again_with_its_entry_settings(monkeypatch):
    editor = _editor_with(REQUESTS)
    _tokens_say(monkeypatch, {"Danielle Darrieux"}, [])
    original = editor.ledger[1]
    report = editor.refresh(3, keep_failed=True)
    assert report.lapsed == [REQUESTS[1].label] and len(report.rewritten) == 1
    new = editor.ledger[-1]
    assert len(editor.ledger) == 4 and new.requests == [REQUESTS[1]]
    assert new.method == original.method and new.hparams == original.hparams
    assert new.details["refreshes"] == {"entry": original.id, "request": 0}
    assert editor.context.released == frozenset()  # released only while the rewrite is computed


def test_a_rewrite_that_fails_its_verdict_is_rolled_back(monkeypatch):
    editor = _editor_with(REQUESTS)
    _tokens_say(monkeypatch, {"Italy"}, [])
    weights = [p.detach().clone() for p in editor.model.parameters()]
    report = editor.refresh(3)  # keep_failed=False: a tiny model's rewrite fails its verdict
    assert report.lapsed == [REQUESTS[0].label] and not report.rewritten
    assert report.failed and report.failed[0].startswith(REQUESTS[0].label)
    assert len(editor.ledger) == 3
    assert all(torch.equal(p, q) for p, q in zip(editor.model.parameters(), weights, strict=True))


def test_released_keys_leave_the_held_gram():
    editor = _editor_with(REQUESTS[:2])
    ctx, layer = editor.context, 2
    first, second = (e.artifacts["keys"][0][layer].double() for e in editor.ledger)
    assert torch.allclose(earlier_keys_gram(ctx, layer), first.T @ first + second.T @ second)
    ctx.released = frozenset({(editor.ledger[0].id, 0)})
    assert torch.allclose(earlier_keys_gram(ctx, layer), second.T @ second, atol=1e-9)
    ctx.released = frozenset()
    assert torch.allclose(earlier_keys_gram(ctx, layer), first.T @ first + second.T @ second)  # sum kept


def test_released_rows_of_a_batch_and_of_a_rome_group():
    """A MEMIT batch keeps a key row per request; so does ROME's one call for requests sharing a subject."""
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    editor.apply(REQUESTS[:2], method="memit", **HPARAMS)
    same_subject = EditRequest(prompt="{} played the", subject="Toko Yasuda", target_new="piano")
    editor.apply([REQUESTS[2], same_subject], method="rome", layer=2, objective=OBJECTIVE, **BASE)
    ctx, layer = editor.context, 2
    batch, rome = editor.ledger
    assert rome.artifacts["request_positions"] == [[0, 1]]  # one call for the two
    full = earlier_keys_gram(ctx, layer)
    for entry, position in ((batch, 1), (rome, 0)):
        ctx.released = frozenset({(entry.id, position)})
        row = entry.artifacts["keys"][0][layer][position: position + 1].double()
        assert torch.allclose(earlier_keys_gram(ctx, layer), full - row.T @ row, atol=1e-9)


def test_where_the_next_refresh_starts_survives_a_saved_session(monkeypatch, tmp_path):
    editor = _editor_with(REQUESTS)
    _tokens_say(monkeypatch, set(), [])
    editor.refresh(2)
    path = editor.save_session(tmp_path / "s.pt")
    editor.reset()
    assert editor._refresh_next == 0
    editor.restore_session(path)
    assert editor.refresh(1).checked == [REQUESTS[2].label]


@pytest.mark.parametrize("window", [0, -1, 1.5, True, "8"])
def test_a_window_that_is_not_a_count_is_refused(window):
    editor = Editor.from_model(*tiny_model("llama"))
    with pytest.raises(InvalidInputError, match="window"):
        editor.refresh(window)


def test_old_preferred_writes_again_only_facts_that_went_back(monkeypatch):
    """`lapsed_when="old_preferred"`: lapsed when log P(old answer) >= log P(new answer) (summed over tokens);
    requests without a target_true fall back to the greedy test."""
    with_old = [EditRequest(prompt="The capital of {} is", subject=s, target_new="London", target_true="Rome")
                for s in ("Italy", "Lazio")]
    editor = _editor_with([*with_old, REQUESTS[2]])
    calls = []

    def fake(handle, requests, *args, **kwargs):
        calls.append([r.target_new for r in requests])
        # new answers first: none greedy; Italy's new answer is less likely than its old one, Lazio's more;
        # then the old answers, for the requests that have one
        return [[0.3], [0.4], [0.9], [0.5], [0.1]], [[False], [False], [False], [True], [True]]

    monkeypatch.setattr(refresh_module, "target_token_checks", fake)
    report = editor.refresh(3, keep_failed=True, lapsed_when="old_preferred")
    assert calls == [["London", "London", "guitar", "Rome", "Rome"]]  # one pass
    # Italy went back (0.5 >= 0.3); Lazio did not (0.1 < 0.4) though not greedy; Toko Yasuda: greedy test
    assert report.lapsed == [with_old[0].label, REQUESTS[2].label]
    with pytest.raises(InvalidInputError, match="lapsed_when"):
        editor.refresh(1, lapsed_when="sometimes")


def test_old_answers_are_spelled_by_the_rule_not_the_new_answers_override(monkeypatch):
    """A request's `target_space` is about its new answer; the old answer is compared as CounterFact's
    efficacy spells it (the rule, no override)."""
    joined = EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London", target_true="Rome",
                         target_space=False)
    editor = _editor_with([joined])
    seen = []

    def fake(handle, requests, *args, **kwargs):
        seen.append([(r.target_new, r.target_space) for r in requests])
        return [[0.5] for _ in requests], [[True] for _ in requests]

    monkeypatch.setattr(refresh_module, "target_token_checks", fake)
    editor.refresh(1, lapsed_when="old_preferred")
    assert seen == [[("London", False), ("Rome", None)]]
