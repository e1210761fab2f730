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
	return m.groundingRows(phrases, boxes, everyRow(len(boxes), batch), guided)
}

// groundingRows are groundingInputs for rows that hold subjects of their
// own: rows[r] lists the subjects (indices into phrases and boxes) of
// batch row r, in its first slots.
func (m *Model) groundingRows(phrases []string, boxes [][4]float64, rows [][]int, guided bool) (b, mask, emb *torch.Tensor) {
	s := torch.NewScope()
	defer s.Close()
	const maxObjs = gligen.MaxObjects
	n := int64(len(rows))
	boxData := make([]float32, n*maxObjs*4)
	on := make([]float32, n*maxObjs)
	for r, subjects := range rows {
		for j, k := range subjects {
			slot := r*maxObjs + j
			for c, v := range boxes[k] {
				boxData[slot*4+c] = float32(v)
			}
			on[slot] = 1
		}
	}
	b = torch.New(boxData, n, maxObjs, 4).ToOptions(m.Options)
	mask = torch.New(on, n, maxObjs).ToOptions(m.Options)
	if len(boxes) > 0 {
		emb = m.slotted(m.PhraseEmbeddings(phrases), rows) // [n, D] -> [B, 30, D]
	} else {
		emb = m.Options.Zeros(n, maxObjs, m.Text.Config.HiddenSize)
	}
	if guided {
		b = torch.Cat([]*torch.Tensor{b, b}, 0)
		emb = torch.Cat([]*torch.Tensor{emb, emb}, 0)
		mask = torch.Cat([]*torch.Tensor{m.Options.Zeros(n, maxObjs), mask}, 0)
	}
	return s.Keep(b), s.Keep(mask), s.Keep(emb)
}

// everyRow lists all n subjects for each row of a batch.
func everyRow(n, batch int) [][]int {
	rows := make([][]int, batch)
	for r := range rows {
		for k := range n {
			rows[r] = append(rows[r], k)
		}
	}
	return rows
}

// slotted places per-subject vectors x [n, D] in each row's grounding
// slots as rows lists them: [B, 30, D], zeros in empty slots.
func (m *Model) slotted(x *torch.Tensor, rows [][]int) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		const maxObjs = gligen.MaxObjects
		n, dim := x.Size(0), x.Size(1)
		index := make([]int64, len(rows)*maxObjs)
		for r := range rows {
			for j := range maxObjs {
				index[r*maxObjs+j] = n // the zero row
			}
			for j, k := range rows[r] {
				index[r*maxObjs+j] = int64(k)
			}
		}
		padded := torch.Cat([]*torch.Tensor{x, torch.OptionsOf(x).Zeros(1, dim)}, 0)
		at := torch.New(index).ToOptions(torch.Options{DType: torch.Int64, Device: m.Options.Device})
		return padded.IndexSelect(0, at).Reshape(int64(len(rows)), maxObjs, dim)
	})
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
