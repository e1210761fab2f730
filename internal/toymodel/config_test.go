package toymodel

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDefaultIsTheConfigFile(t *testing.T) {
	s, err := LoadSpec(filepath.Join("..", "..", "configs", "toyworld-model.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if d := Default(); !reflect.DeepEqual(s, d) {
		t.Fatalf("configs/toyworld-model.yaml and Default differ:\nfile    %+v\ndefault %+v", s, d)
	}
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadSpecOverridesAndRefuses(t *testing.T) {
	dir := t.TempDir()
	write := func(text string) string {
		path := filepath.Join(dir, "m.yaml")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	s, err := LoadSpec(write("unet:\n  block_out_channels: [32, 64, 64]\n  attention_head_dim: [2, 4, 4]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.UNet.BlockOutChannels; !reflect.DeepEqual(got, []int64{32, 64, 64}) {
		t.Fatalf("block_out_channels %v", got)
	}
	if s.VAE.SampleSize != 64 || s.TextEncoder.HiddenSize != 64 {
		t.Fatal("keys the file leaves out lost their defaults")
	}
	for text, want := range map[string]string{
		"unet:\n  block_out_chanels: [32]\n":             `unknown field "block_out_chanels"`,
		"decoder:\n  x: 1\n":                             `unknown section "decoder"`,
		"text_encoder:\n  vocab_size: 100\n":             "come from the tokenizer",
		"unet:\n  cross_attention_dim: 32\n":             "differs from text_encoder's hidden_size 64",
		"vae:\n  block_out_channels: [32, 64, 64, 64]\n": "down_block_types",
		"tokenizer:\n  model_max_length: 100\n":          "model_max_length 100",
	} {
		_, err := LoadSpec(write(text))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "m.yaml") {
			t.Errorf("%q: got %v, want an error naming the file and %q", text, err, want)
		}
	}
}
