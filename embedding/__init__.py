"""Embedding models, the query/document split, and the Redis vector cache."""
