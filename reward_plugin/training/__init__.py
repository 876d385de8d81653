"""What a training run needs besides the `transformers.Trainer` hooks: statistics, set-up, saving."""
