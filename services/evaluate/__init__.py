"""`fraudstream evaluate`: detection quality against the generator's ground truth."""
