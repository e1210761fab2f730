// Package dino is the self-supervised DINO ViT (Caron et al. 2021) whose
// class token DreamBooth's DINO score compares: facebookresearch/dino's
// vision_transformer.VisionTransformer without a head, as hubconf's
// dino_vits16 builds it, read from the published checkpoints' key names
// (dino_deitsmall16_pretrain.pth: cls_token, pos_embed, patch_embed.proj,
// blocks.N.*, norm).
package dino

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Config shapes the transformer. The checkpoint's shapes give everything
// but the number of heads (ConfigFromShapes).
type Config struct {
	PatchSize    int64
	InChannels   int64
	EmbedDim     int64
	Depth        int
	NumHeads     int64
	MLPHidden    int64 // embed_dim * mlp_ratio
	Positions    int64 // pos_embed rows: the patches of the training size, plus the class token
	LayerNormEps float64
}

// headDim is the width of one attention head in every published DINO ViT
// (ViT-S 384 / 6, ViT-B 768 / 12): the default when the caller does not
// say how many heads there are.
const headDim = 64

// ConfigFromShapes reads the config off a checkpoint's shapes. heads is the
// number of attention heads, which no shape records; 0 means embed_dim / 64,
// right for dino_vits8/16 and dino_vitb8/16.
func ConfigFromShapes(src nn.Source, heads int64) (Config, error) {
	shape := func(key string, dims int) ([]int64, error) {
		s, ok := src.Shape(key)
		if !ok {
			return nil, fmt.Errorf("dino: checkpoint lacks %s", key)
		}
		if len(s) != dims {
			return nil, fmt.Errorf("dino: %s is %v, want %d dims", key, s, dims)
		}
		return s, nil
	}
	patch, err := shape("patch_embed.proj.weight", 4) // [D, C, P, P]
	if err != nil {
		return Config{}, err
	}
	pos, err := shape("pos_embed", 3) // [1, 1 + patches, D]
	if err != nil {
		return Config{}, err
	}
	fc1, err := shape("blocks.0.mlp.fc1.weight", 2) // [hidden, D]
	if err != nil {
		return Config{}, err
	}
	cfg := Config{
		PatchSize: patch[2], InChannels: patch[1], EmbedDim: patch[0], Depth: countBlocks(src),
		NumHeads: heads, MLPHidden: fc1[0], Positions: pos[1],
		LayerNormEps: 1e-6, // vit_small/vit_base: partial(nn.LayerNorm, eps=1e-6)
	}
	if cfg.NumHeads == 0 {
		cfg.NumHeads = cfg.EmbedDim / headDim
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("dino: %w", err)
	}
	return cfg, nil
}

// countBlocks is one more than the largest N of the blocks.N.* keys.
func countBlocks(src nn.Source) int {
	n := 0
	for _, k := range src.Keys() {
		rest, ok := strings.CutPrefix(k, "blocks.")
		if !ok {
			continue
		}
		i, err := strconv.Atoi(rest[:max(strings.IndexByte(rest, '.'), 0)])
		if err == nil {
			n = max(n, i+1)
		}
	}
	return n
}

// Validate reports a size that is missing or inconsistent.
func (c Config) Validate() error {
	if c.PatchSize <= 0 || c.InChannels <= 0 || c.EmbedDim <= 0 || c.Depth <= 0 || c.MLPHidden <= 0 || c.Positions < 2 {
		return fmt.Errorf("config %+v has a size <= 0", c)
	}
	if c.NumHeads <= 0 || c.EmbedDim%c.NumHeads != 0 {
		return fmt.Errorf("embed_dim %d is not a positive multiple of %d heads", c.EmbedDim, c.NumHeads)
	}
	if g := c.grid(); g*g != c.Positions-1 {
		return fmt.Errorf("pos_embed has %d patch positions, not a square grid", c.Positions-1)
	}
	return nil
}

// grid is the side of the position embeddings' patch grid (14 for 224 /
// 16), as DINO's int(math.sqrt(N)).
func (c Config) grid() int64 { return int64(math.Sqrt(float64(c.Positions - 1))) }

// Model is the ViT, up to the final norm (num_classes=0: no head).
type Model struct {
	Config   Config
	PatchW   *torch.Tensor // patch_embed.proj conv kernel [D, C, P, P], stride P
	PatchB   *torch.Tensor // [D]
	ClsToken *torch.Tensor // [1, 1, D]
	PosEmbed *torch.Tensor // [1, 1 + patches, D]
	Blocks   []*Block
	Norm     *nn.LayerNorm
}

