package pipeline

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/guidance"
	"github.com/lcpdiff/lcpdiff/internal/model/clip"
	"github.com/lcpdiff/lcpdiff/internal/model/gligen"
	"github.com/lcpdiff/lcpdiff/internal/model/lcp"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Subject is one subject of an LCP-Diffusion request: what it looks like,
// where it goes, and how the prompt names it.
type Subject struct {
	References []*data.RGB  // views of the subject
	Masks      []*data.Gray // per view, the subject's pixels; a nil mask is the whole image
	Box        [4]float64   // normalised x0, y0, x1, y1
	Words      string       // the word(s) of the prompt that name it
	Category   string       // for the static refiner's "a photo of a {category}"
	Phrase     string       // the grounding phrase; Words when empty
}

// LCP is a layout-controlled, multi-subject request ("create anything
// anywhere"): every subject, recognisably itself, inside its box.
type LCP struct {
	Text2Image
	Subjects       []Subject
	IPScale        float64 // lambda: dynamic attention strength
	StaticScale    float64 // alpha: static attention strength
	GroundingTau   float64 // grounding is on for this first fraction of the steps
	Guidance       bool    // box-constrained cross-attention regulation
	GuidanceEta    float64 // 0: the spec's 20
	GuidanceSteps  int     // guided steps from the first; 0: half
	RegionRestrict bool    // each subject's image features act only inside its box
}

// Encoders are the image encoder of the dynamic attention and its
// preprocessing.
type Encoders struct {
	Vision    *clip.VisionEncoder
	Processor clip.ImageProcessorConfig
}

// Check validates the request before any work is done.
func (r LCP) Check() error {
	if err := r.Text2Image.Check(); err != nil {
		return err
	}
	if len(r.Subjects) > gligen.MaxObjects {
		return fmt.Errorf("%d subjects: the grounding takes at most %d", len(r.Subjects), gligen.MaxObjects)
	}
	for k, s := range r.Subjects {
		b := s.Box
		switch {
		case b[0] < 0 || b[1] < 0 || b[2] > 1 || b[3] > 1:
			return fmt.Errorf("subject %d: box %v lies outside [0, 1]", k+1, b)
		case b[0] >= b[2] || b[1] >= b[3]:
			return fmt.Errorf("subject %d: box %v is empty (want x0 < x1 and y0 < y1)", k+1, b)
		case len(s.References) == 0:
			return fmt.Errorf("subject %d: no reference image", k+1)
		case s.Masks != nil && len(s.Masks) != len(s.References):
			return fmt.Errorf("subject %d: %d masks for %d reference images", k+1, len(s.Masks), len(s.References))
		case s.Words == "":
			return fmt.Errorf("subject %d: no word of the prompt names it", k+1)
		}
		for v, m := range s.Masks {
			if m != nil && (m.W != s.References[v].W || m.H != s.References[v].H) {
				return fmt.Errorf("subject %d: mask %d is %dx%d, its image %dx%d", k+1, v+1, m.W, m.H, s.References[v].W, s.References[v].H)
			}
		}
	}
	return nil
}

// GenerateLCP runs r with adapter a (attached to m.UNet) and returns the
// images [Batch, 3, H, W] in [0, 1], as Generate does. Every part of the
// adapter is reset when it returns.
func (m *Model) GenerateLCP(r LCP, a *lcp.Adapter, enc Encoders) (images *torch.Tensor, err error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	subjects := make([]guidance.Subject, len(r.Subjects))
	for k, s := range r.Subjects {
		tokens, err := guidance.TokenPositions(m.Tokenizer, r.Prompt, s.Words)
		if err != nil {
			return nil, fmt.Errorf("subject %d: %w", k+1, err)
		}
		subjects[k] = guidance.Subject{Tokens: tokens, Box: s.Box}
	}
	s := torch.NewScope()
	defer s.Close()
	defer m.ResetAdapter(a)
	if err := m.conditionAdapter(r, a, enc); err != nil {
		return nil, err
	}
	r.BeforeStep = func(step, total int, _ int64) { a.Grounding.SetBeta(gligen.ScheduledBeta(r.GroundingTau, step, total)) }
	if !r.Guidance || len(subjects) == 0 {
		images, err = m.Generate(r.Text2Image)
	} else {
		images, err = m.GenerateGuided(r.Text2Image, BoxGuidance{
			Subjects: subjects,
			Params:   guidance.Params{Eta: r.GuidanceEta, Steps: r.GuidanceSteps},
		})
	}
	return s.Keep(images), err
}

