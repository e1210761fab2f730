package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/model/lcp"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// A checkpoint exported to one folder: the checkpoint's UNet in place of
// the model's, its adapter beside, every weight in fp16 with the adapter's
// metadata kept, a training run's notes left out; and the folder generates.
func TestModelExport(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "toy")
	if log, err := run(t, "--config", filepath.Join("..", "..", "configs", "toyworld-model.yaml"),
		"model", "init", "--out", model, "--seed", "3"); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if err := os.WriteFile(filepath.Join(model, "vae_train.csv"), []byte("step,loss\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A checkpoint as training writes one: a fresh adapter, and the UNet
	// with one weight changed so that the export must take the checkpoint's.
	ckpt := filepath.Join(dir, "step-00000001")
	if err := os.MkdirAll(ckpt, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := pipeline.LoadModel(model, pipeline.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	a, err := lcp.Fresh(m.UNet, lcp.DefaultResampler(m.UNet.Config.CrossAttentionDim), m.Options)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Free()
	if err := a.Save(filepath.Join(ckpt, "adapter.safetensors")); err != nil {
		t.Fatal(err)
	}
	w := m.UNet.Params()["conv_out.bias"]
	torch.NoGrad(func() {
		w.CopyFrom(torch.Scoped(func() *torch.Tensor { return torch.Ones(w.Shape()...).MulScalar(0.5) }))
	})
	if err := torch.SaveSafetensors(filepath.Join(ckpt, "unet.safetensors"), m.UNet.Params(), nil); err != nil {
		t.Fatal(err)
	}

	out := filepath.Join(dir, "export")
	if log, err := run(t, "model", "export", "-m", model, "--checkpoint", ckpt, "--out", out); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if _, err := os.Stat(filepath.Join(out, "vae_train.csv")); err == nil {
		t.Error("the run's notes were exported")
	}
	f, err := torch.OpenSafetensors(filepath.Join(out, "unet", "diffusion_pytorch_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	bias, err := f.Tensor("conv_out.bias")
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if bias.DType() != torch.Float16 || bias.To(torch.Float32).Float32s()[0] != 0.5 {
		t.Errorf("exported conv_out.bias is %v %v, want the checkpoint's 0.5 in fp16", bias.DType(), bias.To(torch.Float32).Float32s()[:1])
	}
	exported, err := lcp.Load(filepath.Join(out, "adapter.safetensors"), m.UNet, m.Options)
	if err != nil {
		t.Fatalf("the exported adapter does not load: %v", err)
	}
	exported.Free()

	png := filepath.Join(dir, "x.png")
	if log, err := run(t, "generate", "-m", out, "-p", "a red-blue striped star on grass", "--steps", "2", "-q", "-o", png); err != nil {
		t.Fatalf("generate from the export: %v\n%s", err, log)
	}

	// Missing parts are one clear line each.
	for _, c := range []struct{ args []string }{
		{[]string{"model", "export", "--checkpoint", ckpt, "--out", out}},
		{[]string{"model", "export", "-m", model, "--checkpoint", dir, "--out", out}},
		{[]string{"model", "export", "-m", model, "--checkpoint", ckpt, "--out", out, "--dtype", "int8"}},
	} {
		if _, err := run(t, c.args...); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line", c.args, err)
		}
	}
}
