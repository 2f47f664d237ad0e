"""taskroll.train."""
