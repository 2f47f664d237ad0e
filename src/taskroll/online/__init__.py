"""taskroll.online."""
