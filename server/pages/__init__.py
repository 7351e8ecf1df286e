"""Hosted avatar pages."""
