// Package guidance is LCP-Diffusion's box-constrained cross-attention
// regulation (the paper's Eq. 5-8) as ../shared/spec/guidance.md defines
// it: before each of the first denoising steps, the latent moves down the
// gradient of a loss that pulls each subject's text cross-attention into
// its box (position) and makes it fill the box to its edges (scale).
package guidance

import (
	"cmp"
	"fmt"
	"math"

	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Subject is one thing to place: where its words sit in the prompt and
// the box it should fill.
type Subject struct {
	// Tokens are the positions of the subject's word(s) in the 77-token
	// prompt, the start token being 0 (see TokenPositions).
	Tokens []int64
	// Box is (x0, y0, x1, y1), normalised to [0, 1], x to the right, y down.
	Box [4]float64
}

// Params tune the update; the zero value is the paper's setting.
type Params struct {
	Eta   float64 // step size eta; 0 means 20
	Steps int     // how many of the first denoising steps are guided; 0 means half of them (N/2)
}

// DefaultEta is the paper's step size.
const DefaultEta = 20

func (p Params) eta() float64 {
	if p.Eta == 0 {
		return DefaultEta
	}
	return p.Eta
}

func (p Params) steps(n int) int {
	if p.Steps == 0 {
		return n / 2
	}
	return p.Steps
}

// Alpha is alpha_t = 1 - 0.5 i/(N-1) for step i of n: the update weakens
// to half by the last step. With one step there is no schedule to follow,
// so it is 1.
func Alpha(i, n int) float64 {
	if n <= 1 {
		return 1
	}
	return 1 - 0.5*float64(i)/float64(n-1)
}

// Recorder receives one text cross-attention layer's attention
// probabilities [B, heads, N, 77], in the autograd graph. It runs inside
// the layer's scope.
type Recorder func(layer string, probs *torch.Tensor)

// Probe runs the denoiser once on the latents z at timestep t with the
// text embeddings cond and hands every text cross-attention layer's
// probabilities to record, in forward order. The spec takes the maps from
// the UNet with every adapter of the generation active, so an adapter that
// replaces the attn2 processors supplies its own Probe or makes its
// processor Recordable.
type Probe func(z, t, cond *torch.Tensor, record Recorder)

// UNetProbe is the Probe for u as it stands: for the one call, each attn2
// processor is swapped for its recording twin (the default attention's is
// unet.ProbsProcessor) and restored afterwards.
func UNetProbe(u *unet.UNet) Probe {
	return func(z, t, cond *torch.Tensor, record Recorder) {
		recordAttn := func(a *unet.Attention, probs *torch.Tensor) { record(a.Name, probs) }
		blocks := u.TransformerBlocks()
		saved := make([]unet.Processor, len(blocks))
		for i, b := range blocks {
			saved[i] = b.Attn2.Processor
		}
		defer func() {
			for i, b := range blocks {
				b.Attn2.Processor = saved[i]
			}
		}()
		for _, b := range blocks {
			switch p := b.Attn2.Processor.(type) {
			case unet.DefaultProcessor:
				b.Attn2.Processor = unet.ProbsProcessor{Record: recordAttn}
			case unet.Recordable:
				b.Attn2.Processor = p.Recording(recordAttn)
			default:
				panic(&torch.Error{Op: "guidance", Msg: fmt.Sprintf(
					"%s has processor %T, which cannot record its attention probabilities (make it unet.Recordable)", b.Attn2.Name, p)})
			}
		}
		u.Forward(z, t, cond).Free()
	}
}

// CollectMaps runs probe on z [B, C, h, w] and returns the head-averaged
// maps of every text cross-attention layer, in forward order. Half
// precision maps are taken to f32: the loss adds 1e-8, below f16's reach.
func CollectMaps(probe Probe, z, t, cond *torch.Tensor) (maps []Map) {
	zh, zw := int(z.Size(2)), int(z.Size(3))
	// The recorder runs in the layer's scope: Persist carries each map out
	// of it, and adopt hands it to the caller's scope, on a panic too.
	defer func() {
		for i := range maps {
			maps[i].A = adopt(maps[i].A)
		}
	}()
	var failed error
	probe(z, t, cond, func(layer string, probs *torch.Tensor) {
		h, w, err := gridOf(probs.Size(2), zh, zw)
		if err != nil {
			failed = cmp.Or(failed, fmt.Errorf("%s: %w", layer, err))
			return
		}
		if d := probs.DType(); d != torch.Float32 && d != torch.Float64 {
			probs = probs.To(torch.Float32)
		}
		a := torch.Persist(probs.Mean(1)) // [B, N, 77]
		maps = append(maps, Map{Layer: layer, A: a, H: h, W: w})
	})
	if failed != nil {
		panic(&torch.Error{Op: "guidance", Msg: failed.Error()})
	}
	return maps
}

// adopt re-homes a persisted tensor in the current scope: a view (same
// storage, same place in the graph) is created there and the persisted
// handle freed.
func adopt(t *torch.Tensor) *torch.Tensor {
	defer t.Free()
	return t.View(t.Shape()...)
}

// Guide applies the regulation during one generation.
type Guide struct {
	Subjects []Subject
	Params   Params
	// Cond is the conditional text embedding [1, 77, D], the prompt's only
	// (no classifier-free negative branch).
	Cond  *torch.Tensor
	Probe Probe
	// Observe, when set, sees each guided step's alpha_t, loss L and
	// gradient dL/dz (inside the step's scope).
	Observe func(step int, alpha float64, loss, grad *torch.Tensor)
}

// Check validates the subjects against the prompt length (77 tokens).
func (g *Guide) Check(maxTokens int) error {
	switch {
	case g.Params.Eta < 0:
		return fmt.Errorf("guidance eta must be positive, got %g", g.Params.Eta)
	case g.Params.Steps < 0:
		return fmt.Errorf("guided steps must be 0 (half) or more, got %d", g.Params.Steps)
	}
	for k, s := range g.Subjects {
		if len(s.Tokens) == 0 {
			return fmt.Errorf("subject %d has no token positions", k+1)
		}
		for _, n := range s.Tokens {
			if n < 0 || n >= int64(maxTokens) {
				return fmt.Errorf("subject %d: token position %d is outside the prompt's %d tokens", k+1, n, maxTokens)
			}
		}
		for _, v := range s.Box {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("subject %d: box %v is not finite", k+1, s.Box)
			}
		}
	}
	return nil
}

