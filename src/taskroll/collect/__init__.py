"""taskroll.collect."""
