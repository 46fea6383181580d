"""An edit job on the real SmolLM2 through `suture serve` (uvicorn + a local Ray): follow its progress
events, fetch the result, download the checkpoint and load it with stock transformers."""

from __future__ import annotations

import pytest
import torch
from service_helpers import ADMIN, Server
from transformers import AutoModelForCausalLM, AutoTokenizer

from suture.editor.paths import suture_home
from suture.service.client import SutureClient

pytestmark = pytest.mark.slow

REQUEST = {"prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux", "target_new": "English",
           "target_true": "French", "paraphrases": ["Danielle Darrieux's native language is"]}


def test_smollm2_edit_job_through_rest_and_ray(tmp_path):
    # The model, key statistics and corpus come from the shared cache; the store and outputs are the test's.
    env = {"SUTURE_HOME": str(suture_home()), "SUTURE_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
           "SUTURE_ARTIFACTS_DIR": str(tmp_path / "artifacts"), "SUTURE_WORKER_THREADS": "2"}
    server = Server(tmp_path, tmp_path, workers=1, extra_env=env).start()
    try:
        with SutureClient(server.url, ADMIN) as client:
            job = client.submit({"kind": "edit", "model": "smollm2-135m", "method": "rome", "requests": [REQUEST],
                                 "save_checkpoint": True, "output_name": "darrieux-english"})
            events = list(client.events(job["id"]))
            done = events[-1]
            assert done["status"] == "succeeded", done
            assert len(events) >= 3 and any("rome" in (e["stage"] or "") for e in events)
            path = client.download("darrieux-english", tmp_path / "download", part="checkpoint") / "checkpoint"
    finally:
        server.stop()

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    for prompt in ("The mother tongue of Danielle Darrieux is", "Danielle Darrieux's native language is"):
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.eos_token_id)
        assert tok.decode(out[0, ids.shape[1]:]).strip().startswith("English"), prompt
