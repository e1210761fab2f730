package ipadapter

import (
	"fmt"
	"slices"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Adapter is an IP-Adapter Plus checkpoint attached to a UNet: the
// resampler that makes image tokens, and one Processor per cross-attention
// layer that attends to them.
type Adapter struct {
	Path      string // the checkpoint, for errors
	Resampler *Resampler
	// Layers are the cross-attention layers' processors in the
	// checkpoint's order: Layers[j] holds ip_adapter.(2j+1).
	Layers []*Processor
	// Scale is lambda, the weight of the image attention (diffusers'
	// set_ip_adapter_scale); 0 leaves the UNet's output as without adapter.
	Scale float64

	layers   []*unet.Attention // the attn2 layers, in the checkpoint's order
	previous []unet.Processor  // their processors before Attach
	attached bool
	cond     Condition                 // the adapter's own copies, less Uncond
	guided   []*torch.Tensor           // per subject cat(Uncond, Subjects) [2B, Q, C], with Uncond
	masks    map[int64][]*torch.Tensor // per layer size: the subjects' box masks
	params   []*torch.Tensor
}

// Load reads an IP-Adapter Plus safetensors file (the public
// ip-adapter-plus_sd15.safetensors layout, keys "image_proj.*" and
// "ip_adapter.N.*", or the same keys without those prefixes), builds its
// resampler and attaches its processors to u's cross-attention layers, with
// scale 1. The weights take the dtype and device of opts.
func Load(path string, u *unet.UNet, opts torch.Options) (a *Adapter, err error) {
	src, err := nn.Open(path)
	if err != nil {
		return nil, fmt.Errorf("ip-adapter: %w", err)
	}
	defer src.Close()
	return FromSource(path, src, u, opts)
}

// FromSource is Load from weights already open; path names them in errors.
func FromSource(path string, src nn.Source, u *unet.UNet, opts torch.Options) (a *Adapter, err error) {
	if _, ok := src.Shape("image_proj.latents"); !ok {
		if _, ok := src.Shape("latents"); !ok {
			if _, plain := src.Shape("image_proj.proj.weight"); plain {
				return nil, fmt.Errorf("ip-adapter %s: a plain IP-Adapter (image_proj.proj), not IP-Adapter Plus: only Plus is supported", path)
			}
			return nil, fmt.Errorf("ip-adapter %s: not an IP-Adapter Plus checkpoint: no image_proj.latents", path)
		}
		src = StateDictNames(src) // saved without the state dict's two top-level names
	}
	c, err := ResamplerConfigFromShapes(src, "image_proj.")
	if err != nil {
		return nil, fmt.Errorf("ip-adapter %s: %w", path, err)
	}
	if err := Fits(src, c, u); err != nil {
		return nil, fmt.Errorf("ip-adapter %s: %w", path, err)
	}
	defer torch.Recover(&err)
	l := nn.NewLoader("ip-adapter "+path, src, opts)
	a = New(l.Root(), u, c)
	a.Path = path
	a.params = l.Params()
	if err := l.Err(nil); err != nil {
		nn.Free(a.params)
		return nil, err
	}
	a.Attach()
	return a, nil
}

// Fits checks that a checkpoint's resampler and layers fit u.
func Fits(src nn.Source, c ResamplerConfig, u *unet.UNet) error {
	if cross := u.Config.CrossAttentionDim; c.OutputDim != cross {
		return fmt.Errorf("image tokens are %d wide (image_proj.proj_out), the UNet's cross_attention_dim is %d", c.OutputDim, cross)
	}
	if n, want := countLayers(src, "ip_adapter."), len(crossAttentionLayers(u)); n != want {
		return fmt.Errorf("%d cross-attention layers (ip_adapter.N.to_k_ip), the UNet has %d", n, want)
	}
	return nil
}

// New builds the adapter's modules under p ("image_proj", "ip_adapter.N"),
// unattached; the caller owns the loader that holds their weights.
func New(p nn.Path, u *unet.UNet, c ResamplerConfig) *Adapter {
	layers := crossAttentionLayers(u)
	cross := u.Config.CrossAttentionDim
	a := &Adapter{Scale: 1, layers: layers, masks: map[int64][]*torch.Tensor{}}
	a.Resampler = NewResampler(p.Sub("image_proj"), c)
	for j, attn := range layers {
		// Numbered over all of diffusers' attention processors, attn1 and
		// attn2 alternating: the cross-attention layers are the odd ones.
		q := p.Sub("ip_adapter", 2*j+1)
		inner := attn.ToK.Weight.Size(0)
		a.Layers = append(a.Layers, &Processor{
			adapter: a,
			ToKIP:   nn.NewLinear(q.Sub("to_k_ip"), cross, inner, false),
			ToVIP:   nn.NewLinear(q.Sub("to_v_ip"), cross, inner, false),
		})
	}
	return a
}

// StateDictNames presents a checkpoint saved without the state dict's
// top-level names under them: "latents" as "image_proj.latents", "1.to_k_ip.weight"
// as "ip_adapter.1.to_k_ip.weight".
func StateDictNames(src nn.Source) nn.Source {
	if _, ok := src.Shape("image_proj.latents"); ok {
		return src
	}
	names := map[string]string{}
	for _, k := range src.Keys() {
		first, _, _ := strings.Cut(k, ".")
		if strings.Trim(first, "0123456789") == "" {
			names["ip_adapter."+k] = k
		} else {
			names["image_proj."+k] = k
		}
	}
	return nn.Rename(src, names)
}

// crossAttentionLayers are u's attn2 layers in the order of diffusers'
// unet.attn_processors, which numbers the checkpoint: down blocks, then up
// blocks, then the mid block (the order UNet2DConditionModel registers
// them in, not the order they run).
func crossAttentionLayers(u *unet.UNet) []*unet.Attention {
	rank := func(name string) int {
		switch {
		case strings.HasPrefix(name, "down_blocks."):
			return 0
		case strings.HasPrefix(name, "up_blocks."):
			return 1
		default:
			return 2
		}
	}
	var out []*unet.Attention
	for _, b := range u.TransformerBlocks() {
		out = append(out, b.Attn2)
	}
	slices.SortStableFunc(out, func(x, y *unet.Attention) int { return rank(x.Name) - rank(y.Name) })
	return out
}

// countLayers counts the ip_adapter.N.to_k_ip weights under prefix.
func countLayers(src nn.Source, prefix string) int {
	n := 0
	for _, k := range src.Keys() {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		index, name, ok := strings.Cut(rest, ".")
		if ok && name == "to_k_ip.weight" && strings.Trim(index, "0123456789") == "" {
			n++
		}
	}
	return n
}

// Attach installs the adapter's processors on its cross-attention layers
// (Load does); it remembers the processors it replaces for Detach.
func (a *Adapter) Attach() {
	if a.attached {
		return
	}
	a.previous = make([]unet.Processor, len(a.layers))
	for j, attn := range a.layers {
		a.previous[j] = attn.Processor
		attn.Processor = a.Layers[j]
	}
	a.attached = true
}

// Detach gives the cross-attention layers back the processors they had
// before Attach: the UNet computes exactly as without the adapter.
func (a *Adapter) Detach() {
	if !a.attached {
		return
	}
	for j, attn := range a.layers {
		attn.Processor = a.previous[j]
	}
	a.previous = nil
	a.attached = false
}

// Free detaches the adapter and releases its weights and condition.
func (a *Adapter) Free() {
	a.Detach()
	a.ClearCondition()
	nn.Free(a.params)
}

// ImageTokens distils one subject into image tokens [1, Q, C] from its
// reference views' image-encoder hidden states [V, S, E] (penultimate
// layer): the views' tokens are concatenated before the resampler, so its
// queries gather one identity from all of them.
func (a *Adapter) ImageTokens(hidden *torch.Tensor) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		s := hidden.Shape()
		return a.Resampler.Forward(hidden.Reshape(1, s[0]*s[1], s[2]))
	})
}

