package data

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// counting is a fake sampler that counts the samples made and the calls
// running, and fails sample 5.
type counting struct {
	made, running atomic.Int64
	delay         time.Duration
}

func (c *counting) sample(i int) (*Sample, error) {
	c.running.Add(1)
	defer c.running.Add(-1)
	time.Sleep(c.delay)
	c.made.Add(1)
	if i == 5 {
		return nil, fmt.Errorf("sample %d: broken", i)
	}
	return &Sample{Index: i}, nil
}

// TestPrefetchOrderAndErrors: samples come in index order with several
// workers, and a failed one is its error in its place.
func TestPrefetchOrderAndErrors(t *testing.T) {
	c := &counting{delay: time.Millisecond}
	p := prefetch(c.sample, 3, 1, 4, 3)
	defer p.Stop()
	for i := 3; i < 20; i++ {
		s, err := p.Next()
		if i == 5 {
			if err == nil || err.Error() != "sample 5: broken" {
				t.Fatalf("sample 5: got %v", err)
			}
			continue
		}
		if err != nil || s.Index != i {
			t.Fatalf("got %v, %v; want sample %d", s, err, i)
		}
	}
}

// TestPrefetchStaysAhead: the workers fill the queue and then wait: a
// slow consumer never has more than ahead+1 samples made for it beyond
// those it took.
func TestPrefetchStaysAhead(t *testing.T) {
	c := &counting{}
	const ahead = 4
	p := prefetch(c.sample, 0, 1, ahead, 3)
	defer p.Stop()
	for taken := 0; taken < 10; taken++ {
		time.Sleep(20 * time.Millisecond) // a training step
		if made := c.made.Load(); made > int64(taken+ahead+1) {
			t.Fatalf("%d samples made with %d taken: more than %d ahead", made, taken, ahead+1)
		} else if made < int64(taken+ahead) {
			t.Fatalf("%d samples made with %d taken: the queue did not fill while the step ran", made, taken)
		}
		p.Next()
	}
}

// TestPrefetchStops: Stop ends every goroutine, even with the queue full,
// workers busy and a consumer waiting in Next.
func TestPrefetchStops(t *testing.T) {
	before := runtime.NumGoroutine()
	c := &counting{delay: 5 * time.Millisecond}
	p := prefetch(c.sample, 0, 1, 2, 4)
	p.Next()
	done := make(chan error)
	go func() {
		// Wait for more than the queue holds, so that this Next is
		// still waiting when Stop comes.
		for {
			if _, err := p.Next(); errors.Is(err, ErrStopped) {
				done <- err
				return
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	p.Stop()
	p.Stop() // twice is fine
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Next still waits after Stop")
	}
	if _, err := p.Next(); !errors.Is(err, ErrStopped) {
		t.Fatalf("Next after Stop: %v", err)
	}
	if n := c.running.Load(); n != 0 {
		t.Fatalf("%d samples still being made after Stop", n)
	}
	made := c.made.Load()
	time.Sleep(20 * time.Millisecond)
	if c.made.Load() != made {
		t.Fatal("samples made after Stop")
	}
	// The goroutines are gone (the runtime may take a moment to retire
	// them after they return).
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines before, %d after Stop", before, runtime.NumGoroutine())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSamplerPrefetch: the prefetcher gives the sampler's samples.
func TestSamplerPrefetch(t *testing.T) {
	m := smallToyWorld(t)
	s, _ := NewSampler(m, 9, testOptions)
	p := s.Prefetch(10, 3, 2)
	defer p.Stop()
	for i := 10; i < 16; i++ {
		got, err := p.Next()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := s.Sample(i)
		if got.Index != i || !sameSample(got, want) {
			t.Fatalf("prefetched sample %d is not Sample(%d)", got.Index, i)
		}
	}
}

// TestSamplerPrefetchStride: a strided prefetcher gives every stride-th
// sample, as one rank of a data-parallel job reads its shard.
func TestSamplerPrefetchStride(t *testing.T) {
	m := smallToyWorld(t)
	s, _ := NewSampler(m, 9, testOptions)
	p := s.PrefetchStride(11, 3, 2, 2)
	defer p.Stop()
	for i := 11; i < 11+4*3; i += 3 {
		got, err := p.Next()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := s.Sample(i)
		if got.Index != i || !sameSample(got, want) {
			t.Fatalf("prefetched sample %d is not Sample(%d)", got.Index, i)
		}
	}
}
