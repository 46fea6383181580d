"""A saved editing session restores bit for bit on a fresh editor of the same base model: the weights, the
ledger, and what later edits read from earlier ones (null-space keys), so a long run can stop and continue.
The file loads without running code, and a file of another model or not a session is refused by name."""

import pickle

import pytest
import torch
from test_heads import snapshot
from test_memit import BASE, OBJECTIVE, REQUESTS
from tiny import tiny_model

from suture.editor import Editor
from suture.editor.errors import SutureError

SPACE = {"threshold": 0.5, "l2": 1e-4}


def memit_null(editor: Editor, request) -> None:
    editor.apply([request], method="memit", layers=[1, 2], null_space=SPACE, objective=OBJECTIVE, keep_failed=True,
                 **BASE)


def test_a_restored_session_continues_exactly_as_the_original(tmp_path):
    model, tok = tiny_model("llama")
    original = Editor.from_model(model, tok)
    memit_null(original, REQUESTS[0])
    original.apply([REQUESTS[1]], method="rome", layer=2, objective=OBJECTIVE, keep_failed=True, **BASE)
    head_dim = original.handle.sites.head_layout(model.config).head_dim
    original.apply(method="head-steer", layer=1, heads=[0], alpha=1.0, directions=[[0.1] * head_dim])  # creates a bias
    path = original.save_session(tmp_path / "session.pt", extra={"applied": 3, "times": [1.5, 2.0, 0.1]})

    fresh_model, fresh_tok = tiny_model("llama")
    base = snapshot(fresh_model)
    restored = Editor.from_model(fresh_model, fresh_tok)
    extra = restored.restore_session(path)
    assert extra == {"applied": 3, "times": [1.5, 2.0, 0.1]}
    assert [e.id for e in restored.ledger] == [e.id for e in original.ledger]
    assert [e.requests for e in restored.ledger] == [e.requests for e in original.ledger]
    edited = snapshot(model)
    assert snapshot(fresh_model).keys() == edited.keys()
    assert all(torch.equal(v, edited[k]) for k, v in snapshot(fresh_model).items())

    memit_null(original, REQUESTS[2])  # reads the earlier edits' keys from the ledger
    memit_null(restored, REQUESTS[2])
    assert all(torch.equal(v, snapshot(model)[k]) for k, v in snapshot(fresh_model).items())

    restored.revert(len(restored.ledger))
    assert snapshot(fresh_model).keys() == base.keys()
    assert all(torch.equal(v, base[k]) for k, v in snapshot(fresh_model).items())


def test_a_session_file_runs_no_code_and_other_files_are_refused(tmp_path):
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)

    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('ran code from the file')",))

    hostile = tmp_path / "hostile.pt"
    hostile.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(SutureError, match="not a suture session file"):
        editor.restore_session(hostile)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(SutureError, match="not a suture-session/1 file"):
        editor.restore_session(other)

    gpt2, gpt2_tok = tiny_model("gpt2")
    saved = Editor.from_model(gpt2, gpt2_tok).save_session(tmp_path / "gpt2.pt")
    with pytest.raises(SutureError, match="another model"):
        editor.restore_session(saved)
    assert editor.ledger == []
