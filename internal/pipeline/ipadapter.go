package pipeline

import (
	"fmt"

	"github.com/lcpdiff/lcpdiff/internal/model/ipadapter"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// ImagePrompt is a text-to-image request that also shows the model images
// of its subjects through an IP-Adapter, with diffusers'
// StableDiffusionPipeline(ip_adapter_image=...) semantics for one subject.
type ImagePrompt struct {
	Text2Image
	// Subjects are, per subject, the image encoder's penultimate hidden
	// states (hidden_states[-2]) of its reference views, [V, S, E].
	Subjects []*torch.Tensor
	// Uncond is hidden_states[-2] of an all-zero pixel_values tensor
	// [1, S, E]: diffusers' negative image prompt. Needed with
	// classifier-free guidance.
	Uncond *torch.Tensor
	// Boxes, one per subject as (x0, y0, x1, y1) normalised to the image,
	// restrict each subject's image attention to its box; nil attends to
	// all subjects' tokens everywhere.
	Boxes [][4]float64
	// Scale is lambda, the weight of the image attention.
	Scale float64
	// BoxGuidance, when set, also regulates the text attention of the
	// guidance's subjects (GenerateGuided), with the adapter active.
	BoxGuidance *BoxGuidance
}

// Check validates the request before any work is done.
func (r ImagePrompt) Check() error {
	if err := r.Text2Image.Check(); err != nil {
		return err
	}
	switch {
	case len(r.Subjects) == 0:
		return fmt.Errorf("image prompt: no subject images")
	case r.Boxes != nil && len(r.Boxes) != len(r.Subjects):
		return fmt.Errorf("image prompt: %d boxes for %d subjects", len(r.Boxes), len(r.Subjects))
	case r.CFGScale > 1 && r.Uncond == nil:
		return fmt.Errorf("image prompt: classifier-free guidance needs the zero image's hidden states")
	}
	for k, h := range r.Subjects {
		if h.Dim() != 3 {
			return fmt.Errorf("image prompt: subject %d's hidden states are %v, want [views, tokens, width]", k, h.Shape())
		}
	}
	return nil
}

// GenerateWithImages runs r with adapter a (attached to m.UNet) attending
// to the subjects' image tokens, and returns the images as Generate does.
func (m *Model) GenerateWithImages(r ImagePrompt, a *ipadapter.Adapter) (images *torch.Tensor, err error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	if err := m.setImageCondition(r, a); err != nil {
		return nil, err
	}
	defer a.ClearCondition()
	defer func(scale float64) { a.Scale = scale }(a.Scale)
	a.Scale = r.Scale
	if r.BoxGuidance != nil {
		return m.GenerateGuided(r.Text2Image, *r.BoxGuidance)
	}
	return m.Generate(r.Text2Image)
}

// setImageCondition hands the adapter the subjects' image tokens and boxes
// for the request's UNet calls.
func (m *Model) setImageCondition(r ImagePrompt, a *ipadapter.Adapter) error {
	lh, lw := m.latentSize(r.Text2Image)
	var err error
	torch.NoGrad(func() { err = m.setImageTokens(a, r.Subjects, r.Uncond, r.Boxes, nil, r.Batch, lh, lw) })
	return err
}

// setImageTokens distils each subject's image-encoder states [V, S, E]
// into image tokens for batch rows (and, given the zero image's states,
// the unconditional tokens) and hands them to a with the boxes; with
// rowOf, each subject's tokens go to its one row. The resampler runs with
// autograd as the caller has it: training trains it.
func (m *Model) setImageTokens(a *ipadapter.Adapter, subjects []*torch.Tensor, uncond *torch.Tensor, boxes [][4]float64, rowOf []int, batch int, lh, lw int64) (err error) {
	defer torch.Recover(&err)
	s := torch.NewScope() // the adapter keeps its own copies
	defer s.Close()
	c := ipadapter.Condition{Boxes: boxes, LatentH: lh, LatentW: lw, RowOf: rowOf}
	rows := int64(batch)
	if rowOf != nil {
		rows = 1
	}
	for _, hidden := range subjects {
		hidden = hidden.ToOptions(m.Options)
		c.Subjects = append(c.Subjects, a.ImageTokens(hidden).Repeat(rows, 1, 1))
		if uncond != nil {
			// As many zero images as the subject has views: the
			// resampler sees as many tokens in both branches.
			zeros := uncond.ToOptions(m.Options).Repeat(hidden.Size(0), 1, 1)
			c.Uncond = append(c.Uncond, a.ImageTokens(zeros).Repeat(rows, 1, 1))
		}
	}
	return a.SetCondition(c)
}
