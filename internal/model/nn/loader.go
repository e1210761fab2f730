package nn

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Loader builds a network's parameters from a Source. Modules ask for their
// weights through a Path that spells the checkpoint key, as diffusers-rs
// writes `vs / "to_out" / 0`; the loader records every key that is missing,
// mis-shaped or never asked for, so that one error can list them all once
// the whole network is built.
type Loader struct {
	what     string
	src      Source
	opts     torch.Options
	used     map[string]bool
	missing  []string
	badShape []string
	badRead  []string
	params   []*torch.Tensor
	named    map[string]*torch.Tensor

	// Init, when set, makes the parameters the source lacks (new layers of
	// an adapter, or a whole random network for benchmarks) instead of
	// recording them as missing.
	Init func(key string, shape []int64) *torch.Tensor
}

// NewLoader reads parameters for the network named what (used in errors)
// from src, converting them to the dtype and device of opts.
func NewLoader(what string, src Source, opts torch.Options) *Loader {
	return &Loader{what: what, src: src, opts: opts, used: map[string]bool{}, named: map[string]*torch.Tensor{}}
}

// Root is the path of the network itself (the empty key prefix).
func (l *Loader) Root() Path { return Path{l: l} }

// Params are the tensors loaded so far, for Free.
func (l *Loader) Params() []*torch.Tensor { return l.params }

// Named maps each checkpoint key the network read (or initialised) to its
// tensor, in the stored shape: what saving the network writes back.
func (l *Loader) Named() map[string]*torch.Tensor { return l.named }

// Err reports missing, mis-shaped, unreadable and unexpected keys (first
// few of each and their count) in one error; nil when the checkpoint and the
// network agree. ignore, when not nil, excuses unexpected keys (buffers a
// checkpoint may carry, such as position_ids).
func (l *Loader) Err(ignore func(key string) bool) error {
	var unexpected []string
	for _, k := range l.src.Keys() {
		if !l.used[k] && (ignore == nil || !ignore(k)) {
			unexpected = append(unexpected, k)
		}
	}
	var parts []string
	for _, g := range []struct {
		name string
		keys []string
	}{{"missing", l.missing}, {"wrong shape", l.badShape}, {"unreadable", l.badRead}, {"unexpected", unexpected}} {
		if len(g.keys) > 0 {
			parts = append(parts, fmt.Sprintf("%d %s (%s)", len(g.keys), g.name, firstFew(g.keys, 3)))
		}
	}
	if len(parts) == 0 {
		return nil
	}
	return fmt.Errorf("%s weights do not fit the model: %s", l.what, strings.Join(parts, "; "))
}

func firstFew(keys []string, n int) string {
	if len(keys) <= n {
		return strings.Join(keys, ", ")
	}
	return strings.Join(keys[:n], ", ") + ", ..."
}

// Free releases every parameter the loader made.
func Free(params []*torch.Tensor) {
	for _, p := range params {
		p.Free()
	}
}

// Path is a key prefix in a checkpoint, such as "down_blocks.0.resnets.1".
type Path struct {
	l      *Loader
	prefix string
}

// Sub is the path of a sub-module; parts are names or list indices.
func (p Path) Sub(parts ...any) Path {
	key := p.prefix
	for _, part := range parts {
		var s string
		switch v := part.(type) {
		case string:
			s = v
		case int:
			s = strconv.Itoa(v)
		case int64:
			s = strconv.FormatInt(v, 10)
		default:
			panic(fmt.Sprintf("nn.Path.Sub: part %v of type %T", part, part))
		}
		if key != "" {
			key += "."
		}
		key += s
	}
	return Path{l: p.l, prefix: key}
}

// Name is the path itself, e.g. "down_blocks.0.attentions.0".
func (p Path) Name() string { return p.prefix }

// Key is the full checkpoint key of name under p.
func (p Path) Key(name string) string { return p.Sub(name).prefix }

// Has reports whether the checkpoint holds name under p (an optional
// parameter, such as a bias some layers lack).
func (p Path) Has(name string) bool {
	_, ok := p.l.src.Shape(p.Key(name))
	return ok
}

// Param loads the parameter name under p, which must have the given shape.
// A missing or mis-shaped one is recorded for Err and stands in as zeros of
// that shape (without memory), so building the network can go on.
func (p Path) Param(name string, shape ...int64) *torch.Tensor {
	l, key := p.l, p.Key(name)
	l.used[key] = true
	stored, ok := l.src.Shape(key)
	if !ok && l.Init != nil {
		t := torch.Persist(l.Init(key, shape).ToOptions(l.opts))
		l.params = append(l.params, t)
		l.named[key] = t
		return t
	}
	if !ok {
		l.missing = append(l.missing, key)
		return l.placeholder(shape)
	}
	if !slices.Equal(stored, shape) {
		l.badShape = append(l.badShape, fmt.Sprintf("%s is %v, want %v", key, stored, shape))
		return l.placeholder(shape)
	}
	t, err := l.src.Tensor(key)
	if err != nil {
		l.badRead = append(l.badRead, err.Error())
		return l.placeholder(shape)
	}
	if o := torch.OptionsOf(t); o != l.opts {
		converted := t.ToOptions(l.opts)
		t.Free()
		t = converted
	}
	torch.Persist(t)
	l.params = append(l.params, t)
	l.named[key] = t
	return t
}

// ParamInit is Param for a layer an adapter adds: when the source lacks
// name and the loader may initialise (Init is set), init makes it, such as a
// copy of the weight the new layer extends.
func (p Path) ParamInit(name string, init func() *torch.Tensor, shape ...int64) *torch.Tensor {
	l := p.l
	if _, ok := l.src.Shape(p.Key(name)); ok || l.Init == nil {
		return p.Param(name, shape...)
	}
	l.used[p.Key(name)] = true
	t := torch.Persist(torch.Scoped(func() *torch.Tensor { return init().ToOptions(l.opts).Detach().Clone() }))
	l.params = append(l.params, t)
	l.named[p.Key(name)] = t
	return t
}

// ParamAs loads name stored with shape stored and returns it viewed as
// shape (a 1x1 conv kernel read as a linear weight, say).
func (p Path) ParamAs(name string, stored, shape []int64) *torch.Tensor {
	t := torch.Persist(p.Param(name, stored...).View(shape...))
	p.l.params = append(p.l.params, t)
	return t
}

func (l *Loader) placeholder(shape []int64) *torch.Tensor {
	t := torch.Persist(l.opts.Zeros(1).Reshape(ones(len(shape))...).Expand(shape...))
	l.params = append(l.params, t)
	return t
}

func ones(n int) []int64 {
	s := make([]int64, n)
	for i := range s {
		s[i] = 1
	}
	return s
}
