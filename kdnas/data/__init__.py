"""kdnas.data."""
