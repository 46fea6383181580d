"""The distribution installs one import package, `suture`, holding every folder of the repository's
layout, and it lives beside other distributions that own the generic names our folders have."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("editor", "methods", "evaluation", "repair", "service", "cli")


def source_tree(into: Path) -> Path:
    """The files a fresh clone has (tracked and untracked but not ignored), copied so a build leaves the
    checkout clean."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    for name in listed:
        source = ROOT / name
        if source.is_file():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    return into


def folder_packages() -> set[str]:
    """`suture.<dotted path>` of every folder under the layout's roots that holds an __init__.py."""
    found = {"suture"}
    for folder in FOLDERS:
        for init in (ROOT / folder).rglob("__init__.py"):
            found.add(".".join(["suture", *init.parent.relative_to(ROOT).parts]))
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = source_tree(work / "src")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(work / "dist"), str(src)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    [built] = (work / "dist").glob("suture-*.whl")
    return built


def test_pyproject_lists_every_package_folder():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert listed == folder_packages()


def test_the_wheel_holds_only_suture(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top_level == {"suture"}
    packages = {".".join(Path(name).parent.parts) for name in names if name.endswith("/__init__.py")}
    packages |= {"suture"} if "suture/__init__.py" in names else set()
    assert packages == folder_packages()
    assert "suture/py.typed" in names
    assert "suture/evaluation/data/reference.txt" in names
    [entry_points] = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "suture = suture.cli.main:main" in text
    assert "rome = suture.methods.rome" in text
    assert not any(name.startswith(("tests/", "benchmarks/", "docs/")) for name in names)


@pytest.mark.slow
def test_installs_beside_the_pypi_editor_distribution(wheel, tmp_path):
    """`pip install editor` (a launcher for text editors that owns the import name `editor`), then suture:
    both import, and `suture demo` runs. The environment sees the machine's packages (torch and the other
    dependencies are not downloaded again) but its own site-packages come first."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "editor"], check=True, capture_output=True, text=True)
    subprocess.run([*pip, "--no-deps", "--force-reinstall", str(wheel)], check=True, capture_output=True, text=True)

    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    probe = ("import editor, suture, suture.editor; "
             "print(editor.__file__); print(callable(getattr(editor, 'editor', None))); "
             "print(suture.__file__); print(suture.editor.__file__); print(suture.Editor.__name__)")
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    editor_file, editor_callable, suture_file, suture_editor_file, face = done.stdout.split()
    assert editor_file == str(Path(site) / "editor" / "__init__.py")  # the PyPI distribution's module
    assert editor_callable == "True"
    assert Path(suture_file).is_relative_to(site) and Path(suture_editor_file).is_relative_to(site)
    assert face == "Editor"

    demo = subprocess.run([str(env_dir / "bin" / "suture"), "demo"], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""}, timeout=1800)
    assert demo.returncode == 0, (demo.stdout[-3000:], demo.stderr[-3000:])
    # the demo's edits went through the suture in the environment, and `editor` still works after it
    done = subprocess.run([str(python), "-c", "import editor; print(editor.__file__)"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.stdout.strip() == editor_file


def test_package_data_is_found_from_any_directory(tmp_path):
    """The drift reference text is read through the `suture` package, not a top-level `evaluation` that
    only the repository root can import (the sequential benchmark, run from benchmarks/, failed on it)."""
    probe = "from suture.evaluation.drift import default_reference_texts as t; print(len(t()))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) > 0
