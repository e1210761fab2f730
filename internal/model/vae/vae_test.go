package vae

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// atol is the parity bound for a golden key: 1e-5 for single calls, 5e-5
// for the 64x64 end of the decoder, where errors have grown through the
// most layers (the README's fp32-vs-fp64 column is 1.4e-5 at up_blocks.3).
func atol(name string) float64 {
	switch name {
	case "decode.decoder.up_blocks.2", "decode.decoder.up_blocks.3", "decode.sample", "batch.decode.sample":
		return 5e-5
	}
	return 1e-5
}

func loadTiny(t *testing.T) *AutoencoderKL {
	t.Helper()
	m, err := Load(golden.Path(t, "tiny-sd", "vae"), torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Free)
	return m
}

// compareTaps makes m's Tap compare every activation the golden file has
// against it, and returns a check that each golden key starting with one
// of prefixes was tapped.
func compareTaps(t *testing.T, m *AutoencoderKL, f *torch.SafetensorsFile, prefixes ...string) (checkAllSeen func()) {
	seen := map[string]bool{}
	m.Tap = func(name string, x *torch.Tensor) {
		if _, ok := f.Header.Lookup(name); ok {
			golden.Compare(t, name, x, golden.Tensor(t, f, name), atol(name))
			seen[name] = true
		}
	}
	return func() {
		t.Helper()
		m.Tap = nil
		for _, name := range f.Header.Names() {
			for _, p := range prefixes {
				if strings.HasPrefix(name, p) && !seen[name] {
					t.Errorf("golden intermediate %s was never tapped", name)
				}
			}
		}
	}
}

func TestEncodeMatchesGolden(t *testing.T) {
	m := loadTiny(t)
	f := golden.File(t, "core", "vae.safetensors")
	checkAllSeen := compareTaps(t, m, f, "encode.encoder.", "encode.moments")

	mean, logvar := m.Encode(golden.Tensor(t, f, "image"))
	checkAllSeen()
	want := func(name string) *torch.Tensor { return golden.Tensor(t, f, name) }
	golden.Compare(t, "encode.mean", mean, want("encode.mean"), atol("encode.mean"))
	golden.Compare(t, "encode.logvar", logvar, want("encode.logvar"), atol("encode.logvar"))
	golden.Compare(t, "encode.std", Std(logvar), want("encode.std"), atol("encode.std"))
	golden.Compare(t, "encode.sample", SampleWithNoise(mean, logvar, want("sample_noise")), want("encode.sample"), atol("encode.sample"))
}

func TestDecodeMatchesGolden(t *testing.T) {
	m := loadTiny(t)
	f := golden.File(t, "core", "vae.safetensors")
	checkAllSeen := compareTaps(t, m, f, "decode.decoder.", "decode.post_quant_conv")

	image := m.Decode(golden.Tensor(t, f, "decode.latent"))
	checkAllSeen()
	golden.Compare(t, "decode.sample", image, golden.Tensor(t, f, "decode.sample"), atol("decode.sample"))
}

// Batching changes the kernels' blocking, so a batch is compared with the
// batched goldens rather than with the single calls.
func TestBatchMatchesGolden(t *testing.T) {
	m := loadTiny(t)
	f := golden.File(t, "core", "vae.safetensors")
	want := func(name string) *torch.Tensor { return golden.Tensor(t, f, name) }

	mean, logvar := m.Encode(want("batch.image"))
	golden.Compare(t, "batch.encode.mean", mean, want("batch.encode.mean"), atol("batch.encode.mean"))
	golden.Compare(t, "batch.encode.logvar", logvar, want("batch.encode.logvar"), atol("batch.encode.logvar"))
	image := m.Decode(want("batch.decode.latent"))
	golden.Compare(t, "batch.decode.sample", image, want("batch.decode.sample"), atol("batch.decode.sample"))
}

func TestSampleDrawsFromGenerator(t *testing.T) {
	mean := torch.Randn(torch.NewGenerator(1), 2, 4, 3, 3)
	logvar := torch.Randn(torch.NewGenerator(2), 2, 4, 3, 3)
	got := Sample(mean, logvar, torch.NewGenerator(7))
	want := SampleWithNoise(mean, logvar, torch.Randn(torch.NewGenerator(7), 2, 4, 3, 3))
	golden.Compare(t, "sample", got, want, 0)
}

