"""benchmarks/sequential.py's checkpoint rows on a tiny model: every reported field is there, the window
s/edit covers only the edits since the previous checkpoint, and the generated sample is bounded."""

import argparse
import json
import sys
from pathlib import Path

import pytest
from test_memit import BASE, OBJECTIVE, REQUESTS
from tiny import tiny_model

from suture.editor import Editor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import sequential  # noqa: E402


def test_rows_report_growth_window_time_and_a_bounded_generated_sample(tmp_path):
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    cases = [r.model_copy(update={"target_true": r.target_true or "Paris", "paraphrases": [r.text],
                                  "neighbors": ["The capital of Spain is"]}) for r in REQUESTS]
    args = argparse.Namespace(generation={"answer_tokens": 2, "neighbor_tokens": 2, "generation_prompts": 0},
                              answers=str(tmp_path / "answers.jsonl"), generated_sample=2)
    rows = sequential.run_variant(editor, cases, "memit+null", 1, [1, 3],
                                  {"memit": {"layers": [1, 2], "objective": OBJECTIVE, **BASE}},
                                  generated_args=args)
    assert [r["edits"] for r in rows] == [1, 3]
    for row in rows:
        assert row["norm_growth_max"] > -1 and row["weight_change_max"] > 0
        assert row["seconds_per_edit_window"] > 0 and row["seconds_per_edit_window_median"] > 0
        assert 1 <= row["value_steps_window_mean"] <= OBJECTIVE["steps"]
        assert row["write_scale_window_mean"] is None  # least_write off
    assert [r["gen_cases"] for r in rows] == [1, 2]  # three edits so far, a sample of two judged
    assert not editor.ledger  # the variant reverts what it applied


def test_drift_rows_give_one_line_per_apply_ending_at_the_checkpoints_drift(tmp_path):
    editor = Editor.from_model(*tiny_model("llama"))
    cases = [r.model_copy(update={"target_true": r.target_true or "Paris", "paraphrases": [r.text],
                                  "neighbors": ["The capital of Spain is"]}) for r in REQUESTS]
    path = tmp_path / "drift.jsonl"
    rows = sequential.run_variant(editor, cases, "memit+null", 1, [1, 3],
                                  {"memit": {"layers": [1, 2], "objective": OBJECTIVE, **BASE}}, drift_rows=path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["edits"] for line in lines] == [1, 2, 3]
    assert [line["cases"] for line in lines] == [[c.id] for c in cases[:3]]
    assert lines[-1]["drift_kl"] == pytest.approx(rows[-1]["drift_kl"], abs=1e-6)
    assert all(len(line["kl_per_position"]) == len(lines[0]["kl_per_position"]) > 0 for line in lines)


def test_rows_give_the_scale_least_write_wrote_at():
    editor = Editor.from_model(*tiny_model("llama"))
    cases = [r.model_copy(update={"target_true": r.target_true or "Paris", "paraphrases": [r.text],
                                  "neighbors": ["The capital of Spain is"]}) for r in REQUESTS]
    rows = sequential.run_variant(editor, cases, "memit+null", 1, [2],
                                  {"memit": {"layers": [1, 2], "objective": OBJECTIVE, "least_write": {}, **BASE}})
    # the tiny model never says its targets: an edit that did not take is written whole
    assert rows[0]["write_scale_window_mean"] == 1.0


def test_generated_sample_is_seeded_and_ordered():
    items = list(range(50))
    first = sequential.generated_sample(items, 10)
    assert first == sequential.generated_sample(items, 10) == sorted(first) and len(first) == 10
    assert sequential.generated_sample(items, None) == items == sequential.generated_sample(items, 50)


def test_a_run_split_in_parts_with_state_gives_the_rows_of_one_run(tmp_path):
    """--state / --until: the first part stops after its checkpoint and saves the session; the second
    continues from it, and its rows (and edited weights) are those of a run made in one go."""
    hparams = {"memit": {"layers": [1, 2], "objective": OBJECTIVE, **BASE}}
    cases = [r.model_copy(update={"target_true": r.target_true or "Paris", "paraphrases": [r.text],
                                  "neighbors": ["The capital of Spain is"]}) for r in REQUESTS]
    quality = ("efficacy", "paraphrase", "neighborhood", "neighborhood_pre", "drift_kl", "weight_change_max")

    def run(editor, **kw):
        return sequential.run_variant(editor, cases, "memit+null", 1, [1, 3], hparams, **kw)

    whole = run(Editor.from_model(*tiny_model("llama")))
    state = tmp_path / "session.pt"
    first = run(Editor.from_model(*tiny_model("llama")), state=state, until=1)
    assert [r["edits"] for r in first] == [1] and state.is_file()
    editor = Editor.from_model(*tiny_model("llama"))
    second = run(editor, state=state)
    assert [r["edits"] for r in second] == [1, 3]
    assert [[r[k] for k in quality] for r in second] == [[r[k] for k in quality] for r in whole]
    assert not editor.ledger  # left unedited, as a run in one go leaves it
    other = {"memit": {**hparams["memit"], "layers": [2]}}
    with pytest.raises(SystemExit, match="saved by another run"):
        sequential.run_variant(Editor.from_model(*tiny_model("llama")), cases, "memit+null", 1, [1, 3], other,
                               state=state)


