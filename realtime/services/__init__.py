"""Services: every write Herald makes goes through one of these functions."""
