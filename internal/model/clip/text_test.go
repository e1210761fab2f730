package clip

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// The README's tolerance; fp32 against fp64 differs by about 6e-7.
const textAtol = 1e-5

func loadTinyText(t *testing.T) *TextEncoder {
	t.Helper()
	m, err := LoadTextEncoder(golden.Path(t, "tiny-sd", "text_encoder"), torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Free)
	return m
}

func TestTextEncoderMatchesTransformers(t *testing.T) {
	m := loadTinyText(t)
	f := golden.File(t, "core", "text_encoder.safetensors")
	ids := golden.Tensor(t, f, "input_ids")
	out := m.Forward(ids)
	defer out.Free()

	if len(out.Hidden) != 4 {
		t.Fatalf("%d hidden states, want 4", len(out.Hidden))
	}
	skip0, skip1 := m.PromptEmbeds(out, 0), m.PromptEmbeds(out, 1)
	defer skip0.Free()
	defer skip1.Free()
	for _, c := range []struct {
		key string
		got *torch.Tensor
	}{
		{"last_hidden_state", out.LastHidden},
		{"last_hidden_state", skip0}, // clip_skip 0 is the plain output
		{"penultimate_hidden_state", out.Penultimate()},
		{"clip_skip_1_prompt_embeds", skip1},
		{"pooler_output", out.Pooled},
		{"hidden_states.0", out.Hidden[0]},
		{"hidden_states.1", out.Hidden[1]},
		{"hidden_states.2", out.Hidden[2]},
		{"hidden_states.3", out.Hidden[3]},
	} {
		golden.Compare(t, c.key, c.got, golden.Tensor(t, f, c.key), textAtol)
	}

	got, want := torch.Data[int64](m.poolIndex(ids)), torch.Data[int64](golden.Tensor(t, f, "pooled_token_index"))
	if !slices.Equal(got, want) {
		t.Errorf("pooled token index %v, want %v", got, want)
	}
}

func TestPoolIndex(t *testing.T) {
	// Token 7 ends the prompt; 9, a larger id, comes before it.
	ids := torch.New([]int64{0, 9, 7, 3, 7}, 1, 5)
	for _, c := range []struct {
		eos  int64
		want int64
	}{
		{2, 1}, // legacy configs: the largest id
		{7, 2}, // the first eos_token_id
	} {
		m := &TextEncoder{Config: TextConfig{EOSTokenID: c.eos}}
		if got := m.poolIndex(ids).Item(); got != float64(c.want) {
			t.Errorf("eos_token_id %d: pooled index %v, want %d", c.eos, got, c.want)
		}
	}
}

func TestTextEncoderActivations(t *testing.T) {
	ref := loadTinyText(t)
	ids := golden.Tensor(t, golden.File(t, "core", "text_encoder.safetensors"), "input_ids")
	want := ref.Forward(ids)
	defer want.Free()
	for _, act := range []string{"gelu", "gelu_new", "gelu_pytorch_tanh"} {
		t.Run(act, func(t *testing.T) {
			dir := t.TempDir()
			writeConfig(t, dir, func(c map[string]any) { c["hidden_act"] = act })
			if err := os.Symlink(golden.Path(t, "tiny-sd", "text_encoder", "model.safetensors"),
				filepath.Join(dir, "model.safetensors")); err != nil {
				t.Fatal(err)
			}
			m, err := LoadTextEncoder(dir, torch.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Free()
			out := m.Forward(ids)
			defer out.Free()
			// The embeddings do not see the activation; the first MLP does.
			golden.Compare(t, "hidden_states.0", out.Hidden[0], want.Hidden[0], 0)
			if d := out.Hidden[1].Sub(want.Hidden[1]).Abs().Amax().Item(); !(d > 1e-4 && d < 1) {
				t.Errorf("layer 1 differs from quick_gelu's by %g, want a small but real difference", d)
			}
		})
	}
}

func TestLoadTextConfigErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := LoadTextEncoder(dir, torch.Options{})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "config.json")) {
		t.Errorf("no config.json: error %v, want one naming the file", err)
	}

	writeConfig(t, dir, func(c map[string]any) { c["hidden_act"] = "swishy" })
	_, err = LoadTextConfig(filepath.Join(dir, "config.json"))
	if err == nil || !strings.Contains(err.Error(), `hidden_act "swishy"`) {
		t.Errorf("unknown hidden_act: error %v", err)
	}

	writeConfig(t, dir, func(c map[string]any) { c["num_attention_heads"] = 5 })
	_, err = LoadTextConfig(filepath.Join(dir, "config.json"))
	if err == nil || !strings.Contains(err.Error(), "not a multiple of num_attention_heads 5") {
		t.Errorf("32 wide with 5 heads: error %v", err)
	}

	writeConfig(t, dir, func(c map[string]any) { delete(c, "hidden_size") })
	_, err = LoadTextConfig(filepath.Join(dir, "config.json"))
	if err == nil || !strings.Contains(err.Error(), "hidden_size is 0") {
		t.Errorf("no hidden_size: error %v", err)
	}

	writeConfig(t, dir, nil)
	_, err = LoadTextEncoder(dir, torch.Options{})
	if err == nil || !strings.Contains(err.Error(), "no model.safetensors (or .bin) weights") {
		t.Errorf("no weights: error %v", err)
	}
}