def test_ledger_overhead_copies_write_nothing_and_keep_the_keys():
    import ledger_overhead

    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    editor.apply([REQUESTS[0]], method="memit", layers=[1, 2], objective=OBJECTIVE, keep_failed=True, **BASE)
    entry = editor.ledger[-1]
    copies = ledger_overhead.zero_copies(entry, 3)
    assert len({c.id for c in copies} | {entry.id}) == 4
    assert all(float(d.materialize().abs().max()) == 0 for c in copies for d in c.deltas)
    assert all(c.artifacts["keys"] is entry.artifacts["keys"] for c in copies)
    assert all(float(d.materialize().abs().max()) > 0 for d in entry.deltas)  # the template is left as it was


def test_drift_increments_refuses_rows_that_are_not_one_run():
    import drift_increments

    def row(edits, kl=0.1, positions=3):
        return {"edits": edits, "drift_kl": kl, "kl_per_position": [kl] * positions}

    assert drift_increments.rows_problem([row(1), row(2)], 3) is None
    assert "no rows" in drift_increments.rows_problem([], 3)
    assert "appended" in drift_increments.rows_problem([row(1), row(2), row(1)], 3)  # a rerun appended
    assert "tokenizer" in drift_increments.rows_problem([row(1, positions=4)], 3)
    assert "0" in drift_increments.rows_problem([row(1, kl=0.0)], 3)


def test_hparams_must_be_keyed_by_a_variants_method(capsys):
    for hparams in ('{"layers": [3]}', '{"memit": 3}'):
        with pytest.raises(SystemExit):
            sequential.main(["--data", "missing.json", "--hparams", hparams])
        assert "--hparams" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sequential.main(["--data", "missing.json", "--variants", "memit+typo"])
    assert "unknown variant" in capsys.readouterr().err


@pytest.mark.parametrize("generation", ["not json", "[1, 2]"])
def test_generation_options_must_be_a_json_object(capsys, generation):
    with pytest.raises(SystemExit):
        sequential.main(["--data", "missing.json", "--generation", generation])
    assert "--generation" in capsys.readouterr().err


def test_consolidate_adds_a_row_scoring_the_shrunk_ledger_and_the_run_goes_on_from_it(monkeypatch):
    from suture.editor import consolidate as consolidate_module

    # the tiny model never takes an edit: say every request was written and none ever lapses
    monkeypatch.setattr(consolidate_module, "held_facts", lambda ledger: [r for e in ledger for r in e.requests])
    monkeypatch.setattr(consolidate_module, "lapsed_requests", lambda editor, requests, when: [False] * len(requests))
    editor = Editor.from_model(*tiny_model("llama"))
    cases = [r.model_copy(update={"target_true": r.target_true or "Paris", "paraphrases": [r.text],
                                  "neighbors": ["The capital of Spain is"]}) for r in REQUESTS]
    rows = sequential.run_variant(editor, cases, "memit+null", 1, [2, 3],
                                  {"memit": {"layers": [1, 2], "objective": OBJECTIVE, **BASE}},
                                  consolidate={"at": [2], "step": 0.25, "min_scale": 0.5})
    assert [(r["edits"], r.get("consolidated", False)) for r in rows] == [(2, False), (2, True), (3, False)]
    shrunk = rows[1]
    assert shrunk["consolidate_scale"] == 0.5 and shrunk["consolidate_facts"] == 2
    assert [s for s, _ in shrunk["consolidate_tried"]] == [1.0, 0.75, 0.5]
    assert shrunk["weight_change_max"] == pytest.approx(rows[0]["weight_change_max"] * 0.5, rel=1e-3)
    assert shrunk["ledger_entries"] == 3  # the two edits and the consolidation
    assert not editor.ledger


@pytest.mark.parametrize(("settings", "problem"), [
    ({"max_lapsed": 0.01}, '"at"'), ({"at": [5]}, '"at"'), ({"at": 3}, '"at"'),
    ({"at": [3], "max_lapse": 0.01}, "max_lapse"), ({"at": [3], "step": 0.9}, "step"),
    ({"at": [3], "lapsed_when": "never"}, "lapsed_when")])
def test_consolidate_settings_are_checked_before_the_run(settings, problem):
    assert problem in sequential.consolidate_problem(settings, [1, 3])
    assert sequential.consolidate_problem({"at": [3], "max_lapsed": 0.02}, [1, 3]) is None


def test_session_cases_refuse_records_the_session_did_not_edit(monkeypatch):
    import bench_common

    import suture.evaluation

    records = [r.model_copy(update={"id": str(i)}) for i, r in enumerate(REQUESTS)]
    monkeypatch.setattr(suture.evaluation, "load_counterfact",
                        lambda data, limit, offset: records[offset:offset + limit])
    saved = {"applied": 2, "run": {"cases": [f"{c.id}|{c.text}|{c.target_new}" for c in records[:2]]}}
    assert bench_common.session_cases("data.json", saved, 0, after=1) == records
    with pytest.raises(SystemExit, match="--offset"):
        bench_common.session_cases("data.json", saved, 1)
