"""What the demo, the tests and the benchmarks drive the product with: the
demo, child processes, loopback targets."""
