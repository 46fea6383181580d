"""`suture edit --gate` and `suture eval` on a tiny random llama model."""

from __future__ import annotations

import json

from test_cli import HPARAMS, REQUESTS, model_dir, write_jsonl  # noqa: F401  (fixture)

from suture.cli.main import main

PASSING = json.dumps({"min_efficacy": 0.0, "min_paraphrase": 0.0, "max_neighborhood_drop": 1.0,
                      "max_drift_kl": 100.0, "min_generated_efficacy": 0.0})
FAILING = json.dumps({"min_efficacy": 0.0, "min_paraphrase": 0.0, "max_neighborhood_drop": 1.0,
                      "max_drift_kl": 0.0})


def test_failing_gate_exits_nonzero_names_thresholds_and_writes_nothing(model_dir, tmp_path, capsys):  # noqa: F811
    requests = write_jsonl(tmp_path / "requests.jsonl", REQUESTS[:1])
    out = tmp_path / "out"
    code = main(["edit", "--model", str(model_dir), "--requests", requests, "--out", str(out), "--hparams", HPARAMS,
                 "--gate", FAILING])
    err = capsys.readouterr().err
    assert code != 0
    assert "gate failed" in err and "max_drift_kl" in err and "over by" in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["requests.jsonl"]


def test_a_failing_gate_leaves_the_session_unwritten(model_dir, tmp_path, capsys):  # noqa: F811
    requests = write_jsonl(tmp_path / "requests.jsonl", REQUESTS[:1])
    session = tmp_path / "fixes.pt"
    code = main(["edit", "--model", str(model_dir), "--requests", requests, "--out", str(tmp_path / "out"),
                 "--hparams", HPARAMS, "--gate", FAILING, "--session", str(session)])
    assert code != 0 and "gate failed" in capsys.readouterr().err
    assert not session.exists()


def test_passing_gate_saves_with_verdict(model_dir, tmp_path, capsys):  # noqa: F811
    requests = write_jsonl(tmp_path / "requests.jsonl", REQUESTS[:1])
    gate = tmp_path / "gate.json"
    gate.write_text(PASSING)
    out = tmp_path / "out"
    code = main(["edit", "--model", str(model_dir), "--requests", requests, "--out", str(out), "--hparams", HPARAMS,
                 "--gate", str(gate)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads((out / "suture.json").read_text())["gate"]["passed"] is True
    assert "gate passed: efficacy " in captured.out and "drift KL " in captured.out  # said, not only saved
    assert "gate and save" in captured.out  # the timing says where the evaluation's time went


def test_bad_gate_policy_is_refused_before_loading(model_dir, tmp_path, capsys):  # noqa: F811
    requests = write_jsonl(tmp_path / "requests.jsonl", REQUESTS[:1])
    code = main(["edit", "--model", str(model_dir), "--requests", requests, "--out", str(tmp_path / "o"),
                 "--gate", '{"min_efficasy": 1}'])
    assert code == 2 and "min_efficasy" in capsys.readouterr().err
    code = main(["edit", "--model", str(model_dir), "--requests", requests, "--gate", PASSING])
    assert code == 2 and "--gate needs --out" in capsys.readouterr().err


def test_eval_reapplies_a_manifest_and_writes_a_report(model_dir, tmp_path, capsys):  # noqa: F811
    requests = write_jsonl(tmp_path / "requests.jsonl", REQUESTS[:1])
    out = tmp_path / "out"
    assert main(["edit", "--model", str(model_dir), "--requests", requests, "--out", str(out),
                 "--hparams", HPARAMS]) == 0
    capsys.readouterr()
    code = main(["eval", "--model", str(model_dir), "--data", requests, "--edits", str(out / "suture.json"),
                 "--report", str(tmp_path / "report")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "re-applied 1 edit(s)" in captured.out and "efficacy" in captured.out
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["n_cases"] == 1 and report["norm_growth"]


def test_eval_refuses_a_ledger_from_another_model(model_dir, tmp_path, capsys):  # noqa: F811
    requests = write_jsonl(tmp_path / "requests.jsonl", REQUESTS[:1])
    ledger = tmp_path / "ledger.json"
    ledger.write_text(json.dumps({"base_fingerprint_sha256": "0" * 64, "edits": []}))
    code = main(["eval", "--model", str(model_dir), "--data", requests, "--edits", str(ledger)])
    assert code == 2 and "refusing to apply" in capsys.readouterr().err
