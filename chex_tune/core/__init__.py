"""The CHEX algorithm itself, independent of tuning: channel scoring, pruning, regrowth and scheduling."""
