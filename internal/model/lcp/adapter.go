package lcp

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/model/gligen"
	"github.com/lcpdiff/lcpdiff/internal/model/ipadapter"
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// FormatVersion is the version of the adapter checkpoint layout.
const FormatVersion = 1

// metadataKey names the safetensors metadata entry that holds Meta as JSON.
const metadataKey = "lcp"

// Meta is the checkpoint's metadata block: what the tensors mean.
type Meta struct {
	Format    int                       `json:"format"`
	BaseModel string                    `json:"base_model"`
	Resampler ipadapter.ResamplerConfig `json:"resampler"`
	// StaticDim is the width of c_s, the static projection's output.
	StaticDim int64 `json:"static_dim"`
	// ImageTrained says the layout module's image branch and the static
	// projection were trained; a checkpoint assembled from public parts has
	// neither, and generation then leaves their tokens out.
	ImageTrained bool   `json:"layout_image_trained"`
	Step         int    `json:"step,omitempty"`
	Source       string `json:"source,omitempty"` // how it was made: "trained", "public parts"
}

// Adapter is every LCP-Diffusion parameter on top of a frozen UNet:
// dynamic attention and its resampler (IP-Adapter Plus layout), grounding
// attention (GLIGEN fusers), the layout-aware module, static attention in
// every attn1 and the static projection. Its checkpoint keys are the
// public ones where a public part exists (image_proj.*, ip_adapter.N.*,
// position_net.*, <block>.fuser.*) and static.<attn1>.*, static_projection.*
// for LCP's own.
type Adapter struct {
	Meta       Meta
	IP         *ipadapter.Adapter
	Grounding  *gligen.Grounding
	Layout     *Layout
	Static     []*StaticLayer
	Projection *StaticProjection
	State      *StaticState // what every StaticLayer reads; set per generation

	u      *unet.UNet
	named  map[string]*torch.Tensor
	params []*torch.Tensor
}

// New builds the adapter's modules for u under p, unattached.
func New(p nn.Path, u *unet.UNet, m Meta) *Adapter {
	ctx := u.Config.CrossAttentionDim
	a := &Adapter{Meta: m, u: u, State: &StaticState{}}
	a.IP = ipadapter.New(p, u, m.Resampler)
	a.Grounding = gligen.New(p, u)
	a.Layout = &Layout{
		Net:          a.Grounding.PositionNet,
		Image:        gligen.NewBranch(p.Sub("position_net"), "linears_image", "null_image_feature", m.StaticDim, a.Grounding.PositionNet.NullPosition.Size(0), ctx),
		ImageTrained: m.ImageTrained,
	}
	var width int64
	for i, b := range u.TransformerBlocks() {
		l := NewStaticLayer(p.Sub("static", b.Attn1.Name), b.Attn1, i)
		l.State = a.State
		a.Static = append(a.Static, l)
		width += b.Attn1.ToK.Weight.Size(1)
	}
	a.Projection = NewStaticProjection(p.Sub("static_projection"), width, m.StaticDim)
	return a
}

// Attach puts every part on the UNet: static attention on attn1,
// dynamic attention on attn2, the fusers between them.
func (a *Adapter) Attach() {
	for i, b := range a.u.TransformerBlocks() {
		a.Static[i].Base = b.Attn1.Processor
		b.Attn1.Processor = a.Static[i]
	}
	a.IP.Attach()
	a.Grounding.Attach()
}

// Detach takes every part off the UNet again.
func (a *Adapter) Detach() {
	a.Grounding.Detach()
	a.IP.Detach()
	DetachStatic(a.u, a.Static)
}

// Free detaches the adapter and releases its parameters.
func (a *Adapter) Free() {
	a.Detach()
	nn.Free(a.params)
}

// Params are the adapter's parameters by checkpoint key: what training
// optimises and Save writes.
func (a *Adapter) Params() map[string]*torch.Tensor { return a.named }

// Load reads an adapter checkpoint written by Save and attaches it to u.
func Load(path string, u *unet.UNet, opts torch.Options) (*Adapter, error) {
	f, err := torch.OpenSafetensors(path)
	if err != nil {
		return nil, fmt.Errorf("adapter: %w", err)
	}
	defer f.Close()
	raw, ok := f.Header.Metadata[metadataKey]
	if !ok {
		return nil, fmt.Errorf("adapter %s: no %q metadata: not an lcpdiff adapter checkpoint", path, metadataKey)
	}
	var m Meta
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return nil, fmt.Errorf("adapter %s: metadata: %w", path, err)
	}
	if m.Format != FormatVersion {
		return nil, fmt.Errorf("adapter %s: format %d, this lcpdiff reads format %d", path, m.Format, FormatVersion)
	}
	src, err := nn.OpenFiles(path)
	if err != nil {
		return nil, fmt.Errorf("adapter: %w", err)
	}
	defer src.Close()
	if err := ipadapter.Fits(src, m.Resampler, u); err != nil {
		return nil, fmt.Errorf("adapter %s: %w", path, err)
	}
	a, err := build("adapter "+path, src, false, u, m, opts)
	if err != nil {
		return nil, err
	}
	return a, nil
}

