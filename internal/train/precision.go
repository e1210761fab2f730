package train

import (
	"fmt"
	"math"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Precisions are the values Config.MixedPrecision takes, named as
// accelerate names them: "no" is float32 throughout; "fp16" and "bf16" run
// the conditioner and the UNet under autocast in that type, with float32
// weights, gradients and optimizer state.
var Precisions = []string{"no", "fp16", "bf16"}

// autocastDType is the lower precision of cfg, or false for none.
func autocastDType(precision string) (torch.DType, bool) {
	switch precision {
	case "fp16":
		return torch.Float16, true
	case "bf16":
		return torch.BFloat16, true
	}
	return 0, false
}

// checkPrecision refuses a precision (valid by Config.Validate) that the
// device cannot autocast to: libtorch's CPU autocast knows bfloat16 only.
func checkPrecision(precision string, d torch.Device) error {
	if precision == "fp16" && d.Type != torch.CUDADevice {
		return fmt.Errorf("train: mixed_precision fp16 needs a CUDA device (the model is on %v, where autocast runs bfloat16 only): use bf16", d)
	}
	return nil
}

// autocast runs f under the run's mixed precision, if it has one.
func (t *trainer) autocast(f func()) {
	dtype, ok := autocastDType(t.cfg.MixedPrecision)
	if !ok {
		f()
		return
	}
	torch.Autocast(t.model.Options.Device.Type, dtype, f)
}

// lossScaler is torch.amp.GradScaler with its defaults, for float16, whose
// range small gradients fall out of: the loss is multiplied by Scale
// before backward and the gradients divided by it before the step; a step
// whose gradients overflowed is skipped and halves the scale, and every
// growthInterval steps without overflow double it. bfloat16 has float32's
// range and needs none.
type lossScaler struct {
	Scale  float64 `json:"scale"`
	Growth int     `json:"growth_tracker"` // steps without overflow since the scale last changed
}

const (
	initialLossScale = 65536
	growthInterval   = 2000
)

func newLossScaler() *lossScaler { return &lossScaler{Scale: initialLossScale} }

// unscale divides the gradients of params by the scale, in place, and
// reports whether every one of them is finite.
func (s *lossScaler) unscale(params []*torch.Tensor) (finite bool) {
	scope := torch.NewScope()
	defer scope.Close()
	var sums []*torch.Tensor
	torch.NoGrad(func() {
		for _, p := range params {
			if g := p.Grad(); g != nil {
				g.CopyFrom(g.MulScalar(1 / s.Scale))
				sums = append(sums, g.Abs().Sum().To(torch.Float32))
			}
		}
	})
	if len(sums) == 0 {
		return true
	}
	total := torch.Stack(sums, 0).Sum().Item() // one read of the device
	return !math.IsNaN(total) && !math.IsInf(total, 0)
}

// update moves the scale after a step: down on overflow, up after a long
// enough run without one.
func (s *lossScaler) update(finite bool) {
	if !finite {
		s.Scale /= 2
		s.Growth = 0
		return
	}
	s.Growth++
	if s.Growth == growthInterval {
		s.Scale *= 2
		s.Growth = 0
	}
}
