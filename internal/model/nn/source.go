// Package nn holds the building blocks every network of lcpdiff is made of:
// a weight Source, a Loader that walks checkpoint keys the way diffusers
// names modules, and the basic layers (Linear, Conv2d, norms, Embedding).
package nn

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Source supplies checkpoint tensors by key.
type Source interface {
	// Keys lists every key the source holds.
	Keys() []string
	// Shape is the stored shape of key, without reading its data.
	Shape(key string) ([]int64, bool)
	// Tensor reads key (lazily: from a memory map where possible).
	Tensor(key string) (*torch.Tensor, error)
}

// Files is a Source over one or more safetensors files (a sharded
// checkpoint is several).
type Files struct {
	files []*torch.SafetensorsFile
	where map[string]*torch.SafetensorsFile
}

// OpenFiles memory-maps the given safetensors files as one Source.
func OpenFiles(paths ...string) (*Files, error) {
	fs := &Files{where: map[string]*torch.SafetensorsFile{}}
	for _, p := range paths {
		f, err := torch.OpenSafetensors(p)
		if err != nil {
			fs.Close()
			return nil, err
		}
		fs.files = append(fs.files, f)
		for _, k := range f.Header.Names() {
			if other, dup := fs.where[k]; dup {
				fs.Close()
				return nil, fmt.Errorf("%s: tensor %q is also in %s", p, k, filepath.Base(other.Path))
			}
			fs.where[k] = f
		}
	}
	return fs, nil
}

// Close drops the files' own references; loaded tensors stay valid.
func (fs *Files) Close() {
	for _, f := range fs.files {
		f.Close()
	}
}

