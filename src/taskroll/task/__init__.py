"""Task specification and generation."""
