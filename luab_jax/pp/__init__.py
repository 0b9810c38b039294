"""Data ops: decode, crop, flip and the byproduct points that must move with the image."""
