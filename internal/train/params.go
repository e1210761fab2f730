package train

import (
	"fmt"
	"maps"
	"path"
	"slices"

	"github.com/lcpdiff/lcpdiff/internal/model/lcp"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// UNetPrefix starts the keys of the base UNet's weights among the
// parameters Config.Trainable selects from ("unet.conv_in.weight"): the
// adapter's own keys are bare, as its checkpoint spells them. The real
// recipe freezes the UNet; the toy world trains it from scratch.
const UNetPrefix = "unet."

// trainableSpace is every parameter a run may train: the adapter's and
// the base UNet's, by the keys Config.Trainable matches.
func trainableSpace(m *pipeline.Model, a *lcp.Adapter) map[string]*torch.Tensor {
	named := maps.Clone(a.Params())
	for k, p := range m.UNet.Params() {
		named[UNetPrefix+k] = p
	}
	return named
}

// trainable are the parameters that train, by key, in key order: the
// optimizer's state is positional, so every run must list them alike.
type trainable struct {
	keys   []string
	params []*torch.Tensor
}

// selectTrainable picks the parameters of named whose keys match one of
// the patterns. A pattern that matches nothing is an error: it is a typo
// or a part the adapter lacks, and either would quietly train less.
func selectTrainable(named map[string]*torch.Tensor, patterns []string) (trainable, error) {
	var t trainable
	used := make([]bool, len(patterns))
	for key := range named {
		hit := false
		for i, p := range patterns {
			if ok, _ := path.Match(p, key); ok {
				used[i], hit = true, true
			}
		}
		if hit {
			t.keys = append(t.keys, key)
		}
	}
	for i, p := range patterns {
		if !used[i] {
			return trainable{}, fmt.Errorf("train: trainable pattern %q matches no parameter (the adapter's keys, or %s... for the UNet)", p, UNetPrefix)
		}
	}
	slices.Sort(t.keys)
	for _, key := range t.keys {
		p := named[key]
		if dt := p.DType(); dt != torch.Float32 {
			return trainable{}, fmt.Errorf("train: parameter %s is %v; training needs f32 weights (no mixed precision yet)", key, dt)
		}
		t.params = append(t.params, p)
	}
	return t, nil
}

// count is the number of trainable scalars.
func (t trainable) count() int64 {
	var n int64
	for _, p := range t.params {
		n += p.Numel()
	}
	return n
}

// setRequiresGrad turns autograd on for the trainable parameters and off
// for every other one of named, and returns the function that gives each
// its previous flag back.
func setRequiresGrad(named map[string]*torch.Tensor, t trainable) (restore func()) {
	on := make(map[*torch.Tensor]bool, len(t.params))
	for _, p := range t.params {
		on[p] = true
	}
	before := make(map[*torch.Tensor]bool, len(named))
	for _, p := range named {
		before[p] = p.RequiresGrad()
		p.SetRequiresGrad(on[p])
	}
	return func() {
		for p, flag := range before {
			p.ZeroGrad()
			p.SetRequiresGrad(flag)
		}
	}
}
