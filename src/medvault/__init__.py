"""medvault: a privacy-first health record platform (encrypted FHIR R4 vault)."""

__version__ = "0.1.0"
