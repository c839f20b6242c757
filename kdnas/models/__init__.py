"""kdnas.models."""
