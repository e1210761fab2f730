package train

import (
	"fmt"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Synthetic is a data source of random images (uniform in [-1, 1]) and
// captions taken in turn from a list, for tests and smoke runs of the
// loop without a data set. Global sample g depends on Seed and g alone,
// so the source is deterministic, shards like any other (see Batches) and
// its position is one number.
type Synthetic struct {
	BatchSize, Resolution int
	Captions              []string
	Seed                  uint64
	// Distinct, when positive, makes the source repeat after Distinct
	// global batches (BatchSize samples on each rank): 1 gives the fixed
	// batch of an overfitting test.
	Distinct int

	pos shard
}

// Next implements Batches.
func (s *Synthetic) Next() (*Batch, error) {
	if s.BatchSize < 1 || s.Resolution < 1 || len(s.Captions) == 0 {
		return nil, fmt.Errorf("synthetic data: needs a batch size, a resolution and captions, got %d, %d and %d captions", s.BatchSize, s.Resolution, len(s.Captions))
	}
	r := int64(s.Resolution)
	b := &Batch{Captions: make([]string, s.BatchSize), Index: make([]int, s.BatchSize)}
	b.Images = torch.Scoped(func() *torch.Tensor {
		images := make([]*torch.Tensor, s.BatchSize)
		for j := range images {
			g := s.pos.index(j)
			b.Index[j] = g
			if s.Distinct > 0 {
				g %= s.Distinct * s.BatchSize * s.pos.size()
			}
			// One generator per sample, seeded from its index: samples do
			// not depend on which came before or on which rank makes them.
			gen := torch.NewGenerator(s.Seed ^ (uint64(g)+1)*0x9e3779b97f4a7c15)
			images[j] = torch.Rand(gen, 3, r, r).MulScalar(2).SubScalar(1)
			gen.Close()
			b.Captions[j] = s.Captions[g%len(s.Captions)]
		}
		return torch.Stack(images, 0)
	})
	s.pos.advance(s.BatchSize)
	return b, nil
}

// State implements Batches: the global index of the next sample.
func (s *Synthetic) State() ([]byte, error) { return s.pos.state(), nil }

// Restore implements Batches.
func (s *Synthetic) Restore(state []byte) error { return s.pos.restore(state, "synthetic data") }

// Shard implements Batches.
func (s *Synthetic) Shard(rank, world int) error { return s.pos.reshard(rank, world, "synthetic data") }
