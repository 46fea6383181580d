"""The value objective's word boundary: a target that ends in a word is trained to end there (the next
token does not carry the word on), on tiny random-weight models."""

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_model
from value_probe import row_logits, through_update_direction

from suture.editor import Editor, EditRequest
from suture.editor.kv import ValueObjective, optimize_values
from suture.editor.kv.value_layout import value_layout
from suture.editor.kv.word_boundary import continuation_mask, ends_in_word

TEMPLATES = ["{}", "Because the weather was nice. {}"]
REQUEST = EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London")


def test_which_targets_end_in_a_word():
    assert ends_in_word("sitcom") and ends_in_word(" ESPN ") and ends_in_word("1990") and ends_in_word("Ångström")
    assert not ends_in_word("U.S.") and not ends_in_word("小明") and not ends_in_word("ソニー")
    assert not ends_in_word("Paris!")


def test_the_continuation_mask_marks_tokens_that_carry_a_word_on():
    tok = tiny_model("llama")[1]
    mask = continuation_mask(tok, len(tok) + 3)  # a model's vocabulary may be padded past the tokenizer's
    assert mask.shape == (len(tok) + 3,) and not mask[len(tok):].any()
    for token_id in range(len(tok)):
        text = tok.decode([token_id])
        if text.startswith((" ", ".", ",")) or token_id in tok.all_special_ids:
            assert not mask[token_id], text
    glued = tok("London", add_special_tokens=False)["input_ids"]
    if len(glued) > 1:  # the tail of a word split in two continues it
        assert mask[glued[-1]]


def test_the_layout_reads_the_position_after_the_target_only_when_asked():
    tok = tiny_model("llama")[1]
    requests = [REQUEST, EditRequest(prompt="{}的作者是", subject="西游记", target_new="小明")]
    batch, plain = value_layout(tok, requests, TEMPLATES, "{} is a")
    assert len(plain.boundary_rows) == 0
    bounded_batch, lay = value_layout(tok, requests, TEMPLATES, "{} is a", word_boundary=True)
    assert lay.boundary_request.tolist() == [0, 0]  # the Chinese target has no word boundary
    for row, col in zip(lay.boundary_rows, lay.boundary_cols):
        assert int(col) == int(bounded_batch.lengths[row]) - 1  # the last target token, now in the row
    # The target's own positions are unchanged by carrying its last token too.
    torch.testing.assert_close(lay.target_cols, plain.target_cols)


@pytest.mark.parametrize("through_update", [False, True])
def test_the_boundary_term_lowers_the_chance_of_continuing_the_word(through_update):
    model, tok = tiny_model("llama")
    handle = Editor.from_model(model, tok).handle
    direction = through_update_direction if through_update else None
    base = dict(lr=0.05, steps=15, early_stop_nll=0.0, weight_decay=0.0, clamp_norm_factor=1000.0)

    batch, lay = value_layout(tok, [REQUEST], ["{}"], "{} is a", word_boundary=True)
    batch = batch.to(model.device)
    mlp_out = model.get_submodule(handle.sites.mlp_out_path(1))

    def continuing_after_target(solution) -> float:
        """P(a word-continuing token) after the target, on the model with the solution's δ written."""
        probs = F.softmax(row_logits(model, mlp_out, batch, 0, solution, direction)[int(lay.boundary_cols[0])], -1)
        return float(probs[continuation_mask(tok, probs.shape[-1])].sum())

    without = optimize_values(handle, 1, [REQUEST], ["{}"], ValueObjective(**base), read_direction=direction)
    with_boundary = optimize_values(handle, 1, [REQUEST], ["{}"], ValueObjective(**base, word_boundary=True),
                                    read_direction=direction)
    assert continuing_after_target(with_boundary) < continuing_after_target(without)
