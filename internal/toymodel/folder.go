package toymodel

import (
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"

	"github.com/lcpdiff/lcpdiff/internal/model/clip"
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/model/vae"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Summary says what Write made.
type Summary struct {
	VocabSize int
	// Params counts each network's scalars: "text_encoder", "unet", ...
	Params map[string]int64
}

// Write makes out a diffusers folder of freshly initialised networks sized
// by s: model_index.json, scheduler/, tokenizer/, text_encoder/, unet/,
// vae/ and image_encoder/. The seed decides every weight; each network
// draws from its own stream of it, so resizing one leaves the others' weights
// as they were. The folder is written under a temporary name beside out and
// renamed into place when complete, so out is never half written; out must
// not exist, or be an empty folder.
func Write(out string, s Spec, seed uint64) (sum Summary, err error) {
	if err := s.Validate(); err != nil {
		return sum, err
	}
	if entries, err := os.ReadDir(out); err == nil && len(entries) > 0 {
		return sum, fmt.Errorf("model init: %s exists and is not empty", out)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return sum, fmt.Errorf("model init: %w", err)
	}
	parent := filepath.Dir(filepath.Clean(out))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return sum, fmt.Errorf("model init: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(filepath.Clean(out))+".tmp-*")
	if err != nil {
		return sum, fmt.Errorf("model init: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp makes it private
		return sum, fmt.Errorf("model init: %w", err)
	}
	if sum, err = writeParts(tmp, s, seed); err != nil {
		return sum, err
	}
	if err := syncDir(tmp); err != nil {
		return sum, fmt.Errorf("model init: %w", err)
	}
	// rename(2) replaces an empty folder.
	if err := os.Rename(tmp, out); err != nil {
		return sum, fmt.Errorf("model init: %w", err)
	}
	return sum, syncDir(parent)
}

// writeParts writes every file of the folder into dir.
func writeParts(dir string, s Spec, seed uint64) (Summary, error) {
	sum := Summary{Params: map[string]int64{}}
	v, err := NewVocabulary(s.Tokenizer.Words)
	if err != nil {
		return sum, err
	}
	sum.VocabSize = len(v.Tokens)
	tokFiles, err := v.tokenizerFiles(s.Tokenizer.ModelMaxLength)
	if err != nil {
		return sum, err
	}
	text := s.TextEncoder.TextConfig
	text.VocabSize, text.EOSTokenID = int64(len(v.Tokens)), v.EOS()
	if err := text.Validate(); err != nil {
		return sum, fmt.Errorf("text_encoder: %s", oneLine(err))
	}
	configs := map[string]func() (map[string]any, error){
		"scheduler/scheduler_config.json": s.schedulerConfig,
		"unet/config.json":                s.unetConfig,
		"vae/config.json":                 s.vaeConfig,
		"text_encoder/config.json":        func() (map[string]any, error) { return s.textEncoderConfig(v) },
		"image_encoder/config.json":       s.imageEncoderConfig,
	}
	files := map[string][]byte{
		"model_index.json":                       mustJSON(modelIndex()),
		"image_encoder/preprocessor_config.json": mustJSON(s.preprocessorConfig()),
	}
	for name, b := range tokFiles {
		files["tokenizer/"+name] = b
	}
	for name, config := range configs {
		m, err := config()
		if err != nil {
			return sum, fmt.Errorf("%s: %w", name, err)
		}
		files[name] = mustJSON(m)
	}
	for name, b := range files {
		if err := writeFile(filepath.Join(dir, filepath.FromSlash(name)), b); err != nil {
			return sum, err
		}
	}

	unetCfg := s.UNet
	if err := unetCfg.Check(); err != nil { // resolves the per-block heads New reads
		return sum, fmt.Errorf("unet: %w", err)
	}
	networks := []struct {
		part, file string
		rule       func(in *initializer, module, name string, shape []int64) *torch.Tensor
		build      func(p nn.Path)
	}{
		{"text_encoder", "model.safetensors", clipInit(text.HiddenSize, text.NumHiddenLayers),
			func(p nn.Path) { clip.NewTextEncoder(p, text) }},
		{"unet", "diffusion_pytorch_model.safetensors", torchDefault, func(p nn.Path) { unet.New(p, unetCfg) }},
		{"vae", "diffusion_pytorch_model.safetensors", torchDefault, func(p nn.Path) { vae.New(p, s.VAE) }},
		{"image_encoder", "model.safetensors", clipInit(s.ImageEncoder.HiddenSize, s.ImageEncoder.NumHiddenLayers),
			func(p nn.Path) { clip.NewVisionEncoder(p, s.ImageEncoder) }},
	}
	for _, n := range networks {
		count, err := writeNetwork(filepath.Join(dir, n.part, n.file), n.part, partSeed(seed, n.part), n.rule, n.build)
		if err != nil {
			return sum, err
		}
		sum.Params[n.part] = count
	}
	return sum, nil
}

// writeNetwork builds one network with fresh weights through a loader over
// no checkpoint and saves what the loader made, under the keys it asked
// for: the loader's own names, so the file loads back by construction.
func writeNetwork(path, part string, seed uint64, rule func(*initializer, string, string, []int64) *torch.Tensor,
	build func(p nn.Path)) (count int64, err error) {
	in := newInitializer(seed, rule)
	defer in.Close()
	l := nn.NewLoader(part, nn.Empty{}, torch.Options{})
	l.Init = in.Init
	defer func() { nn.Free(l.Params()) }()
	if err := torch.Try(func() { build(l.Root()) }); err != nil {
		return 0, fmt.Errorf("%s: %w", part, err)
	}
	if err := in.Err(); err != nil {
		return 0, fmt.Errorf("%s: %w", part, err)
	}
	for _, t := range l.Named() {
		count += t.Numel()
	}
	if err := torch.SaveSafetensors(path, l.Named(), map[string]string{"format": "pt"}); err != nil {
		return 0, err
	}
	return count, nil
}

// partSeed is the seed of one network's stream: seed and the part's name
// hashed together.
func partSeed(seed uint64, part string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(part))
	x := seed ^ h.Sum64()
	// splitmix64's finaliser, so that nearby seeds give unrelated streams.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// writeFile writes data to a new file at path (inside the folder being
// built, so a plain write suffices), synced so that the rename that
// publishes the folder publishes complete files.
func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("model init: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("model init: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("model init: %w", err)
	}
	return nil
}

// syncDir makes the entries of dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