// conditionAdapter encodes every subject once (static refiner, image
// tokens, grounding tokens) and hands the parts their state.
func (m *Model) conditionAdapter(r LCP, a *lcp.Adapter, enc Encoders) (err error) {
	defer torch.Recover(&err)
	c := AdapterCondition{
		Batch: r.Batch, Guided: r.CFGScale > 1, IPScale: r.IPScale, StaticScale: r.StaticScale,
		RegionRestrict: r.RegionRestrict, GroundingBeta: gligen.ScheduledBeta(r.GroundingTau, 0, r.Steps),
	}
	c.LatentH, c.LatentW = m.latentSize(r.Text2Image)
	defer func() {
		if err != nil {
			c.free(true) // what was encoded before the failure
		}
	}()
	torch.NoGrad(func() {
		views := make([]SubjectViews, len(r.Subjects))
		for k, sub := range r.Subjects {
			whitened := make([]*data.RGB, len(sub.References))
			for v, img := range sub.References {
				whitened[v] = whiten(img, maskOf(sub, v))
			}
			views[k] = SubjectViews{Static: whitened[0], Mask: maskOf(sub, 0), Dynamic: whitened, Category: sub.Category}
		}
		c.Subjects = m.EncodeSubjects(enc, views, r.Width, r.Height)
		for k, sub := range r.Subjects {
			c.Subjects[k].Box, c.Subjects[k].Phrase = sub.Box, cmp.Or(sub.Phrase, sub.Words)
		}
		if c.Guided {
			c.Uncond = torch.Persist(ZeroImageHidden(enc))
		}
	})
	return m.ConditionAdapter(a, c)
}

// EncodedSubject is one subject after the frozen encoders.
type EncodedSubject struct {
	Reference *lcp.Reference // the static refiner's features
	Hidden    *torch.Tensor  // the image encoder's penultimate states of its views [V, S, E]
	Box       [4]float64     // normalised x0, y0, x1, y1
	Phrase    string         // the grounding phrase
	// Dropped marks a subject of a training sample whose subject
	// conditioning is dropped (classifier-free guidance's condition
	// dropout): it gets image tokens from Hidden, the zero image's states,
	// in its box, and no static or grounding term; it has no Reference.
	// That row then sees what guidance's unconditional rows see at
	// generation, as IP-Adapter trains its dropped samples.
	Dropped bool
}

// DroppedSubject is a subject with box of a training sample whose
// subject conditioning is dropped; zero is the zero image's states
// (ZeroImageHidden), one per view [V, S, E], which it copies.
func DroppedSubject(zero *torch.Tensor, box [4]float64) EncodedSubject {
	return EncodedSubject{Hidden: torch.Persist(zero.Clone()), Box: box, Dropped: true}
}

// AdapterCondition is everything an LCP adapter is conditioned on for a
// run of UNet calls: a generation's, or a training micro-batch's.
type AdapterCondition struct {
	Subjects []EncodedSubject
	// Uncond is the zero image's hidden states [1, S, E], for the
	// unconditional rows of classifier-free guidance; set when Guided.
	Uncond *torch.Tensor
	// Batch is the number of conditional rows; Guided doubles the UNet's
	// batch with as many unconditional rows before them.
	Batch int
	// RowOf, when set, gives each subject the one row it conditions: a
	// training micro-batch of several samples, each with subjects of its
	// own (at most gligen.MaxObjects a row; not Guided). A row with no
	// subject, or only Dropped ones, sees the null grounding tokens, as
	// guidance's unconditional rows do, and no static term; its image
	// term is its Dropped subjects' (none without). Nil: every subject
	// conditions every row.
	RowOf            []int
	Guided           bool
	IPScale          float64 // lambda
	StaticScale      float64 // alpha
	GroundingBeta    float64 // the gated fusers' beta for the first step
	RegionRestrict   bool
	LatentH, LatentW int64
}

// conditioned is c with its dropped subjects left out.
func (c AdapterCondition) conditioned() AdapterCondition {
	kept := c
	kept.Subjects = nil
	if c.RowOf != nil {
		kept.RowOf = []int{}
	}
	for k, e := range c.Subjects {
		if e.Dropped {
			continue
		}
		kept.Subjects = append(kept.Subjects, e)
		if c.RowOf != nil {
			kept.RowOf = append(kept.RowOf, c.RowOf[k])
		}
	}
	return kept
}

// free releases the encodings: the hidden states always (the adapter
// keeps its own tokens), the references when asked.
func (c *AdapterCondition) free(refsToo bool) {
	for _, e := range c.Subjects {
		e.Hidden.Free()
		if refsToo && e.Reference != nil {
			e.Reference.Free()
		}
	}
	c.Uncond.Free()
}

