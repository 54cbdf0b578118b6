"""Talking to OpenAI-compatible chat models."""
