package unet

import (
	"math"

	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Timesteps is the sinusoidal timestep embedding (diffusers'
// get_timestep_embedding, max period 10000).
type Timesteps struct {
	Dim          int64
	FlipSinToCos bool
	FreqShift    float64
}

// Forward maps timesteps [B] to [B, Dim] in f32.
func (e Timesteps) Forward(t *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		half := e.Dim / 2
		// exponent = -ln(10000) * i / (half - shift), computed in f32 as diffusers does
		exponent := torch.Options{Device: t.Device()}.Arange(0, float64(half), 1).MulScalar(-math.Log(10000))
		freqs := exponent.DivScalar(float64(half) - e.FreqShift).Exp()
		args := t.To(torch.Float32).Unsqueeze(1).Mul(freqs.Unsqueeze(0)) // [B, half]
		sin, cos := args.Sin(), args.Cos()
		if e.FlipSinToCos {
			return torch.Cat([]*torch.Tensor{cos, sin}, -1)
		}
		return torch.Cat([]*torch.Tensor{sin, cos}, -1)
	})
}

// TimestepEmbedding is the MLP from the sinusoidal embedding to the vector
// every resnet adds: linear_1, SiLU, linear_2.
type TimestepEmbedding struct {
	Linear1, Linear2 *nn.Linear
}

func NewTimestepEmbedding(p nn.Path, in, dim int64) *TimestepEmbedding {
	return &TimestepEmbedding{
		Linear1: nn.NewLinear(p.Sub("linear_1"), in, dim, true),
		Linear2: nn.NewLinear(p.Sub("linear_2"), dim, dim, true),
	}
}

func (e *TimestepEmbedding) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor { return e.Linear2.Forward(e.Linear1.Forward(x).SiLU()) })
}
