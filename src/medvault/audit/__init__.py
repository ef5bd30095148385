"""Tamper-evident audit log: RFC 6962 Merkle tree hashing, proofs and signed checkpoints.

This package's core (`merkle`, `checkpoint`) is pure: no database, no files, no clock, so the same
code verifies a live log and an operator's offline copy.
"""
