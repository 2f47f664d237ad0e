"""taskroll.data."""
