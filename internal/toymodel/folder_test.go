package toymodel

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/model/clip"
	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// writeDefault writes the default model with seed into a fresh folder.
func writeDefault(t *testing.T, seed uint64) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "toy")
	if _, err := Write(out, Default(), seed); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWrittenFolderLoads(t *testing.T) {
	out := writeDefault(t, 0)
	m, err := pipeline.LoadModel(out, pipeline.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	if m.Scheduler.BetaSchedule != "scaled_linear" || m.Scheduler.StepsOffset != 1 || m.Scheduler.SetAlphaToOne {
		t.Fatalf("scheduler %+v", m.Scheduler)
	}
	if f := m.VAE.Config.Downsampling(); f != 4 {
		t.Fatalf("VAE downsampling %d, want 4", f)
	}
	// A prompt runs through the text encoder and the UNet at the latent size.
	torch.NoGrad(func() {
		s := torch.NewScope()
		defer s.Close()
		ids, _ := m.Tokenizer.EncodePadded("a red-blue striped star on grass")
		out := m.Text.Forward(torch.New(ids, 1, int64(len(ids))))
		if got := out.LastHidden.Shape(); got[2] != 64 {
			t.Fatalf("text hidden %v", got)
		}
		eps := m.UNet.Forward(torch.Zeros(1, m.UNet.Config.InChannels, 16, 16), torch.New([]float32{500}), out.LastHidden)
		if got := eps.Shape(); got[1] != m.VAE.Config.LatentChannels || got[2] != 16 {
			t.Fatalf("unet output %v", got)
		}
		mean, _ := m.VAE.Encode(torch.Zeros(1, 3, 64, 64))
		if got := mean.Shape(); got[2] != 16 || got[3] != 16 {
			t.Fatalf("latents %v", got)
		}
	})

	enc := filepath.Join(out, "image_encoder")
	vision, err := clip.LoadVisionEncoder(enc, torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer vision.Free()
	proc, err := clip.LoadImageProcessorConfig(filepath.Join(enc, "preprocessor_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if proc.Size.ShortestEdge != 64 || proc.CropSize.Height != 64 || vision.Config.Patches() != 64 {
		t.Fatalf("processor %+v, %d patches", proc, vision.Config.Patches())
	}
}

func TestWriteIsDeterministicAndInitialisesLikePyTorch(t *testing.T) {
	a, b := writeDefault(t, 7), writeDefault(t, 7)
	c := writeDefault(t, 8)
	for _, f := range []string{"unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
		"text_encoder/model.safetensors", "image_encoder/model.safetensors", "tokenizer/vocab.json"} {
		x, _ := os.ReadFile(filepath.Join(a, f))
		y, _ := os.ReadFile(filepath.Join(b, f))
		z, _ := os.ReadFile(filepath.Join(c, f))
		if len(x) == 0 || !bytes.Equal(x, y) {
			t.Fatalf("%s differs between two writes with one seed", f)
		}
		if strings.HasSuffix(f, ".safetensors") && bytes.Equal(x, z) {
			t.Fatalf("%s is the same for seeds 7 and 8", f)
		}
	}

	stats := func(part, file, key string) (mean, std, absMax float64) {
		src, err := nn.OpenFiles(filepath.Join(a, part, file))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		w, err := src.Tensor(key)
		if err != nil {
			t.Fatal(err)
		}
		v := w.Float32s()
		var s, ss float64
		for _, x := range v {
			s += float64(x)
			ss += float64(x) * float64(x)
			absMax = max(absMax, math.Abs(float64(x)))
		}
		n := float64(len(v))
		mean = s / n
		return mean, math.Sqrt(ss/n - mean*mean), absMax
	}
	near := func(what string, got, want, tol float64) {
		if math.Abs(got-want) > tol {
			t.Errorf("%s: %.4g, want %.4g", what, got, want)
		}
	}
	// kaiming_uniform(a=sqrt(5)): U(-b, b), b = 1/sqrt(fan_in), std b/sqrt(3).
	const unetFile = "diffusion_pytorch_model.safetensors"
	b64 := 1 / math.Sqrt(64*9)
	_, std, mx := stats("unet", unetFile, "down_blocks.0.resnets.0.conv1.weight")
	near("unet conv std", std, b64/math.Sqrt(3), 0.02*b64)
	near("unet conv bound", mx, b64, 0.01*b64)
	_, _, mx = stats("unet", unetFile, "down_blocks.0.resnets.0.conv1.bias")
	if mx > b64 || mx == 0 {
		t.Errorf("unet conv bias max %g, want in (0, %g]", mx, b64)
	}
	mean, std, _ := stats("vae", unetFile, "encoder.down_blocks.0.resnets.0.norm1.weight")
	near("groupnorm weight", mean, 1, 0)
	near("groupnorm weight spread", std, 0, 0)
	_, _, mx = stats("vae", unetFile, "encoder.down_blocks.0.resnets.0.norm1.bias")
	near("groupnorm bias", mx, 0, 0)
	// transformers' CLIP: N(0, 0.02) embeddings, N(0, D^-1/2 (2L)^-1/2) in-projections.
	_, std, _ = stats("text_encoder", "model.safetensors", "text_model.embeddings.token_embedding.weight")
	near("token embedding std", std, 0.02, 0.002)
	_, std, _ = stats("text_encoder", "model.safetensors", "text_model.encoder.layers.0.self_attn.q_proj.weight")
	near("q_proj std", std, 1/math.Sqrt(64)/math.Sqrt(4), 0.01)
	_, _, mx = stats("text_encoder", "model.safetensors", "text_model.encoder.layers.0.self_attn.q_proj.bias")
	near("q_proj bias", mx, 0, 0)
	_, std, _ = stats("image_encoder", "model.safetensors", "vision_model.encoder.layers.1.mlp.fc1.weight")
	near("fc1 std", std, 1/math.Sqrt(128), 0.01)
}

func TestWriteRefusesAFullFolder(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x"), nil, 0o644)
	if _, err := Write(dir, Default(), 0); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("got %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(dir))
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("left %s behind", e.Name())
		}
	}
}
