"""The fake Sentry server and its generated organization: for tests, the demo and benchmarks."""
