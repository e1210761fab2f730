package train

import "math"

// LRSchedulers are the values Config.LRScheduler takes: diffusers'
// get_scheduler names, with the same curves, so that a recipe written for
// its training scripts reads the same here.
var LRSchedulers = []string{"constant", "constant_with_warmup", "linear", "cosine"}

// lrAt is the learning rate of the optimizer step that follows step done
// steps (diffusers' LambdaLR stepped once per optimizer step, so the first
// step of a warmup learns at 0). It is a function of the step alone, which
// is what makes a resumed run continue the same curve.
func (c Config) lrAt(done int) float64 {
	s, warm, total := float64(done), float64(c.LRWarmupSteps), float64(c.Steps)
	if c.LRScheduler != "constant" && done < c.LRWarmupSteps {
		return c.LR * s / math.Max(1, warm)
	}
	switch c.LRScheduler {
	case "linear":
		return c.LR * math.Max(0, (total-s)/math.Max(1, total-warm))
	case "cosine": // half a cosine period, diffusers' num_cycles 0.5
		progress := (s - warm) / math.Max(1, total-warm)
		return c.LR * math.Max(0, 0.5*(1+math.Cos(math.Pi*progress)))
	}
	return c.LR
}
