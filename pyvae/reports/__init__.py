"""Reports over trained runs: side-by-side comparisons and figures (matplotlib, loaded on use)."""
