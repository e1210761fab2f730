package train

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/builtin"
	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/model/clip"
	"github.com/lcpdiff/lcpdiff/internal/model/ipadapter"
	"github.com/lcpdiff/lcpdiff/internal/model/lcp"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// benchEnv reads an integer setting of BenchmarkSD15AdapterStep.
func benchEnv(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// BenchmarkSD15AdapterStep is one optimizer step of the paper's recipe at
// SD 1.5's size: the UNet (random weights, frozen) with a fresh LCP adapter
// (IP-Adapter Plus resampler over ViT-H-wide states, the whole adapter
// trainable), one subject per sample conditioning the dynamic and the
// grounding attention, eps-MSE and AdamW. Sub-benchmarks: float32 or
// mixed precision (bfloat16 on the CPU, float16 on CUDA), each with and
// without gradient checkpointing. LCPDIFF_BENCH_DEVICE (cpu, cuda),
// LCPDIFF_BENCH_BATCH (default 1) and LCPDIFF_BENCH_SIZE (pixels, default
// 256) set the run; the GPU measurement is batch 16 at 512. Peak
// RSS only grows within a process: for each variant's own, run it alone
// (-bench 'SD15AdapterStep/fp32-ckpt' -benchtime 1x). On CUDA each variant
// reports its own peak GPU memory (the allocator's, reset per variant;
// weights and inputs included).
func BenchmarkSD15AdapterStep(b *testing.B) {
	device := torch.CPU
	if d := os.Getenv("LCPDIFF_BENCH_DEVICE"); d != "" {
		var err error
		if device, err = torch.ParseDevice(d); err != nil {
			b.Fatal(err)
		}
	}
	batch := int64(benchEnv(b, "LCPDIFF_BENCH_BATCH", 1))
	latent := int64(benchEnv(b, "LCPDIFF_BENCH_SIZE", 256) / 8)
	opts := torch.Options{Device: device}
	u := unet.NewRandom(unet.SD15Config(), 0, 0.02, opts)
	defer u.Free()
	a, err := lcp.Fresh(u, lcp.DefaultResampler(u.Config.CrossAttentionDim), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Free()
	var params []*torch.Tensor
	for _, p := range a.Params() {
		params = append(params, p.SetRequiresGrad(true))
	}
	opt := torch.NewAdamW(params, torch.AdamWOptions{LR: 5e-5, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 1e-2})
	defer opt.Close()
	g := torch.NewGenerator(1)
	defer g.Close()
	s := torch.NewScope()
	defer s.Close()
	x := opts.Randn(g, batch, 4, latent, latent)
	noise := opts.Randn(g, batch, 4, latent, latent)
	text := opts.Randn(g, batch, 77, u.Config.CrossAttentionDim)
	hidden := opts.Randn(g, batch, 257, 1280) // ViT-H/14's penultimate states of one subject
	boxes := torch.New([]float32{0.1, 0.2, 0.6, 0.9}, 1, 1, 4).Repeat(batch, 1, 1).ToOptions(opts)
	phrase := opts.Randn(g, batch, 1, u.Config.CrossAttentionDim)
	ts := torch.New([]int64{500}).ToDevice(device)
	lower := torch.BFloat16
	if device.Type == torch.CUDADevice {
		lower = torch.Float16
	}
	peak0, _ := torch.PeakRSS()

	step := func(amp bool) {
		s := torch.NewScope()
		defer s.Close()
		opt.ZeroGrad()
		torch.WithGrad(func() {
			var loss *torch.Tensor
			forward := func() {
				tokens := a.IP.ImageTokens(hidden)
				if err := a.IP.SetCondition(ipadapter.Condition{Subjects: []*torch.Tensor{tokens}}); err != nil {
					b.Fatal(err)
				}
				a.Grounding.Set(a.Grounding.PositionNet.Forward(boxes, opts.Ones(batch, 1), phrase), 1)
				pred := u.Forward(x, ts, text)
				loss = pred.To(torch.Float32).Sub(noise).Square().Mean()
			}
			if amp {
				torch.Autocast(device.Type, lower, forward)
			} else {
				forward()
			}
			loss.Backward()
			a.IP.ClearCondition()
			a.Grounding.Clear()
		})
		opt.Step()
		params[0].Sum().Item() // a read of the device waits for the step's queued work

	}
	for _, v := range []struct {
		name      string
		amp, ckpt bool
	}{{"fp32", false, false}, {"fp32-ckpt", false, true}, {"amp", true, false}, {"amp-ckpt", true, true}} {
		b.Run(v.name, func(b *testing.B) {
			u.SetGradientCheckpointing(v.ckpt)
			defer u.SetGradientCheckpointing(false)
			cuda := device.Type == torch.CUDADevice
			if cuda { // the GPU's peak is the allocator's, and can be reset per variant
				if err := torch.ResetCUDAPeakMemory(device.Index); err != nil {
					b.Fatal(err)
				}
			}
			step(v.amp) // warm-up
			b.ResetTimer()
			for range b.N {
				step(v.amp)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)*float64(batch)/b.Elapsed().Seconds(), "samples/s")
			peak, _ := torch.PeakRSS()
			b.Logf("%v, batch %d, %dx%d latents: peak RSS %.0f MiB (%.0f before the first step)", device, batch, latent, latent, peak, peak0)
			if cuda {
				gpu, err := torch.CUDAPeakMemory(device.Index)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(gpu)/(1<<20), "peak-GPU-MiB")
			}
		})
	}
}