// SubjectViews is what the frozen encoders see of one subject.
type SubjectViews struct {
	Static   *data.RGB   // the static refiner's view, background already white
	Mask     *data.Gray  // the subject's pixels in Static; nil is the whole image
	Dynamic  []*data.RGB // the image encoder's views
	Category string      // for the refiner's "a photo of a {category}"
}

// EncodeSubjects runs the frozen encoders on subjects: the static detail
// refiner on each static view and mask at the generation's size (its VAE,
// text and UNet passes once for all of them), and the image encoder on
// each subject's dynamic views.
func (m *Model) EncodeSubjects(enc Encoders, subjects []SubjectViews, w, h int) []EncodedSubject {
	out := make([]EncodedSubject, len(subjects))
	torch.NoGrad(func() {
		refs := m.refine(subjects, w, h)
		for k, v := range subjects {
			out[k] = EncodedSubject{Reference: refs[k], Hidden: torch.Persist(encodeViews(enc, v.Dynamic))}
		}
	})
	return out
}

// ConditionAdapter hands every part of a its state for c: the static
// references, the image tokens and the grounding tokens. It consumes c:
// the state owns the references from then on, and the hidden states are
// freed once distilled. The trainable parts (static projection,
// resampler, layout module) run with autograd as the caller has it, so
// that training gets their gradients; ResetAdapter undoes it all.
func (m *Model) ConditionAdapter(a *lcp.Adapter, c AdapterCondition) (err error) {
	defer torch.Recover(&err)
	// On failure the references go too: freeing twice, here and in
	// ResetAdapter, is harmless.
	defer func() { c.free(err != nil) }()
	if _, err := c.rows(); err != nil {
		return err
	}
	// Static and grounding attention see the subjects not dropped; the
	// image tokens are every subject's.
	kept := c.conditioned()
	slots, err := kept.rows()
	if err != nil {
		return err
	}
	s := torch.NewScope()
	defer s.Close()
	n := len(kept.Subjects)
	boxes := make([][4]float64, n)
	phrases := make([]string, n)
	refs := make([]*lcp.Reference, n)
	var statics []*torch.Tensor
	for k, e := range kept.Subjects {
		boxes[k], phrases[k], refs[k] = e.Box, e.Phrase, e.Reference
		statics = append(statics, a.Projection.Forward(e.Reference))
	}
	hidden := make([]*torch.Tensor, len(c.Subjects))
	ipBoxes := make([][4]float64, len(c.Subjects))
	for k, e := range c.Subjects {
		hidden[k], ipBoxes[k] = e.Hidden, e.Box
	}

	rows := int64(c.Batch)
	weights := make([]float32, 0, 2*rows)
	if c.Guided {
		weights = append(weights, make([]float32, rows)...)
	}
	for range rows {
		weights = append(weights, 1)
	}
	*a.State = lcp.StaticState{
		Alpha: c.StaticScale, Subjects: refs, Boxes: boxes, Restrict: c.RegionRestrict, RowOf: kept.RowOf,
		Rows: torch.Persist(torch.New(weights)), LatentH: c.LatentH, LatentW: c.LatentW,
	}

	if !c.RegionRestrict {
		ipBoxes = nil
	}
	a.IP.Scale = c.IPScale
	if err := m.setImageTokens(a.IP, hidden, c.Uncond, ipBoxes, c.RowOf, c.Batch, c.LatentH, c.LatentW); err != nil {
		return err
	}

	b, mask, emb := m.groundingRows(phrases, boxes, slots, c.Guided)
	st := m.Options.Zeros(b.Size(0), gligen.MaxObjects, a.Meta.StaticDim)
	if len(statics) > 0 {
		st = m.slotted(torch.Cat(statics, 0).ToOptions(m.Options), slots) // [K, Ds] -> [B, 30, Ds]
		if c.Guided {
			st = torch.Cat([]*torch.Tensor{st, st}, 0)
		}
	}
	objs := torch.Persist(a.Layout.Forward(b, mask, emb, st))
	a.Grounding.Set(objs, c.GroundingBeta)
	return nil
}

