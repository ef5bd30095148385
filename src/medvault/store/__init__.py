"""Tables, the identity vault, data keys and migrations."""
