"""A gated ROME edit on the real SmolLM2: saved with a passing gate, reloaded by stock transformers,
answering like the in-memory edited model; the manifest names the base weights it was made on."""

import json

import pytest
import torch
from peft import PeftModel
from test_smollm2 import EDITS
from transformers import AutoModelForCausalLM

from suture.editor import GateFailedError
from suture.editor.fingerprint import weights_fingerprint
from suture.evaluation import GatePolicy

pytestmark = pytest.mark.slow


def test_gated_checkpoint_reloads_with_stock_transformers(real_editor, tmp_path):
    editor = real_editor
    with editor.weights.base_weights():
        base_fp = weights_fingerprint(editor.model)
    editor.apply([EDITS[0]], method="rome")
    try:
        with pytest.raises(GateFailedError, match="max_drift_kl"):
            editor.save(tmp_path / "refused", gate=GatePolicy(max_drift_kl=0.0))
        assert not (tmp_path / "refused").exists()

        path = editor.save(tmp_path / "patched", gate=GatePolicy())
        manifest = json.loads((path / "suture.json").read_text())
        assert manifest["gate"]["passed"] is True
        assert manifest["base_model"]["fingerprint_sha256"] == base_fp
        assert manifest["edits"][0]["requests"][0]["subject"] == EDITS[0].subject

        reloaded = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(editor.model.device).eval()
        prompts = [EDITS[0].text, *EDITS[0].paraphrases, *EDITS[0].neighbors]
        enc = editor.tokenizer(prompts, return_tensors="pt", padding=True).to(editor.model.device)
        with torch.no_grad():
            expected = editor.model(**enc).logits
            got = reloaded(**enc).logits
        assert torch.allclose(expected, got, atol=1e-4)
        prompt = editor.tokenizer([EDITS[0].text], return_tensors="pt").to(editor.model.device)
        greedy = reloaded.generate(**prompt, max_new_tokens=4, do_sample=False,
                                   pad_token_id=editor.tokenizer.pad_token_id)
        answer = editor.tokenizer.decode(greedy[0], skip_special_tokens=True)[len(EDITS[0].text):]
        assert answer == editor.generate([EDITS[0].text], max_new_tokens=4)[0]
        assert answer.strip().startswith(EDITS[0].target_new)
    finally:
        editor.revert()


def test_exported_adapter_reproduces_the_edit_through_peft(real_editor, tmp_path):
    editor = real_editor
    editor.apply([EDITS[1]], method="rome")
    try:
        path = editor.export_adapter(tmp_path / "adapter")
        config = json.loads((path / "adapter_config.json").read_text())
        assert config["r"] == 1
        base = AutoModelForCausalLM.from_pretrained(_zoo_dir(), dtype=torch.float32).to(editor.model.device)
        peft_model = PeftModel.from_pretrained(base.eval(), path).eval()
        enc = editor.tokenizer([EDITS[1].text, *EDITS[1].neighbors], return_tensors="pt", padding=True)
        enc = enc.to(editor.model.device)
        with torch.no_grad():
            assert torch.allclose(peft_model(**enc).logits, editor.model(**enc).logits, atol=1e-4)
    finally:
        editor.revert()


def _zoo_dir():
    from suture.editor.zoo import resolve_zoo

    return resolve_zoo("smollm2-135m")
