"""Nightly batch recommendation pipeline: steps, configuration, storage and the `recsys` CLI."""
