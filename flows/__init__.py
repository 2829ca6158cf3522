"""Prefect flows: a campaign flow that queues every scan through rounds, and a round flow per submission."""
