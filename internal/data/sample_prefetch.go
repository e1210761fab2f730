package data

import (
	"errors"
	"sync"
)

// ErrStopped is what Prefetcher.Next returns once the prefetcher is stopped.
var ErrStopped = errors.New("prefetcher stopped")

// Prefetcher makes samples on background goroutines, a bounded number
// ahead of the training loop, so that a step never waits on decoding PNGs
// and resizing while the next one is ready. Samples come out in index
// order however many workers make them.
type Prefetcher struct {
	// slots holds, in index order, one channel per sample being made or
	// made; its capacity is how far ahead the workers may run.
	slots chan chan prefetched
	stop  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

type prefetched struct {
	s   *Sample
	err error
}

type prefetchJob struct {
	i    int
	slot chan prefetched
}

// Prefetch starts making samples start, start+1, ... with workers
// goroutines, at most ahead (at least 1) beyond the one Next waits for.
// Stop it when done.
func (s *Sampler) Prefetch(start, ahead, workers int) *Prefetcher {
	return prefetch(s.Sample, start, 1, ahead, workers)
}

// PrefetchStride is Prefetch over every stride-th sample: start,
// start+stride, start+2*stride, ... It is one data-parallel rank's shard:
// rank r of W starts at r and strides W, so that the ranks together make
// each sample once.
func (s *Sampler) PrefetchStride(start, stride, ahead, workers int) *Prefetcher {
	return prefetch(s.Sample, start, max(stride, 1), ahead, workers)
}

func prefetch(sample func(i int) (*Sample, error), start, stride, ahead, workers int) *Prefetcher {
	p := &Prefetcher{slots: make(chan chan prefetched, max(ahead, 1)), stop: make(chan struct{})}
	jobs := make(chan prefetchJob)
	workers = max(workers, 1)
	p.wg.Add(1 + workers)
	// The dispatcher reserves each sample's place in the order before
	// handing it to a worker, so a full queue holds the workers back.
	go func() {
		defer p.wg.Done()
		defer close(jobs)
		for i := start; ; i += stride {
			job := prefetchJob{i, make(chan prefetched, 1)}
			select {
			case p.slots <- job.slot:
			case <-p.stop:
				return
			}
			select {
			case jobs <- job:
			case <-p.stop:
				return
			}
		}
	}()
	for range workers {
		go func() {
			defer p.wg.Done()
			for job := range jobs {
				s, err := sample(job.i)
				job.slot <- prefetched{s, err} // buffered: never blocks
			}
		}()
	}
	return p
}

// Next is the next sample in index order, waiting for it if need be. A
// sample that failed is its error, and the one after it comes next.
func (p *Prefetcher) Next() (*Sample, error) {
	select {
	case <-p.stop:
		return nil, ErrStopped
	default:
	}
	select {
	case slot := <-p.slots:
		select {
		case r := <-slot:
			return r.s, r.err
		case <-p.stop:
			return nil, ErrStopped
		}
	case <-p.stop:
		return nil, ErrStopped
	}
}

// Stop ends the prefetcher and waits for its goroutines, which finish the
// samples they are making and make no more. It may be called more than
// once, and while Next waits.
func (p *Prefetcher) Stop() {
	p.once.Do(func() { close(p.stop) })
	p.wg.Wait()
}
