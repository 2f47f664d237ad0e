"""taskroll.models."""
