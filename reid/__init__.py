"""SSG: self-similarity grouping for unsupervised cross-domain person re-identification."""
