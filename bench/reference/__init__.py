"""Plain pandas / scikit-learn implementations of segmint's steps, for benchmarks."""
