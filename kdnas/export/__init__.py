"""kdnas.export."""
