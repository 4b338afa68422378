"""Prefect tasks: each wraps one library function with its cache policy and retries."""
