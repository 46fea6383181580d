"""The value objective's echo rows: the subject restated after the prompt, whose copy an edit should not
garble (editor/kv/echo.py), on tiny random-weight models."""

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_model
from value_probe import row_logits, through_update_direction

from suture.editor import Editor, EditRequest
from suture.editor.kv import ValueObjective, optimize_values
from suture.editor.kv.echo import echo_row
from suture.editor.kv.value_layout import value_layout
from suture.editor.prompt_template import parse_template

TEMPLATES = ["{}", "Because the weather was nice. {}"]
REQUESTS = [EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London"),
            EditRequest(prompt="{} plays the", subject="Toko Yasuda", target_new="guitar")]


def test_the_echo_row_is_the_prompt_a_line_break_and_the_subject_tokenized_in_place():
    tok = tiny_model("llama")[1]
    template, copy = echo_row(tok, parse_template("{} plays the"), "Toko Yasuda")
    text = template.fill("Toko Yasuda").text
    assert text == "Toko Yasuda plays the\n"
    assert tok(text)["input_ids"] + copy == tok(text + "Toko Yasuda")["input_ids"]


def test_the_layout_reads_each_copied_token_only_when_asked():
    tok = tiny_model("llama")[1]
    _, plain = value_layout(tok, REQUESTS, TEMPLATES, "{} is a")
    assert len(plain.echo_rows) == 0
    batch, lay = value_layout(tok, REQUESTS, TEMPLATES, "{} is a", echo=True)
    torch.testing.assert_close(lay.kl_rows, plain.kl_rows)  # the "{} is a" rows stay one per request
    torch.testing.assert_close(lay.target_cols, plain.target_cols)
    for i, request in enumerate(REQUESTS):
        rows = lay.echo_rows[lay.echo_request == i]
        cols = lay.echo_cols[lay.echo_request == i]
        assert len(set(rows.tolist())) == 1
        predicted = batch.input_ids[rows, cols + 1]  # the token each read position predicts
        assert tok.decode(predicted).strip() == request.subject


@pytest.mark.parametrize("through_update", [False, True])
def test_the_echo_term_keeps_the_copy_closer_to_the_unedited_model(through_update):
    model, tok = tiny_model("llama")
    handle = Editor.from_model(model, tok).handle
    direction = through_update_direction if through_update else None
    base = dict(lr=0.05, steps=15, early_stop_nll=0.0, weight_decay=0.0, clamp_norm_factor=1000.0)
    request = REQUESTS[1]
    batch, lay = value_layout(tok, [request], ["{}"], "{} is a", echo=True)
    batch = batch.to(model.device)
    row = int(lay.echo_rows[0])
    mlp_out = model.get_submodule(handle.sites.mlp_out_path(1))

    def copy_logprobs(solution=None) -> torch.Tensor:
        return F.log_softmax(row_logits(model, mlp_out, batch, row, solution, direction)[lay.echo_cols], -1)

    def echo_kl(solution) -> float:
        return float(F.kl_div(copy_logprobs(), copy_logprobs(solution), log_target=True, reduction="sum"))

    without = optimize_values(handle, 1, [request], ["{}"], ValueObjective(**base), read_direction=direction)
    with_echo = optimize_values(handle, 1, [request], ["{}"], ValueObjective(**base, echo_factor=10.0),
                                read_direction=direction)
    assert echo_kl(with_echo) < echo_kl(without)


def test_with_a_chat_template_the_prompt_is_the_user_turn_and_the_copy_opens_the_reply():
    shared = tiny_model("llama")[1]  # a copy: the tiny tokenizer is shared between tests
    tok = shared.__class__(tokenizer_object=shared.backend_tokenizer, eos_token="<|endoftext|>",
                           pad_token="<|endoftext|>", bos_token="<|endoftext|>")
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    template, copy = echo_row(tok, parse_template("The capital of {} is"), "Italy")
    text = template.fill("Italy").text
    assert text == "user: The capital of Italy is\nassistant:"
    assert tok.decode(copy).strip() == "Italy"
    batch, lay = value_layout(tok, REQUESTS[:1], TEMPLATES, "{} is a", echo=True)
    row = int(lay.echo_rows[0])
    assert tok.decode(batch.input_ids[row, : int(batch.subject_last[row]) + 1]).endswith("The capital of Italy")


def test_echo_rows_replayed_apart_give_the_padded_replays_values(monkeypatch):
    import suture.editor.kv.values as values
    from suture.editor.kv.suffix import SuffixRunner

    model, tok = tiny_model("llama")
    handle = Editor.from_model(model, tok).handle
    objective = ValueObjective(lr=0.05, steps=6, early_stop_nll=0.0, weight_decay=0.0, clamp_norm_factor=1000.0,
                               echo_factor=1.0)
    direction = through_update_direction
    grouped = optimize_values(handle, 1, REQUESTS, TEMPLATES, objective, read_direction=direction)
    monkeypatch.setattr(values, "GroupedSuffixRunner", lambda handle, start, batch, groups: SuffixRunner(
        handle, start, batch))  # every row padded to the longest, one replay
    padded = optimize_values(handle, 1, REQUESTS, TEMPLATES, objective, read_direction=direction)
    torch.testing.assert_close(grouped.deltas, padded.deltas, rtol=1e-4, atol=1e-4)
