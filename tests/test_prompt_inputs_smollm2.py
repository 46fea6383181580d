"""Issue-14 input kinds that need a real model: SmolLM2-135M (offline zoo model). Slow."""

from __future__ import annotations

import pytest
import torch

from suture.editor import Editor, EditRequest, InvalidRequestError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol(real_editor):
    return real_editor


@pytest.mark.parametrize(("prompt", "subject", "target"), [
    ("The capital of {} is", "France", "Paris"),
    ("The capital of {} is", " France\u00a0", " Paris "),  # the same request under the whitespace policy
    ("The capital city of {} is", "France", "Paris"),
])
def test_target_the_model_already_gives_is_a_noop(smol, prompt, subject, target):
    before = {k: v.clone() for k, v in smol.model.state_dict().items() if "mlp" in k}
    result = smol.apply([EditRequest(prompt=prompt, subject=subject, target_new=target)], method="rome")
    assert result.deltas == [] and not smol.ledger
    assert result.details["noop"][0]["request"] == 0
    assert result.details["noop"][0]["answer"].lstrip().startswith("Paris")
    assert all(torch.equal(v, before[k]) for k, v in smol.model.state_dict().items() if "mlp" in k)


def test_evaluation_without_target_true_reads_the_base_models_answer(smol):
    from suture.evaluation import EvaluationOptions, evaluate

    cases = [EditRequest(prompt="The capital of {} is", subject="France", target_new="Rome"),
             EditRequest(prompt="The capital of {} is", subject="Italy", target_new="Rome")]
    report = evaluate(smol, cases=cases, options=EvaluationOptions(drift=False, token_accuracy=False))
    first, second = report.base_answers
    assert (first.target_true, first.noop) == ("Paris", False)
    assert (second.target_true, second.noop) == (None, True)
    assert report.n_cases == 1 and "(base)" not in report.model_dump_json()


def test_prompt_longer_than_smollm2s_context_is_refused(smol):
    limit = smol.model.config.max_position_embeddings
    prompt = "The weather was nice and we walked to the river. " * (limit // 10) + "The capital of {} is"
    with pytest.raises(InvalidRequestError, match=rf"request 0: field 'prompt': .* is \d+ tokens, longer than "
                                                   rf"the model's context of {limit} tokens"):
        smol.apply([EditRequest(prompt=prompt, subject="France", target_new="Rome")], method="rome")


def test_wrapping_smollm2_leaves_the_callers_tokenizer_alone(smol):
    import copy

    tok = copy.deepcopy(smol.tokenizer)
    tok.padding_side = "left"
    tok.pad_token = None
    config = smol.model.config.to_dict()
    Editor.from_model(smol.model, tok)
    assert tok.padding_side == "left" and tok.pad_token is None
    assert smol.model.config.to_dict() == config
