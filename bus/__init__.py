"""Kafka and the message contract: settings, topics, clients, messages. No numpy, no HTTP."""
