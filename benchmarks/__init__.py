"""Side-by-side benchmarks of phactor and the `posthog` package (run: `python -m benchmarks`)."""
