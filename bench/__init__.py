"""Benchmarks: each prints figures measured in one run; none is a test."""
