package torch

import "testing"

// scripts/bench.sh runs these beside scripts/bench_python.py, which times the
// same work in Python's torch on the same libtorch, and prints the ratios.

// BenchmarkTinyAdd is the per-call overhead: one add of two 1-element tensors.
func BenchmarkTinyAdd(b *testing.B) {
	x, y := Ones(1), Ones(1)
	defer x.Free()
	defer y.Free()
	b.Run("free", func(b *testing.B) {
		for range b.N {
			x.Add(y).Free()
		}
	})
	b.Run("scope", func(b *testing.B) {
		s := NewScope()
		for i := range b.N {
			x.Add(y)
			if i%1000 == 999 {
				s.Close()
				s = NewScope()
			}
		}
		s.Close()
	})
}

// BenchmarkConvBlock is a UNet-sized block: conv 320->320 3x3 on
// 1x320x64x64, group_norm(32), SiLU, without autograd.
func BenchmarkConvBlock(b *testing.B) {
	g := NewGenerator(0)
	x := Randn(g, 1, 320, 64, 64)
	w := Randn(g, 320, 320, 3, 3).MulScalar(0.02)
	bias, gw, gb := Zeros(320), Ones(320), Zeros(320)
	NoGrad(func() {
		for range b.N {
			s := NewScope()
			h := Conv2d(x, w, bias, ConvOptions{Padding: Square2(1)})
			GroupNorm(h, 32, gw, gb, 1e-5).SiLU()
			s.Close()
		}
	})
}
