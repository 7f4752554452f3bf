"""Small convolutional building blocks."""

from torch import Tensor, nn

__all__ = ["ConvBlock", "ResidualBlock"]


class ConvBlock(nn.Sequential):
    """3 x 3 convolution (optionally strided or dilated), batch norm, SiLU."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                3,
                stride=stride,
                padding=dilation,
                dilation=dilation,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.SiLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """Two 3 x 3 convolutions with a skip connection; ``dilation`` widens the receptive field."""

    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvBlock(channels, channels, dilation=dilation),
            nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.activation = nn.SiLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """``silu(x + body(x))``. Shape ``b f h w`` in and out."""
        return self.activation(x + self.body(x))
