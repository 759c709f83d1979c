"""Registry mapping `type:` strings to layer classes."""
from __future__ import annotations

_REGISTRY: dict[str, type] = {}
# which LayerParameter field holds a type's own parameters, when it is not the usual name
_PARAM_FIELD: dict[str, str | None] = {}


def register_layer(type_name: str, param_field: str | None = "auto"):
    """Class decorator: ``@register_layer("Convolution", "convolution_param")``.

    ``param_field`` names the LayerParameter field holding the type's parameters ("auto" means
    lowercase type + "_param"; None means the type has none)."""
    def deco(cls):
        if type_name in _REGISTRY and _REGISTRY[type_name] is not cls:
            raise RuntimeError(f"layer type {type_name!r} registered twice")
        cls.type = type_name
        _REGISTRY[type_name] = cls
        _PARAM_FIELD[type_name] = (type_name.lower() + "_param") if param_field == "auto" \
            else param_field
        return cls
    return deco


def _load_all() -> None:
    from . import _all  # noqa: F401  (imports every layer module)


def get_layer_class(type_name: str):
    _load_all()
    return _REGISTRY.get(type_name)


def layer_types() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def param_field(type_name: str) -> str | None:
    _load_all()
    return _PARAM_FIELD.get(type_name)
