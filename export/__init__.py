"""rescore.export."""
