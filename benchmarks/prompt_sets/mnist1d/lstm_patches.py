"""An LSTM over 10 time steps of 4 samples each: nn.RNN(nn.LSTMCell(48)),
the final hidden state through Dense(10). 10,666 parameters.
"""
import flax.linen as nn


class Model(nn.Module):
    hidden_size: int = 48
    step: int = 4

    @nn.compact
    def __call__(self, x):
        seq = x.reshape(x.shape[0], -1, self.step)  # [batch, 10, 4]
        outputs = nn.RNN(nn.LSTMCell(features=self.hidden_size))(seq)
        return nn.Dense(10)(outputs[:, -1, :])
