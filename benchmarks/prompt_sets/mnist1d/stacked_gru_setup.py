"""Two stacked GRU layers (40 then 40 units) over 20 steps of 2 samples,
written with setup(); max over time of the top layer, Dense(10).
15,370 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


class Model(nn.Module):
    hidden: int = 40

    def setup(self):
        self.lower = nn.RNN(nn.GRUCell(self.hidden))
        self.upper = nn.RNN(nn.GRUCell(self.hidden))
        self.head = nn.Dense(10)

    def __call__(self, x):
        x = x.reshape(x.shape[0], 20, 2)
        h = self.lower(x)
        h = self.upper(h) + h  # residual between the recurrent layers
        return self.head(jnp.max(h, axis=1))
