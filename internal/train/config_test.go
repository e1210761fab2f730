package train

import (
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/viper"
)

func TestConfigFromYAML(t *testing.T) {
	v := viper.New()
	v.SetConfigType("yaml")
	yaml := `
steps: 200
batch_size: 4
lr: 1.0e-4
betas: [0.8, 0.99]
grad_accum: 2
trainable: ["ip_adapter.*", "*fuser*"]
out_dir: runs/a
`
	if err := v.ReadConfig(strings.NewReader(yaml)); err != nil {
		t.Fatal(err)
	}
	c := Defaults()
	if err := v.Unmarshal(&c); err != nil {
		t.Fatal(err)
	}
	if c.Steps != 200 || c.BatchSize != 4 || c.LR != 1e-4 || c.Betas != [2]float64{0.8, 0.99} || c.GradAccum != 2 ||
		!slices.Equal(c.Trainable, []string{"ip_adapter.*", "*fuser*"}) || c.OutDir != "runs/a" {
		t.Errorf("read %+v", c)
	}
	if c.WeightDecay != 1e-2 || c.Resolution != 512 || c.SamplesPerStep() != 8 {
		t.Errorf("defaults lost: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for name, change := range map[string]func(*Config){
		"steps":                   func(c *Config) { c.Steps = 0 },
		"lr":                      func(c *Config) { c.LR = 0 },
		"betas":                   func(c *Config) { c.Betas[1] = 1 },
		"text_dropout":            func(c *Config) { c.TextDropout = 1.5 },
		"resolution":              func(c *Config) { c.Resolution = 100 },
		"trainable":               func(c *Config) { c.Trainable = nil },
		"pattern":                 func(c *Config) { c.Trainable = []string{"[static"} },
		"out_dir":                 func(c *Config) { c.OutDir = "" },
		"clip_grad_norm":          func(c *Config) { c.ClipGradNorm = -1 },
		"conditioner":             func(c *Config) { c.Conditioner = "image" },
		"lr_scheduler":            func(c *Config) { c.LRScheduler = "step" },
		"lr_warmup":               func(c *Config) { c.LRWarmupSteps = -1 },
		"dropped_image":           func(c *Config) { c.DroppedImage = "black" },
		"phrase_dropout":          func(c *Config) { c.PhraseDropout = -0.1 },
		"phrase_needs":            func(c *Config) { c.PhraseDropout, c.Conditioner = 0.3, "grounding" },
		"checkpoints_total_limit": func(c *Config) { c.CheckpointsTotalLimit = -1 },
		"subject_loss_weight":     func(c *Config) { c.SubjectLossWeight = -1 },
	} {
		c := Defaults()
		change(&c)
		err := c.Validate()
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if want := strings.Split(name, "_")[0]; name != "pattern" && !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %q does not name it", name, err)
		}
	}
}

// The curves of diffusers' get_scheduler (LambdaLR, stepped after each
// optimizer step), at 10 warmup steps of 110 and a peak of 1.
func TestLRSchedulesFollowDiffusers(t *testing.T) {
	quarter := 0.5 * (1 + math.Cos(math.Pi/4))
	for name, want := range map[string]map[int]float64{
		"constant":             {0: 1, 5: 1, 109: 1},
		"constant_with_warmup": {0: 0, 5: 0.5, 10: 1, 109: 1},
		"linear":               {0: 0, 5: 0.5, 10: 1, 60: 0.5, 109: 0.01, 110: 0},
		"cosine":               {0: 0, 5: 0.5, 10: 1, 35: quarter, 60: 0.5, 110: 0},
	} {
		c := Defaults()
		c.Steps, c.LR, c.LRScheduler, c.LRWarmupSteps = 110, 1, name, 10
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		for done, lr := range want {
			if got := c.lrAt(done); math.Abs(got-lr) > 1e-12 {
				t.Errorf("%s after %d steps: lr %g, want %g", name, done, got, lr)
			}
		}
	}
}

// TestConfigKeys: every field of Config has its YAML key, and the keys are
// the ones a YAML file may set (ConfigFromYAML's test files use them).
func TestConfigKeys(t *testing.T) {
	keys := ConfigKeys()
	if n := reflect.TypeFor[Config]().NumField(); len(keys) != n {
		t.Fatalf("%d keys for %d fields", len(keys), n)
	}
	for _, want := range []string{"steps", "phrase_dropout", "dropped_image", "resampler", "resume"} {
		if !slices.Contains(keys, want) {
			t.Errorf("ConfigKeys lacks %q: %v", want, keys)
		}
	}
	for _, k := range keys {
		if k == "" || strings.Contains(k, ",") {
			t.Errorf("ConfigKeys has %q: a field without a plain mapstructure tag", k)
		}
	}
}
