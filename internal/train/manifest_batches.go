package train

import (
	"fmt"
	"runtime"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// ManifestBatches is the training data source over a data manifest: the
// samples of a data.Sampler seeded with the run's seed, BatchSize at a
// time, made ahead of the loop by a data.Prefetcher so that a step does
// not wait on decoding and resizing PNGs.
//
// Sample i depends only on the seed and i, so the position is one number,
// the global index of the next sample: State and Restore are exact, a
// rank of a data-parallel job makes only its own samples (Shard), and a
// resumed run may even change the batch size or the number of ranks and
// still see the samples in the same order. The tensors are built on the
// caller's goroutine (libtorch scopes are per goroutine); only the Go
// images are made in the background.
type ManifestBatches struct {
	sampler   *data.Sampler
	path      string // the manifest's, for messages
	batchSize int
	// Workers and Ahead size the prefetcher: goroutines making samples,
	// and how many samples they may run ahead of the loop. Set them
	// before the first Next; NewManifestBatches picks defaults.
	Workers, Ahead int

	pos      shard            // the position and this rank's share
	prefetch *data.Prefetcher // nil until Next needs it
}

// NewManifestBatches samples m at cfg.Resolution with the default
// augmentation, cfg.BatchSize samples a batch, with cfg.Seed as the
// sampler's seed.
func NewManifestBatches(m *data.Manifest, cfg Config) (*ManifestBatches, error) {
	if cfg.BatchSize < 1 || cfg.Resolution < 1 {
		return nil, fmt.Errorf("manifest data: batch size %d and resolution %d must be positive", cfg.BatchSize, cfg.Resolution)
	}
	opts := data.DefaultSampleOptions()
	opts.Size = cfg.Resolution
	s, err := data.NewSampler(m, cfg.Seed, opts)
	if err != nil {
		return nil, fmt.Errorf("manifest data %s: %w", m.Path, err)
	}
	return &ManifestBatches{
		sampler:   s,
		path:      m.Path,
		batchSize: cfg.BatchSize,
		// Half the cores: libtorch's threads need the rest for the step.
		Workers: max(1, runtime.GOMAXPROCS(0)/2),
		// Two batches: one ready when the step ends, one being made.
		Ahead: 2 * cfg.BatchSize,
	}, nil
}

// Next implements Batches.
func (b *ManifestBatches) Next() (*Batch, error) {
	if b.prefetch == nil {
		b.prefetch = b.sampler.PrefetchStride(b.pos.index(0), b.pos.size(), b.Ahead, b.Workers)
	}
	samples := make([]*data.Sample, b.batchSize)
	for i := range samples {
		s, err := b.prefetch.Next()
		if err != nil {
			// The prefetcher has moved past the failed sample; start it
			// again at the batch's first, so that State still names it.
			b.stopPrefetch()
			return nil, fmt.Errorf("manifest data %s: %w", b.path, err)
		}
		samples[i] = s
	}
	b.pos.advance(b.batchSize)
	return newBatch(samples), nil
}

// State implements Batches: the global index of the next sample.
func (b *ManifestBatches) State() ([]byte, error) { return b.pos.state(), nil }

// Restore implements Batches. Samples made ahead from the old position
// are dropped.
func (b *ManifestBatches) Restore(state []byte) error {
	b.stopPrefetch()
	return b.pos.restore(state, "manifest data")
}

// Shard implements Batches. Samples made ahead for the old share are
// dropped.
func (b *ManifestBatches) Shard(rank, world int) error {
	b.stopPrefetch()
	return b.pos.reshard(rank, world, "manifest data")
}

// Close stops the prefetching goroutines. Next may still be called after
// it, and starts them again.
func (b *ManifestBatches) Close() { b.stopPrefetch() }

func (b *ManifestBatches) stopPrefetch() {
	if b.prefetch != nil {
		b.prefetch.Stop()
		b.prefetch = nil
	}
}

// newBatch turns samples into a Batch: the targets as one tensor, and per
// subject its box, words and both references.
func newBatch(samples []*data.Sample) *Batch {
	targets := make([]*data.RGB, len(samples))
	masks := make([]*data.Gray, len(samples))
	b := &Batch{Captions: make([]string, len(samples)), Index: make([]int, len(samples)), Subjects: make([][]Subject, len(samples))}
	for i, s := range samples {
		targets[i] = s.Target
		b.Captions[i] = s.Caption
		b.Index[i] = s.Index
		masks[i] = subjectsUnion(s)
		for _, sub := range s.Subjects {
			b.Subjects[i] = append(b.Subjects[i], Subject{
				Box:      sub.Box,
				Phrase:   sub.Phrase,
				Category: sub.Category,
				Static:   refTensor(sub.Static.Image),
				Mask:     maskTensor(sub.Static.Mask),
				Dynamic:  refTensor(sub.Dynamic.Image),
				Views:    SubjectViews{Static: sub.Static.Image, Mask: sub.Static.Mask, Dynamic: sub.Dynamic.Image},
			})
		}
	}
	b.Images = imageTensor(targets...)
	b.Masks = masksTensor(masks...)
	return b
}

// subjectsUnion is the union of a sample's subject masks in its target.
func subjectsUnion(s *data.Sample) *data.Gray {
	out := data.NewGray(s.Target.W, s.Target.H)
	for _, sub := range s.Subjects {
		for i, v := range sub.Mask.Pix {
			out.Pix[i] = max(out.Pix[i], v)
		}
	}
	return out
}

// imageTensor stacks images of one size into [N, 3, H, W] in [-1, 1], the
// VAE's input range.
func imageTensor(images ...*data.RGB) *torch.Tensor {
	w, h := images[0].W, images[0].H
	pix := make([]uint8, 0, len(images)*len(images[0].Pix))
	for _, img := range images {
		if img.W != w || img.H != h {
			panic(fmt.Sprintf("train: images of %dx%d and %dx%d in one tensor", w, h, img.W, img.H))
		}
		pix = append(pix, img.Pix...)
	}
	return torch.Scoped(func() *torch.Tensor {
		px := torch.New(pix, int64(len(images)), int64(h), int64(w), 3).To(torch.Float32)
		return px.Permute(0, 3, 1, 2).Contiguous().DivScalar(127.5).SubScalar(1)
	})
}

// refTensor is one reference image as [3, H, W] in [-1, 1].
func refTensor(img *data.RGB) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor { return imageTensor(img).Squeeze(0) })
}

// maskTensor is a mask as [1, H, W] in {0, 1}.
func maskTensor(m *data.Gray) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor { return masksTensor(m).Squeeze(0) })
}

// masksTensor stacks masks of one size into [N, 1, H, W] in {0, 1}.
func masksTensor(masks ...*data.Gray) *torch.Tensor {
	w, h := masks[0].W, masks[0].H
	pix := make([]uint8, 0, len(masks)*w*h)
	for _, m := range masks {
		if m.W != w || m.H != h {
			panic(fmt.Sprintf("train: masks of %dx%d and %dx%d in one tensor", w, h, m.W, m.H))
		}
		pix = append(pix, m.Pix...)
	}
	return torch.Scoped(func() *torch.Tensor {
		return torch.New(pix, int64(len(masks)), 1, int64(h), int64(w)).GtScalar(0).To(torch.Float32)
	})
}
