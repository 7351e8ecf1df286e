"""Fault scripts: a cluster under SDK-protocol load while one part fails; each prints what survived."""