// Guided reports whether step i of n is guided: there are subjects and i
// is among the first Params.Steps.
func (g *Guide) Guided(i, n int) bool {
	return len(g.Subjects) > 0 && i < g.Params.steps(n)
}

// Step is Eq. 8 at step i of n (timestep t): z - alpha_t * eta * dL/dz,
// or z itself when the step is not guided.
func (g *Guide) Step(i, n int, t int64, z *torch.Tensor) *torch.Tensor {
	if !g.Guided(i, n) {
		return z
	}
	return torch.Scoped(func() *torch.Tensor {
		loss, grad := g.Gradient(z, t)
		alpha := Alpha(i, n)
		if g.Observe != nil {
			g.Observe(i, alpha, loss, grad)
		}
		return z.Sub(grad.MulScalar(alpha * g.Params.eta()))
	})
}

// Gradient is the loss L at (z, t) and its gradient dL/dz, shaped as z.
// It differentiates through the UNet even inside a torch.NoGrad region.
// The UNet sees z itself: the spec's scheduler, DDIM, scales no input.
func (g *Guide) Gradient(z *torch.Tensor, t int64) (loss, grad *torch.Tensor) {
	s := torch.NewScope()
	defer s.Close()
	torch.WithGrad(func() {
		leaf := z.Detach().SetRequiresGrad(true)
		cond := g.Cond
		if b := z.Size(0); cond.Size(0) != b {
			cond = cond.Expand(b, cond.Size(1), cond.Size(2))
		}
		timestep := torch.New([]int64{t}).Reshape()
		loss = Loss(CollectMaps(g.Probe, leaf, timestep, cond), g.Subjects)
		grad = torch.Grad([]*torch.Tensor{loss}, []*torch.Tensor{leaf}, torch.GradOptions{})[0]
	})
	// Detached, the loss no longer holds the UNet's graph alive.
	return s.Keep(loss.Detach()), s.Keep(grad)
}
