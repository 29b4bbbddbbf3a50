"""The data connector: point sources and the loop that publishes them to Kafka."""
