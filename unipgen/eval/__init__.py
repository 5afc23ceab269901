"""Metrics and benchmark harnesses for personalized generation."""
