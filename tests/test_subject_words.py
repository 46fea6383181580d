"""Holding a subject's last word fixed (MEMIT's preserve_subject_words): the update stops writing where the
word is used on its own, the subject is still written, and the edit reverts exactly."""

import pytest
import torch
from test_memit import BASE, OBJECTIVE, out_in
from tiny import tiny_model

from suture.editor import Editor, EditRequest
from suture.editor.errors import InvalidHyperparametersError
from suture.methods.shared.subject_words import GENERIC_PREFIXES, common_last_words, last_word, subject_word_gram

CARS = EditRequest(prompt="{} was employed in", subject="Laurent Cars", target_new="Philadelphia",
                   target_true="Paris")
# " man" is one token of the tiny models' 400-token vocabulary, so "man" is a common word there.
REQUEST = EditRequest(prompt="{} was created by", subject="Iron Man", target_new="Philadelphia")


class OneTokenWords:
    """A tokenizer stand-in: " cars" and " films" are one token each, anything else two."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [0] if text in (" cars", " films") else [0, 1]}


def test_only_common_last_words_of_subjects_of_two_or_more_words_are_held_in_lower_case():
    assert last_word("Laurent Cars") == "Cars" and last_word("  Percy  Snow ") == "Snow"
    assert last_word("Colombia") is None
    one_word = EditRequest(prompt="In {}, they speak", subject="Colombia", target_new="English")
    surname = EditRequest(prompt="{} works for", subject="Gene Amdahl", target_new="IBM")
    bracketed = EditRequest(prompt="{} is owned by", subject="Union (Films)", target_new="Sony")
    found = common_last_words(OneTokenWords(), [CARS, one_word, surname, CARS, bracketed])
    assert found == ["cars", "films"]


def test_the_gram_sums_the_keys_of_every_variant_in_every_context():
    model, tok = tiny_model("llama")
    handle = Editor.from_model(model, tok).handle
    gram = subject_word_gram(handle, 1, [REQUEST])
    assert gram.dtype == torch.float64 and torch.allclose(gram, gram.T)
    assert common_last_words(handle.tokenizer, [REQUEST, CARS]) == ["man"]  # " cars" is 3 tokens there
    assert int(torch.linalg.matrix_rank(gram)) <= len(GENERIC_PREFIXES)  # "man" after every prefix
    one_word = EditRequest(prompt="In {}, they speak", subject="Colombia", target_new="English")
    assert subject_word_gram(handle, 1, [one_word]) is None


def write_at_word(method: str, **hparams):
    """(norm of the edit's write along the word's main generic keys, the edit's result) for one tiny-model
    edit of REQUEST at layer 2; the edit is reverted and must come back bit for bit."""
    editor = Editor.from_model(*tiny_model("llama"))
    before = out_in(editor, 2)
    result = editor.apply([REQUEST], method=method, keep_failed=True, objective=OBJECTIVE, **BASE, **hparams)
    change = out_in(editor, 2) - before
    with editor.weights.base_weights():
        word_keys = torch.linalg.eigh(subject_word_gram(editor.handle, 2, [REQUEST]))[1][:, -3:]
    at_word = float((change.double() @ word_keys.to(change.device)).norm())
    editor.revert()
    assert torch.equal(out_in(editor, 2), before)
    return at_word, result


def test_holding_the_word_stops_the_write_at_its_generic_keys_but_not_at_the_subject():
    word_alone, _ = write_at_word("memit", layers=[2], preserve_subject_words=None)
    word_held, held = write_at_word("memit", layers=[2], preserve_subject_words=1e3)
    assert word_held < 0.2 * word_alone
    assert held.details["residual_left"][0] < 0.9  # the subject is still written


@pytest.mark.parametrize("weight", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_preserve_subject_words_is_refused(weight):
    editor = Editor.from_model(*tiny_model("llama"))
    with pytest.raises(InvalidHyperparametersError, match="preserve_subject_words"):
        editor.apply([REQUEST], method="memit", layers=[2], preserve_subject_words=weight, **BASE)
    with pytest.raises(InvalidHyperparametersError, match="preserve_subject_words"):
        editor.apply([REQUEST], method="rome", layer=2, preserve_subject_words=weight, **BASE)


def test_rome_holding_the_word_stops_the_write_at_its_generic_keys():
    word_alone, _ = write_at_word("rome", layer=2, preserve_subject_words=None)
    word_held, _ = write_at_word("rome", layer=2, preserve_subject_words=1e4)
    assert word_held < 0.2 * word_alone
