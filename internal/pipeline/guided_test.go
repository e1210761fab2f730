package pipeline

import (
	"fmt"
	"slices"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/guidance"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// The golden guided run (shared/golden/guidance): dog left, cat right.
const guidedPrompt = "a dog and a cat on the grass"

var guidedSubjects = []guidance.Subject{
	{Tokens: []int64{2}, Box: [4]float64{0.05, 0.3, 0.45, 0.95}},
	{Tokens: []int64{5}, Box: [4]float64{0.55, 0.3, 0.95, 0.95}},
}

func guidedRequest(t *testing.T, f *torch.SafetensorsFile) Text2Image {
	return Text2Image{
		Prompt: guidedPrompt, Steps: 4, CFGScale: 7.5, Width: 128, Height: 128, Batch: 1,
		Latents: golden.Tensor(t, f, "gen.initial_latents"),
	}
}

// TestGoldenGuidedGeneration runs the golden's 4-step guided generation
// and checks every gen.* key: at guided steps 0 and 1 the latent entering
// the step, L, dL/dz, alpha_t and the guided latent; at every step both
// noise predictions (recomputed from the latent the step denoised) and the
// step's output. Tolerances: the README's (losses rtol 1e-5, gradient atol
// 1e-7, latents atol 1e-4, UNet outputs 1e-5).
func TestGoldenGuidedGeneration(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m := loadTinySD(t)
	f := golden.File(t, "guidance", "golden.safetensors")

	type step struct {
		before, denoised, latents, loss, grad *torch.Tensor
		alpha                                 float64
	}
	var steps []step
	r := guidedRequest(t, f)
	g, err := m.BoxGuide(r, BoxGuidance{
		Subjects: guidedSubjects,
		Observe: func(i int, alpha float64, loss, grad *torch.Tensor) {
			steps[i].alpha, steps[i].loss, steps[i].grad = alpha, torch.Persist(loss.Clone()), torch.Persist(grad.Clone())
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Cond.Free()
	var timesteps []int64
	r.Guide = func(i, n int, ts int64, z *torch.Tensor) *torch.Tensor {
		timesteps = append(timesteps, ts)
		steps = append(steps, step{before: torch.Persist(z.Clone())})
		out := g.Step(i, n, ts, z)
		steps[i].denoised = torch.Persist(out.Clone())
		return out
	}
	r.OnStep = func(i int, _ int64, latents *torch.Tensor) { steps[i].latents = torch.Persist(latents.Clone()) }
	if _, err := m.Generate(r); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, st := range steps {
			for _, x := range []*torch.Tensor{st.before, st.denoised, st.latents, st.loss, st.grad} {
				x.Free()
			}
		}
	}()

	if want := torch.Data[int64](golden.Tensor(t, f, "gen.timesteps")); !slices.Equal(timesteps, want) {
		t.Fatalf("timesteps %v, want %v", timesteps, want)
	}
	torch.NoGrad(func() {
		cond := m.encodePrompt(guidedPrompt, 0, nil)
		uncond := m.encodePrompt("", 0, nil)
		golden.Compare(t, "inputs.cond_embeds (= gen cond)", cond, golden.Tensor(t, f, "inputs.cond_embeds"), 1e-5)
		golden.Compare(t, "gen.uncond_embeds", uncond, golden.Tensor(t, f, "gen.uncond_embeds"), 1e-5)
		embeds := torch.Cat([]*torch.Tensor{uncond, cond}, 0)
		for i, st := range steps {
			key := fmt.Sprintf("gen.step%d.", i)
			if i < 2 {
				golden.Compare(t, key+"z_before", st.before, golden.Tensor(t, f, key+"z_before"), 1e-4)
				want := golden.Tensor(t, f, key+"loss")
				golden.Compare(t, key+"loss", st.loss, want, 1e-5*want.Item())
				golden.Compare(t, key+"grad", st.grad, golden.Tensor(t, f, key+"grad"), 1e-7)
				golden.Compare(t, key+"alpha", torch.New([]float32{float32(st.alpha)}).Reshape(), golden.Tensor(t, f, key+"alpha"), 0)
				golden.Compare(t, key+"z_guided", st.denoised, golden.Tensor(t, f, key+"z_guided"), 1e-4)
			} else if st.loss != nil || st.denoised.Sub(st.before).Abs().Amax().Item() != 0 {
				t.Errorf("step %d was guided", i)
			}
			noise := m.UNet.Forward(torch.Cat([]*torch.Tensor{st.denoised, st.denoised}, 0), torch.New([]int64{timesteps[i]}).Reshape(), embeds).Chunk(2, 0)
			golden.Compare(t, key+"noise_pred_uncond", noise[0], golden.Tensor(t, f, key+"noise_pred_uncond"), 1e-5)
			golden.Compare(t, key+"noise_pred_text", noise[1], golden.Tensor(t, f, key+"noise_pred_text"), 1e-5)
			golden.Compare(t, key+"latents", st.latents, golden.Tensor(t, f, key+"latents"), 1e-4)
		}
		golden.Compare(t, "gen.final_latents", steps[len(steps)-1].latents, golden.Tensor(t, f, "gen.final_latents"), 1e-4)
	})
}

// TestGenerateGuided: the one-call path gives the golden latents, guides
// steps 0 and 1 only, runs a Guide hook already on the request first, and
// leaves the denoising itself without autograd.
func TestGenerateGuided(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m := loadTinySD(t)
	f := golden.File(t, "guidance", "golden.safetensors")
	r := guidedRequest(t, f)
	var order []string
	r.Guide = func(i, _ int, _ int64, z *torch.Tensor) *torch.Tensor {
		order = append(order, fmt.Sprintf("hook %d", i))
		return z
	}
	r.OnStep = func(i int, _ int64, latents *torch.Tensor) {
		if torch.GradEnabled() {
			t.Errorf("step %d: autograd left on after the guided update", i)
		}
		golden.Compare(t, fmt.Sprintf("gen.step%d.latents", i), latents, golden.Tensor(t, f, fmt.Sprintf("gen.step%d.latents", i)), 1e-4)
	}
	b := BoxGuidance{Subjects: guidedSubjects, Observe: func(i int, _ float64, _, _ *torch.Tensor) {
		order = append(order, fmt.Sprintf("guide %d", i))
	}}
	if _, err := m.GenerateGuided(r, b); err != nil {
		t.Fatal(err)
	}
	if want := []string{"hook 0", "guide 0", "hook 1", "guide 1", "hook 2", "hook 3"}; !slices.Equal(order, want) {
		t.Errorf("calls %v, want %v", order, want)
	}
}

// TestGenerateGuidedWithoutSubjects is plain generation.
func TestGenerateGuidedWithoutSubjects(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m := loadTinySD(t)
	f := golden.File(t, "guidance", "golden.safetensors")
	plain, err := m.Generate(guidedRequest(t, f))
	if err != nil {
		t.Fatal(err)
	}
	guided, err := m.GenerateGuided(guidedRequest(t, f), BoxGuidance{})
	if err != nil {
		t.Fatal(err)
	}
	golden.Compare(t, "image without subjects", guided, plain, 0)
}

func TestGenerateGuidedRefusesBadSubjects(t *testing.T) {
	m := loadTinySD(t)
	r := Text2Image{Prompt: "a cat", Steps: 2, CFGScale: 7.5, Width: 64, Height: 64, Batch: 1}
	_, err := m.GenerateGuided(r, BoxGuidance{Subjects: []guidance.Subject{{Tokens: []int64{80}}}})
	if want := "box guidance: subject 1: token position 80 is outside the prompt's 77 tokens"; err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
}

// TestGenerateGuidedFreesEverything: guided steps leave no tensor behind
// (the recorded maps, the graph's handles, the embedding), so a long run
// stays flat.
func TestGenerateGuidedFreesEverything(t *testing.T) {
	m := loadTinySD(t)
	var live []int64
	r := Text2Image{Prompt: guidedPrompt, Steps: 6, CFGScale: 7.5, Seed: 3, Width: 64, Height: 64, Batch: 2,
		OnStep: func(int, int64, *torch.Tensor) { live = append(live, torch.LiveTensors()) }}
	torch.Settle() // unrelated garbage is freed now, not while we count
	before := torch.LiveTensors()
	img, err := m.GenerateGuided(r, BoxGuidance{Subjects: guidedSubjects, Params: guidance.Params{Steps: 4}})
	if err != nil {
		t.Fatal(err)
	}
	img.Free()
	if after := torch.LiveTensors(); after != before {
		t.Errorf("%d live tensors before, %d after", before, after)
	}
	// A guided step holds one tensor more while it runs: the moved latents.
	if want := []int64{live[0], live[0], live[0], live[0], live[0] - 1, live[0] - 1}; !slices.Equal(live, want) {
		t.Errorf("live tensors per step %v, want %v", live, want)
	}
}
