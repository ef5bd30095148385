"""Accounts' credentials: password policy and hashing, TOTP second factor, recovery codes, throttling.

The core here is pure: no database, no web framework, no clock of its own (callers pass `now`), so
the same rules are tested with an injected clock and reused by every face. Persisting hashes, TOTP
steps, recovery-code digests and throttle states is the store's job; it saves what these functions
return.
"""
