"""FHIR R4 parsing, validation, search parameters and the Patient identity split. No I/O."""
