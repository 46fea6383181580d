"""Site maps looked up by the config's `model_type`, never by a model's name.

Built-in families register when `suture.editor.sites` is imported; other packages add families through
the `suture.site_maps` entry-point group (each entry point is a module that calls `register_site_map`),
loaded one by one so that a broken one is reported (`site_map_load_errors`) without hiding the rest.
"""

from __future__ import annotations

from importlib import metadata

from suture.editor.errors import DuplicateRegistrationError, UnsupportedArchitectureError
from suture.editor.sites.base import SiteMap

ENTRY_POINT_GROUP = "suture.site_maps"

_BY_MODEL_TYPE: dict[str, SiteMap] = {}
_LOADED_ENTRY_POINTS: set[str] = set()
_LOAD_ERRORS: dict[str, str] = {}


def register_site_map(site_map: SiteMap) -> SiteMap:
    """Claim each of `site_map.model_types` for this map.

    Raises:
        DuplicateRegistrationError: a model_type is already claimed by a different map (nothing is
            registered then); registering an equal map again is accepted.
    """
    for model_type in site_map.model_types:
        existing = _BY_MODEL_TYPE.get(model_type)
        if existing is not None and existing != site_map:
            raise DuplicateRegistrationError("site map for model_type", model_type,
                                             f"family {existing.family!r}", f"family {site_map.family!r}")
    for model_type in site_map.model_types:
        _BY_MODEL_TYPE[model_type] = site_map
    return site_map


def _load_entry_points() -> None:
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name in _LOADED_ENTRY_POINTS:
            continue
        _LOADED_ENTRY_POINTS.add(entry_point.name)
        try:
            entry_point.load()
        except Exception as exc:  # noqa: BLE001  (a third-party plugin may raise anything on import)
            _LOAD_ERRORS[entry_point.name] = (
                f"entry point {entry_point.name} = {entry_point.value!r} failed to load: "
                f"{type(exc).__name__}: {exc}")


def supported_model_types() -> list[str]:
    _load_entry_points()
    return sorted(_BY_MODEL_TYPE)


def site_map_load_errors() -> dict[str, str]:
    """Entry points of the `suture.site_maps` group that could not be loaded: name -> the reason."""
    _load_entry_points()
    return dict(sorted(_LOAD_ERRORS.items()))


def site_map_for(config) -> SiteMap:
    """The map for `config.model_type`.

    Raises:
        UnsupportedArchitectureError: no map claims the model_type (the error lists those that do).
    """
    model_type = getattr(config, "model_type", None) or type(config).__name__
    if model_type not in _BY_MODEL_TYPE:
        _load_entry_points()
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(model_type, supported_model_types()) from None
