package toymodel

import (
	"fmt"
	"math"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// An initializer makes each parameter a loader asks for (nn.Loader.Init)
// from the parameter's key and shape, drawing from one generator in the
// order the network is built, so a seed gives the same weights every time.
// A key it does not recognise is recorded, not guessed: Err reports it.
type initializer struct {
	gen     *torch.Generator
	fanIn   map[string]int64 // module path -> fan-in of its weight; 0 for a norm
	unknown []string
	rule    func(in *initializer, module, name string, shape []int64) *torch.Tensor
}

func newInitializer(seed uint64, rule func(in *initializer, module, name string, shape []int64) *torch.Tensor) *initializer {
	return &initializer{gen: torch.NewGenerator(seed), fanIn: map[string]int64{}, rule: rule}
}

// Init is the nn.Loader.Init function.
func (in *initializer) Init(key string, shape []int64) *torch.Tensor {
	module, name := key, key
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		module, name = key[:i], key[i+1:]
	}
	if t := in.rule(in, module, name, shape); t != nil {
		return t
	}
	in.unknown = append(in.unknown, key)
	return torch.Zeros(shape...)
}

// Err names the keys no rule knew.
func (in *initializer) Err() error {
	if len(in.unknown) == 0 {
		return nil
	}
	return fmt.Errorf("no initialisation rule for %d parameters (%s)", len(in.unknown), strings.Join(in.unknown[:min(3, len(in.unknown))], ", "))
}

func (in *initializer) Close() { in.gen.Close() }

func (in *initializer) uniform(bound float64, shape []int64) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		return torch.Rand(in.gen, shape...).MulScalar(2 * bound).SubScalar(bound)
	})
}

func (in *initializer) normal(std float64, shape []int64) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor { return torch.Randn(in.gen, shape...).MulScalar(std) })
}

// torchDefault is what a fresh torch.nn module holds, and diffusers' UNet
// and VAE add no initialisation of their own: Linear and Conv2d draw weight
// and bias from kaiming_uniform(a=sqrt(5)), which is U(-1/sqrt(fan_in),
// 1/sqrt(fan_in)), fan_in being in_features or in_channels/groups*k*k;
// GroupNorm and LayerNorm start at weight 1, bias 0. A bias follows its
// module's weight, which every layer of the project asks for first.
func torchDefault(in *initializer, module, name string, shape []int64) *torch.Tensor {
	switch {
	case name == "weight" && len(shape) >= 2:
		fanIn := int64(1)
		for _, d := range shape[1:] {
			fanIn *= d
		}
		in.fanIn[module] = fanIn
		return in.uniform(1/math.Sqrt(float64(fanIn)), shape)
	case name == "weight" && len(shape) == 1:
		in.fanIn[module] = 0
		return torch.Ones(shape...)
	case name == "bias":
		fanIn, ok := in.fanIn[module]
		switch {
		case !ok:
			return nil // a bias before its weight: no rule knows what it is
		case fanIn == 0:
			return torch.Zeros(shape...)
		default:
			return in.uniform(1/math.Sqrt(float64(fanIn)), shape)
		}
	}
	return nil
}

// clipInit is transformers' CLIPPreTrainedModel._init_weights for a tower
// of the given width and depth (initializer_factor 1, initializer_range
// 0.02): embeddings N(0, 0.02) (the class token N(0, D^-1/2)), attention
// in-projections N(0, D^-1/2 (2L)^-1/2) and out-projections N(0, D^-1/2),
// fc1 N(0, (2D)^-1/2), fc2 N(0, D^-1/2 (2L)^-1/2), the vision projection
// N(0, D^-1/2); every Linear bias 0, every LayerNorm weight 1 and bias 0.
func clipInit(hidden int64, layers int) func(in *initializer, module, name string, shape []int64) *torch.Tensor {
	const factor, initRange = clipInitializerFactor, clipInitializerRange
	d, l := float64(hidden), float64(layers)
	inProj := math.Pow(d, -0.5) * math.Pow(2*l, -0.5) * factor
	outProj := math.Pow(d, -0.5) * factor
	return func(in *initializer, module, name string, shape []int64) *torch.Tensor {
		last := module[strings.LastIndexByte(module, '.')+1:]
		switch {
		case name == "class_embedding":
			return in.normal(math.Pow(d, -0.5)*factor, shape)
		case name == "bias":
			return torch.Zeros(shape...)
		case name != "weight":
			return nil
		case strings.Contains(last, "norm"):
			return torch.Ones(shape...)
		case last == "token_embedding" || module == "text_model.embeddings.position_embedding":
			return in.normal(0.02*factor, shape) // hard-coded 0.02 in transformers
		case last == "patch_embedding" || module == "vision_model.embeddings.position_embedding":
			return in.normal(initRange*factor, shape)
		case last == "q_proj" || last == "k_proj" || last == "v_proj" || last == "fc2":
			return in.normal(inProj, shape)
		case last == "out_proj":
			return in.normal(outProj, shape)
		case last == "fc1":
			return in.normal(math.Pow(2*d, -0.5)*factor, shape)
		case module == "visual_projection":
			return in.normal(math.Pow(d, -0.5)*factor, shape)
		}
		return nil
	}
}

// The CLIP configs' initializer_factor and initializer_range, written into
// their config.json.
const (
	clipInitializerFactor = 1.0
	clipInitializerRange  = 0.02
)