// rows lists each conditional row's subjects: every subject in every
// row, or each in the row RowOf gives it (validated).
func (c AdapterCondition) rows() ([][]int, error) {
	if c.Guided && slices.ContainsFunc(c.Subjects, func(e EncodedSubject) bool { return e.Dropped }) {
		return nil, fmt.Errorf("adapter condition: dropped subjects are training's; classifier-free guidance makes its own unconditional rows")
	}
	if c.RowOf == nil {
		return everyRow(len(c.Subjects), c.Batch), nil
	}
	if len(c.RowOf) != len(c.Subjects) {
		return nil, fmt.Errorf("adapter condition: rows for %d subjects, %d subjects", len(c.RowOf), len(c.Subjects))
	}
	if c.Guided {
		return nil, fmt.Errorf("adapter condition: subjects set per row do not take classifier-free guidance")
	}
	rows, err := unet.RowSubjects(c.RowOf, c.Batch)
	if err != nil {
		return nil, fmt.Errorf("adapter condition: %w", err)
	}
	for r, subjects := range rows {
		if len(subjects) > gligen.MaxObjects {
			return nil, fmt.Errorf("adapter condition: row %d has %d subjects, the grounding takes at most %d", r, len(subjects), gligen.MaxObjects)
		}
	}
	return rows, nil
}

// ResetAdapter clears every per-run state of a.
func (m *Model) ResetAdapter(a *lcp.Adapter) {
	a.IP.ClearCondition()
	if c := a.Grounding.Condition(); c.Objs != nil {
		c.Objs.Free()
	}
	a.Grounding.Clear()
	for _, ref := range a.State.Subjects {
		ref.Free()
	}
	if a.State.Rows != nil {
		a.State.Rows.Free()
	}
	*a.State = lcp.StaticState{}
}

// refine runs the static detail refiner on the subjects' whitened views
// at the generation's size, in one pass.
func (m *Model) refine(subjects []SubjectViews, w, h int) []*lcp.Reference {
	s := torch.NewScope()
	defer s.Close()
	pixels := make([]*torch.Tensor, len(subjects))
	masks := make([]*torch.Tensor, len(subjects))
	prompts := make([]string, len(subjects))
	for k, v := range subjects {
		pixels[k] = toTensor(v.Static.Resize(w, h, data.Bicubic)) // [1, 3, H, W] in [-1, 1]
		if v.Mask == nil {
			masks[k] = torch.Ones(1, 1, int64(h), int64(w))
		} else {
			masks[k] = maskTensor(v.Mask.Resize(w, h, data.Nearest))
		}
		prompts[k] = "a photo of a " + v.Category
	}
	mean, _ := m.VAE.Encode(torch.Cat(pixels, 0).ToOptions(m.Options))
	latents := m.VAE.Config.ScaleLatents(mean)
	embeds := m.EncodePrompts(prompts, 0, nil)
	refs, err := lcp.RefineBatch(m.UNet, latents, torch.Cat(masks, 0).ToOptions(m.Options), embeds)
	if err != nil {
		panic(&torch.Error{Op: "static refiner", Msg: err.Error()})
	}
	return refs
}

// encodeViews is the image encoder's penultimate hidden states of every
// view, [V, S, E].
func encodeViews(enc Encoders, views []*data.RGB) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		var hs []*torch.Tensor
		for _, v := range views {
			out := enc.Vision.Forward(enc.Processor.Preprocess(v))
			hs = append(hs, out.Penultimate().Clone())
			out.Free()
		}
		return torch.Cat(hs, 0)
	})
}

// ZeroImageHidden is the penultimate hidden states of all-zero pixel
// values [1, S, E]: IP-Adapter's negative image prompt.
func ZeroImageHidden(enc Encoders) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		size := enc.Vision.Config.ImageSize
		out := enc.Vision.Forward(torch.Zeros(1, 3, size, size))
		defer out.Free()
		return out.Penultimate().Clone()
	})
}

// whiten replaces the background (mask 0) with white, as the static
// refiner and the DA-Encoder see their subject.
func whiten(img *data.RGB, mask *data.Gray) *data.RGB {
	if mask == nil {
		return img
	}
	out := &data.RGB{W: img.W, H: img.H, Pix: append([]uint8(nil), img.Pix...)}
	for i, v := range mask.Pix {
		if v == 0 {
			out.Pix[3*i], out.Pix[3*i+1], out.Pix[3*i+2] = 255, 255, 255
		}
	}
	return out
}

func maskOf(s Subject, view int) *data.Gray {
	if s.Masks == nil {
		return nil
	}
	return s.Masks[view]
}

// toTensor is an image as [1, 3, H, W] in [-1, 1] (diffusers' VAE input).
func toTensor(img *data.RGB) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		px := torch.New(img.Pix, int64(img.H), int64(img.W), 3).To(torch.Float32)
		return px.Permute(2, 0, 1).Unsqueeze(0).DivScalar(127.5).SubScalar(1)
	})
}

// maskTensor is a mask as [1, 1, H, W] in {0, 1}.
func maskTensor(m *data.Gray) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		return torch.New(m.Pix, 1, 1, int64(m.H), int64(m.W)).GtScalar(0).To(torch.Float32)
	})
}
