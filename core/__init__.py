"""The ground floor: errors, environment reading, logging, shutdown and runtime tuning.

Every other package may import ``core``; ``core`` imports nothing of the project.
"""
