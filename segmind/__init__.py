"""Segmind serverless API: key, endpoint table, client."""
