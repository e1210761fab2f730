package train

import (
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// clipGradNorm is torch.nn.utils.clip_grad_norm_: it returns the global L2
// norm of the parameters' gradients (the norm of the per-tensor norms) and,
// when maxNorm is positive, scales every gradient in place by
// min(1, maxNorm / (norm + 1e-6)). It computes as PyTorch does, in the
// gradients' dtype on their device, so clipping rounds alike. Parameters
// without a gradient (their part saw no condition this step) are skipped.
func clipGradNorm(params []*torch.Tensor, maxNorm float64) float64 {
	s := torch.NewScope()
	defer s.Close()
	var grads, norms []*torch.Tensor
	for _, p := range params {
		if g := p.Grad(); g != nil {
			grads = append(grads, g)
			norms = append(norms, g.Norm())
		}
	}
	if len(grads) == 0 {
		return 0
	}
	total := torch.Stack(norms, 0).Norm()
	if maxNorm > 0 {
		coef := total.AddScalar(1e-6).Rdiv(maxNorm).ClampMax(1)
		torch.NoGrad(func() {
			for _, g := range grads {
				// The handle shares the gradient's memory: writing
				// through it scales what the optimizer reads.
				g.CopyFrom(g.Mul(coef))
			}
		})
	}
	return total.Item()
}