// SetCondition sets the image tokens (and boxes) the next UNet calls
// attend to; the adapter keeps its own copies until ClearCondition, still in
// the autograd graph when the tokens are (training the resampler).
func (a *Adapter) SetCondition(c Condition) error {
	if err := a.check(c); err != nil {
		return fmt.Errorf("ip-adapter: %w", err)
	}
	a.ClearCondition()
	a.cond = Condition{Boxes: slices.Clone(c.Boxes), LatentH: c.LatentH, LatentW: c.LatentW, RowOf: slices.Clone(c.RowOf)}
	for k, t := range c.Subjects {
		a.cond.Subjects = append(a.cond.Subjects, torch.Persist(t.Clone()))
		if c.Uncond != nil {
			a.guided = append(a.guided, torch.Persist(torch.Cat([]*torch.Tensor{c.Uncond[k], t}, 0)))
		}
	}
	return nil
}

func (a *Adapter) check(c Condition) error {
	if len(c.Subjects) == 0 {
		return fmt.Errorf("a condition needs at least one subject's tokens")
	}
	batch, width := c.Subjects[0].Size(0), a.Resampler.Config.OutputDim
	for k, t := range c.Subjects {
		if s := t.Shape(); len(s) != 3 || s[0] != batch || s[2] != width {
			return fmt.Errorf("subject %d's tokens are %v, want [%d, Q, %d]", k, s, batch, width)
		}
	}
	if c.Uncond != nil {
		if len(c.Uncond) != len(c.Subjects) {
			return fmt.Errorf("%d unconditional token sets for %d subjects", len(c.Uncond), len(c.Subjects))
		}
		for k, t := range c.Uncond {
			if s, want := t.Shape(), c.Subjects[k].Shape(); !slices.Equal(s, want) {
				return fmt.Errorf("subject %d's unconditional tokens are %v, its tokens %v", k, s, want)
			}
		}
	}
	if c.RowOf != nil {
		switch {
		case len(c.RowOf) != len(c.Subjects):
			return fmt.Errorf("rows for %d subjects, %d subjects", len(c.RowOf), len(c.Subjects))
		case batch != 1:
			return fmt.Errorf("subjects set per row have tokens [1, Q, C], got a batch of %d", batch)
		case c.Uncond != nil:
			return fmt.Errorf("subjects set per row take no unconditional tokens")
		}
	}
	if c.Boxes != nil {
		if len(c.Boxes) != len(c.Subjects) {
			return fmt.Errorf("%d boxes for %d subjects", len(c.Boxes), len(c.Subjects))
		}
		if c.LatentH <= 0 || c.LatentW <= 0 {
			return fmt.Errorf("boxes need the latent size, got %dx%d", c.LatentH, c.LatentW)
		}
	}
	return nil
}

// ClearCondition drops the image tokens: the layers then attend to the
// text only.
func (a *Adapter) ClearCondition() {
	for _, ts := range [][]*torch.Tensor{a.cond.Subjects, a.guided} {
		for _, t := range ts {
			t.Free()
		}
	}
	for _, ms := range a.masks {
		for _, m := range ms {
			m.Free()
		}
	}
	a.cond, a.guided = Condition{}, nil
	clear(a.masks)
}
