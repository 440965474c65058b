"""rescore.models."""
