"""Keys, envelope encryption and keyed indexes. Knows nothing about FHIR or the database."""
