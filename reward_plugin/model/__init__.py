"""The reward model: the one place a model and its tokenizer are loaded and prepared for training."""
