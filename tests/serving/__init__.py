"""Tests of serving/: one module per concern, mirroring the package."""
