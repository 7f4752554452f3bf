"""Shards of simulated data and the DataModule that streams them."""
