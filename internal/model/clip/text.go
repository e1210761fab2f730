package clip

import (
	"fmt"
	"math"

	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// TextEncoder is transformers' CLIPTextModel: token and position
// embeddings, a stack of pre-norm transformer layers under a causal mask,
// and a final layer norm.
type TextEncoder struct {
	Config            TextConfig
	TokenEmbedding    *nn.Embedding // [vocab, D]
	PositionEmbedding *nn.Embedding // [positions, D]
	Layers            []*EncoderLayer
	FinalNorm         *nn.LayerNorm
}

// TextOutput is what Forward returns, as CLIPTextModel does with
// output_hidden_states=True. Free releases it.
type TextOutput struct {
	LastHidden *torch.Tensor   // final_layer_norm(Hidden[last]) [B, L, D]: SD's prompt_embeds
	Pooled     *torch.Tensor   // LastHidden at each prompt's end token [B, D]
	Hidden     []*torch.Tensor // the embeddings, then each layer's output, before the final norm [B, L, D]
}

// Penultimate is the hidden state before the last layer (hidden_states[-2]),
// without the final norm.
func (o TextOutput) Penultimate() *torch.Tensor { return o.Hidden[len(o.Hidden)-2] }

// Free releases every tensor of o.
func (o TextOutput) Free() {
	o.LastHidden.Free()
	o.Pooled.Free()
	nn.Free(o.Hidden)
}

// NewTextEncoder builds the encoder from the CLIPTextModel checkpoint at p
// (its keys start with "text_model."). cfg must be valid (LoadTextConfig
// checks it).
func NewTextEncoder(p nn.Path, cfg TextConfig) *TextEncoder {
	if err := cfg.Validate(); err != nil {
		panic(fmt.Sprintf("clip.NewTextEncoder: %v", err))
	}
	p = p.Sub("text_model")
	emb, d := p.Sub("embeddings"), cfg.HiddenSize
	m := &TextEncoder{
		Config:            cfg,
		TokenEmbedding:    nn.NewEmbedding(emb.Sub("token_embedding"), cfg.VocabSize, d),
		PositionEmbedding: nn.NewEmbedding(emb.Sub("position_embedding"), cfg.MaxPositionEmbeddings, d),
		FinalNorm:         nn.NewLayerNorm(p.Sub("final_layer_norm"), d, cfg.LayerNormEps),
	}
	for i := range cfg.NumHiddenLayers {
		m.Layers = append(m.Layers, NewEncoderLayer(p.Sub("encoder", "layers", i), cfg))
	}
	return m
}

// LoadTextEncoder reads config.json and the weights (model.safetensors, or
// the shards model.safetensors.index.json lists) of a transformers
// text_encoder directory, converting them to opts.
func LoadTextEncoder(dir string, opts torch.Options) (*TextEncoder, error) {
	return loadTower("text encoder", dir, LoadTextConfig, TextEncoderFromSource, opts)
}

// TextEncoderFromSource builds the encoder from weights named as
// transformers names them (a single-file checkpoint's, renamed).
func TextEncoderFromSource(src nn.Source, cfg TextConfig, opts torch.Options) (*TextEncoder, error) {
	// position_ids is a buffer (an arange) that older transformers saved.
	return towerFromSource("text encoder", src, cfg, NewTextEncoder, opts,
		func(key string) bool { return key == "text_model.embeddings.position_ids" })
}

// Free releases the encoder's parameters.
func (m *TextEncoder) Free() {
	ps := []*torch.Tensor{m.TokenEmbedding.Weight, m.PositionEmbedding.Weight, m.FinalNorm.Weight, m.FinalNorm.Bias}
	for _, l := range m.Layers {
		ps = append(ps, l.params()...)
	}
	nn.Free(ps)
}

// Forward encodes token ids [B, L] (i64, L at most max_position_embeddings)
// without an attention mask, as Stable Diffusion calls it.
func (m *TextEncoder) Forward(ids *torch.Tensor) TextOutput { return m.ForwardMasked(ids, nil) }

// ForwardMasked is Forward with an attention mask [B, L] (1 = token, 0 =
// padding) on top of the causal one, as CLIPModel runs it for metrics; nil
// for none. The mask changes only the hidden states at padded positions.
func (m *TextEncoder) ForwardMasked(ids, attentionMask *torch.Tensor) TextOutput {
	s := torch.NewScope()
	defer s.Close()
	if dev := m.TokenEmbedding.Weight.Device(); ids.Device() != dev {
		ids = ids.ToDevice(dev) // the tokenizer makes CPU ids
	}
	b, l := ids.Size(0), ids.Size(1)
	// Position ids are 0..L-1, so their embeddings are the first L rows.
	positions := m.PositionEmbedding.Weight.Narrow(0, 0, l) // [L, D]
	h := m.TokenEmbedding.Forward(ids).Add(positions)       // [B, L, D]
	mask := causalMask(l, ids.Device())                     // [L, L]
	if attentionMask != nil {
		// Query i attends to key j when j <= i and j is a token: [B, 1, L, L].
		keys := attentionMask.ToDevice(ids.Device()).NeScalar(0).View(b, 1, 1, l)
		mask = mask.LogicalAnd(keys)
	}
	hidden := []*torch.Tensor{h}
	for _, layer := range m.Layers {
		h = torch.Scoped(func() *torch.Tensor { return layer.Forward(h, mask) })
		hidden = append(hidden, h)
	}
	last := m.FinalNorm.Forward(h)
	out := TextOutput{LastHidden: s.Keep(last), Pooled: s.Keep(pool(last, m.poolIndex(ids)))}
	for _, h := range hidden {
		out.Hidden = append(out.Hidden, s.Keep(h))
	}
	return out
}

// PromptEmbeds is what diffusers' encode_prompt returns for clip_skip:
// the final norm of the hidden state clipSkip layers before the last
// (clipSkip 0 is LastHidden, 1 the penultimate layer).
func (m *TextEncoder) PromptEmbeds(out TextOutput, clipSkip int) *torch.Tensor {
	return m.FinalNorm.Forward(out.Hidden[len(out.Hidden)-1-clipSkip])
}

// causalMask lets query i attend to keys j <= i: bool [L, L], true = attend.
func causalMask(l int64, dev torch.Device) *torch.Tensor {
	i := torch.Options{Device: dev}.Arange(0, float64(l), 1)
	return i.Unsqueeze(1).Ge(i.Unsqueeze(0))
}

// poolIndex is the position of each prompt's end token [B]. Configs written
// before transformers read eos_token_id say 2 (SD 1.5's among them); for them
// transformers takes the largest id, which is CLIP's end token, and so do we.
func (m *TextEncoder) poolIndex(ids *torch.Tensor) *torch.Tensor {
	if m.Config.EOSTokenID == 2 {
		return ids.Argmax(-1)
	}
	// Argmax picks the first of equal maxima: the first end token.
	return ids.EqScalar(float64(m.Config.EOSTokenID)).To(torch.Int64).Argmax(-1)
}

// pool picks x[b, index[b]]: [B, L, D] -> [B, D].
func pool(x, index *torch.Tensor) *torch.Tensor {
	b, d := x.Size(0), x.Size(2)
	return x.Gather(1, index.View(b, 1, 1).Expand(b, 1, d)).Squeeze(1)
}

// EncoderLayer is transformers' CLIPEncoderLayer, a pre-norm transformer
// block.
type EncoderLayer struct {
	Norm1 *nn.LayerNorm
	Attn  *Attention
	Norm2 *nn.LayerNorm
	MLP   *MLP
}

// NewEncoderLayer loads the layer at p.
func NewEncoderLayer(p nn.Path, cfg TextConfig) *EncoderLayer {
	d := cfg.HiddenSize
	return &EncoderLayer{
		Norm1: nn.NewLayerNorm(p.Sub("layer_norm1"), d, cfg.LayerNormEps),
		Attn:  NewAttention(p.Sub("self_attn"), d, cfg.NumAttentionHeads),
		Norm2: nn.NewLayerNorm(p.Sub("layer_norm2"), d, cfg.LayerNormEps),
		MLP:   NewMLP(p.Sub("mlp"), d, cfg.IntermediateSize, activations[cfg.HiddenAct]),
	}
}

// Forward maps h [B, L, D] to [B, L, D]; mask is Attention's.
func (l *EncoderLayer) Forward(h, mask *torch.Tensor) *torch.Tensor {
	h = h.Add(l.Attn.Forward(l.Norm1.Forward(h), mask))
	return h.Add(l.MLP.Forward(l.Norm2.Forward(h)))
}

func (l *EncoderLayer) params() []*torch.Tensor {
	return []*torch.Tensor{
		l.Norm1.Weight, l.Norm1.Bias, l.Norm2.Weight, l.Norm2.Bias,
		l.Attn.Q.Weight, l.Attn.Q.Bias, l.Attn.K.Weight, l.Attn.K.Bias,
		l.Attn.V.Weight, l.Attn.V.Bias, l.Attn.Out.Weight, l.Attn.Out.Bias,
		l.MLP.FC1.Weight, l.MLP.FC1.Bias, l.MLP.FC2.Weight, l.MLP.FC2.Bias,
	}
}

// Attention is transformers' CLIPAttention: multi-head self-attention.
type Attention struct {
	Heads        int64
	Q, K, V, Out *nn.Linear
}

// NewAttention loads q_proj, k_proj, v_proj and out_proj at p.
func NewAttention(p nn.Path, dim, heads int64) *Attention {
	return &Attention{
		Heads: heads,
		Q:     nn.NewLinear(p.Sub("q_proj"), dim, dim, true),
		K:     nn.NewLinear(p.Sub("k_proj"), dim, dim, true),
		V:     nn.NewLinear(p.Sub("v_proj"), dim, dim, true),
		Out:   nn.NewLinear(p.Sub("out_proj"), dim, dim, true),
	}
}

// Forward maps x [B, L, D] to [B, L, D]. mask, nil or boolean (true =
// attend), broadcasts to [B, H, L, L].
func (a *Attention) Forward(x, mask *torch.Tensor) *torch.Tensor {
	b, l, d := x.Size(0), x.Size(1), x.Size(2)
	dh := d / a.Heads
	heads := func(t *torch.Tensor) *torch.Tensor { // [B, L, H*dh] -> [B, H, L, dh]
		return t.View(b, l, a.Heads, dh).Transpose(1, 2)
	}
	// transformers scales q, not the scores; doing the same keeps the last
	// bit (scaling the scores is off by up to 7e-7).
	q := heads(a.Q.Forward(x).MulScalar(math.Pow(float64(dh), -0.5)))
	k, v := heads(a.K.Forward(x)), heads(a.V.Forward(x))
	o := torch.Attention(q, k, v, mask, 1)                   // [B, H, L, dh]
	return a.Out.Forward(o.Transpose(1, 2).Reshape(b, l, d)) // heads merged: [B, L, D]
}

// MLP is transformers' CLIPMLP: fc2(act(fc1(x))).
type MLP struct {
	FC1, FC2 *nn.Linear
	Act      func(*torch.Tensor) *torch.Tensor
}

// NewMLP loads fc1 and fc2 at p.
func NewMLP(p nn.Path, dim, hidden int64, act func(*torch.Tensor) *torch.Tensor) *MLP {
	return &MLP{FC1: nn.NewLinear(p.Sub("fc1"), dim, hidden, true), FC2: nn.NewLinear(p.Sub("fc2"), hidden, dim, true), Act: act}
}

// Forward maps x [B, L, D] to [B, L, D].
func (m *MLP) Forward(x *torch.Tensor) *torch.Tensor { return m.FC2.Forward(m.Act(m.FC1.Forward(x))) }
