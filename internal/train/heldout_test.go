package train

import (
	"math"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// halfSubjects is synthetic data whose first image of each batch is all
// subject and whose second has none.
type halfSubjects struct{ *Synthetic }

func (h halfSubjects) Next() (*Batch, error) {
	b, err := h.Synthetic.Next()
	if err != nil {
		return nil, err
	}
	r := b.Images.Size(2)
	b.Masks = torch.Scoped(func() *torch.Tensor {
		return torch.Cat([]*torch.Tensor{torch.Ones(1, 1, r, r), torch.Zeros(1, 1, r, r)}, 0)
	})
	return b, nil
}

// The held-out loss is the training loss of the same batches and draws,
// without updates; its subject part is the error of the all-subject
// images alone; and a second measurement repeats the first exactly, so
// that two models measured alike are compared on the same noise.
func TestHeldOutLossIsTheObjectiveOnFixedDraws(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m, a := loadTiny(t)
	cond := newTestConditioner(t, m, a, 0)
	cfg := tinyConfig(t.TempDir(), 2, "*fuser*")
	const n = 2
	got, err := MeasureHeldOut(cfg, m, a, halfSubjects{tinyData(n)}, cond, n)
	if err != nil {
		t.Fatal(err)
	}
	again, err := MeasureHeldOut(cfg, m, a, halfSubjects{tinyData(n)}, cond, n)
	if err != nil {
		t.Fatal(err)
	}
	if again != got {
		t.Errorf("measured twice: %+v, then %+v", got, again)
	}

	// The same batches through the trainer's loss, and their first rows'
	// errors alone (in the batch of two, so no kernel differs).
	tr := &trainer{cfg: cfg, model: m, adapter: a, ddpm: pipeline.NewDDPM(m.Scheduler)}
	data := tinyData(n)
	var loss, first float64
	torch.NoGrad(func() {
		for k := 1; k <= n; k++ {
			b, err := data.Next()
			if err != nil {
				t.Fatal(err)
			}
			d := NewDraws(cfg.Seed, k, b.Index)
			embeds, err := cond.Condition(b, d)
			if err != nil {
				t.Fatal(err)
			}
			loss += tr.loss(b, embeds, d).Item() / n
			first += tr.sqError(b, embeds, d).Narrow(0, 0, 1).Mean().Item() / n
			cond.Clear()
			b.Free()
		}
	})
	t.Logf("held out: loss %.6f, subjects %.6f (share %.2f); trainer: loss %.6f, first rows %.6f", got.Loss, got.Subjects, got.SubjectShare, loss, first)
	// Sums of 2 x 4 x 8 x 8 squares in another order than the means.
	const tol = 1e-6
	if math.Abs(got.Loss-loss) > tol*loss {
		t.Errorf("held-out loss %g, want the trainer's %g", got.Loss, loss)
	}
	if math.Abs(got.Subjects-first) > tol*first {
		t.Errorf("subject loss %g, want the all-subject rows' %g", got.Subjects, first)
	}
	if got.SubjectShare != 0.5 {
		t.Errorf("subject share %g, want 0.5", got.SubjectShare)
	}
	if math.Abs(got.Subjects-got.Loss) < 1e-3*got.Loss {
		t.Fatalf("subject loss %g too close to the loss %g to tell the rows apart", got.Subjects, got.Loss)
	}

	plain, err := MeasureHeldOut(cfg, m, a, tinyData(n), cond, n)
	if err != nil {
		t.Fatal(err)
	}
	if plain.Loss != got.Loss || !math.IsNaN(plain.Subjects) {
		t.Errorf("without masks: %+v, want loss %g and no subject loss", plain, got.Loss)
	}
	if _, err := MeasureHeldOut(cfg, m, a, tinyData(n), cond, 0); err == nil {
		t.Error("zero batches: no error")
	}
}
