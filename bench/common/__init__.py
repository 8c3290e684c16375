"""Shared by every part of the harness: settings, the method registry, command-line helpers, the
environment, files and provenance. Imports nothing from the pipeline."""
