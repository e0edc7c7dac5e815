"""An example of a user's own package with a gymnasium environment (README: "Your own environment")."""
