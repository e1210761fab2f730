package train

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// ErrInterrupted is the cause of a context that OnInterrupt cancelled.
var ErrInterrupted = errors.New("interrupted")

// OnInterrupt returns a context that the first SIGINT (Ctrl-C) or SIGTERM
// (a cluster's notice before it preempts the job) cancels with cause
// ErrInterrupted: Run then finishes the step under way, writes a
// checkpoint and returns an error that wraps ErrInterrupted. The first
// signal also gives the signals their default action back, so a second
// Ctrl-C ends the process at once, as someone pressing it twice means.
// stop releases the handler; call it when the run is over.
func OnInterrupt(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-signals:
			signal.Stop(signals)
			cancel(ErrInterrupted)
		case <-done:
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(signals)
			close(done)
			cancel(context.Canceled)
		})
	}
}
