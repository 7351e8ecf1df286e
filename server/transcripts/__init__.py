"""Transcripts: page ingest, canonical merge of the page and relay sources, output formats."""
