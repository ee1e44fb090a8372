"""Evaluation: OmniDocBench scoring of predictions, reading-order pictures."""
