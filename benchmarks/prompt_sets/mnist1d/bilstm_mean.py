"""Bidirectional LSTM (32 units each way) over 20 steps of 2 samples, outputs
averaged over time, a GELU hidden layer of 48, Dense(10).
12,570 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.reshape(x, (x.shape[0], 20, 2))
        forward = nn.RNN(nn.LSTMCell(32))
        backward = nn.RNN(nn.LSTMCell(32), reverse=True, keep_order=True)
        h = nn.Bidirectional(forward, backward)(x)  # [batch, 20, 64]
        h = jnp.mean(h, axis=1)
        h = nn.gelu(nn.Dense(48)(h))
        return nn.Dense(10)(h)