func (fs *Files) Keys() []string {
	keys := make([]string, 0, len(fs.where))
	for k := range fs.where {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (fs *Files) Shape(key string) ([]int64, bool) {
	f, ok := fs.where[key]
	if !ok {
		return nil, false
	}
	info, _ := f.Header.Lookup(key)
	return info.Shape, true
}

func (fs *Files) Tensor(key string) (*torch.Tensor, error) {
	f, ok := fs.where[key]
	if !ok {
		return nil, fmt.Errorf("no tensor %q", key)
	}
	return f.Tensor(key)
}

// Renamed presents a source under other key names: names maps the key a
// module asks for to the key stored in src. Keys of src that no entry maps
// to stay hidden. It is how a checkpoint in another layout (the original
// single-file SD, IP-Adapter, GLIGEN) is read by modules that spell
// diffusers' names.
type Renamed struct {
	src   Source
	names map[string]string
}

// Rename builds a Renamed source.
func Rename(src Source, names map[string]string) *Renamed {
	return &Renamed{src: src, names: names}
}

func (r *Renamed) Keys() []string {
	keys := make([]string, 0, len(r.names))
	for k, stored := range r.names {
		if _, ok := r.src.Shape(stored); ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

func (r *Renamed) Shape(key string) ([]int64, bool) {
	stored, ok := r.names[key]
	if !ok {
		return nil, false
	}
	return r.src.Shape(stored)
}

func (r *Renamed) Tensor(key string) (*torch.Tensor, error) {
	stored, ok := r.names[key]
	if !ok {
		return nil, fmt.Errorf("no tensor %q", key)
	}
	return r.src.Tensor(stored)
}

// Prefixed presents the keys of src that start with prefix, without it
// (a single file holds the UNet under "model.diffusion_model.", say).
type Prefixed struct {
	src    Source
	prefix string
}

// WithPrefix builds a Prefixed source.
func WithPrefix(src Source, prefix string) *Prefixed { return &Prefixed{src: src, prefix: prefix} }

func (p *Prefixed) Keys() []string {
	var keys []string
	for _, k := range p.src.Keys() {
		if rest, ok := strings.CutPrefix(k, p.prefix); ok {
			keys = append(keys, rest)
		}
	}
	return keys
}

func (p *Prefixed) Shape(key string) ([]int64, bool) { return p.src.Shape(p.prefix + key) }

func (p *Prefixed) Tensor(key string) (*torch.Tensor, error) { return p.src.Tensor(p.prefix + key) }

// File is a Source that keeps a checkpoint file open until Close.
type File interface {
	Source
	Close()
}

// Open opens one checkpoint file by its format: safetensors, or the zip
// archive torch.save writes (.pth, .pt, .bin, .ckpt), read by OpenPickle,
// which refuses any pickled object but tensors and plain containers. So
// the public DINO checkpoint, ip-adapter-plus_sd15.bin and a GLIGEN .bin
// load as they are published.
func Open(path string) (File, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".pth", ".pt", ".bin", ".ckpt":
		p, err := OpenPickle(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return p, nil
	}
	return OpenFiles(path)
}

// OpenWeights opens the weights of one diffusers or transformers model
// folder: base.safetensors, a sharded base.safetensors.index.json, the
// base.fp16.safetensors variant, or PyTorch's base.bin, in that order.
func OpenWeights(dir, base string) (File, error) {
	single := filepath.Join(dir, base+".safetensors")
	if _, err := os.Stat(single); err == nil {
		return OpenFiles(single)
	}
	index := filepath.Join(dir, base+".safetensors.index.json")
	if b, err := os.ReadFile(index); err == nil {
		var idx struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(b, &idx); err != nil {
			return nil, fmt.Errorf("%s: %w", index, err)
		}
		seen := map[string]bool{}
		var paths []string
		for _, f := range idx.WeightMap {
			if !seen[f] {
				seen[f] = true
				paths = append(paths, filepath.Join(dir, f))
			}
		}
		sort.Strings(paths)
		return OpenFiles(paths...)
	}
	fp16 := filepath.Join(dir, base+".fp16.safetensors")
	if _, err := os.Stat(fp16); err == nil {
		return OpenFiles(fp16)
	}
	if bin := filepath.Join(dir, base+".bin"); fileExists(bin) {
		return Open(bin)
	}
	return nil, fmt.Errorf("%s: no %s.safetensors (or .bin) weights", dir, base)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Empty is a Source with no tensors: with Loader.Init it builds a freshly
// initialised network.
type Empty struct{}

func (Empty) Keys() []string                         { return nil }
func (Empty) Shape(string) ([]int64, bool)           { return nil, false }
func (Empty) Tensor(k string) (*torch.Tensor, error) { return nil, fmt.Errorf("no tensor %q", k) }

// RandomInit draws every parameter from N(0, std^2) with one generator:
// a stand-in network with realistic activations, for benchmarks.
func RandomInit(seed uint64, std float64) func(key string, shape []int64) *torch.Tensor {
	g := torch.NewGenerator(seed)
	return func(key string, shape []int64) *torch.Tensor {
		return torch.Scoped(func() *torch.Tensor { return torch.Randn(g, shape...).MulScalar(std) })
	}
}

// Filtered presents the keys of src that keep accepts: one part of a
// checkpoint that holds several networks.
type Filtered struct {
	src  Source
	keep func(key string) bool
}

// Only builds a Filtered source.
func Only(src Source, keep func(key string) bool) *Filtered { return &Filtered{src: src, keep: keep} }

func (f *Filtered) Keys() []string {
	var keys []string
	for _, k := range f.src.Keys() {
		if f.keep(k) {
			keys = append(keys, k)
		}
	}
	return keys
}

func (f *Filtered) Shape(key string) ([]int64, bool) {
	if !f.keep(key) {
		return nil, false
	}
	return f.src.Shape(key)
}

func (f *Filtered) Tensor(key string) (*torch.Tensor, error) {
	if !f.keep(key) {
		return nil, fmt.Errorf("no tensor %q", key)
	}
	return f.src.Tensor(key)
}

// Union presents several sources as one; the first that holds a key
// supplies it.
type Union []Source

func (u Union) Keys() []string {
	var keys []string
	for _, s := range u {
		keys = append(keys, s.Keys()...)
	}
	sort.Strings(keys)
	return keys
}

func (u Union) Shape(key string) ([]int64, bool) {
	for _, s := range u {
		if shape, ok := s.Shape(key); ok {
			return shape, true
		}
	}
	return nil, false
}

func (u Union) Tensor(key string) (*torch.Tensor, error) {
	for _, s := range u {
		if _, ok := s.Shape(key); ok {
			return s.Tensor(key)
		}
	}
	return nil, fmt.Errorf("no tensor %q", key)
}