// FromParts assembles an adapter from public checkpoints: an IP-Adapter
// Plus file (ipPath) and a diffusers GLIGEN text-box unet/ folder
// (gligenDir); either may be empty. What no part provides starts at an
// initialisation that leaves the UNet's output unchanged: static attention
// with mu = 0, fusers with closed gates, IP layers with zero keys and
// values. Generation then works before any LCP training.
func FromParts(ipPath, gligenDir string, u *unet.UNet, opts torch.Options) (*Adapter, error) {
	var parts nn.Union
	m := Meta{Format: FormatVersion, StaticDim: u.Config.CrossAttentionDim, Source: "public parts"}
	m.Resampler = DefaultResampler(u.Config.CrossAttentionDim)
	if ipPath != "" {
		ip, err := nn.Open(ipPath)
		if err != nil {
			return nil, fmt.Errorf("ip-adapter: %w", err)
		}
		defer ip.Close()
		src := ipadapter.StateDictNames(ip)
		if m.Resampler, err = ipadapter.ResamplerConfigFromShapes(src, "image_proj."); err != nil {
			return nil, fmt.Errorf("ip-adapter %s: %w", ipPath, err)
		}
		if err := ipadapter.Fits(src, m.Resampler, u); err != nil {
			return nil, fmt.Errorf("ip-adapter %s: %w", ipPath, err)
		}
		parts = append(parts, src)
	}
	if gligenDir != "" {
		g, err := nn.OpenWeights(gligenDir, "diffusion_pytorch_model")
		if err != nil {
			return nil, fmt.Errorf("gligen: %w", err)
		}
		defer g.Close()
		parts = append(parts, nn.Only(g, gligen.IsKey))
	}
	return build("public parts", parts, true, u, m, opts)
}

// Fresh is an adapter to train from scratch on u, its resampler sized by
// r (whose EmbeddingDim must be the image encoder's width): every part at
// the inert initialisation FromParts gives what no public part provides.
func Fresh(u *unet.UNet, r ipadapter.ResamplerConfig, opts torch.Options) (*Adapter, error) {
	m := Meta{Format: FormatVersion, StaticDim: u.Config.CrossAttentionDim, Source: "fresh", Resampler: r}
	return build("fresh adapter", nn.Union{}, true, u, m, opts)
}

// build loads every part from src (initialising what it lacks when init is
// set) and attaches the adapter.
func build(what string, src nn.Source, init bool, u *unet.UNet, m Meta, opts torch.Options) (a *Adapter, err error) {
	l := nn.NewLoader(what, src, opts)
	if init {
		g := torch.NewGenerator(initSeed)
		defer g.Close()
		l.Init = Initial(g)
	}
	defer func() {
		if err != nil {
			nn.Free(l.Params())
		}
	}()
	defer torch.Recover(&err)
	a = New(l.Root(), u, m)
	if err := l.Err(nil); err != nil {
		return nil, err
	}
	a.named, a.params = l.Named(), l.Params()
	a.Attach()
	return a, nil
}

// DefaultResampler is IP-Adapter Plus SD 1.5's resampler (over ViT-H/14's
// 1280-wide hidden states), for an adapter trained from scratch.
func DefaultResampler(outputDim int64) ipadapter.ResamplerConfig {
	return ipadapter.ResamplerConfig{Dim: 768, Depth: 4, DimHead: 64, Heads: 12, NumQueries: 16,
		EmbeddingDim: 1280, OutputDim: outputDim, FFMult: 4}
}

// initSeed seeds the random part of a fresh initialisation. Each adapter
// draws from a generator of its own, so that a fresh adapter's weights do
// not depend on how many the process built before it.
const initSeed = 20240

// Initial is the initialisation of parameters no checkpoint provides, by
// key, declared as data: the gates and mixing weights that keep a fresh
// adapter inert start at zero, norms at one, other weights small and
// random, drawn from g in the order the loader asks.
func Initial(g *torch.Generator) func(key string, shape []int64) *torch.Tensor {
	return func(key string, shape []int64) *torch.Tensor {
		switch {
		case hasAnySuffix(key, ".mu", // static attention off
			".alpha_attn", ".alpha_dense", // fuser gates closed
			".to_k_ip.weight", ".to_v_ip.weight"): // dynamic attention adds nothing
			return torch.Zeros(shape...)
		case strings.HasSuffix(key, "image_proj.latents"): // the resampler's queries: randn / sqrt(dim), as IP-Adapter
			return randn(g, shape, 1/math.Sqrt(float64(shape[len(shape)-1])))
		case strings.Contains(key, "norm") && len(shape) == 1:
			return torch.Ones(shape...)
		case strings.HasSuffix(key, ".bias"):
			return torch.Zeros(shape...)
		}
		return randn(g, shape, 0.02)
	}
}

func hasAnySuffix(s string, suffixes ...string) bool {
	return slices.ContainsFunc(suffixes, func(x string) bool { return strings.HasSuffix(s, x) })
}

func randn(g *torch.Generator, shape []int64, std float64) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor { return torch.Randn(g, shape...).MulScalar(std) })
}

// Save writes every parameter and the metadata to path (atomically).
func (a *Adapter) Save(path string) error {
	meta, err := json.Marshal(a.Meta)
	if err != nil {
		return err
	}
	return torch.SaveSafetensors(path, a.named, map[string]string{"format": "pt", metadataKey: string(meta)})
}
