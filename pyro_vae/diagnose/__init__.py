"""004 section 9 as checks on a user data set and model."""
