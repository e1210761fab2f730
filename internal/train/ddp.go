package train

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// Data-parallel training, as PyTorch's DistributedDataParallel does it,
// on c10d through torch.ProcessGroup: every rank holds the whole model,
// reads its own shard of the data (Batches.Shard), and after the backward
// passes of a step all ranks replace their gradients with the mean over
// ranks, so that each takes the same optimizer step from the same
// weights. Because every sample's random draws are its own (Draws), W
// ranks of batch B compute the same step as one process of batch B·W, up
// to the order in which the all-reduce sums.
//
// Every collective below is made by every rank in the same order with
// tensors of the same shapes; what rank 0 alone does (writing, sampling)
// is followed by an agree, so that a failure there ends the whole job at
// once rather than at the collectives' timeout.

// lead reports whether this process writes and reports for the job: the
// single process, or rank 0.
func (t *trainer) lead() bool { return t.pg == nil || t.pg.Rank() == 0 }

func (t *trainer) rank() int {
	if t.pg == nil {
		return 0
	}
	return t.pg.Rank()
}

func (t *trainer) world() int {
	if t.pg == nil {
		return 1
	}
	return t.pg.WorldSize()
}

// collectiveOptions are the options of the small tensors the ranks
// exchange: f64, so that a mean loss loses nothing, on the model's device,
// where NCCL wants them.
func (t *trainer) collectiveOptions() torch.Options {
	return torch.Options{DType: torch.Float64, Device: t.model.Options.Device}
}

// errPeerFailed is what a rank returns when another one failed.
var errPeerFailed = errors.New("train: another rank failed; its output says why")

// agree returns err on a single process. On a rank of a job it also tells
// the others whether this rank failed, and returns errPeerFailed when
// this one did not but another did: every rank calls it at the same point,
// so all go on or all stop.
func (t *trainer) agree(err error) error {
	if t.pg == nil {
		return err
	}
	s := torch.NewScope()
	defer s.Close()
	flag := 0.0
	if err != nil {
		flag = 1
	}
	v := t.collectiveOptions().Full(flag, 1)
	if cerr := t.pg.AllReduceMean(v); cerr != nil {
		if err != nil {
			return err
		}
		return fmt.Errorf("train: %w", cerr)
	}
	if err != nil {
		return err
	}
	if v.Item() > 0 {
		return errPeerFailed
	}
	return nil
}

// stepSync is what the ranks agreed at the end of a step's backward
// passes.
type stepSync struct {
	loss   float64 // the mean loss over the ranks
	failed bool    // some rank failed during the step
}

// syncStep averages the step's gradients over the ranks, with this
// rank's mean loss and whether it failed.
//
// A parameter has a gradient on a rank only if the rank's samples reached
// it (a sample whose subjects were dropped leaves the attention layers
// they feed without one). The ranks first all-reduce one flag per
// trainable parameter, with the loss and the two flags in the same small
// message; a parameter that has a gradient somewhere gets a zero one
// where it has none (the gradient it would have had in the single
// process's batch: those samples contribute nothing to it), then its
// gradient is averaged with the rest. A parameter with a gradient nowhere
// keeps none, and AdamW skips it as it would in a single process.
func (t *trainer) syncStep(loss float64, failed bool) (stepSync, error) {
	s := torch.NewScope()
	defer s.Close()
	params := t.train.params
	n := len(params)
	msg := make([]float64, n+2)
	for i, p := range params {
		if p.Grad() != nil {
			msg[i] = 1
		}
	}
	msg[n] = loss
	msg[n+1] = boolFloat(failed)
	v := torch.New(msg, int64(len(msg))).ToOptions(t.collectiveOptions())
	if err := t.pg.AllReduceMean(v); err != nil {
		return stepSync{}, fmt.Errorf("train: step %d: %w", t.step+1, err)
	}
	got := v.Float64s()
	res := stepSync{loss: got[n], failed: got[n+1] > 0}
	if res.failed || math.IsNaN(res.loss) || math.IsInf(res.loss, 0) {
		return res, nil // nobody steps: the gradients do not matter
	}
	var missing, grads []*torch.Tensor
	for i, p := range params {
		if got[i] == 0 {
			continue // no rank has a gradient for it
		}
		if p.Grad() == nil {
			missing = append(missing, p)
		}
	}
	zeroGrads(missing)
	for i, p := range params {
		if got[i] > 0 {
			grads = append(grads, p.Grad())
		}
	}
	if err := t.pg.AllReduceMean(grads...); err != nil {
		return stepSync{}, fmt.Errorf("train: step %d: gradients: %w", t.step+1, err)
	}
	return res, nil
}

// zeroGrads gives each parameter, none of which has a gradient, a zero
// one. The tensor layer cannot set a leaf's gradient, so autograd writes
// it: the backward pass of Σ p·0 is exactly 0 for every element, whatever
// p holds.
func zeroGrads(params []*torch.Tensor) {
	if len(params) == 0 {
		return
	}
	s := torch.NewScope()
	defer s.Close()
	terms := make([]*torch.Tensor, len(params))
	for i, p := range params {
		terms[i] = p.MulScalar(0).Sum()
	}
	torch.Stack(terms, 0).Sum().Backward()
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// broadcastWeights gives every rank rank 0's weights: all of the
// adapter's, frozen ones too (a fresh adapter's are drawn at random, and
// each rank may have drawn its own), and the UNet's trainable ones (the
// frozen UNet is read from the same file everywhere, and would cost the
// most to send). After a resume, when every rank has read the same
// checkpoint, it changes nothing. The optimizer's state needs no
// broadcast: it is empty at the start, or read from that checkpoint.
func (t *trainer) broadcastWeights() error {
	if t.pg == nil {
		return nil
	}
	named := t.adapter.Params()
	keys := slices.Sorted(maps.Keys(named)) // the same order on every rank
	ts := make([]*torch.Tensor, 0, len(keys)+len(t.train.keys))
	for _, k := range keys {
		ts = append(ts, named[k])
	}
	for i, k := range t.train.keys {
		if strings.HasPrefix(k, UNetPrefix) {
			ts = append(ts, t.train.params[i])
		}
	}
	var err error
	torch.NoGrad(func() { err = t.pg.Broadcast(0, ts...) })
	if err != nil {
		return fmt.Errorf("train: rank 0's weights: %w", err)
	}
	return nil
}
