"""Turn validated events into model inputs: interaction matrices, holdout truth, item text."""
