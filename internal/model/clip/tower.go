package clip

import (
	"fmt"
	"path/filepath"

	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// A tower is one of CLIP's two encoders: read from a transformers folder
// (config.json plus model.safetensors or its shards) the same way.
type tower interface{ Free() }

// loadTower reads dir's config with readConfig and builds the tower from
// its weights with fromSource.
func loadTower[C any, M tower](what, dir string, readConfig func(string) (C, error),
	fromSource func(nn.Source, C, torch.Options) (M, error), opts torch.Options) (M, error) {
	var none M
	cfg, err := readConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return none, err
	}
	files, err := nn.OpenWeights(dir, "model")
	if err != nil {
		return none, err
	}
	defer files.Close()
	m, err := fromSource(files, cfg, opts)
	if err != nil {
		return none, fmt.Errorf("%s %s: %w", what, dir, err)
	}
	return m, nil
}

// towerFromSource builds a tower with build and reports the checkpoint's
// missing, mis-shaped and unexpected keys (except those ignore excuses).
func towerFromSource[C any, M tower](what string, src nn.Source, cfg C, build func(nn.Path, C) M,
	opts torch.Options, ignore func(string) bool) (M, error) {
	var none M
	loader := nn.NewLoader(what, src, opts)
	var m M
	if err := torch.Try(func() { m = build(loader.Root(), cfg) }); err != nil {
		nn.Free(loader.Params()) // converting to opts failed: no such device, say
		return none, err
	}
	if err := loader.Err(ignore); err != nil {
		m.Free()
		return none, err
	}
	return m, nil
}
