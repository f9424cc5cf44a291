"""Repositories: one per table family, each bound to a transaction's connection."""
