package pipeline

import (
	"fmt"

	"github.com/lcpdiff/lcpdiff/internal/guidance"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// BoxGuidance is box-constrained cross-attention regulation for a
// text-to-image request (shared/spec/guidance.md).
type BoxGuidance struct {
	Subjects []guidance.Subject
	Params   guidance.Params
	// Probe runs the UNet for the attention maps; nil means the model's
	// UNet with its attn2 processors recording (guidance.UNetProbe).
	Probe guidance.Probe
	// Observe, when set, sees each guided step's alpha_t, loss and gradient.
	Observe func(step int, alpha float64, loss, grad *torch.Tensor)
}

// BoxGuide prepares the guidance of request r: the conditional embedding is
// encoded once, as generation encodes it (same clip skip). The caller frees
// the returned guide's Cond; GenerateGuided does all of this.
func (m *Model) BoxGuide(r Text2Image, b BoxGuidance) (g *guidance.Guide, err error) {
	g = &guidance.Guide{Subjects: b.Subjects, Params: b.Params, Probe: b.Probe, Observe: b.Observe}
	if err := g.Check(m.Tokenizer.MaxLength); err != nil {
		return nil, err
	}
	if g.Probe == nil {
		g.Probe = guidance.UNetProbe(m.UNet)
	}
	if len(g.Subjects) == 0 {
		return g, nil // nothing to guide: no embedding needed
	}
	defer torch.Recover(&err)
	torch.NoGrad(func() { g.Cond = torch.Persist(m.encodePrompt(r.Prompt, r.ClipSkip, nil)) })
	return g, nil
}

// GenerateGuided is Generate with box guidance: before each of the first
// Params.Steps denoising steps the latents move down the gradient of the
// box loss, then the step denoises them as usual. A Guide hook already on r
// runs first. With no subjects it is Generate.
func (m *Model) GenerateGuided(r Text2Image, b BoxGuidance) (*torch.Tensor, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	g, err := m.BoxGuide(r, b)
	if err != nil {
		return nil, fmt.Errorf("box guidance: %w", err)
	}
	defer g.Cond.Free()
	if prev := r.Guide; prev != nil {
		r.Guide = func(step, total int, t int64, latents *torch.Tensor) *torch.Tensor {
			return g.Step(step, total, t, prev(step, total, t, latents))
		}
	} else {
		r.Guide = g.Step
	}
	return m.Generate(r)
}
