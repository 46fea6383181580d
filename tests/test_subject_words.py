"""Holding a subject's last word fixed (preserve_subject_words of MEMIT and ROME): the update stops writing
where the word is used on its own, the subject is still written, the words held are reported, and the edit
reverts exactly."""

import pytest
import torch
from test_memit import BASE, OBJECTIVE, out_in
from tiny import tiny_model

from suture.editor import Editor, EditRequest
from suture.editor.errors import InvalidHyperparametersError
from suture.methods.shared import subject_words
from suture.methods.shared.subject_words import GENERIC_PREFIXES, common_last_words, last_word, subject_word_gram

CARS = EditRequest(prompt="{} was employed in", subject="Laurent Cars", target_new="Philadelphia",
                   target_true="Paris")
# " man" is one token of the tiny models' 400-token vocabulary, so "man" is a common word there.
REQUEST = EditRequest(prompt="{} was created by", subject="Iron Man", target_new="Philadelphia")


class PieceTokenizer:
    """A SentencePiece-like stand-in: each word is "▁word"; "cars" and "films" are one token each, any other
    word two; a text that starts with a space gets a lone "▁" first (as Llama-2's tokenizer spells " cars")."""

    def __call__(self, text, add_special_tokens=True):
        ids = [0] if text.startswith(" ") else []
        for word in text.split():
            ids += [1] if word in ("cars", "films", "The") else [2, 3]
        return {"input_ids": ids}


def test_only_common_last_words_of_subjects_of_two_or_more_words_are_held_in_lower_case():
    assert last_word("Laurent Cars") == "cars" and last_word("  Percy  Snow ") == "snow"
    assert last_word("Union (Films)") == "films" and last_word("Colombia") is None
    one_word = EditRequest(prompt="In {}, they speak", subject="Colombia", target_new="English")
    surname = EditRequest(prompt="{} works for", subject="Gene Amdahl", target_new="IBM")
    bracketed = EditRequest(prompt="{} is owned by", subject="Union (Films)", target_new="Sony")
    # Read in running text: a lone " cars" is two pieces for this tokenizer, "The cars" two words.
    found = common_last_words(PieceTokenizer(), [CARS, one_word, surname, CARS, bracketed])
    assert found == ["cars", "films"]


def test_the_gram_sums_the_keys_of_every_word_in_every_context(monkeypatch):
    model, tok = tiny_model("llama")
    handle = Editor.from_model(model, tok).handle
    words = common_last_words(handle.tokenizer, [REQUEST, CARS])
    assert words == ["man"]  # " cars" is 3 tokens there
    gram = subject_word_gram(handle, 1, words)
    assert gram.dtype == torch.float64 and torch.allclose(gram, gram.T)
    assert int(torch.linalg.matrix_rank(gram)) <= len(GENERIC_PREFIXES)  # "man" after every prefix
    assert subject_word_gram(handle, 1, []) is None
    monkeypatch.setattr(subject_words, "ROWS_PER_PASS", 3)  # the same sum, read a few rows at a time
    assert torch.allclose(subject_word_gram(handle, 1, words), gram, rtol=1e-5, atol=1e-6)


def write_at_word(method: str, **hparams):
    """(norm of the edit's write along the word's main generic keys, the edit's result) for one tiny-model
    edit of REQUEST at layer 2; the edit is reverted and must come back bit for bit."""
    editor = Editor.from_model(*tiny_model("llama"))
    before = out_in(editor, 2)
    result = editor.apply([REQUEST], method=method, keep_failed=True, objective=OBJECTIVE, **BASE, **hparams)
    change = out_in(editor, 2) - before
    with editor.weights.base_weights():
        word_keys = torch.linalg.eigh(subject_word_gram(editor.handle, 2, ["man"]))[1][:, -3:]
    at_word = float((change.double() @ word_keys.to(change.device)).norm())
    editor.revert()
    assert torch.equal(out_in(editor, 2), before)
    return at_word, result


def test_holding_the_word_stops_the_write_at_its_generic_keys_but_not_at_the_subject():
    word_alone, _ = write_at_word("memit", layers=[2], preserve_subject_words=None)
    word_held, held = write_at_word("memit", layers=[2], preserve_subject_words=1e3)
    assert word_held < 0.2 * word_alone
    assert held.details["residual_left"][0] < 0.9  # the subject is still written
    assert held.details["subject_words"][0] == ["man"]


@pytest.mark.parametrize("weight", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_preserve_subject_words_is_refused(weight):
    editor = Editor.from_model(*tiny_model("llama"))
    with pytest.raises(InvalidHyperparametersError, match="preserve_subject_words"):
        editor.apply([REQUEST], method="memit", layers=[2], preserve_subject_words=weight, **BASE)
    with pytest.raises(InvalidHyperparametersError, match="preserve_subject_words"):
        editor.apply([REQUEST], method="rome", layer=2, preserve_subject_words=weight, **BASE)


def test_rome_holding_the_word_stops_the_write_at_its_generic_keys():
    word_alone, _ = write_at_word("rome", layer=2, preserve_subject_words=None)
    word_held, held = write_at_word("rome", layer=2, preserve_subject_words=1e4)
    assert word_held < 0.2 * word_alone
    assert held.details["subject_words"][0] == ["man"]


@pytest.mark.parametrize(("method", "site"), [("memit", {"layers": [2]}), ("rome", {"layer": 2})])
def test_with_null_space_the_word_joins_the_projected_solve(method, site):
    projected, _ = write_at_word(method, null_space={}, **site)
    held, result = write_at_word(method, null_space={}, preserve_subject_words=1e4, **site)
    # The tiny model's covariance leaves the projection little room (MEMIT writes almost nothing there, ROME a
    # long direction), so this checks only that the held words enter the projected solve and write less.
    assert held < 0.9 * projected
    assert result.details["subject_words"][0] == ["man"]


def test_a_subject_without_a_common_last_word_reports_that_nothing_was_held():
    editor = Editor.from_model(*tiny_model("llama"))
    result = editor.apply([CARS], method="rome", layer=2, keep_failed=True, objective=OBJECTIVE, **BASE,
                          preserve_subject_words=1.0)
    assert result.details["subject_words"][0] == []
