"""The CapabilityStatement, generated from what the code actually supports."""

from __future__ import annotations

from typing import Any

from medvault import __version__
from medvault.fhir import search as fs
from medvault.fhir.types import resource_types

_TYPE_URL = {"token": "token", "date": "date", "reference": "reference", "string": "string"}


def capability_statement(base: str) -> dict[str, Any]:
    resources = []
    for rtype in sorted(resource_types() - {"Bundle", "OperationOutcome", "CapabilityStatement"}):
        params = [
            {"name": "_id", "type": "token"},
            {"name": "_lastUpdated", "type": "date"},
        ]
        for name, param in sorted(fs.params_for(rtype).items()):
            doc = {"name": name, "type": _TYPE_URL[param.kind]}
            # Say which elements each parameter searches: several differ from the R4 definitions
            # (e.g. Condition `date` is onset[x] or recordedDate; MedicationRequest `date` is authoredOn).
            doc["documentation"] = "Searches " + " | ".join(f"{rtype}.{path}" for path in param.paths) + "."
            if name in ("patient", "subject"):
                doc["documentation"] = "The Patient the resource belongs to (subject or patient element)."
            if param.kind == "string":
                doc["documentation"] += (
                    " Whole-value match, case- and accent-insensitive (not prefix): values are found "
                    "through keyed indexes, never stored in plaintext."
                )
            if rtype == "Patient" and name == "name":
                doc["documentation"] += " Matches a family or a given name."
            if rtype == "Patient" and name == "birthdate":
                doc["documentation"] = (
                    "Exact dates use the blind index; other precisions and prefixes are checked by decryption."
                )
            params.append(doc)
        entry: dict[str, Any] = {
            "type": rtype,
            "interaction": [
                {"code": c}
                for c in (
                    "read",
                    "vread",
                    "update",
                    "delete",
                    "history-instance",
                    "history-type",
                    "create",
                    "search-type",
                )
            ],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalUpdate": False,
            "conditionalDelete": "single",
            "searchParam": params,
        }
        if rtype == "Patient":
            entry["operation"] = [
                {
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                }
            ]
        if rtype == "AuditEvent":
            # The access log lives in the Merkle log, not among the records: searched by patient
            # only, by that patient (GET /fhir/AuditEvent?patient=), newest first.
            entry = {
                "type": "AuditEvent",
                "documentation": "Who accessed a patient's record: shown to that patient only, newest first.",
                "interaction": [{"code": "search-type"}],
                "searchParam": [
                    {"name": "patient", "type": "reference", "documentation": "Required: your own Patient."},
                    {"name": "_count", "type": "number", "documentation": "1..200, default 50."},
                ],
            }
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "kind": "instance",
        "software": {"name": "medvault", "version": __version__},
        "implementation": {"description": "medvault encrypted FHIR vault", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "description": "Bearer operator token (written by `medvault init` to the data directory) "
                    "until accounts and SMART on FHIR arrive; every /fhir request without it gets 401.",
                },
                "resource": resources,
                "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}][:2],
                "searchParam": [
                    {"name": "_count", "type": "number"},
                    {
                        "name": "_sort",
                        "type": "string",
                        "documentation": "One date parameter of the type, or _lastUpdated; prefix - to descend.",
                    },
                    {"name": "_offset", "type": "number"},
                ],
            }
        ],
    }
