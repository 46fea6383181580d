"""Editing methods. Each folder registers one method with `editor.register_method`; methods from
other packages join through the `suture.methods` entry-point group."""

from suture.editor.registry import available_methods, get_method, method_load_errors, register_method
from suture.methods import heads, memit, rome  # noqa: F401  (built-in methods register on import)


def available() -> list[str]:
    """Names of the registered methods."""
    return available_methods()


def load_errors() -> dict[str, str]:
    """Installed `suture.methods` entry points that failed to load: name -> the error."""
    return method_load_errors()


__all__ = ["available", "get_method", "load_errors", "register_method"]
