import pytest
import torch

# Tiny models run fastest on one thread; real-model tests raise it (see the `real_editor` fixture).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch, request):
    """Unit tests cache into a temporary SUTURE_HOME; real-model tests share the user's cache."""
    if "slow" not in request.keywords:
        monkeypatch.setenv("SUTURE_HOME", str(tmp_path_factory.getbasetemp() / "suture-home"))
