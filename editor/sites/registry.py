"""Site maps looked up by the config's `model_type`, never by a model's name."""

from __future__ import annotations

from editor.errors import UnsupportedArchitectureError
from editor.sites.base import SiteMap

_BY_MODEL_TYPE: dict[str, SiteMap] = {}


def register_site_map(site_map: SiteMap) -> SiteMap:
    for model_type in site_map.model_types:
        _BY_MODEL_TYPE[model_type] = site_map
    return site_map


def supported_model_types() -> list[str]:
    return sorted(_BY_MODEL_TYPE)


def site_map_for(config) -> SiteMap:
    model_type = getattr(config, "model_type", None) or type(config).__name__
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(model_type, supported_model_types()) from None
