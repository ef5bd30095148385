"""SMART App Launch 2.0: scopes, the OAuth2 authorization server (Authlib), apps and tokens.

`scopes` is pure (the access policy imports it); the rest uses the store. No web framework here.
"""
