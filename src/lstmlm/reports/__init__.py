"""Reports over finished runs: comparisons of several configurations, and curve plots."""
