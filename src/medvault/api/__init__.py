"""HTTP face: FHIR R4 REST at /fhir. Thin: parses HTTP, calls services, maps errors once."""
