"""An Elman RNN (nn.SimpleCell, tanh, 56 units) over 8 steps of 5 samples,
with the input projected to 24 features first; last state to Dense(10).
Indented with two spaces. 5,250 parameters.
"""
import flax.linen as nn


class Model(nn.Module):
  units: int = 56

  @nn.compact
  def __call__(self, x):
    x = x.reshape((x.shape[0], 8, 5))
    x = nn.Dense(24)(x)
    cell = nn.SimpleCell(features=self.units)
    x = nn.RNN(cell)(x)
    return nn.Dense(10)(x[:, -1])
