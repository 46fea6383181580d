import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch, request):
    """Unit tests cache into a temporary SUTURE_HOME; real-model tests share the user's cache."""
    if "slow" not in request.keywords:
        monkeypatch.setenv("SUTURE_HOME", str(tmp_path_factory.getbasetemp() / "suture-home"))
