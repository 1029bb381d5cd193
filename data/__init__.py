"""Dataset layer."""
