package data

import (
	"errors"
	"fmt"
	"math/rand/v2"
)

// VideoFraction is the paper's share of clip samples (IV-B: 70% video,
// 30% image).
const VideoFraction = 0.7

// Sampler draws training samples from a manifest: each a clip with
// probability VideoFraction (else an image), the record uniform among
// its kind. Sample i depends only on the seed and i, not on which samples
// were made before or on which goroutine, so prefetching workers, resumed
// runs and data-parallel ranks (rank r of W making samples r, r+W, ...,
// see PrefetchStride) all see the same data.
type Sampler struct {
	Clips, Images []*Record
	Options       SampleOptions
	VideoFraction float64 // share of clips when the manifest has both kinds
	Seed          uint64
}

// NewSampler splits m's records by kind.
func NewSampler(m *Manifest, seed uint64, opts SampleOptions) (*Sampler, error) {
	s := &Sampler{Options: opts, VideoFraction: VideoFraction, Seed: seed}
	for _, r := range m.Records {
		if r.Clip {
			s.Clips = append(s.Clips, r)
		} else {
			s.Images = append(s.Images, r)
		}
	}
	if len(s.Clips)+len(s.Images) == 0 {
		return nil, errors.New("sampler: the manifest has no records")
	}
	return s, nil
}

// Sample is sample i.
func (s *Sampler) Sample(i int) (*Sample, error) {
	r := rand.New(rand.NewPCG(s.Seed, splitMix64(uint64(i))))
	smp, err := SampleRecord(s.pick(r), r, s.Options)
	if err != nil {
		return nil, fmt.Errorf("sample %d: %w", i, err)
	}
	smp.Index = i
	return smp, nil
}

// pick draws the record: first its kind, then one of that kind.
func (s *Sampler) pick(r *rand.Rand) *Record {
	pool := s.Images
	if len(s.Images) == 0 || (len(s.Clips) > 0 && r.Float64() < s.VideoFraction) {
		pool = s.Clips
	}
	return pool[r.IntN(len(pool))]
}

// splitMix64 scrambles a sample index into a PCG stream, so that
// neighbouring indices start from unrelated states.
func splitMix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
