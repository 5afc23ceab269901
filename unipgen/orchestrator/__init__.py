"""Executors that run generation and training: inline (one process) and Ray."""
