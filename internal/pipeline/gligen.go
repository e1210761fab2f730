package pipeline

import (
	"fmt"
	"math"

	"github.com/lcpdiff/lcpdiff/internal/model/gligen"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// DefaultGLIGENTau is diffusers' default gligen_scheduled_sampling_beta.
const DefaultGLIGENTau = 0.3

// GLIGEN is a text-to-image request grounded by phrases in boxes, with
// diffusers' StableDiffusionGLIGENPipeline semantics (text boxes, no
// inpainting).
type GLIGEN struct {
	Text2Image
	// Phrases name the objects; Boxes place them, one per phrase, as
	// normalised x0, y0, x1, y1. Past gligen.MaxObjects both are cut
	// (with a warning), as diffusers does.
	Phrases []string
	Boxes   [][4]float64
	// Tau is gligen_scheduled_sampling_beta: the grounding is on for the
	// first int(Tau * Steps) steps and off after. 0 means never;
	// DefaultGLIGENTau is diffusers' default.
	Tau float64
}

// Check validates the request before any work is done.
func (r GLIGEN) Check() error {
	if err := r.Text2Image.Check(); err != nil {
		return err
	}
	switch {
	case len(r.Phrases) != len(r.Boxes):
		return fmt.Errorf("gligen: %d phrases but %d boxes", len(r.Phrases), len(r.Boxes))
	case !(r.Tau >= 0 && r.Tau <= 1):
		return fmt.Errorf("gligen: scheduled sampling tau %g is outside [0, 1]", r.Tau)
	}
	for i, b := range r.Boxes {
		for _, v := range b {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("gligen: box %d %v is not finite", i, b)
			}
		}
	}
	return nil
}

// GenerateGLIGEN runs a grounded request with g, the GLIGEN of m.UNet
// (gligen.Load), and returns the images [Batch, 3, H, W] in [0, 1] as f32
// on the CPU. The fusers are off again when it returns.
func (m *Model) GenerateGLIGEN(g *gligen.Grounding, r GLIGEN) (images *torch.Tensor, err error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	if g == nil {
		return nil, fmt.Errorf("gligen: no grounding loaded for the UNet")
	}
	if _, _, err := m.phraseIDs(r.Phrases); err != nil {
		return nil, err
	}
	if n := len(r.Phrases); n > gligen.MaxObjects {
		if r.Warn != nil {
			r.Warn(fmt.Sprintf("%d phrases and boxes: only the first %d are used", n, gligen.MaxObjects))
		}
		r.Phrases, r.Boxes = r.Phrases[:gligen.MaxObjects], r.Boxes[:gligen.MaxObjects]
	}
	// The position net's tokens are the same at every step (diffusers
	// recomputes them per UNet call), so they are made once.
	var objs *torch.Tensor
	err = torch.Try(func() {
		torch.NoGrad(func() { objs = m.groundingTokens(g, r) })
	})
	if err != nil {
		return nil, err
	}
	defer objs.Free()
	defer g.Clear()
	g.Set(objs, 0)

	t2i := r.Text2Image
	before := r.BeforeStep
	t2i.BeforeStep = func(step, total int, timestep int64) {
		g.SetBeta(gligen.ScheduledBeta(r.Tau, step, total))
		if before != nil {
			before(step, total, timestep)
		}
	}
	return m.Generate(t2i)
}

// groundingTokens are the fusers' tokens for the UNet's batch: [B, 30, C]
// for the prompt, preceded under classifier-free guidance by B rows of
// null tokens for the unconditional half.
func (m *Model) groundingTokens(g *gligen.Grounding, r GLIGEN) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		boxes, masks, phrases := m.groundingInputs(r.Phrases, r.Boxes, r.Batch, r.CFGScale > 1)
		return g.PositionNet.Forward(boxes, masks, phrases)
	})
}

// groundingInputs are the position net's inputs as diffusers' pipeline
// forms them: boxes [B', 30, 4], masks [B', 30] and phrase embeddings
// [B', 30, D], the objects first and zeros after, repeated for the batch;
// with guidance B' = 2B and the unconditional (first) half has every mask
// 0, so it sees null objects only.
func (m *Model) groundingInputs(phrases []string, boxes [][4]float64, batch int, guided bool) (b, mask, emb *torch.Tensor) {
	s := torch.NewScope()
	defer s.Close()
	const maxObjs = gligen.MaxObjects
	n := len(boxes)
	boxData := make([]float32, maxObjs*4)
	on, off := make([]float32, maxObjs), make([]float32, maxObjs)
	for i, box := range boxes {
		for c, v := range box {
			boxData[i*4+c] = float32(v)
		}
		on[i] = 1
	}
	b = torch.New(boxData, 1, maxObjs, 4).ToOptions(m.Options)
	mask = torch.New(on, 1, maxObjs).ToOptions(m.Options)
	dim := m.Text.Config.HiddenSize
	emb = m.Options.Zeros(1, maxObjs, dim)
	if n > 0 {
		pooled := m.PhraseEmbeddings(phrases) // [n, D]
		emb = torch.Cat([]*torch.Tensor{pooled.Unsqueeze(0), m.Options.Zeros(1, maxObjs-int64(n), dim)}, 1)
	}

	rows := int64(batch)
	b, mask, emb = b.Repeat(rows, 1, 1), mask.Repeat(rows, 1), emb.Repeat(rows, 1, 1)
	if guided {
		b = torch.Cat([]*torch.Tensor{b, b}, 0)
		emb = torch.Cat([]*torch.Tensor{emb, emb}, 0)
		uncond := torch.New(off, 1, maxObjs).ToOptions(m.Options).Repeat(rows, 1)
		mask = torch.Cat([]*torch.Tensor{uncond, mask}, 0)
	}
	return s.Keep(b), s.Keep(mask), s.Keep(emb)
}

// PhraseEmbeddings are the phrases' pooled text embeddings [n, D]: the
// final-normed hidden state at each phrase's end token, as diffusers gets
// them from tokenizer(phrases, padding=True) and CLIPTextModel's
// pooler_output (no projection, no clip skip).
func (m *Model) PhraseEmbeddings(phrases []string) *torch.Tensor {
	ids, length, err := m.phraseIDs(phrases)
	if err != nil {
		panic(&torch.Error{Op: "gligen phrases", Msg: err.Error()})
	}
	out := m.Text.Forward(torch.New(ids, int64(len(phrases)), int64(length)))
	defer out.Free()
	return out.Pooled.Clone()
}

// phraseIDs tokenises the phrases padded to the longest, [n * length]
// row-major, untruncated as diffusers does: a phrase longer than the text
// encoder's context is an error. Padding after the end token needs no
// attention mask: under the causal mask the end token never sees it.
func (m *Model) phraseIDs(phrases []string) (ids []int64, length int, err error) {
	encoded := make([][]int64, len(phrases))
	for i, p := range phrases {
		encoded[i] = m.Tokenizer.Encode(p)
		length = max(length, len(encoded[i]))
	}
	if length > m.Tokenizer.MaxLength {
		return nil, 0, fmt.Errorf("gligen: a phrase is %d tokens long; the text encoder takes %d", length, m.Tokenizer.MaxLength)
	}
	for _, e := range encoded {
		ids = append(ids, e...)
		for range length - len(e) {
			ids = append(ids, m.Tokenizer.Pad)
		}
	}
	return ids, length, nil
}
