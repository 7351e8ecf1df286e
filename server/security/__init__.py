"""Security primitives: CSP, signed tokens, password and API-token hashing."""
