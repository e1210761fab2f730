package train

import (
	"fmt"
	"math"

	"github.com/lcpdiff/lcpdiff/internal/model/lcp"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// HeldOutLoss is the training objective measured on data a model did not
// train on.
type HeldOutLoss struct {
	Batches int
	// Loss is Eq. 1's mean over every latent value of every batch.
	Loss float64
	// Subjects is the same mean over the latent cells that a subject's
	// mask touches (coveredCells), where the method's work is: a small
	// share of a toy-world image, which Loss mostly does not see. NaN
	// for data without masks.
	Subjects float64
	// SubjectShare is the share of the latent cells those are.
	SubjectShare float64
}

// MeasureHeldOut runs the objective of cfg (the conditioner's dropout as
// it was built, no subject weighting) on n batches of data, without
// gradients or updates. Batch k, from 1, draws its noise, timesteps and
// dropout as step k of a run seeded cfg.Seed would, so two models
// measured with the same data and configuration see the same samples,
// noise and timesteps, and their difference is theirs alone.
func MeasureHeldOut(cfg Config, m *pipeline.Model, a *lcp.Adapter, data Batches, cond Conditioner, n int) (r HeldOutLoss, err error) {
	if n < 1 {
		return r, fmt.Errorf("train: held-out loss over %d batches: want at least one", n)
	}
	if err := m.Scheduler.Validate(); err != nil {
		return r, fmt.Errorf("train: scheduler: %w", err)
	}
	defer torch.Recover(&err)
	t := &trainer{cfg: cfg, model: m, adapter: a, data: data, cond: cond, ddpm: pipeline.NewDDPM(m.Scheduler)}
	if t.velocity, err = predictsVelocity(m); err != nil {
		return r, err
	}
	var sum, values, subjectSum, subjectValues, cells, covered float64
	withMasks := true
	measure := func(b *Batch, embeds *torch.Tensor, d Draws) {
		sq := t.sqError(b, embeds, d) // [B, C, h, w]
		sum += sq.Sum().Item()
		values += float64(sq.Numel())
		if b.Masks == nil {
			withMasks = false
			return
		}
		c := coveredCells(b.Masks.ToDevice(m.Options.Device), sq.Size(2)) // [B, 1, h, w]
		subjectSum += sq.Mul(c).Sum().Item()
		touched := c.Sum().Item()
		covered += touched
		cells += float64(c.Numel())
		subjectValues += touched * float64(sq.Size(1))
	}
	torch.NoGrad(func() {
		for k := 1; k <= n && err == nil; k++ {
			err = t.withBatch(k, fmt.Sprintf("held-out batch %d", k), measure)
		}
	})
	if err != nil {
		return r, err
	}
	r = HeldOutLoss{Batches: n, Loss: sum / values, Subjects: math.NaN(), SubjectShare: math.NaN()}
	if withMasks {
		r.Subjects, r.SubjectShare = subjectSum/subjectValues, covered/cells
	}
	return r, nil
}
