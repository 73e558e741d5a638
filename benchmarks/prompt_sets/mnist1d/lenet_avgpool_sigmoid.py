"""LeNet-5 in one dimension: Conv(6, 5, VALID) -> sigmoid -> avg pool 2 ->
Conv(16, 5, VALID) -> sigmoid -> avg pool 2 -> Dense(120) -> Dense(84) ->
Dense(10), the classic sizes. 25,106 parameters.
"""
import flax.linen as nn


class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = x[..., None]
        x = nn.Conv(6, kernel_size=(5,), padding='VALID')(x)    # 36
        x = nn.avg_pool(nn.sigmoid(x), (2,), (2,))             # 18
        x = nn.Conv(16, kernel_size=(5,), padding='VALID')(x)   # 14
        x = nn.avg_pool(nn.sigmoid(x), (2,), (2,))             # 7
        x = x.reshape(x.shape[0], -1)                          # 112
        x = nn.sigmoid(nn.Dense(120)(x))
        x = nn.sigmoid(nn.Dense(84)(x))
        return nn.Dense(10)(x)
