"""streamscore: an event-driven streaming model scorer on Apache Kafka."""

__version__ = "0.1.0"
