"""The scorer: predicts every point, scores every live model, answers requests."""
