"""``streamscore monitor``: a live dashboard of the pipeline, read from Kafka only."""
