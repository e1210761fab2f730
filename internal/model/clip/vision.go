package clip

import (
	"fmt"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// VisionEncoder is transformers' CLIPVisionModelWithProjection, a ViT: the
// image cut into patches, each embedded by one strided convolution, a
// learned class token in front, position embeddings added, a layer norm,
// the same pre-norm transformer layers as the text tower (without a mask),
// and the class token's final norm projected to the joint embedding space.
type VisionEncoder struct {
	Config            VisionConfig
	PatchEmbedding    *torch.Tensor // conv kernel [D, C, P, P], stride P, no bias
	ClassEmbedding    *torch.Tensor // [D]
	PositionEmbedding *torch.Tensor // [1 + patches, D]
	PreNorm           *nn.LayerNorm // transformers spells it pre_layrnorm
	Layers            []*EncoderLayer
	PostNorm          *nn.LayerNorm
	Projection        *nn.Linear // [projection_dim, D], no bias
}

// VisionOutput is what Forward returns, as CLIPVisionModelWithProjection
// does with output_hidden_states=True. Free releases it.
type VisionOutput struct {
	ImageEmbeds *torch.Tensor   // visual_projection(post_layernorm(class token)) [B, projection_dim]
	Hidden      []*torch.Tensor // the embeddings after pre_layrnorm, then each layer's output [B, 1+patches, D]
}

// LastHidden is the last layer's output (last_hidden_state, without the
// final norm).
func (o VisionOutput) LastHidden() *torch.Tensor { return o.Hidden[len(o.Hidden)-1] }

// Penultimate is hidden_states[-2], the layer before the last: the image
// tokens IP-Adapter Plus feeds its resampler.
func (o VisionOutput) Penultimate() *torch.Tensor { return o.Hidden[len(o.Hidden)-2] }

// Free releases every tensor of o.
func (o VisionOutput) Free() {
	o.ImageEmbeds.Free()
	nn.Free(o.Hidden)
}

// NewVisionEncoder builds the encoder from the CLIPVisionModelWithProjection
// checkpoint at p (keys "vision_model.*" and "visual_projection.weight").
// cfg must be valid (LoadVisionConfig checks it).
func NewVisionEncoder(p nn.Path, cfg VisionConfig) *VisionEncoder {
	if err := cfg.Validate(); err != nil {
		panic(fmt.Sprintf("clip.NewVisionEncoder: %v", err))
	}
	vm, d := p.Sub("vision_model"), cfg.HiddenSize
	emb := vm.Sub("embeddings")
	m := &VisionEncoder{
		Config:            cfg,
		PatchEmbedding:    emb.Sub("patch_embedding").Param("weight", d, cfg.NumChannels, cfg.PatchSize, cfg.PatchSize),
		ClassEmbedding:    emb.Param("class_embedding", d),
		PositionEmbedding: emb.Sub("position_embedding").Param("weight", 1+cfg.Patches(), d),
		PreNorm:           nn.NewLayerNorm(vm.Sub("pre_layrnorm"), d, cfg.LayerNormEps),
		PostNorm:          nn.NewLayerNorm(vm.Sub("post_layernorm"), d, cfg.LayerNormEps),
		Projection:        nn.NewLinear(p.Sub("visual_projection"), d, cfg.ProjectionDim, false),
	}
	for i := range cfg.NumHiddenLayers {
		m.Layers = append(m.Layers, NewEncoderLayer(vm.Sub("encoder", "layers", i), cfg.layerConfig()))
	}
	return m
}

// LoadVisionEncoder reads config.json and the weights (model.safetensors, or
// the shards model.safetensors.index.json lists) of a transformers
// image_encoder directory, converting them to opts.
func LoadVisionEncoder(dir string, opts torch.Options) (*VisionEncoder, error) {
	return loadTower("image encoder", dir, LoadVisionConfig, VisionEncoderFromSource, opts)
}

// VisionEncoderFromSource builds the encoder from weights named as
// transformers names them.
func VisionEncoderFromSource(src nn.Source, cfg VisionConfig, opts torch.Options) (*VisionEncoder, error) {
	return towerFromSource("image encoder", src, cfg, NewVisionEncoder, opts, ignoredVisionKey)
}

// ignoredVisionKey excuses what a vision checkpoint may hold besides the
// tower: the position_ids buffer older transformers saved, and the text
// tower of a whole CLIPModel, which CLIPVisionModelWithProjection skips too.
func ignoredVisionKey(key string) bool {
	return key == "vision_model.embeddings.position_ids" ||
		strings.HasPrefix(key, "text_model.") || key == "text_projection.weight" || key == "logit_scale"
}

// Free releases the encoder's parameters.
func (m *VisionEncoder) Free() {
	ps := []*torch.Tensor{
		m.PatchEmbedding, m.ClassEmbedding, m.PositionEmbedding,
		m.PreNorm.Weight, m.PreNorm.Bias, m.PostNorm.Weight, m.PostNorm.Bias, m.Projection.Weight,
	}
	for _, l := range m.Layers {
		ps = append(ps, l.params()...)
	}
	nn.Free(ps)
}

// Forward encodes preprocessed images, pixels [B, C, S, S] with S the
// config's image_size, moved to the encoder's device and dtype.
func (m *VisionEncoder) Forward(pixels *torch.Tensor) VisionOutput {
	s := torch.NewScope()
	defer s.Close()
	if want := []int64{m.Config.NumChannels, m.Config.ImageSize, m.Config.ImageSize}; pixels.Dim() != 4 ||
		pixels.Size(1) != want[0] || pixels.Size(2) != want[1] || pixels.Size(3) != want[2] {
		panic(&torch.Error{Op: "clip vision encoder", Inputs: pixels.String(),
			Msg: fmt.Sprintf("want pixels [B %d %d %d]", want[0], want[1], want[2])})
	}
	pixels = pixels.ToOptions(torch.OptionsOf(m.PatchEmbedding))

	b, d := pixels.Size(0), m.Config.HiddenSize
	patches := torch.Conv2d(pixels, m.PatchEmbedding, nil, torch.ConvOptions{Stride: torch.Square2(m.Config.PatchSize)})
	patches = patches.Flatten(2, 3).Transpose(1, 2) // [B, D, n, n] -> [B, n*n, D]
	class := m.ClassEmbedding.Expand(b, 1, d)
	h := torch.Cat([]*torch.Tensor{class, patches}, 1).Add(m.PositionEmbedding)
	h = m.PreNorm.Forward(h)

	hidden := []*torch.Tensor{h}
	for _, layer := range m.Layers {
		h = torch.Scoped(func() *torch.Tensor { return layer.Forward(h, nil) })
		hidden = append(hidden, h)
	}
	pooled := m.PostNorm.Forward(h.Select(1, 0)) // the class token [B, D]
	out := VisionOutput{ImageEmbeds: s.Keep(m.Projection.Forward(pooled))}
	for _, h := range hidden {
		out.Hidden = append(out.Hidden, s.Keep(h))
	}
	return out
}
