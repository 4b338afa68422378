"""Prefect flows: they only order stages and fan out work."""
