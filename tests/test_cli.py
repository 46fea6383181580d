"""The `suture` command line on a tiny random llama model: fast, offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import tiny_model

from suture.cli.common import EditProgress
from suture.cli.main import main

HPARAMS = json.dumps({"layer": 1, "corpus": {"n_samples": 40, "max_tokens": 32}, "templates": {"groups": [[5, 2]]},
                      "objective": {"steps": 5}})

REQUESTS = [
    {"prompt": "The capital of {} is", "subject": "France", "target_new": "Rome", "target_true": "Paris"},
    {"prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux", "target_new": "English",
     "id": "darrieux"},
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    model, tok = tiny_model("llama")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write_jsonl(path, records) -> str:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return str(path)


def test_edit_saves_checkpoint(model_dir, tmp_path, capsys):
    requests = write_jsonl(tmp_path / "requests.jsonl", [REQUESTS[0], "", REQUESTS[1]])
    out = tmp_path / "out"
    code = main(["edit", "--model", str(model_dir), "--requests", requests, "--out", str(out), "--hparams", HPARAMS])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (out / "suture.json").is_file()
    manifest = json.loads((out / "suture.json").read_text())
    assert len(manifest["edits"]) == 1  # all requests form one edit
    assert [r["subject"] for r in manifest["edits"][0]["requests"]] == ["France", "Danielle Darrieux"]
    assert "[1] The capital of France is -> 'Rome': before" in captured.out
    assert "[2] (darrieux) The mother tongue of Danielle Darrieux is" in captured.out
    assert "timing: load" in captured.out and "save" in captured.out


def test_hparams_from_file(model_dir, tmp_path, capsys):
    hparams = tmp_path / "hparams.json"
    hparams.write_text(HPARAMS)
    requests = write_jsonl(tmp_path / "requests.jsonl", REQUESTS[:1])
    code = main(["edit", "--model", str(model_dir), "--requests", requests, "--hparams", str(hparams)])
    assert code == 0, capsys.readouterr().err


def test_malformed_line_names_line_and_field(model_dir, tmp_path, capsys):
    bad = {"prompt": "The capital of {} is", "target_new": "Rome"}  # no subject
    requests = write_jsonl(tmp_path / "requests.jsonl", [REQUESTS[0], bad])
    code = main(["edit", "--model", str(model_dir), "--requests", requests])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{requests}:2: field 'subject': " in err
    assert "Traceback" not in err


def test_bad_template_names_line_and_field(model_dir, tmp_path, capsys):
    bad = {"prompt": "The capital of France is", "subject": "France", "target_new": "Rome"}
    requests = write_jsonl(tmp_path / "requests.jsonl", [bad])
    assert main(["edit", "--model", str(model_dir), "--requests", requests]) == 2
    assert f"{requests}:1: field 'prompt': " in capsys.readouterr().err


def test_invalid_json_line(model_dir, tmp_path, capsys):
    requests = write_jsonl(tmp_path / "requests.jsonl", [REQUESTS[0], "", '{"prompt": "The capital of {} is",'])
    assert main(["edit", "--model", str(model_dir), "--requests", requests]) == 2
    assert f"{requests}:3: not valid JSON" in capsys.readouterr().err


def test_unknown_method_lists_available(model_dir, tmp_path, capsys):
    requests = write_jsonl(tmp_path / "requests.jsonl", REQUESTS)
    code = main(["edit", "--model", str(model_dir), "--requests", requests, "--method", "nosuch"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown method 'nosuch'" in err and "available methods: " in err and "rome" in err


@pytest.mark.parametrize("hparams, expected", [
    ('{"layer": 99}', "hyperparameter 'layer'"),
    ('{"objective": {"steps": 0}}', "hyperparameter 'objective.steps'"),
    ('{"layers": 1}', "hyperparameter 'layers'"),
    ('{"layer": ', "--hparams: not valid JSON"),
    ("[1, 2]", "--hparams: "),
    ("no-such-file.json", "neither a JSON object nor an existing file"),
])
def test_bad_hparams(model_dir, tmp_path, capsys, hparams, expected):
    requests = write_jsonl(tmp_path / "requests.jsonl", REQUESTS[:1])
    code = main(["edit", "--model", str(model_dir), "--requests", requests, "--hparams", hparams])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and "Traceback" not in err


def test_usage_errors(model_dir, tmp_path, capsys):
    requests = write_jsonl(tmp_path / "requests.jsonl", REQUESTS[:1])
    out = tmp_path / "taken"
    out.mkdir()
    (out / "file").write_text("x")
    assert main(["edit", "--model", str(model_dir), "--requests", requests, "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["edit", "--model", str(tmp_path / "nowhere"), "--requests", requests]) == 2
    assert "is not a local directory, a .gguf file, or a zoo name" in capsys.readouterr().err
    assert main(["edit", "--model", str(model_dir), "--requests", str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["edit", "--model", str(model_dir), "--requests", requests, "--dtype", "float8"]) == 2
    assert "dtype 'float8'" in capsys.readouterr().err
    assert main(["edit", "--requests", requests]) == 2  # argparse: --model is required
    assert main([]) == 2


@pytest.mark.parametrize("command", ["edit", "repair", "eval"])
def test_an_output_place_that_cannot_be_written_is_refused_before_loading(tmp_path, capsys, command):
    """Under a file, or under /proc: refused naming the flag, before the model (here a path that does not
    exist) is loaded; such an --out used to fail at the save, after the edit, with a traceback."""
    (tmp_path / "a_file").write_text("x")
    requests = write_jsonl(tmp_path / "requests.jsonl", REQUESTS[:1])
    failing = _write_failures(tmp_path / "failing.jsonl", [{"prompt": "p", "answer": "a", "twin": "t"}])
    (tmp_path / "l.txt").write_text("x\n")
    inputs = {"edit": ["--requests", requests], "eval": ["--data", requests],
              "repair": ["--failing", str(failing), "--locality", str(tmp_path / "l.txt")]}[command]
    flag = "--report" if command == "eval" else "--out"
    places = [tmp_path / "a_file" / "sub"] + ([Path("/proc/suture-out")] if Path("/proc").is_dir() else [])
    for place in places:
        code = main([command, "--model", str(tmp_path / "nowhere"), *inputs, flag, str(place)])
        err = capsys.readouterr().err
        assert code == 2 and flag in err and "nowhere" not in err and "Traceback" not in err, err


def test_repair_report_must_be_a_file_in_a_writable_place(tmp_path, capsys):
    failing = _write_failures(tmp_path / "failing.jsonl", [{"prompt": "p", "answer": "a", "twin": "t"}])
    (tmp_path / "l.txt").write_text("x\n")
    base = ["repair", "--model", str(tmp_path / "nowhere"), "--failing", str(failing), "--locality",
            str(tmp_path / "l.txt"), "--report"]
    assert main([*base, str(tmp_path)]) == 2 and "--report" in capsys.readouterr().err  # a directory
    (tmp_path / "a_file").write_text("x")
    assert main([*base, str(tmp_path / "a_file" / "r.json")]) == 2 and "--report" in capsys.readouterr().err
    # a report in directories still to be made is fine: the model path is what fails then
    assert main([*base, str(tmp_path / "new" / "dirs" / "r.json")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_a_generation_budget_over_the_context_is_refused(model_dir, tmp_path, capsys):
    requests = write_jsonl(tmp_path / "requests.jsonl", REQUESTS[:1])
    code = main(["edit", "--model", str(model_dir), "--requests", requests, "--max-new-tokens", str(10**20)])
    err = capsys.readouterr().err
    assert code == 2 and "max_new_tokens: 100000000000000000000 is more than the model's context" in err


def test_input_errors_come_before_the_model_is_loaded(tmp_path, capsys):
    """A model path that does not exist shows the model was never loaded: the input error came first."""
    clash = [REQUESTS[0], {**REQUESTS[0], "target_new": REQUESTS[0]["target_new"] + "ville"}]
    requests = write_jsonl(tmp_path / "requests.jsonl", clash)
    assert main(["edit", "--model", str(tmp_path / "nowhere"), "--requests", requests]) == 2
    assert "conflicting targets" in capsys.readouterr().err
    single = write_jsonl(tmp_path / "single.jsonl", REQUESTS[:1])
    assert main(["edit", "--model", str(tmp_path / "nowhere"), "--requests", single, "--dtype", "fp64"]) == 2
    assert "dtype 'fp64'" in capsys.readouterr().err


def test_help(capsys):
    assert main(["--help"]) == 0
    assert "edit" in capsys.readouterr().out
    assert main(["edit", "--help"]) == 0
    assert "--requests" in capsys.readouterr().out
    assert main(["demo", "--help"]) == 0


def test_python_m_cli_main():
    done = subprocess.run([sys.executable, "-m", "suture.cli.main", "edit", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--requests" in done.stdout


def test_demo_runs_and_reverts(model_dir, capsys):
    code = main(["demo", "--model", str(model_dir), "--hparams", HPARAMS])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "revert(3) undid edits" in out
    assert "answers identical to the originals: OK" in out
    assert "equal to the base weights bit for bit: OK" in out


def test_progress_bar_follows_the_editors_shares():
    """The editor reports each request's or group's stages as its share of the edit (test_memit_groups.py);
    the bar shows the largest fraction so far and the stage, which names the part."""
    progress = EditProgress()
    for stage, fraction in (("value (request 1/2)", 0.1), ("value (request 1/2)", 0.3), ("layers (request 1/2)", 0.5),
                            ("value (request 2/2)", 0.6)):
        progress(stage, fraction)
    assert progress.tracker.done == pytest.approx(0.6) and progress.bar.postfix == "value (request 2/2)"
    progress("layers (request 2/2)", 0.55)  # never backwards
    assert progress.tracker.done == pytest.approx(0.6)
    progress("layers (request 2/2)", 1.0)
    assert progress.tracker.done == pytest.approx(1.0)
    progress.close(completed=True)


def _write_failures(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records))
    return path


def test_repair_finds_a_plan_and_saves_it(model_dir, tmp_path, capsys):
    failures = [{"prompt": "The capital of France is", "answer": "Rome", "twin": "The capital of Italy is"},
                {"prompt": "English, German, Spanish and", "answer": "Japanese", "twin": "Toko Yasuda plays the"}]
    failing = _write_failures(tmp_path / "failing.jsonl", failures)
    locality = tmp_path / "locality.txt"
    locality.write_text("The mother tongue of\nBerlin and London are\n")
    out = tmp_path / "repaired"
    code = main(["repair", "--model", str(model_dir), "--failing", str(failing), "--locality", str(locality),
                 "--max-heads", "2", "--kind", "steer", "--alphas", "1", "--target", "0", "--min-unchanged", "0",
                 "--out", str(out), "--report", str(tmp_path / "search.json")])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "repair: 1 head(s)" in text and (out / "suture.json").is_file()
    assert json.loads((tmp_path / "search.json").read_text())["chosen"]["alpha"] == 1.0


def test_repair_with_remap_keeps_prompts_and_saves(model_dir, tmp_path, capsys):
    failures = [{"prompt": "The capital of France is", "answer": "Rome", "twin": "The capital of Italy is"}]
    failing = _write_failures(tmp_path / "failing.jsonl", failures)
    (tmp_path / "locality.txt").write_text("The mother tongue of\n")
    (tmp_path / "keep.txt").write_text("Berlin and London are\n")
    out = tmp_path / "repaired"
    code = main(["repair", "--model", str(model_dir), "--failing", str(failing), "--locality",
                 str(tmp_path / "locality.txt"), "--keep", str(tmp_path / "keep.txt"), "--max-heads", "1",
                 "--alphas", "0.5", "--target", "0", "--min-unchanged", "0", "--out", str(out),
                 "--report", str(tmp_path / "search.json")])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "remapped with preservation 0.5" in text and (out / "suture.json").is_file()
    chosen = json.loads((tmp_path / "search.json").read_text())["chosen"]
    assert chosen["kind"] == "remap" and chosen["keep"] == ["Berlin and London are"]


def test_repair_with_tune_saves_the_plan(model_dir, tmp_path, capsys):
    failures = [{"prompt": "The capital of France is", "answer": "Rome", "twin": "The capital of Italy is"}]
    failing = _write_failures(tmp_path / "failing.jsonl", failures)
    (tmp_path / "locality.txt").write_text("The mother tongue of\n")
    code = main(["repair", "--model", str(model_dir), "--failing", str(failing), "--locality",
                 str(tmp_path / "locality.txt"), "--kind", "tune", "--max-heads", "1", "--alphas", "1",
                 "--target", "0", "--min-unchanged", "0", "--out", str(tmp_path / "repaired"),
                 "--report", str(tmp_path / "search.json")])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "tuned with preservation 1" in text and (tmp_path / "repaired" / "suture.json").is_file()
    chosen = json.loads((tmp_path / "search.json").read_text())["chosen"]
    assert chosen["kind"] == "tune" and chosen["keep"] == ["The capital of Italy is"]


def test_repair_names_the_bad_field(model_dir, tmp_path, capsys):
    failing = _write_failures(tmp_path / "failing.jsonl", [{"prompt": "The capital of France is", "answer": ""}])
    (tmp_path / "l.txt").write_text("x\n")
    code = main(["repair", "--model", str(model_dir), "--failing", str(failing), "--locality",
                 str(tmp_path / "l.txt")])
    assert code == 2 and "failing.jsonl:1: field 'answer'" in capsys.readouterr().err


@pytest.mark.parametrize(("record", "needle"), [
    ({"prompt": "The capital of France is", "answers": "Paris", "twin": "x"}, "unknown field(s) ['answers']"),
    (["The capital of France is", "Paris"], "must be a JSON object"),
])
def test_repair_names_unknown_keys_and_records_that_are_not_objects(model_dir, tmp_path, capsys, record, needle):
    failing = _write_failures(tmp_path / "failing.jsonl", [record])
    (tmp_path / "l.txt").write_text("x\n")
    code = main(["repair", "--model", str(model_dir), "--failing", str(failing), "--locality",
                 str(tmp_path / "l.txt")])
    assert code == 2 and needle in capsys.readouterr().err


def test_repair_refuses_a_target_above_one(model_dir, tmp_path, capsys):
    record = {"prompt": "The capital of France is", "answer": "Paris", "twin": "The French capital is"}
    failing = _write_failures(tmp_path / "failing.jsonl", [record])
    (tmp_path / "l.txt").write_text("x\n")
    code = main(["repair", "--model", str(model_dir), "--failing", str(failing), "--locality",
                 str(tmp_path / "l.txt"), "--target", "1.5"])
    assert code == 2 and "--target" in capsys.readouterr().err


@pytest.mark.parametrize(("kind", "alphas"), [("scale", "nan"), ("scale", "1e308"), ("steer", "inf"),
                                              ("steer", "-1e9"), ("remap", "1e400"), ("remap", "0"), ("tune", "-1")])
def test_repair_refuses_values_that_cannot_be_written_before_loading(tmp_path, capsys, kind, alphas):
    """Non-finite or absurd strengths are named as --alphas, before the model loads (the path does not exist)."""
    record = {"prompt": "The capital of France is", "answer": "Paris", "twin": "The French capital is"}
    failing = _write_failures(tmp_path / "failing.jsonl", [record])
    (tmp_path / "l.txt").write_text("x\n")
    code = main(["repair", "--model", str(tmp_path / "nowhere"), "--failing", str(failing), "--locality",
                 str(tmp_path / "l.txt"), "--kind", kind, "--alphas", alphas])
    err = capsys.readouterr().err
    assert code == 2 and "--alphas" in err and "nowhere" not in err


# --- sessions: many `suture edit` calls on one model ---------------------------------------------------------

def test_a_session_carries_edits_across_calls_and_refresh_reads_it(model_dir, tmp_path, capsys):
    session = tmp_path / "fixes.pt"
    first = write_jsonl(tmp_path / "first.jsonl", REQUESTS[:1])
    second = write_jsonl(tmp_path / "second.jsonl", REQUESTS[1:])
    base = ["edit", "--model", str(model_dir), "--hparams", HPARAMS, "--keep-failed", "--session", str(session)]
    assert main([*base, "--requests", first]) == 0, capsys.readouterr().err
    assert session.is_file() and "saved the session (1 edit(s))" in capsys.readouterr().out
    out = tmp_path / "out"
    code = main([*base, "--requests", second, "--refresh", "4", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "continuing 1 earlier edit(s)" in captured.out
    assert "refresh: checked" in captured.out
    manifest = json.loads((out / "suture.json").read_text())
    subjects = [r["subject"] for edit in manifest["edits"] for r in edit["requests"]]
    assert subjects[:2] == ["France", "Danielle Darrieux"]  # the session's edit, then this call's


@pytest.mark.parametrize(("extra", "needle"), [
    (["--refresh", "4"], "--refresh needs --session"),
    (["--lapsed-when", "old_preferred"], "--lapsed-when needs --refresh"),
    (["--session", "S", "--refresh", "0"], "--refresh must be at least 1"),
    (["--session", "."], "exists and is not a file"),
    (["--session", "no/such/folder/s.pt"], "does not exist"),
])
def test_session_arguments_are_refused_before_loading(tmp_path, capsys, extra, needle):
    requests = write_jsonl(tmp_path / "r.jsonl", REQUESTS[:1])
    extra = [str(tmp_path / "s.pt") if a == "S" else a for a in extra]
    code = main(["edit", "--model", str(tmp_path / "no-model"), "--requests", requests, *extra])
    assert code == 2
    assert needle in capsys.readouterr().err


def test_the_clis_lapsed_when_choices_are_the_editors():
    from typing import get_args

    from suture.cli.edit import LapsedWhen as cli_choices
    from suture.editor.refresh import LapsedWhen

    assert get_args(cli_choices) == get_args(LapsedWhen)


def test_a_failed_edit_leaves_the_session_as_it_was(model_dir, tmp_path, capsys, monkeypatch):
    from suture.editor import verdicts

    session = tmp_path / "fixes.pt"
    first = write_jsonl(tmp_path / "first.jsonl", REQUESTS[:1])
    base = ["edit", "--model", str(model_dir), "--hparams", HPARAMS, "--session", str(session)]
    assert main([*base, "--keep-failed", "--requests", first]) == 0, capsys.readouterr().err
    saved = session.read_bytes()
    capsys.readouterr()
    # a random tiny model cannot learn the edit: with the library's default (the tests keep failed edits on
    # tiny models, conftest.py) it is rolled back and the call fails
    monkeypatch.setattr(verdicts, "KEEP_FAILED_DEFAULT", False)
    assert main([*base, "--requests", write_jsonl(tmp_path / "second.jsonl", REQUESTS[1:])]) == 2
    assert "darrieux" in capsys.readouterr().err
    assert session.read_bytes() == saved
