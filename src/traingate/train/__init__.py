"""Training: run the command (here or on the instance), check what it produced."""
