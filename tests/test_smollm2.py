"""Real-model tests on SmolLM2-135M (offline zoo model). Slow: they load the model and, on a fresh
machine, sample the statistics corpus once; CI runs them."""

import pytest
import torch

from suture.editor import EditRequest
from suture.evaluation import score_cases

pytestmark = pytest.mark.slow

# Edits written for these tests: each changes a fact SmolLM2 knows, with a paraphrase that must follow
# the edit and neighbors (same relation, other subjects) that must keep their answers.
EDITS = [
    EditRequest(prompt="The mother tongue of {} is", subject="Danielle Darrieux", target_new="English",
                target_true="French", paraphrases=["Danielle Darrieux's native language is"],
                neighbors=["The mother tongue of Jacques Chirac is", "The native language of Victor Hugo is"]),
    EditRequest(prompt="The {} is located in the city of", subject="Eiffel Tower", target_new="Rome",
                target_true="Paris", paraphrases=["The Eiffel Tower stands in the city of"],
                neighbors=["The Louvre is located in the city of", "Notre-Dame Cathedral is located in the city of"]),
    EditRequest(prompt="{} is a famous football club from the city of", subject="Manchester United",
                target_new="Tokyo", target_true="Manchester",
                paraphrases=["The football club Manchester United is based in the city of"],
                neighbors=["Manchester City is a famous football club from the city of",
                           "Liverpool is a famous football club from the city of"]),
]


def test_model_knows_the_facts_before_editing(real_editor):
    scores = score_cases(real_editor.handle, EDITS)
    assert scores.efficacy == 0.0  # P(true) > P(new) everywhere before the edit
    assert scores.neighborhood == 1.0


@pytest.mark.parametrize("request_index", range(len(EDITS)))
def test_rome_edit_takes_generalizes_and_keeps_neighbors(real_editor, request_index):
    request = EDITS[request_index]
    neighbors_before = real_editor.generate(request.neighbors, max_new_tokens=4)
    real_editor.apply([request], method="rome")
    try:
        case = score_cases(real_editor.handle, [request]).cases[0]
        assert case.efficacy == 1.0, "P(new) > P(true) on the rewrite prompt"
        assert case.paraphrase == 1.0, "P(new) > P(true) on the paraphrase"
        assert case.neighborhood == 1.0, "neighbors still prefer the true answer"
        assert real_editor.generate([request.text], max_new_tokens=4)[0].strip().startswith(request.target_new)
        assert real_editor.generate(request.neighbors, max_new_tokens=4) == neighbors_before
    finally:
        real_editor.revert()


def test_revert_on_the_real_model_is_bit_exact(real_editor):
    before = {k: v.clone() for k, v in real_editor.model.state_dict().items()}
    real_editor.apply(EDITS[:2], method="rome")
    assert len(real_editor.ledger) == 1
    real_editor.revert()
    after = real_editor.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