func TestEncodeDecodeHoldNoTensors(t *testing.T) {
	m := loadTiny(t)
	f := golden.File(t, "core", "vae.safetensors")
	image, latent := golden.Tensor(t, f, "image"), golden.Tensor(t, f, "decode.latent")
	run := func() {
		mean, logvar := m.Encode(image)
		mean.Free()
		logvar.Free()
		m.Decode(latent).Free()
	}
	run()
	torch.Settle() // unrelated garbage is freed now, not while we count
	base := torch.LiveTensors()
	for range 20 {
		run()
	}
	// Finalisers of earlier tests' tensors may run meanwhile: fewer is fine.
	if live := torch.LiveTensors(); live > base {
		t.Fatalf("20 encode+decode calls left %d more live tensors", live-base)
	}
}

// goldenWeights reads the tiny VAE checkpoint into memory.
func goldenWeights(t *testing.T) map[string]*torch.Tensor {
	t.Helper()
	f := golden.File(t, "tiny-sd", "vae", "diffusion_pytorch_model.safetensors")
	w := map[string]*torch.Tensor{}
	for _, name := range f.Header.Names() {
		w[name] = golden.Tensor(t, f, name)
	}
	return w
}

// goldenConfig is the tiny VAE's config.json as a JSON object, to edit.
func goldenConfig(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(golden.Path(t, "tiny-sd", "vae", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// writeVAEDir writes a diffusers vae/ folder holding config and weights.
func writeVAEDir(t *testing.T, config map[string]any, weights map[string]*torch.Tensor) string {
	t.Helper()
	dir := t.TempDir()
	b, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := torch.SaveSafetensors(filepath.Join(dir, "diffusion_pytorch_model.safetensors"), weights, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLoadReportsBadWeightsTogether(t *testing.T) {
	w := goldenWeights(t)
	delete(w, "decoder.up_blocks.1.resnets.2.conv1.bias")
	w["encoder.conv_out.weight"] = torch.Zeros(8, 64, 1, 1)
	w["decoder.extra"] = torch.Zeros(1)

	_, err := Load(writeVAEDir(t, goldenConfig(t), w), torch.Options{})
	if err == nil {
		t.Fatal("Load accepted a checkpoint with a missing and a mis-shaped key")
	}
	t.Log(err)
	for _, want := range []string{"decoder.up_blocks.1.resnets.2.conv1.bias", "encoder.conv_out.weight is [8 64 1 1], want [8 64 3 3]", "decoder.extra"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q", want)
		}
	}
}

func TestLoadLegacyAttentionNames(t *testing.T) {
	w := goldenWeights(t)
	for current, old := range legacyNames {
		w[old] = w[current]
		delete(w, current)
	}
	m, err := Load(writeVAEDir(t, goldenConfig(t), w), torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	f := golden.File(t, "core", "vae.safetensors")
	mean, _ := m.Encode(golden.Tensor(t, f, "image"))
	golden.Compare(t, "encode.mean (legacy names)", mean, golden.Tensor(t, f, "encode.mean"), atol("encode.mean"))
	image := m.Decode(golden.Tensor(t, f, "decode.latent"))
	golden.Compare(t, "decode.sample (legacy names)", image, golden.Tensor(t, f, "decode.sample"), atol("decode.sample"))
}

func TestLoadWithoutQuantConvs(t *testing.T) {
	w := goldenWeights(t)
	for _, k := range []string{"quant_conv.weight", "quant_conv.bias", "post_quant_conv.weight", "post_quant_conv.bias"} {
		delete(w, k)
	}
	c := goldenConfig(t)
	c["use_quant_conv"], c["use_post_quant_conv"] = false, false
	m, err := Load(writeVAEDir(t, c, w), torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	if m.QuantConv != nil || m.PostQuantConv != nil {
		t.Fatal("quant convs built although the config turns them off")
	}
	f := golden.File(t, "core", "vae.safetensors")
	mean, _ := m.Encode(golden.Tensor(t, f, "image"))
	// Without quant_conv the moments are encoder.conv_out itself.
	golden.Compare(t, "mean = conv_out[:, :4]", mean, golden.Tensor(t, f, "encode.encoder.conv_out").Narrow(1, 0, 4), 1e-5)
}

func TestLoadMissingFiles(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(dir, torch.Options{})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "config.json")) {
		t.Fatalf("Load of an empty folder: %v, want an error naming config.json", err)
	}
	c, err := json.Marshal(goldenConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), c, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(dir, torch.Options{})
	if err == nil || !strings.Contains(err.Error(), "diffusion_pytorch_model.safetensors") {
		t.Fatalf("Load without weights: %v, want an error naming %s", err, "diffusion_pytorch_model.safetensors")
	}
}

func TestLoadConfig(t *testing.T) {
	write := func(edit func(c map[string]any)) string {
		c := goldenConfig(t)
		edit(c)
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "config.json")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}

	c, err := LoadConfig(write(func(map[string]any) {}))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.BlockOutChannels, []int64{32, 32, 32, 64}) || c.LayersPerBlock != 2 || c.LatentChannels != 4 ||
		c.ScalingFactor != 0.18215 || c.ShiftFactor != nil || !c.UseQuantConv || !c.UsePostQuantConv {
		t.Fatalf("tiny config read as %+v", c)
	}

	c, err = LoadConfig(write(func(c map[string]any) {
		c["shift_factor"], c["scaling_factor"] = 0.1159, 0.3611
		c["block_out_channels"] = []int{64, 128}
		c["down_block_types"] = []string{"DownEncoderBlock2D", "DownEncoderBlock2D"}
		c["up_block_types"] = []string{"UpDecoderBlock2D", "UpDecoderBlock2D"}
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.ShiftFactor == nil || *c.ShiftFactor != 0.1159 || !slices.Equal(c.BlockOutChannels, []int64{64, 128}) {
		t.Fatalf("shifted config read as %+v", c)
	}
	z := torch.Randn(torch.NewGenerator(3), 1, 4, 2, 2)
	golden.Compare(t, "UnscaleLatents(ScaleLatents(z))", c.UnscaleLatents(c.ScaleLatents(z)), z, 1e-6)

	for _, bad := range []struct {
		edit func(c map[string]any)
		want string
	}{
		{func(c map[string]any) { c["up_block_types"].([]any)[2] = "AttnUpDecoderBlock2D" }, `up_block_types[2] is "AttnUpDecoderBlock2D"`},
		{func(c map[string]any) { c["down_block_types"].([]any)[0] = "DownBlock2D" }, `down_block_types[0] is "DownBlock2D"`},
		{func(c map[string]any) { c["act_fn"] = "gelu" }, `act_fn "gelu"`},
		{func(c map[string]any) { c["norm_num_groups"] = 24 }, "not a positive multiple of norm_num_groups 24"},
		{func(c map[string]any) { c["block_out_channels"] = []int{32, 64} }, "4 down_block_types and 4 up_block_types for 2 block_out_channels"},
	} {
		_, err := LoadConfig(write(bad.edit))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("LoadConfig: %v, want an error containing %q", err, bad.want)
		}
	}
}

// memSource is an nn.Source over tensors in memory.
type memSource map[string]*torch.Tensor

func (m memSource) Keys() []string { return slices.Sorted(maps.Keys(m)) }

func (m memSource) Shape(key string) ([]int64, bool) {
	t, ok := m[key]
	if !ok {
		return nil, false
	}
	return t.Shape(), true
}

func (m memSource) Tensor(key string) (*torch.Tensor, error) {
	t, ok := m[key]
	if !ok {
		return nil, fmt.Errorf("no tensor %q", key)
	}
	return t, nil
}

// checkpointShapes lists every parameter of an AutoencoderKL checkpoint
// for c, written out from diffusers' module tree independently of the
// model code: the benchmark makes random weights from it.
func checkpointShapes(c Config) map[string][]int64 {
	s := map[string][]int64{}
	conv := func(k string, in, out, kernel int64) {
		s[k+".weight"], s[k+".bias"] = []int64{out, in, kernel, kernel}, []int64{out}
	}
	norm := func(k string, ch int64) { s[k+".weight"], s[k+".bias"] = []int64{ch}, []int64{ch} }
	linear := func(k string, ch int64) { s[k+".weight"], s[k+".bias"] = []int64{ch, ch}, []int64{ch} }
	resnet := func(k string, in, out int64) {
		norm(k+".norm1", in)
		conv(k+".conv1", in, out, 3)
		norm(k+".norm2", out)
		conv(k+".conv2", out, out, 3)
		if in != out {
			conv(k+".conv_shortcut", in, out, 1)
		}
	}
	mid := func(k string, ch int64) {
		resnet(k+".resnets.0", ch, ch)
		resnet(k+".resnets.1", ch, ch)
		norm(k+".attentions.0.group_norm", ch)
		for _, proj := range []string{"to_q", "to_k", "to_v", "to_out.0"} {
			linear(k+".attentions.0."+proj, ch)
		}
	}

	ch, n, latent := c.BlockOutChannels, len(c.BlockOutChannels), c.LatentChannels
	conv("encoder.conv_in", c.InChannels, ch[0], 3)
	in := ch[0]
	for i, out := range ch {
		for j := range c.LayersPerBlock {
			resnet(fmt.Sprintf("encoder.down_blocks.%d.resnets.%d", i, j), in, out)
			in = out
		}
		if i < n-1 {
			conv(fmt.Sprintf("encoder.down_blocks.%d.downsamplers.0.conv", i), out, out, 3)
		}
	}
	mid("encoder.mid_block", ch[n-1])
	norm("encoder.conv_norm_out", ch[n-1])
	conv("encoder.conv_out", ch[n-1], 2*latent, 3)
	conv("quant_conv", 2*latent, 2*latent, 1)

	conv("post_quant_conv", latent, latent, 1)
	conv("decoder.conv_in", latent, ch[n-1], 3)
	mid("decoder.mid_block", ch[n-1])
	for i := range n {
		out := ch[n-1-i]
		for j := range c.LayersPerBlock + 1 {
			resnet(fmt.Sprintf("decoder.up_blocks.%d.resnets.%d", i, j), in, out)
			in = out
		}
		if i < n-1 {
			conv(fmt.Sprintf("decoder.up_blocks.%d.upsamplers.0.conv", i), out, out, 3)
		}
	}
	norm("decoder.conv_norm_out", ch[0])
	conv("decoder.conv_out", ch[0], c.OutChannels, 3)
	return s
}

// The benchmark's weights are only as right as checkpointShapes: check it
// against the real tiny checkpoint.
func TestCheckpointShapesMatchGolden(t *testing.T) {
	c, err := LoadConfig(golden.Path(t, "tiny-sd", "vae", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	f := golden.File(t, "tiny-sd", "vae", "diffusion_pytorch_model.safetensors")
	shapes := checkpointShapes(c)
	names := f.Header.Names()
	if len(names) != len(shapes) {
		t.Errorf("checkpointShapes has %d keys, the checkpoint %d", len(shapes), len(names))
	}
	for _, name := range names {
		info, _ := f.Header.Lookup(name)
		if !slices.Equal(shapes[name], info.Shape) {
			t.Errorf("%s: checkpointShapes says %v, the checkpoint %v", name, shapes[name], info.Shape)
		}
	}
}

// randomWeights fills checkpointShapes(c) with random f32 tensors scaled
// so that activations stay O(1): weights ~ N(0, 1/fan_in), norm scales 1,
// biases 0.
func randomWeights(c Config, seed uint64) memSource {
	g := torch.NewGenerator(seed)
	w := memSource{}
	for name, shape := range checkpointShapes(c) {
		switch {
		case len(shape) > 1:
			fanIn := int64(1)
			for _, d := range shape[1:] {
				fanIn *= d
			}
			r := torch.Randn(g, shape...)
			w[name] = r.MulScalar(1 / math.Sqrt(float64(fanIn)))
			r.Free()
		case strings.HasSuffix(name, ".weight"):
			w[name] = torch.Ones(shape...)
		default:
			w[name] = torch.Zeros(shape...)
		}
	}
	return w
}

// BenchmarkDecoder decodes a 1x4x64x64 latent (a 512x512 image) with the
// real SD 1.5 VAE's sizes and random weights, in f32 without autograd.
func BenchmarkDecoder(b *testing.B) {
	c := DefaultConfig()
	c.BlockOutChannels = []int64{128, 256, 512, 512}
	c.DownBlockTypes = slices.Repeat([]string{"DownEncoderBlock2D"}, 4)
	c.UpBlockTypes = slices.Repeat([]string{"UpDecoderBlock2D"}, 4)
	c.LayersPerBlock = 2

	loader := nn.NewLoader("vae", randomWeights(c, 0), torch.Options{})
	m := New(loader.Root(), c)
	if err := loader.Err(nil); err != nil {
		b.Fatal(err)
	}
	defer nn.Free(loader.Params())
	z := torch.Randn(torch.NewGenerator(1), 1, c.LatentChannels, 64, 64)
	before, err := torch.PeakRSS()
	if err != nil {
		b.Fatal(err)
	}

	torch.NoGrad(func() {
		for b.Loop() {
			m.Decode(z).Free()
		}
	})
	b.StopTimer()
	rss, err := torch.PeakRSS()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(rss, "peak-RSS-MiB")
	b.Logf("torch threads %d, peak RSS %.0f MiB (%.0f MiB before decoding: weights and runtime)", torch.NumThreads(), rss, before)
}
