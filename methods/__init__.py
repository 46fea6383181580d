"""Editing methods. Each folder registers one method with `editor.register_method`; methods from
other packages join through the `suture.methods` entry-point group."""

from editor.registry import available_methods, get_method, register_method
from methods import heads, memit, rome  # noqa: F401  (built-in methods register on import)


def available() -> list[str]:
    """Names of the registered methods."""
    return available_methods()


__all__ = ["available", "get_method", "register_method"]
