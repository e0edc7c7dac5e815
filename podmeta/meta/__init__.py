"""Meta-learning of the agent's own hyperparameters: parameterisation and the BMG / MG update."""
