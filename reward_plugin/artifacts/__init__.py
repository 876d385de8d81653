"""What a training run leaves next to the weights: reward statistics and the model card."""
