import os

import pytest
import torch

# Tiny models run fastest on one thread; real-model tests raise it (see the `real_editor` fixture).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch, request):
    """Unit tests cache into a temporary SUTURE_HOME; real-model tests share the user's cache."""
    if "slow" not in request.keywords:
        monkeypatch.setenv("SUTURE_HOME", str(tmp_path_factory.getbasetemp() / "suture-home"))



@pytest.fixture(autouse=True, scope="session")
def _keep_failed_edits_on_tiny_models():
    """Tiny random-weight models cannot learn an edit, so post-edit verdicts fail on them; the unit tests of
    weight mechanics keep such edits (their verdicts are still computed and recorded), module-scoped
    fixtures included. Tests of the rollback pass keep_failed=False explicitly; real-model (slow) tests
    get the library's default back (`_library_default_on_real_models`)."""
    from suture.editor import verdicts

    verdicts.KEEP_FAILED_DEFAULT = True
    yield
    verdicts.KEEP_FAILED_DEFAULT = False


@pytest.fixture(autouse=True)
def _library_default_on_real_models(monkeypatch, request):
    if "slow" in request.keywords:
        from suture.editor import verdicts

        monkeypatch.setattr(verdicts, "KEEP_FAILED_DEFAULT", False)


@pytest.fixture(scope="module")
def real_editor():
    """SmolLM2-135M-Instruct from the zoo (converted once into the cache), on two threads, one per module, on
    SUTURE_TEST_DEVICE (the CPU unless set)."""
    from suture.editor import Editor

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield Editor.load("smollm2-135m", device=os.environ.get("SUTURE_TEST_DEVICE", "cpu"))
    torch.set_num_threads(threads)
