"""Dynamic Page Prompt templates: rendering and validation."""
