"""Prefect tasks: each wraps one ``dil_core`` call with retries, cache policy, tags and logging."""
