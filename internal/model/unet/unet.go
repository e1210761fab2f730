package unet

import (
	"fmt"
	"path/filepath"

	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// UNet is diffusers' UNet2DConditionModel: it predicts the noise in a latent
// at a timestep, conditioned on text embeddings.
type UNet struct {
	Config        Config
	TimeProj      Timesteps
	TimeEmbedding *TimestepEmbedding
	ConvIn        *nn.Conv2d
	DownBlocks    []*DownBlock
	MidBlock      *MidBlock
	UpBlocks      []*UpBlock
	ConvNormOut   *nn.GroupNorm
	ConvOut       *nn.Conv2d

	// Tap, when set, sees intermediate results under diffusers' module
	// names ("conv_in.out", "down_blocks.0.hidden_states", "mid_block.out", ...).
	Tap func(name string, x *torch.Tensor)

	params []*torch.Tensor
	named  map[string]*torch.Tensor
}

// New builds the network from c, reading weights through p.
func New(p nn.Path, c Config) *UNet {
	ch := c.BlockOutChannels
	n := len(ch)
	timeDim := ch[0] * 4
	u := &UNet{
		Config:        c,
		TimeProj:      Timesteps{Dim: ch[0], FlipSinToCos: c.FlipSinToCos, FreqShift: c.FreqShift},
		TimeEmbedding: NewTimestepEmbedding(p.Sub("time_embedding"), ch[0], timeDim),
		ConvIn:        nn.NewConv2d(p.Sub("conv_in"), c.InChannels, ch[0], c.ConvInKernel, nn.Padding(c.ConvInKernel/2)),
		ConvNormOut:   nn.NewGroupNorm(p.Sub("conv_norm_out"), c.NormNumGroups, ch[0], c.NormEps),
		ConvOut:       nn.NewConv2d(p.Sub("conv_out"), ch[0], c.OutChannels, c.ConvOutKernel, nn.Padding(c.ConvOutKernel/2)),
	}
	block := func(i int, in, out int64, cross bool) blockConfig {
		return blockConfig{
			In: in, Out: out, TimeEmb: timeDim, Layers: c.LayersPerBlock, Cross: cross,
			Groups: c.NormNumGroups, Eps: c.NormEps,
			Transformer: TransformerConfig{
				Channels: out, Heads: c.Heads[i], ContextDim: c.CrossAttentionDim, Groups: c.NormNumGroups,
				Layers: c.TransformerLayers[i], LinearProjection: c.UseLinearProjection,
			},
		}
	}
	out := ch[0]
	for i, kind := range c.DownBlockTypes {
		in := out
		out = ch[i]
		u.DownBlocks = append(u.DownBlocks, newDownBlock(p.Sub("down_blocks", i),
			block(i, in, out, kind == "CrossAttnDownBlock2D"), i < n-1, c.DownsamplePadding))
	}
	mid := block(n-1, ch[n-1], ch[n-1], true)
	mid.Layers = 1
	u.MidBlock = newMidBlock(p.Sub("mid_block"), mid, c.MidBlockScaleFactor)
	prevOut := ch[n-1]
	for i, kind := range c.UpBlockTypes {
		rev := n - 1 - i // the up path walks the channels backwards
		out := ch[rev]
		in := ch[max(rev-1, 0)]
		b := block(rev, in, out, kind == "CrossAttnUpBlock2D")
		b.PrevOut = prevOut
		b.Layers = c.LayersPerBlock + 1
		u.UpBlocks = append(u.UpBlocks, newUpBlock(p.Sub("up_blocks", i), b, i < n-1))
		prevOut = out
	}
	return u
}

// Load reads a diffusers unet/ folder: config.json and its weights.
func Load(dir string, opts torch.Options) (*UNet, error) {
	c, err := LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	src, err := nn.OpenWeights(dir, "diffusion_pytorch_model")
	if err != nil {
		return nil, fmt.Errorf("unet: %w", err)
	}
	defer src.Close()
	return FromSource(src, c, opts)
}

// FromSource builds the network from weights already named as diffusers names them.
func FromSource(src nn.Source, c Config, opts torch.Options) (u *UNet, err error) {
	defer torch.Recover(&err)
	l := nn.NewLoader("unet", src, opts)
	u = New(l.Root(), c)
	u.params, u.named = l.Params(), l.Named()
	if err := l.Err(nil); err != nil {
		u.Free()
		return nil, err
	}
	return u, nil
}

// NewRandom builds the network with every weight drawn from N(0, std^2):
// a stand-in of real size for benchmarks, with no checkpoint to download.
func NewRandom(c Config, seed uint64, std float64, opts torch.Options) *UNet {
	l := nn.NewLoader("unet", nn.Empty{}, opts)
	l.Init = nn.RandomInit(seed, std)
	u := New(l.Root(), c)
	u.params, u.named = l.Params(), l.Named()
	return u
}

// Free releases the weights.
func (u *UNet) Free() { nn.Free(u.params) }

// Params are the weights by their diffusers keys ("conv_in.weight", ...),
// the names Save writes and training selects by.
func (u *UNet) Params() map[string]*torch.Tensor { return u.named }

// SetGradientCheckpointing turns gradient checkpointing of every resnet
// and transformer on or off (diffusers' enable_gradient_checkpointing):
// training then keeps only the blocks' inputs and outputs and recomputes
// the rest in backward. It changes nothing while autograd is off. Leave it
// off for box guidance: guidance records attention maps on the way
// forward, which a recomputation would not hand back.
func (u *UNet) SetGradientCheckpointing(on bool) {
	for _, d := range u.DownBlocks {
		d.checkpointing = on
	}
	u.MidBlock.checkpointing = on
	for _, b := range u.UpBlocks {
		b.checkpointing = on
	}
}

// TransformerBlocks lists every transformer block, in module order (down,
// mid, up), for attaching adapters.
func (u *UNet) TransformerBlocks() []*BasicTransformerBlock {
	var out []*BasicTransformerBlock
	add := func(ts []*Transformer2D) {
		for _, t := range ts {
			out = append(out, t.Blocks...)
		}
	}
	for _, d := range u.DownBlocks {
		add(d.Attentions)
	}
	add(u.MidBlock.Attentions)
	for _, up := range u.UpBlocks {
		add(up.Attentions)
	}
	return out
}

// Attentions lists every attention layer (attn1 and attn2 of every
// transformer block), in module order, for swapping processors.
func (u *UNet) Attentions() []*Attention {
	var out []*Attention
	for _, b := range u.TransformerBlocks() {
		out = append(out, b.Attn1, b.Attn2)
	}
	return out
}

func (u *UNet) tap(name string, x *torch.Tensor) {
	if u.Tap != nil {
		u.Tap(name, x)
	}
}

// Forward predicts the noise in sample [B, C, H, W] at timesteps (a 0-dim
// or [B] tensor) given context [B, M, cross_attention_dim].
func (u *UNet) Forward(sample, timesteps, context *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		shape := sample.Shape()
		if timesteps.Dim() == 0 {
			timesteps = timesteps.Reshape(1)
		}
		timesteps = timesteps.Expand(shape[0])
		tEmb := u.TimeProj.Forward(timesteps).To(sample.DType()) // [B, C0]
		u.tap("time_proj.out", tEmb)
		emb := u.TimeEmbedding.Forward(tEmb) // [B, 4*C0]
		u.tap("time_embedding.out", emb)

		h := u.ConvIn.Forward(sample)
		u.tap("conv_in.out", h)
		skips := []*torch.Tensor{h}
		for i, d := range u.DownBlocks {
			out := d.Forward(h, emb, context)
			skips = append(skips, out...)
			h = out[len(out)-1]
			u.tap(fmt.Sprintf("down_blocks.%d.hidden_states", i), h)
		}
		h = u.MidBlock.Forward(h, emb, context)
		u.tap("mid_block.out", h)

		// Latents whose size is not a multiple of 2^upsamplers need their
		// upsamplers sized to the skip connections.
		factor := int64(1) << (len(u.UpBlocks) - 1)
		odd := shape[2]%factor != 0 || shape[3]%factor != 0
		for i, up := range u.UpBlocks {
			n := len(up.Resnets)
			res := skips[len(skips)-n:]
			skips = skips[:len(skips)-n]
			var size [2]int64
			if odd && up.Upsample != nil {
				next := skips[len(skips)-1].Shape()
				size = [2]int64{next[2], next[3]}
			}
			h = up.Forward(h, res, emb, context, size)
			u.tap(fmt.Sprintf("up_blocks.%d.out", i), h)
		}
		h = u.ConvNormOut.Forward(h)
		u.tap("conv_norm_out.out", h)
		return u.ConvOut.Forward(h.SiLU())
	})
}
