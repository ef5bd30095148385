"""FHIR resource services: the vault's create/read/update/delete/history/search/transaction."""