// BenchmarkToyLCPStep is one optimizer step of the built-in toy-world
// model's stage 3 (the LCP conditioner, the adapter and the UNet
// training) on a small toy world: eight samples a step, as one micro-batch
// of 8 or as 8 micro-batches of 1 accumulated, which shows what batching
// the conditioner gains (the refiner's UNet pass, the attention
// processors' rows). LCPDIFF_BENCH_DEVICE as for BenchmarkSD15AdapterStep.
func BenchmarkToyLCPStep(b *testing.B) {
	opts := torch.Options{}
	if d := os.Getenv("LCPDIFF_BENCH_DEVICE"); d != "" {
		var err error
		if opts.Device, err = torch.ParseDevice(d); err != nil {
			b.Fatal(err)
		}
	}
	dir, err := builtin.ToyWorld()
	if err != nil {
		b.Fatal(err)
	}
	m, err := pipeline.LoadModel(dir, pipeline.LoadOptions{Options: opts})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Free()
	a, err := lcp.Load(filepath.Join(dir, builtin.AdapterFile), m.UNet, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Free()
	vision, err := clip.LoadVisionEncoder(filepath.Join(dir, builtin.ImageEncoder), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer vision.Free()
	proc, err := clip.LoadImageProcessorConfig(filepath.Join(dir, builtin.ImageEncoder, "preprocessor_config.json"))
	if err != nil {
		b.Fatal(err)
	}
	enc := pipeline.Encoders{Vision: vision, Processor: proc}
	world := b.TempDir()
	if _, err := data.WriteToyWorld(world, data.ToyWorldConfig{Seed: 1, Clips: 24, Images: 12, Size: 64, Frames: 4}); err != nil {
		b.Fatal(err)
	}
	manifest, err := data.LoadManifest(filepath.Join(world, "train.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	for _, v := range []struct {
		name         string
		batch, accum int
	}{{"batch8", 8, 1}, {"batch1x8", 1, 8}} {
		b.Run(v.name, func(b *testing.B) {
			cfg := Defaults()
			cfg.Steps, cfg.BatchSize, cfg.GradAccum, cfg.Resolution = 1_000_000, v.batch, v.accum, 64
			cfg.Trainable = append([]string{UNetPrefix + "*"}, AdapterTrainable...)
			cfg.OutDir, cfg.LR = b.TempDir(), 1e-4
			batches, err := NewManifestBatches(manifest, cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer batches.Close()
			tr, err := newTrainer(nil, cfg, m, a, batches, NewLCPConditioner(m, a, enc, cfg), Hooks{})
			if err != nil {
				b.Fatal(err)
			}
			defer tr.close()
			step := func() {
				if _, _, err := tr.optimizerStep(); err != nil {
					b.Fatal(err)
				}
				tr.step++
			}
			step() // warm-up
			b.ResetTimer()
			for range b.N {
				step()
			}
			b.ReportMetric(float64(b.N*cfg.SamplesPerStep())/b.Elapsed().Seconds(), "samples/s")
		})
	}
}
