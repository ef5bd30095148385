"""The resource types we accept: every resource type the R4B models know."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any

import fhir.resources.R4B as r4b
from fhir.resources.R4B import get_fhir_model_class

_ABSTRACT = {"DomainResource", "Resource"}


@cache
def resource_types() -> frozenset[str]:
    names = set()
    for mod in pkgutil.iter_modules(r4b.__path__):
        if mod.name.startswith("fhir"):
            continue
        module = importlib.import_module(f"fhir.resources.R4B.{mod.name}")
        for attr in dir(module):
            cls = getattr(module, attr)
            if attr.lower() == mod.name and isinstance(cls, type) and _is_resource(cls):
                names.add(attr)
    return frozenset(names - _ABSTRACT)


def _is_resource(cls: Any) -> bool:
    fields = getattr(cls, "model_fields", {})
    # Resources have `meta` and `implicitRules`; data types (HumanName, Period...) do not.
    return "meta" in fields and "implicitRules" in fields


def model_class(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


@cache
def is_resource_type(name: str) -> bool:
    """Cheap per-name check (imports one model module, not all of them)."""
    if not name or not name[0].isupper() or not name.isalnum() or name in _ABSTRACT:
        return False
    try:
        return _is_resource(get_fhir_model_class(name))
    except (ValueError, ImportError, AttributeError, KeyError):
        return False
