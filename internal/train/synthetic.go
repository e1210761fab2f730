package train

import (
	"fmt"
	"strconv"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Synthetic is a data source of random images (uniform in [-1, 1]) and
// captions taken in turn from a list, for tests and smoke runs of the
// loop without a data set. Batch i depends on Seed and i alone, so the
// source is deterministic and its position is one number.
type Synthetic struct {
	BatchSize, Resolution int
	Captions              []string
	Seed                  uint64
	// Distinct, when positive, makes batch i the same as batch
	// i mod Distinct: 1 gives the fixed batch of an overfitting test.
	Distinct int

	next int64 // index of the batch Next returns
}

// Next implements Batches.
func (s *Synthetic) Next() (*Batch, error) {
	if s.BatchSize < 1 || s.Resolution < 1 || len(s.Captions) == 0 {
		return nil, fmt.Errorf("synthetic data: needs a batch size, a resolution and captions, got %d, %d and %d captions", s.BatchSize, s.Resolution, len(s.Captions))
	}
	i := s.next
	if s.Distinct > 0 {
		i %= int64(s.Distinct)
	}
	s.next++
	// One generator per batch, seeded from the batch's index: batches do
	// not depend on which came before, so Restore needs only the index.
	g := torch.NewGenerator(s.Seed ^ (uint64(i)+1)*0x9e3779b97f4a7c15)
	defer g.Close()
	n, r := int64(s.BatchSize), int64(s.Resolution)
	b := &Batch{
		Images:   torch.Scoped(func() *torch.Tensor { return torch.Rand(g, n, 3, r, r).MulScalar(2).SubScalar(1) }),
		Captions: make([]string, s.BatchSize),
	}
	for j := range b.Captions {
		b.Captions[j] = s.Captions[(int(i)*s.BatchSize+j)%len(s.Captions)]
	}
	return b, nil
}

// State implements Batches: the index of the next batch.
func (s *Synthetic) State() ([]byte, error) {
	return strconv.AppendInt(nil, s.next, 10), nil
}

// Restore implements Batches.
func (s *Synthetic) Restore(state []byte) error {
	n, err := strconv.ParseInt(string(state), 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("synthetic data: bad position %q", state)
	}
	s.next = n
	return nil
}
