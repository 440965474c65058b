"""rescore.engine."""
