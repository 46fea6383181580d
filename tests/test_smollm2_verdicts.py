"""Real-model verdicts on SmolLM2-135M: requests that cannot succeed are reported failed, rolled back and
named; targets in scripts without spaces (Chinese, Japanese) are generated after the edit; a target after
a prompt ending in a space trains no double space. Slow (CI runs them)."""

from __future__ import annotations

import pytest
import torch

from suture.editor import Editor, EditRequest, EditRequestsFailedError
from suture.editor.generation import generate_greedy
from suture.editor.judge import judge
from suture.editor.kv.tokens import request_target_ids

pytestmark = pytest.mark.slow

# A small statistics corpus keeps these tests cheap; they test verdicts and spelling, not statistics.
HP = {"corpus": {"n_samples": 100, "max_tokens": 64}}


def _state(editor: Editor) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in editor.model.state_dict().items()}


def _unchanged(editor: Editor, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in editor.model.state_dict().items())


def _says(editor: Editor, request: EditRequest) -> str:
    return generate_greedy(editor.handle, [request.text], max_new_tokens=12)[0].text


@pytest.mark.parametrize("request_", [
    EditRequest(prompt="{}的作者是", subject="西游记", target_new="小明", target_true="吴承恩", id="zh"),
    EditRequest(prompt="{}の首都は", subject="日本", target_new="大阪", target_true="東京", id="ja"),
], ids=["chinese", "japanese"])
def test_edits_in_scripts_without_spaces_generate_their_targets(real_editor, request_):
    ids = request_target_ids(real_editor.tokenizer, request_)
    assert not real_editor.tokenizer.decode(ids).startswith(" ")  # no space forced before 小明 / 大阪
    # ROME's defaults, step budget included (20 steps left 大阪 at p(大)=0.04 and the edit rolled back).
    result = real_editor.apply([request_], method="rome", **HP)
    try:
        assert result.status == "succeeded" and result.verdicts[0].passed
        said = _says(real_editor, request_)
        assert judge(said, request_.target_new, request_.target_true) == "new", said
    finally:
        real_editor.revert()


def test_a_target_after_a_trailing_space_trains_no_double_space(real_editor):
    request = EditRequest(prompt="The mother tongue of {} is ", subject="Danielle Darrieux", target_new="English",
                          target_true="French")
    result = real_editor.apply([request], method="rome", **HP)
    try:
        assert result.verdicts[0].passed
        said = _says(real_editor, request)
        assert said.startswith("English"), said  # not " English": the prompt already ends in a space
    finally:
        real_editor.revert()


def test_requests_that_cannot_succeed_are_reported_failed_rolled_back_and_named(real_editor):
    before = _state(real_editor)
    unreachable = EditRequest(prompt="The mother tongue of {} is", subject="Danielle Darrieux",
                              target_new="Klingon", target_true="French", id="unreachable")
    with pytest.raises(EditRequestsFailedError) as info:  # one tiny step cannot move the answer
        real_editor.apply([unreachable], method="rome", **HP, objective={"steps": 1, "lr": 1e-4})
    assert "'unreachable'" in str(info.value) and "not the greedy choice" in str(info.value)
    assert info.value.verdicts[0].request == "unreachable" and info.value.verdicts[0].min_token_prob < 0.5
    assert real_editor.ledger == [] and _unchanged(real_editor, before)

    # A subject that does not match the prompt's words (it ends inside a word). Whatever the edit does,
    # it is either reported failed and rolled back, or the model really says the new target.
    mismatched = EditRequest(prompt="The mother tongue of {}ieux is", subject="Danielle Darr", target_new="Japanese",
                             target_true="French", id="mismatched")
    try:
        result = real_editor.apply([mismatched], method="rome", **HP, objective={"steps": 3})
    except EditRequestsFailedError as exc:
        assert "'mismatched'" in str(exc) and real_editor.ledger == [] and _unchanged(real_editor, before)
    else:
        try:
            assert result.verdicts[0].passed
            assert judge(_says(real_editor, mismatched), "Japanese", "French") == "new"
        finally:
            real_editor.revert()

    # Kept on request: the result says "partial" and names what failed.
    kept = real_editor.apply([unreachable], method="rome", keep_failed=True, **HP,
                             objective={"steps": 1, "lr": 1e-4})
    try:
        assert kept.status == "partial" and kept.failed[0].request == "unreachable"
    finally:
        real_editor.revert()
    assert _unchanged(real_editor, before)


def test_a_subject_opening_the_prompt_where_the_key_collapses_is_explained(real_editor):
    # At the first token of a text (no BOS) SmolLM2's MLP input at layer 4 has a tiny norm (0.8 against ~10
    # in context), so a rank-one update keyed on the subject barely reaches the prompt as written.
    request = EditRequest(prompt="{} is located in", subject="Rome", target_new="Brazil", target_true="Italy",
                          id="opening")
    result = real_editor.apply([request], method="rome", keep_failed=True, **HP)
    try:
        assert result.details["bare_key_reach"][0] < 0.25
        verdict = result.verdicts[0]
        if not verdict.passed:  # failed honestly, and says why
            assert "opens the prompt" in verdict.reason, verdict.reason
        else:  # or it really took
            assert judge(_says(real_editor, request), "Brazil", "Italy") == "new"
    finally:
        real_editor.revert()