// New builds the model from the checkpoint at p. cfg must be valid.
func New(p nn.Path, cfg Config) *Model {
	if err := cfg.Validate(); err != nil {
		panic(fmt.Sprintf("dino.New: %v", err))
	}
	d := cfg.EmbedDim
	pe := p.Sub("patch_embed", "proj")
	m := &Model{
		Config:   cfg,
		PatchW:   pe.Param("weight", d, cfg.InChannels, cfg.PatchSize, cfg.PatchSize),
		PatchB:   pe.Param("bias", d),
		ClsToken: p.Param("cls_token", 1, 1, d),
		PosEmbed: p.Param("pos_embed", 1, cfg.Positions, d),
		Norm:     nn.NewLayerNorm(p.Sub("norm"), d, cfg.LayerNormEps),
	}
	for i := range cfg.Depth {
		m.Blocks = append(m.Blocks, NewBlock(p.Sub("blocks", i), cfg))
	}
	return m
}

// Load reads a DINO checkpoint saved as safetensors under the original key
// names, converting it to opts; heads as in ConfigFromShapes. Every key
// must be used, as hubconf's load_state_dict(strict=True) demands.
func Load(path string, heads int64, opts torch.Options) (*Model, error) {
	src, err := nn.Open(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	m, err := FromSource(src, heads, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// FromSource builds the model from weights named as DINO names them.
func FromSource(src nn.Source, heads int64, opts torch.Options) (*Model, error) {
	cfg, err := ConfigFromShapes(src, heads)
	if err != nil {
		return nil, err
	}
	loader := nn.NewLoader("DINO ViT", src, opts)
	var m *Model
	if err := torch.Try(func() { m = New(loader.Root(), cfg) }); err != nil {
		nn.Free(loader.Params())
		return nil, err
	}
	if err := loader.Err(nil); err != nil {
		nn.Free(loader.Params())
		return nil, err
	}
	return m, nil
}

// Free releases the model's parameters.
func (m *Model) Free() {
	ps := []*torch.Tensor{m.PatchW, m.PatchB, m.ClsToken, m.PosEmbed, m.Norm.Weight, m.Norm.Bias}
	for _, b := range m.Blocks {
		ps = append(ps, b.params()...)
	}
	nn.Free(ps)
}

// Output holds what Forward computes. Free releases it.
type Output struct {
	Tokens *torch.Tensor   // prepare_tokens: [CLS; patches] + position embeddings [B, 1+n, D]
	Blocks []*torch.Tensor // each block's output [B, 1+n, D]
	Norm   *torch.Tensor   // the final norm of all tokens [B, 1+n, D]
	CLS    *torch.Tensor   // Norm's class token [B, D]: the model's output
}

// Free releases every tensor of o.
func (o Output) Free() {
	nn.Free(append([]*torch.Tensor{o.Tokens, o.Norm, o.CLS}, o.Blocks...))
}

// Forward runs the model on preprocessed images [B, C, H, W] (Preprocess),
// moved to the model's device and dtype. H and W must be multiples of the
// patch size; other sizes than the training one get interpolated position
// embeddings.
func (m *Model) Forward(pixels *torch.Tensor) Output {
	s := torch.NewScope()
	defer s.Close()
	p := m.Config.PatchSize
	if pixels.Dim() != 4 || pixels.Size(1) != m.Config.InChannels || pixels.Size(2)%p != 0 || pixels.Size(3)%p != 0 {
		panic(&torch.Error{Op: "dino", Inputs: pixels.String(),
			Msg: fmt.Sprintf("want pixels [B %d H W] with H and W multiples of %d", m.Config.InChannels, p)})
	}
	pixels = pixels.ToOptions(torch.OptionsOf(m.PatchW))
	b, d := pixels.Size(0), m.Config.EmbedDim

	patches := torch.Conv2d(pixels, m.PatchW, m.PatchB, torch.ConvOptions{Stride: torch.Square2(p)})
	patches = patches.Flatten(2, 3).Transpose(1, 2) // [B, D, h, w] -> [B, h*w, D]
	x := torch.Cat([]*torch.Tensor{m.ClsToken.Expand(b, 1, d), patches}, 1)
	x = x.Add(m.posEmbed(patches.Size(1), pixels.Size(2), pixels.Size(3)))

	out := Output{Tokens: s.Keep(x)}
	for _, blk := range m.Blocks {
		x = torch.Scoped(func() *torch.Tensor { return blk.Forward(x) })
		out.Blocks = append(out.Blocks, s.Keep(x))
	}
	norm := m.Norm.Forward(x)
	out.Norm = s.Keep(norm)
	out.CLS = s.Keep(norm.Select(1, 0).Contiguous())
	return out
}

// Embed is the model's output, the normalised class token [B, D], which the
// DINO score compares.
func (m *Model) Embed(pixels *torch.Tensor) *torch.Tensor {
	out := m.Forward(pixels)
	cls := out.CLS
	out.CLS = nil
	out.Free()
	return cls
}

// posEmbed is DINO's interpolate_pos_encoding for npatch patch tokens of an
// h x w image: the stored embeddings when they fit (same count, square
// image), otherwise the patch grid resized bicubically to the image's
// patch grid. DINO asks F.interpolate for a scale factor rather than a
// size, with 0.1 added to the target grid so that the factor times the
// stored grid cannot fall just below the wanted whole number; the factor
// (not the sizes' ratio) then also sets where samples fall, so it is passed
// on as is.
func (m *Model) posEmbed(npatch, h, w int64) *torch.Tensor {
	n := m.Config.Positions - 1
	if npatch == n && h == w {
		return m.PosEmbed
	}
	d, grid := m.Config.EmbedDim, m.Config.grid()
	sqrtN := math.Sqrt(float64(n))
	h0 := float64(h/m.Config.PatchSize) + 0.1
	w0 := float64(w/m.Config.PatchSize) + 0.1
	patch := m.PosEmbed.Narrow(1, 1, n).Reshape(1, grid, grid, d).Permute(0, 3, 1, 2)
	patch = torch.Interpolate(patch, torch.InterpolateOptions{Mode: torch.Bicubic, Scale: [2]float64{h0 / sqrtN, w0 / sqrtN}})
	if got, want := patch.Shape()[2:], []int64{int64(h0), int64(w0)}; !slices.Equal(got, want) {
		panic(fmt.Sprintf("dino: position grid interpolated to %v, want %v", got, want)) // DINO asserts this
	}
	patch = patch.Permute(0, 2, 3, 1).Reshape(1, -1, d)
	return torch.Cat([]*torch.Tensor{m.PosEmbed.Narrow(1, 0, 1), patch}, 1)
}

// Block is DINO's pre-norm transformer block.
type Block struct {
	Norm1     *nn.LayerNorm
	QKV       *nn.Linear // one matrix: rows [q; k; v], heads contiguous within each
	Proj      *nn.Linear
	Norm2     *nn.LayerNorm
	FC1, FC2  *nn.Linear
	Heads     int64
	headScale float64
}

// NewBlock loads the block at p.
func NewBlock(p nn.Path, cfg Config) *Block {
	d := cfg.EmbedDim
	attn, mlp := p.Sub("attn"), p.Sub("mlp")
	return &Block{
		Norm1:     nn.NewLayerNorm(p.Sub("norm1"), d, cfg.LayerNormEps),
		QKV:       nn.NewLinear(attn.Sub("qkv"), d, 3*d, true),
		Proj:      nn.NewLinear(attn.Sub("proj"), d, d, true),
		Norm2:     nn.NewLayerNorm(p.Sub("norm2"), d, cfg.LayerNormEps),
		FC1:       nn.NewLinear(mlp.Sub("fc1"), d, cfg.MLPHidden, true),
		FC2:       nn.NewLinear(mlp.Sub("fc2"), cfg.MLPHidden, d, true),
		Heads:     cfg.NumHeads,
		headScale: math.Pow(float64(d/cfg.NumHeads), -0.5),
	}
}

// Forward maps x [B, N, D] to [B, N, D].
func (b *Block) Forward(x *torch.Tensor) *torch.Tensor {
	x = x.Add(b.attention(b.Norm1.Forward(x)))
	return x.Add(b.FC2.Forward(b.FC1.Forward(b.Norm2.Forward(x)).GELU())) // nn.GELU: the erf form
}

// attention is DINO's Attention: softmax(q k^T / sqrt(head_dim)) v, heads
// split from the qkv projection as reshape(B, N, 3, heads, head_dim).
func (b *Block) attention(x *torch.Tensor) *torch.Tensor {
	n, l, d := x.Size(0), x.Size(1), x.Size(2)
	qkv := b.QKV.Forward(x).View(n, l, 3, b.Heads, d/b.Heads).Permute(2, 0, 3, 1, 4) // [3, B, H, N, dh]
	o := torch.Attention(qkv.Select(0, 0), qkv.Select(0, 1), qkv.Select(0, 2), nil, b.headScale)
	return b.Proj.Forward(o.Transpose(1, 2).Reshape(n, l, d))
}

func (b *Block) params() []*torch.Tensor {
	return []*torch.Tensor{
		b.Norm1.Weight, b.Norm1.Bias, b.QKV.Weight, b.QKV.Bias, b.Proj.Weight, b.Proj.Bias,
		b.Norm2.Weight, b.Norm2.Bias, b.FC1.Weight, b.FC1.Bias, b.FC2.Weight, b.FC2.Bias,
	}
}
