"""kdnas.search."""
