package gligen

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Grounding is GLIGEN attached to a UNet: the position net, and one fuser
// per transformer block, all reading one Condition. That condition is
// state beside the UNet's inputs, so a grounded UNet runs one generation
// at a time.
type Grounding struct {
	PositionNet *PositionNet
	Fusers      []*GatedSelfAttentionDense // in the order of UNet.TransformerBlocks

	cond   Condition
	blocks []*unet.BasicTransformerBlock // where the fusers are attached
	params []*torch.Tensor
}

// IsKey reports whether a key of a GLIGEN UNet checkpoint belongs to
// GLIGEN rather than to the base UNet.
func IsKey(key string) bool {
	return strings.HasPrefix(key, "position_net.") || strings.Contains(key, ".fuser.")
}

// Load reads the position net and fusers of a diffusers GLIGEN unet/
// folder (config.json with attention_type "gated") and attaches the fusers
// to u's transformer blocks. The folder's base UNet weights are not read:
// u already has them. The fusers stay off until Set gives them tokens.
func Load(unetDir string, u *unet.UNet, opts torch.Options) (*Grounding, error) {
	if err := checkConfig(filepath.Join(unetDir, "config.json")); err != nil {
		return nil, err
	}
	src, err := nn.OpenWeights(unetDir, "diffusion_pytorch_model")
	if err != nil {
		return nil, fmt.Errorf("gligen: %w", err)
	}
	defer src.Close()
	g, err := FromSource(src, u, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", unetDir, err)
	}
	return g, nil
}

// LoadUNet reads a whole diffusers GLIGEN unet/ folder: the base UNet and
// its grounding, attached.
func LoadUNet(unetDir string, opts torch.Options) (*unet.UNet, *Grounding, error) {
	if err := checkConfig(filepath.Join(unetDir, "config.json")); err != nil {
		return nil, nil, err
	}
	c, err := unet.LoadConfig(filepath.Join(unetDir, "config.json"))
	if err != nil {
		return nil, nil, err
	}
	src, err := nn.OpenWeights(unetDir, "diffusion_pytorch_model")
	if err != nil {
		return nil, nil, fmt.Errorf("gligen: %w", err)
	}
	defer src.Close()
	u, err := unet.FromSource(BaseOnly(src), c, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", unetDir, err)
	}
	g, err := FromSource(src, u, opts)
	if err != nil {
		u.Free()
		return nil, nil, fmt.Errorf("%s: %w", unetDir, err)
	}
	return u, g, nil
}

// checkConfig refuses a unet/config.json that is not a text-box GLIGEN one.
func checkConfig(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("gligen: %w", err)
	}
	var c struct {
		AttentionType *string `json:"attention_type"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return fmt.Errorf("gligen %s: %w", path, err)
	}
	switch {
	case c.AttentionType == nil || *c.AttentionType == "default":
		return fmt.Errorf("gligen %s: not a GLIGEN UNet (attention_type is not \"gated\")", path)
	case *c.AttentionType != "gated":
		return fmt.Errorf("gligen %s: attention_type %q is not supported (text-box \"gated\" only)", path, *c.AttentionType)
	}
	return nil
}

// FromSource reads the GLIGEN weights of src, named as diffusers names them
// in a GLIGEN UNet (position_net.*, <block>.fuser.*), and attaches the
// fusers to u. Keys of the base UNet in src are ignored.
func FromSource(src nn.Source, u *unet.UNet, opts torch.Options) (g *Grounding, err error) {
	blocks := u.TransformerBlocks()
	for _, b := range blocks {
		if b.Fuser != nil {
			return nil, fmt.Errorf("transformer block %s already has a GLIGEN fuser", b.Name)
		}
	}
	l := nn.NewLoader("gligen", src, opts)
	defer func() {
		if err != nil {
			nn.Free(l.Params())
		}
	}()
	defer torch.Recover(&err)
	g = New(l.Root(), u)
	if err := l.Err(func(key string) bool { return !IsKey(key) }); err != nil {
		return nil, err
	}
	g.params = l.Params()
	g.Attach()
	return g, nil
}

// New builds the position net ("position_net") and one fuser per
// transformer block ("<block>.fuser") under p, unattached; the caller owns
// the loader that holds their weights.
func New(p nn.Path, u *unet.UNet) *Grounding {
	// The grounding tokens are as wide as the text context, and so are
	// the phrase embeddings in diffusers' text-box model.
	ctx := u.Config.CrossAttentionDim
	blocks := u.TransformerBlocks()
	g := &Grounding{PositionNet: NewPositionNet(p.Sub("position_net"), ctx, ctx), blocks: blocks}
	for _, b := range blocks {
		f := NewGatedSelfAttentionDense(p.Sub(b.Name, "fuser"), FuserConfigOf(b, ctx))
		f.Cond = &g.cond
		g.Fusers = append(g.Fusers, f)
	}
	return g
}

// Attach puts the fusers on their transformer blocks.
func (g *Grounding) Attach() {
	for i, b := range g.blocks {
		b.Fuser = g.Fusers[i]
	}
}

// Set makes the fusers attend to the grounding tokens objs [B, M, C] (B the
// batch of the UNet's coming calls) with gate scale beta. The caller keeps
// owning objs, which must live until Clear.
func (g *Grounding) Set(objs *torch.Tensor, beta float64) { g.cond = Condition{Objs: objs, Beta: beta} }

// SetBeta changes the gate scale only (per step, for scheduled sampling).
func (g *Grounding) SetBeta(beta float64) { g.cond.Beta = beta }

// Clear turns the fusers off and forgets the tokens.
func (g *Grounding) Clear() { g.cond = Condition{} }

// Condition is what the fusers read now.
func (g *Grounding) Condition() Condition { return g.cond }

// Detach takes the fusers out of the UNet, which then computes exactly
// as it did without GLIGEN. Calling it twice is harmless.
func (g *Grounding) Detach() {
	for i, b := range g.blocks {
		if b.Fuser == g.Fusers[i] {
			b.Fuser = nil
		}
	}
	g.cond = Condition{}
}

// Free detaches the fusers and releases the weights.
func (g *Grounding) Free() {
	g.Detach()
	nn.Free(g.params)
	g.params = nil
}

// ScheduledBeta is GLIGEN's scheduled sampling as diffusers'
// StableDiffusionGLIGENPipeline runs it: the fusers are on (beta 1) for the
// first int(tau * total) steps and off from then on.
func ScheduledBeta(tau float64, step, total int) float64 {
	if step < int(tau*float64(total)) {
		return 1
	}
	return 0
}

// BaseOnly presents src without its GLIGEN keys: a GLIGEN UNet checkpoint
// read as the plain UNet it extends.
func BaseOnly(src nn.Source) nn.Source { return baseOnly{src} }

type baseOnly struct{ src nn.Source }

func (b baseOnly) Keys() []string {
	var keys []string
	for _, k := range b.src.Keys() {
		if !IsKey(k) {
			keys = append(keys, k)
		}
	}
	return keys
}

func (b baseOnly) Shape(key string) ([]int64, bool) {
	if IsKey(key) {
		return nil, false
	}
	return b.src.Shape(key)
}

func (b baseOnly) Tensor(key string) (*torch.Tensor, error) {
	if IsKey(key) {
		return nil, fmt.Errorf("no tensor %q", key)
	}
	return b.src.Tensor(key)
}
