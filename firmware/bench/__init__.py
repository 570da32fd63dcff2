"""The gate's benchmarks (`qrgate bench ...`)."""
