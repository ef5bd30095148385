"""The resource types we accept: every resource type the R4B models know."""

from __future__ import annotations

import importlib
import pkgutil
import re
from functools import cache
from typing import Any, TypeGuard

import fhir.resources.R4B as r4b
from fhir.resources.R4B import get_fhir_model_class

from medvault.fhir.type_names import RESOURCE_TYPE_NAMES

_ABSTRACT = {"DomainResource", "Resource"}
_TYPE_NAMES = frozenset(RESOURCE_TYPE_NAMES)

# FHIR R4 id datatype (https://hl7.org/fhir/R4/datatypes.html#id): the explicit class admits ASCII
# only (no NUL, no "%", no Unicode digits), and fullmatch (not `$`) refuses a trailing newline.
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
MAX_VERSION = 2**31 - 1  # version ids are 32-bit integers in the database


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


def is_resource_type(name: str) -> bool:
    """A set lookup in the static list of R4B resource type names: no model import, and no cache
    that every distinct (hostile) name in a URL would grow."""
    return name in _TYPE_NAMES


def is_fhir_id(value: object) -> TypeGuard[str]:
    """True for a valid FHIR logical id: [A-Za-z0-9-.], 1 to 64 characters."""
    return isinstance(value, str) and _FHIR_ID.fullmatch(value) is not None


def is_version_id(value: object) -> bool:
    """True for a version number this store can hold: 1 to 2**31-1."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_VERSION
