package pipeline

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// sd15Config is tiny-sd's scheduler config, which is SD 1.5's.
func sd15Config(t *testing.T) SchedulerConfig {
	t.Helper()
	cfg, err := LoadSchedulerConfig(golden.Path(t, "tiny-sd", "scheduler", "scheduler_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// writeConfig writes a scheduler config file for a test and returns its path.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "scheduler_config.json")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadSchedulerConfigSD15(t *testing.T) {
	got := sd15Config(t)
	want := SchedulerConfig{
		NumTrainTimesteps: 1000,
		BetaStart:         0.00085,
		BetaEnd:           0.012,
		BetaSchedule:      "scaled_linear",
		ClipSample:        false,
		ClipSampleRange:   1, // absent: the default
		SetAlphaToOne:     false,
		StepsOffset:       1,
		PredictionType:    PredictEpsilon,
		TimestepSpacing:   "leading",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestLoadSchedulerConfigDefaults(t *testing.T) {
	got, err := LoadSchedulerConfig(writeConfig(t, `{"_class_name": "DDIMScheduler"}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := DefaultSchedulerConfig(); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestLoadSchedulerConfigErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent.json")
	for _, c := range []struct {
		name, path, want string
	}{
		{"missing file", missing, "no such file"},
		{"bad JSON", writeConfig(t, `{"beta_start": }`), "invalid character"},
		{"wrong type", writeConfig(t, `{"steps_offset": "one"}`), "steps_offset"},
		{"unknown beta_schedule", writeConfig(t, `{"beta_schedule": "squaredcos_cap_v2"}`), `beta_schedule "squaredcos_cap_v2"`},
		{"unknown prediction_type", writeConfig(t, `{"prediction_type": "flow"}`), `prediction_type "flow"`},
		{"unknown timestep_spacing", writeConfig(t, `{"timestep_spacing": "karras"}`), `timestep_spacing "karras"`},
		{"thresholding", writeConfig(t, `{"thresholding": true}`), "thresholding"},
		{"no timesteps", writeConfig(t, `{"num_train_timesteps": 0}`), "num_train_timesteps 0"},
		{"trained_betas length", writeConfig(t, `{"num_train_timesteps": 3, "trained_betas": [0.1, 0.2]}`), "2 trained_betas"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadSchedulerConfig(c.path)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.Contains(msg, c.path) || !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line naming %s and saying %q", msg, c.path, c.want)
			}
		})
	}
}

// The schedule must equal diffusers' float32 one exactly: every later
// scheduler value derives from it.
func TestNoiseScheduleGolden(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	f := golden.File(t, "core", "scheduler_ddim.safetensors")
	cfg := sd15Config(t)

	golden.Compare(t, "betas", cfg.betas(), golden.Tensor(t, f, "betas"), 0)
	golden.Compare(t, "alphas_cumprod", torch.New(cfg.alphasCumprod()), golden.Tensor(t, f, "alphas_cumprod"), 0)
	final := torch.New([]float32{NewDDIM(cfg).finalAlphaCumprod}).Reshape()
	golden.Compare(t, "final_alpha_cumprod", final, golden.Tensor(t, f, "final_alpha_cumprod"), 0)
}

// A float32 running product, the obvious way to write cumprod, is not
// what libtorch computes: it misses most of the golden values.
func TestCumprodAccumulatesInDouble(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	f := golden.File(t, "core", "scheduler_ddim.safetensors")
	alphas := torch.Data[float32](sd15Config(t).betas().Rsub(1))
	want := torch.Data[float32](golden.Tensor(t, f, "alphas_cumprod"))

	product, differ := float32(1), 0
	for i, a := range alphas {
		product *= a
		if product != want[i] {
			differ++
		}
	}
	if differ == 0 {
		t.Error("a float32 running product matches too; cumprod's comment is wrong")
	}
	t.Logf("float32 running product differs from torch.cumprod at %d of %d timesteps", differ, len(want))
}

func TestTrainedBetas(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	f := golden.File(t, "core", "scheduler_ddim.safetensors")
	cfg := DefaultSchedulerConfig()
	cfg.TrainedBetas = golden.Tensor(t, f, "betas").Float64s()
	cfg.BetaSchedule = "ignored when trained_betas are given"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	golden.Compare(t, "alphas_cumprod from trained_betas", torch.New(cfg.alphasCumprod()),
		golden.Tensor(t, f, "alphas_cumprod"), 0)
}

func TestLinearBetas(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	cfg := DefaultSchedulerConfig()
	betas := torch.Data[float32](cfg.betas())
	if len(betas) != 1000 || betas[0] != float32(0.0001) || betas[999] != float32(0.02) {
		t.Errorf("linear betas from %v to %v (%d), want 0.0001 to 0.02 (1000)", betas[0], betas[len(betas)-1], len(betas))
	}
	for i := 1; i < len(betas); i++ {
		if d := float64(betas[i]-betas[i-1]) - (0.02-0.0001)/999; d > 1e-8 || d < -1e-8 {
			t.Fatalf("betas[%d] - betas[%d] off the linear step by %g", i, i-1, d)
		}
	}
}

// rescaleZeroSNRReference is the rescaling in float64, straight from the paper.
func rescaleZeroSNRReference(betas []float32) (alphasCumprod []float64) {
	sqrtAlphaBar := make([]float64, len(betas))
	product := 1.0
	for i, b := range betas {
		product *= 1 - float64(b)
		sqrtAlphaBar[i] = math.Sqrt(product)
	}
	first, last := sqrtAlphaBar[0], sqrtAlphaBar[len(betas)-1]
	for _, v := range sqrtAlphaBar {
		v = (v - last) * first / (first - last)
		alphasCumprod = append(alphasCumprod, v*v)
	}
	return alphasCumprod
}

func TestRescaleZeroTerminalSNR(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	plain := sd15Config(t)
	rescaled := plain
	rescaled.RescaleZeroSNR = true

	got := rescaled.alphasCumprod()
	if got[len(got)-1] != 0 {
		t.Errorf("last alphas_cumprod %g, want exactly 0 (zero terminal SNR)", got[len(got)-1])
	}
	want := rescaleZeroSNRReference(torch.Data[float32](plain.betas()))
	golden.Compare(t, "rescaled alphas_cumprod vs float64", torch.New(got), torch.New(want), 2e-6)
}