func TestTextEncoderCheckpointErrors(t *testing.T) {
	const (
		fc2Bias   = "text_model.encoder.layers.1.mlp.fc2.bias"
		finalNorm = "text_model.final_layer_norm.weight"
	)
	for _, c := range []struct {
		name   string
		edit   func(map[string]*torch.Tensor)
		errHas []string // nil: loads
	}{
		{"complete", func(map[string]*torch.Tensor) {}, nil},
		{"position_ids buffer", func(w map[string]*torch.Tensor) {
			w["text_model.embeddings.position_ids"] = torch.Options{DType: torch.Int64}.Arange(0, 77, 1).Unsqueeze(0)
		}, nil},
		{"missing", func(w map[string]*torch.Tensor) { delete(w, fc2Bias) }, []string{"1 missing (" + fc2Bias + ")"}},
		{"wrong shape", func(w map[string]*torch.Tensor) { w[finalNorm] = torch.Zeros(31) }, []string{"1 wrong shape (" + finalNorm + " is [31], want [32])"}},
		{"unexpected", func(w map[string]*torch.Tensor) { w["text_model.extra"] = torch.Zeros(1) }, []string{"1 unexpected (text_model.extra)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := tinyTextWeights(t)
			c.edit(w)
			dir := t.TempDir()
			writeConfig(t, dir, nil)
			if err := torch.SaveSafetensors(filepath.Join(dir, "model.safetensors"), w, nil); err != nil {
				t.Fatal(err)
			}
			m, err := LoadTextEncoder(dir, torch.Options{})
			want := c.errHas
			if want != nil {
				want = append(want, dir)
			}
			checkLoad(t, m, err, want)
		})
	}
}

func TestTextEncoderSharded(t *testing.T) {
	w := tinyTextWeights(t)
	dir := t.TempDir()
	writeConfig(t, dir, nil)
	names := [2]string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
	shards := [2]map[string]*torch.Tensor{{}, {}}
	index := map[string]any{"metadata": map[string]any{}}
	weightMap := map[string]string{}
	for k, v := range w {
		i := 0
		if strings.Contains(k, "layers.2") || strings.Contains(k, "final_layer_norm") {
			i = 1
		}
		shards[i][k] = v
		weightMap[k] = names[i]
	}
	index["weight_map"] = weightMap
	for i, s := range shards {
		if err := torch.SaveSafetensors(filepath.Join(dir, names[i]), s, nil); err != nil {
			t.Fatal(err)
		}
	}
	writeJSON(t, filepath.Join(dir, "model.safetensors.index.json"), index)

	m, err := LoadTextEncoder(dir, torch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	f := golden.File(t, "core", "text_encoder.safetensors")
	out := m.Forward(golden.Tensor(t, f, "input_ids"))
	defer out.Free()
	golden.Compare(t, "last_hidden_state", out.LastHidden, golden.Tensor(t, f, "last_hidden_state"), textAtol)
}

func TestTextEncoderFreesAsItGoes(t *testing.T) {
	m := loadTinyText(t)
	ids := golden.Tensor(t, golden.File(t, "core", "text_encoder.safetensors"), "input_ids")
	run := func() {
		out := m.Forward(ids)
		skip := m.PromptEmbeds(out, 1)
		skip.Free()
		out.Free()
	}
	run()
	torch.Settle() // unrelated garbage is freed now, not while we count
	before := torch.LiveTensors()
	for range 50 {
		run()
	}
	if after := torch.LiveTensors(); after != before {
		t.Errorf("live tensors %d after 50 forwards, %d before", after, before)
	}
}

// tinyTextWeights reads every tensor of the tiny golden text encoder.
func tinyTextWeights(t *testing.T) map[string]*torch.Tensor {
	f := golden.File(t, "tiny-sd", "text_encoder", "model.safetensors")
	w := map[string]*torch.Tensor{}
	for _, k := range f.Header.Names() {
		w[k] = golden.Tensor(t, f, k)
	}
	return w
}

// writeConfig writes dir/config.json: the tiny golden config, edited.
func writeConfig(t *testing.T, dir string, edit func(map[string]any)) {
	b, err := os.ReadFile(golden.Path(t, "tiny-sd", "text_encoder", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(c)
	}
	writeJSON(t, filepath.Join(dir, "config.json"), c)
}

func writeJSON(t *testing.T, path string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
