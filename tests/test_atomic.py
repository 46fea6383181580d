"""Saved directories appear whole or not at all, with the mode any new directory of this process gets."""

from __future__ import annotations

import os
import stat

import pytest

from suture.editor.atomic import atomic_directory


def test_a_saved_directory_has_the_umasks_mode_not_mkdtemps(tmp_path):
    previous = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "out") as staging:
            (staging / "f").write_text("x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755  # mkdtemp's own mode is 0o700


def test_a_failed_save_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "out") as staging:
        (staging / "f").write_text("x")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
