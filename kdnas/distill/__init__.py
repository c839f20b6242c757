"""kdnas.distill."""
