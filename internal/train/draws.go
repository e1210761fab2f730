package train

import (
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Draws are the random numbers of one micro-batch: per sample, its
// caption and image dropout decisions, its timestep and its noise.
//
// A sample's draws depend only on the run's seed, the optimizer step and
// the sample's global index (Batch.Index, its place in the run's sample
// order), never on a generator the batch shares. So global sample g gets
// the same noise, timestep and dropout whether one process trains it in a
// batch of B·W or rank g mod W of a data-parallel job trains it in a
// batch of B, and a resumed run needs no generator state, only the step
// and the data position its checkpoint holds. Each kind of draw has a
// stream of its own, so that a conditioner drawing more or fewer numbers
// leaves the noise and timesteps as they were.
type Draws struct {
	seed  uint64
	step  int   // the optimizer step the micro-batch belongs to, from 1
	index []int // each row's global sample index
}

// NewDraws are the draws of the rows of a micro-batch of step (counted
// from 1) whose samples have the given global indices, in a run seeded
// with seed.
func NewDraws(seed uint64, step int, index []int) Draws {
	return Draws{seed: seed, step: step, index: index}
}

// The streams, one per kind of draw.
const (
	textDropoutStream = iota + 1
	imageDropoutStream
	timestepStream
	noiseStream
	phraseDropoutStream // after the others, which keep their numbers
)

// Len is the number of rows.
func (d Draws) Len() int { return len(d.index) }

// TextDropout is one number per row, uniform in [0, 1): a conditioner
// replaces the row's caption by "" when it is below the dropout
// probability.
func (d Draws) TextDropout() []float64 { return d.uniform(textDropoutStream) }

// ImageDropout is one number per row, uniform in [0, 1): a conditioner
// drops the row's subject conditions when it is below the dropout
// probability.
func (d Draws) ImageDropout() []float64 { return d.uniform(imageDropoutStream) }

// PhraseDropout is one number per row, uniform in [0, 1): a conditioner
// names the row's subjects by their category when it is below the phrase
// dropout probability (dropPhrases).
func (d Draws) PhraseDropout() []float64 { return d.uniform(phraseDropoutStream) }

func (d Draws) uniform(stream uint64) []float64 {
	u := make([]float64, len(d.index))
	for i := range u {
		u[i] = float64(d.key(stream, i)>>11) * 0x1p-53 // the top 53 bits: exact in a float64
	}
	return u
}

// timesteps are the rows' timesteps, uniform in 0..T-1, as i64 on the CPU
// (diffusers' torch.randint(0, T, (n,))).
func (d Draws) timesteps(T int) *torch.Tensor {
	ts := make([]int64, len(d.index))
	for i, u := range d.uniform(timestepStream) {
		// u·T can round up to T for the largest u; the min keeps it in range.
		ts[i] = min(int64(u*float64(T)), int64(T-1))
	}
	return torch.New(ts, int64(len(ts)))
}

// noise is the rows' standard normal noise, [rows, shape...] in o: each
// row drawn on the CPU by a torch generator seeded from the row's key (so
// a row's noise is the same on every device), then moved.
func (d Draws) noise(o torch.Options, shape ...int64) *torch.Tensor {
	return torch.Scoped(func() *torch.Tensor {
		cpu := torch.Options{DType: o.DType}
		rows := make([]*torch.Tensor, len(d.index))
		for i := range rows {
			g := torch.NewGenerator(d.key(noiseStream, i))
			rows[i] = cpu.Randn(g, shape...)
			g.Close()
		}
		return torch.Stack(rows, 0).ToOptions(o)
	})
}

// key is the seed of row i's draws of one stream: seed, stream, step and
// index chained through splitmix64's finaliser, a bijection that leaves
// neighbouring inputs unrelated.
func (d Draws) key(stream uint64, i int) uint64 {
	x := mix64(d.seed ^ stream)
	x = mix64(x ^ uint64(d.step))
	return mix64(x ^ uint64(d.index[i]))
}

func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
